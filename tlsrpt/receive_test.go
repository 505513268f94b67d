package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func appendixB(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/rfc8460-appendix-b.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseReportAppendixB: the RFC's own example, every field.
func TestParseReportAppendixB(t *testing.T) {
	rep, warn, err := ParseReport(appendixB(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(warn) != 0 {
		t.Errorf("warnings: %q", warn)
	}
	want := &Report{
		OrganizationName: "Company-X",
		DateRange: DateRange{Start: time.Date(2016, 4, 1, 0, 0, 0, 0, time.UTC),
			End: time.Date(2016, 4, 1, 23, 59, 59, 0, time.UTC)},
		ContactInfo: "sts-reporting@company-x.example",
		ReportID:    "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
		Policies: []PolicyResult{{
			Policy: ReportPolicy{PolicyType: PolicySTS,
				PolicyString: []string{"version: STSv1", "mode: testing", "mx: *.mail.company-y.example", "max_age: 86400"},
				PolicyDomain: "company-y.example", MXHost: "*.mail.company-y.example"},
			Summary: Summary{TotalSuccessful: 5326, TotalFailure: 303},
			FailureDetails: []FailureDetail{
				{ResultType: ResultCertificateExpired, SendingMTAIP: "2001:db8:abcd:0012::1", ReceivingMXHostname: "mx1.mail.company-y.example", FailedSessionCount: 100},
				{ResultType: ResultSTARTTLSNotSupported, SendingMTAIP: "2001:db8:abcd:0013::1", ReceivingMXHostname: "mx2.mail.company-y.example",
					ReceivingIP: "203.0.113.56", FailedSessionCount: 200, AdditionalInfo: "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported"},
				{ResultType: ResultValidationFailure, SendingMTAIP: "198.51.100.62", ReceivingIP: "203.0.113.58",
					ReceivingMXHostname: "mx-backup.mail.company-y.example", FailedSessionCount: 3, FailureReasonCode: "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"},
			},
		}},
	}
	if !reflect.DeepEqual(rep, want) {
		t.Errorf("got  %+v\nwant %+v", rep, want)
	}
}

// mutate applies f to the decoded Appendix B report and re-encodes it.
func mutate(t *testing.T, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(appendixB(t), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pol0(m map[string]any) map[string]any { return m["policies"].([]any)[0].(map[string]any) }
func fd0(m map[string]any) map[string]any {
	return pol0(m)["failure-details"].([]any)[0].(map[string]any)
}

// TestParseReportStrict: each defect is refused with an error naming the
// field and the problem.
func TestParseReportStrict(t *testing.T) {
	cases := []struct {
		name string
		f    func(m map[string]any)
		want string
	}{
		{"no org", func(m map[string]any) { delete(m, "organization-name") }, "organization-name: missing"},
		{"org number", func(m map[string]any) { m["organization-name"] = 7 }, "organization-name: a number, want a string"},
		{"empty org", func(m map[string]any) { m["organization-name"] = " " }, "organization-name: empty"},
		{"null contact", func(m map[string]any) { m["contact-info"] = nil }, "contact-info: missing"},
		{"no report-id", func(m map[string]any) { delete(m, "report-id") }, "report-id: missing"},
		{"long report-id", func(m map[string]any) { m["report-id"] = strings.Repeat("x", 1025) }, "report-id: longer than 1024"},
		{"no date-range", func(m map[string]any) { delete(m, "date-range") }, "date-range: missing"},
		{"date-range string", func(m map[string]any) { m["date-range"] = "2016-04-01" }, "date-range: a string, want an object"},
		{"bad start", func(m map[string]any) { m["date-range"].(map[string]any)["start-datetime"] = "2016-04-01 00:00" }, "date-range.start-datetime: \"2016-04-01 00:00\" is not an RFC 3339"},
		{"no end", func(m map[string]any) { delete(m["date-range"].(map[string]any), "end-datetime") }, "date-range.end-datetime: missing"},
		{"end before start", func(m map[string]any) { m["date-range"].(map[string]any)["end-datetime"] = "2016-03-31T00:00:00Z" }, "end-datetime before start-datetime"},
		{"no policies", func(m map[string]any) { delete(m, "policies") }, "policies: missing"},
		{"policies object", func(m map[string]any) { m["policies"] = map[string]any{} }, "policies: an object, want an array"},
		{"policy not object", func(m map[string]any) { m["policies"] = []any{1} }, "policies[0]: a number, want an object"},
		{"no policy", func(m map[string]any) { delete(pol0(m), "policy") }, "policies[0].policy: missing"},
		{"bad policy-type", func(m map[string]any) { pol0(m)["policy"].(map[string]any)["policy-type"] = "dane" }, "policies[0].policy.policy-type: \"dane\", want tlsa, sts or no-policy-found"},
		{"no policy-domain", func(m map[string]any) { delete(pol0(m)["policy"].(map[string]any), "policy-domain") }, "policies[0].policy.policy-domain: missing"},
		{"policy-string string", func(m map[string]any) { pol0(m)["policy"].(map[string]any)["policy-string"] = "3 1 1 ab" }, "policy-string: a string, want an array of strings"},
		{"policy-string number item", func(m map[string]any) { pol0(m)["policy"].(map[string]any)["policy-string"] = []any{"a", 2} }, "policy-string[1]: a number, want a string"},
		{"mx-host number", func(m map[string]any) { pol0(m)["policy"].(map[string]any)["mx-host"] = 3 }, "mx-host: a number, want a string or an array"},
		{"no summary", func(m map[string]any) { delete(pol0(m), "summary") }, "policies[0].summary: missing"},
		{"negative count", func(m map[string]any) {
			pol0(m)["summary"].(map[string]any)["total-failure-session-count"] = -1
		}, "total-failure-session-count: negative count -1"},
		{"fraction count", func(m map[string]any) {
			pol0(m)["summary"].(map[string]any)["total-successful-session-count"] = 1.5
		}, "total-successful-session-count: 1.5 is not an integer"},
		{"string count", func(m map[string]any) {
			pol0(m)["summary"].(map[string]any)["total-successful-session-count"] = "5"
		}, "total-successful-session-count: a string, want a count"},
		{"missing count", func(m map[string]any) { delete(pol0(m)["summary"].(map[string]any), "total-successful-session-count") }, "total-successful-session-count: missing"},
		{"failure-details object", func(m map[string]any) { pol0(m)["failure-details"] = map[string]any{} }, "policies[0].failure-details: an object, want an array"},
		{"no result-type", func(m map[string]any) { delete(fd0(m), "result-type") }, "failure-details[0].result-type: missing"},
		{"bad result-type", func(m map[string]any) { fd0(m)["result-type"] = "Cert Expired" }, "result-type: \"Cert Expired\" is not a result type"},
		{"no failed count", func(m map[string]any) { delete(fd0(m), "failed-session-count") }, "failure-details[0].failed-session-count: missing"},
		{"negative failed count", func(m map[string]any) { fd0(m)["failed-session-count"] = -3 }, "failed-session-count: negative count -3"},
		{"ip number", func(m map[string]any) { fd0(m)["receiving-ip"] = 1 }, "failure-details[0].receiving-ip: a number, want a string"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := ParseReport(mutate(t, c.f))
			if err == nil {
				t.Fatalf("accepted")
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v is not ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
	for _, bad := range []string{"", "{", "[]", `"x"`, `{"a":1} {}`, "null"} {
		if _, _, err := ParseReport([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	huge := mutate(t, func(m map[string]any) {})
	huge = bytes.Replace(huge, []byte(`"total-successful-session-count":5326`), []byte(`"total-successful-session-count":18446744073709551616`), 1)
	if _, _, err := ParseReport(huge); err == nil || !strings.Contains(err.Error(), "bad count") {
		t.Errorf("count over uint64: %v", err)
	}
}

// TestParseReportLenient: what is kept with a warning.
func TestParseReportLenient(t *testing.T) {
	js := mutate(t, func(m map[string]any) {
		m["x-vendor"] = "1"
		pol0(m)["policy"].(map[string]any)["mx-host"] = []any{"*.mail.company-y.example"}
		pol0(m)["policy"].(map[string]any)["x-extra"] = true
		fd0(m)["result-type"] = "new-kind-of-failure"
		delete(pol0(m)["policy"].(map[string]any), "policy-string")
	})
	rep, warn, err := ParseReport(js)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rep.Policies[0].Policy.MXHost, []string{"*.mail.company-y.example"}) {
		t.Errorf("mx-host %#v", rep.Policies[0].Policy.MXHost)
	}
	if rep.Policies[0].Policy.PolicyString != nil {
		t.Errorf("policy-string %#v", rep.Policies[0].Policy.PolicyString)
	}
	if rep.Policies[0].FailureDetails[0].ResultType != "new-kind-of-failure" {
		t.Errorf("result type %q", rep.Policies[0].FailureDetails[0].ResultType)
	}
	want := []string{
		"x-vendor: unknown field ignored",
		"policies[0].policy.x-extra: unknown field ignored",
		`policies[0].failure-details[0].result-type: "new-kind-of-failure" is not a registered result type (§6.6)`,
	}
	if !reflect.DeepEqual(warn, want) {
		t.Errorf("warnings\n%q\nwant\n%q", warn, want)
	}
	// A summary that disagrees with its details is kept as sent.
	js = mutate(t, func(m map[string]any) { pol0(m)["summary"].(map[string]any)["total-failure-session-count"] = 1 })
	_, warn, err = ParseReport(js)
	if err != nil || len(warn) != 1 || !strings.Contains(warn[0], "failure-details count 303 sessions, summary 1") {
		t.Errorf("%v %q", err, warn)
	}
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bomb returns a gzip stream that inflates to n (a multiple of 1 MiB)
// zero bytes: one gzip member of 1 MiB of zeros, repeated (RFC 1952
// allows several members; Go's reader reads them all as one stream).
func bomb(n int64) io.Reader {
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	zw.Write(make([]byte, 1<<20))
	zw.Close()
	rs := make([]io.Reader, n>>20)
	for i := range rs {
		rs[i] = bytes.NewReader(member.Bytes())
	}
	return io.MultiReader(rs...)
}

// countingReader counts what was read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestDecodeReport(t *testing.T) {
	js := appendixB(t)
	for _, mt := range []string{ContentTypeJSON, ContentTypeJSON + "; charset=utf-8"} {
		r, err := DecodeReport(mt, bytes.NewReader(js), Limits{})
		if err != nil || r.MediaType != ContentTypeJSON || r.JSONSize != int64(len(js)) {
			t.Fatalf("%s: %v %+v", mt, err, r)
		}
	}
	r, err := DecodeReport(ContentTypeGzip, bytes.NewReader(gz(t, js)), Limits{})
	if err != nil || r.MediaType != ContentTypeGzip || r.Report.ReportID != "5065427c-23d3-47ca-b6e0-946ea0e8c4be" {
		t.Fatalf("gzip: %v %+v", err, r)
	}
	ok, fail := r.Totals()
	if ok != 5326 || fail != 303 {
		t.Errorf("totals %d %d", ok, fail)
	}

	// Exactly at the limits is fine; one byte over is not.
	if _, err := DecodeReport(ContentTypeJSON, bytes.NewReader(js), Limits{MaxBody: int64(len(js))}); err != nil {
		t.Errorf("at the body limit: %v", err)
	}
	if _, err := DecodeReport(ContentTypeJSON, bytes.NewReader(js), Limits{MaxBody: int64(len(js)) - 1}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the body limit: %v", err)
	}
	if _, err := DecodeReport(ContentTypeGzip, bytes.NewReader(gz(t, js)), Limits{MaxJSON: int64(len(js))}); err != nil {
		t.Errorf("at the JSON limit: %v", err)
	}
	if _, err := DecodeReport(ContentTypeGzip, bytes.NewReader(gz(t, js)), Limits{MaxJSON: int64(len(js)) - 1}); !errors.Is(err, ErrDecompressionLimit) {
		t.Errorf("over the JSON limit: %v", err)
	}
	compressed := gz(t, js)
	if _, err := DecodeReport(ContentTypeGzip, bytes.NewReader(compressed), Limits{MaxBody: int64(len(compressed)) - 1}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("gzip over the body limit: %v", err)
	}

	// A gzip bomb: 10 GiB of zeros, about 10 MB compressed. It is refused
	// after MaxJSON bytes of output, having read only a small part of
	// the compressed stream.
	cr := &countingReader{r: bomb(10 << 30)}
	_, err = DecodeReport(ContentTypeGzip, cr, Limits{MaxJSON: 1 << 20})
	if !errors.Is(err, ErrDecompressionLimit) {
		t.Fatalf("bomb: %v", err)
	}
	if !strings.Contains(err.Error(), "more than 1048576 bytes of JSON") {
		t.Errorf("bomb error %q", err)
	}
	if cr.n > 64<<10 {
		t.Errorf("read %d compressed bytes of the bomb before refusing it", cr.n)
	}

	for _, c := range []struct {
		mt   string
		body []byte
		want error
	}{
		{ContentTypeGzip, js, ErrMalformed},
		{ContentTypeGzip, gz(t, js)[:40], ErrMalformed},
		{ContentTypeJSON, []byte("{"), ErrMalformed},
		{"application/json", js, ErrNotReport},
		{"application/tlsrpt+gzip; =", js, ErrNotReport},
	} {
		if _, err := DecodeReport(c.mt, bytes.NewReader(c.body), Limits{}); !errors.Is(err, c.want) {
			t.Errorf("%s %.10q: %v, want %v", c.mt, c.body, err, c.want)
		}
	}
}
