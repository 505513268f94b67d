package tlsrpt

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// ownReport builds a report with daneguard's own sender code: records in
// a store, BuildReport, Gzip, ComposeEmail.
func ownReport(t *testing.T) (*Report, []byte, []byte) {
	t.Helper()
	st := openT(t, filepath.Join(t.TempDir(), "tlsrpt.db"))
	tlsa := []string{"3 1 1 0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B56664C5D3D6"}
	add := func(n int, r Record) {
		for i := 0; i < n; i++ {
			if err := st.Add(day1, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(5, Record{Domain: "example.org", PolicyType: PolicyTLSA, PolicyStrings: tlsa, PolicyDomain: "mx.example.org", MXHost: "mx.example.org", Success: true})
	add(2, Record{Domain: "example.org", PolicyType: PolicyTLSA, PolicyStrings: tlsa, PolicyDomain: "mx.example.org", MXHost: "mx.example.org",
		ResultType: ResultCertificateHostMismatch, ReceivingIP: "2001:db8::25", SendingIP: "198.51.100.7", ReceivingHELO: "other.example.net", FailureReason: "no TLSA record matched"})
	add(1, Record{Domain: "example.org", PolicyType: PolicySTS, PolicyStrings: []string{"version: STSv1", "mode: enforce", "mx: *.example.org", "max_age: 86400"},
		MXPatterns: []string{"*.example.org"}, MXHost: "mx2.example.org", ResultType: ResultSTSWebPKIInvalid, ReceivingIP: "192.0.2.26"})
	add(3, Record{Domain: "example.org", MXHost: "mx3.example.org", Success: true})
	add(4, Record{Domain: "example.org", MXHost: "mx3.example.org", ResultType: ResultSTARTTLSNotSupported})
	aggs, err := st.Aggregates(Day(day1), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	meta := ReportMeta{OrganizationName: "Sender Örg", ContactInfo: "tlsrpt@sender.example"}
	id := ReportID(Day(day1), "example.org", meta.Submitter())
	rep, err := BuildReport(meta, Day(day1), "example.org", id, aggs)
	if err != nil {
		t.Fatal(err)
	}
	gzb, err := rep.Gzip()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := ComposeEmail(EmailOptions{
		From: "tlsrpt-noreply@sender.example", To: []string{"tlsrpt@example.org"},
		Domain: "example.org", Submitter: meta.Submitter(), ReportID: id,
		Filename: rep.Filename(meta.Submitter(), "example.org"), Gzip: gzb, Date: day1.Add(25 * time.Hour),
		Organization: meta.OrganizationName, Start: rep.DateRange.Start, End: rep.DateRange.End,
	})
	if err != nil {
		t.Fatal(err)
	}
	return rep, gzb, msg
}

// TestRoundTripOwnSender: a report made by daneguard's sender (builder and
// §5.3 email composer) comes out of the receiver field for field equal.
func TestRoundTripOwnSender(t *testing.T) {
	rep, gzb, msg := ownReport(t)
	got, err := ParseEmail(bytes.NewReader(msg), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Warnings) != 0 {
		t.Errorf("warnings: %q", got.Warnings)
	}
	if !reflect.DeepEqual(got.Report, rep) {
		t.Errorf("round trip differs:\nsent %+v\ngot  %+v", rep, got.Report)
	}
	if got.MediaType != ContentTypeGzip || got.HeaderDomain != "example.org" || got.HeaderSubmitter != "sender.example" ||
		got.From != "tlsrpt-noreply@sender.example" || !strings.HasPrefix(got.MessageID, "tlsrpt.") {
		t.Errorf("metadata %+v", got)
	}
	// The same report by HTTPS (the sender's PostHTTPS body).
	h, stored := testHandler()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp := post(t, srv.URL, ContentTypeGzip, "", gzb)
	if resp != http.StatusCreated || len(*stored) != 1 || !reflect.DeepEqual((*stored)[0].Report, rep) {
		t.Errorf("https: %d %+v", resp, *stored)
	}
	js, _ := rep.JSON()
	if again, _, err := ParseReport(js); err != nil || !reflect.DeepEqual(again, rep) {
		t.Errorf("JSON round trip: %v", err)
	}
}

// email builds a report email by hand, with a part of the given type.
func email(hdr map[string]string, ctype, partType, partCTE string, part []byte) []byte {
	var b bytes.Buffer
	for _, k := range []string{"From", "To", "Subject", "TLS-Report-Domain", "TLS-Report-Submitter", "Message-ID"} {
		if v, ok := hdr[k]; ok {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	fmt.Fprintf(&b, "MIME-Version: 1.0\r\nContent-Type: %s; boundary=\"BOUND\"\r\n\r\n", ctype)
	b.WriteString("--BOUND\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nA TLS report.\r\n")
	fmt.Fprintf(&b, "--BOUND\r\nContent-Type: %s\r\nContent-Transfer-Encoding: %s\r\n\r\n", partType, partCTE)
	if partCTE == "base64" {
		enc := base64.StdEncoding.EncodeToString(part)
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\r\n")
	} else {
		b.Write(part)
		b.WriteString("\r\n")
	}
	b.WriteString("--BOUND--\r\n")
	return b.Bytes()
}

var stdHdr = map[string]string{
	"From": "Reports <sts-reporting@company-x.example>", "To": "tlsrpt@company-y.example",
	"Subject":           "Report Domain: company-y.example Submitter: company-x.example Report-ID: <5065427c@company-x.example>",
	"TLS-Report-Domain": "company-y.example", "TLS-Report-Submitter": "company-x.example", "Message-ID": "<m1@company-x.example>",
}

const reportCT = `multipart/report; report-type="tlsrpt"`

func TestParseEmail(t *testing.T) {
	js := appendixB(t)
	// Uncompressed JSON part, 7bit.
	got, err := ParseEmail(bytes.NewReader(email(stdHdr, reportCT, ContentTypeJSON, "7bit", js)), Limits{})
	if err != nil || got.MediaType != ContentTypeJSON || got.From != "sts-reporting@company-x.example" || got.MessageID != "m1@company-x.example" || len(got.Warnings) != 0 {
		t.Fatalf("json part: %v %+v", err, got)
	}
	// Headers missing or disagreeing, another multipart type: accepted
	// with warnings (the report is authoritative, §5.6).
	h := map[string]string{"From": "x@company-x.example", "TLS-Report-Domain": "other.example", "TLS-Report-Submitter": "wrong.example"}
	got, err = ParseEmail(bytes.NewReader(email(h, "multipart/mixed", ContentTypeGzip, "base64", gz(t, js))), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`message is multipart/mixed (report-type ""), not multipart/report; report-type=tlsrpt (§5.3)`,
		`TLS-Report-Submitter "wrong.example" is not the domain of contact-info "sts-reporting@company-x.example" (§5.3)`,
		`TLS-Report-Domain "other.example" is not a policy-domain of the report`,
	}
	if !reflect.DeepEqual(got.Warnings, want) {
		t.Errorf("warnings\n%q\nwant\n%q", got.Warnings, want)
	}
	got, err = ParseEmail(bytes.NewReader(email(map[string]string{}, reportCT, ContentTypeGzip, "base64", gz(t, js))), Limits{})
	if err != nil || !reflect.DeepEqual(got.Warnings, []string{"no TLS-Report-Submitter header field (§5.3)", "no TLS-Report-Domain header field (§5.3)"}) {
		t.Errorf("no headers: %v %q", err, got.Warnings)
	}

	// Refused.
	twoParts := email(stdHdr, reportCT, ContentTypeJSON, "7bit", js)
	twoParts = bytes.Replace(twoParts, []byte("--BOUND--\r\n"), []byte("--BOUND\r\nContent-Type: application/tlsrpt+json\r\n\r\n"+string(js)+"\r\n--BOUND--\r\n"), 1)
	for _, c := range []struct {
		name string
		msg  []byte
		lim  Limits
		want error
		text string
	}{
		{"no report part", email(stdHdr, reportCT, "application/pdf", "base64", js), Limits{}, ErrNotReport, "no application/tlsrpt+gzip or application/tlsrpt+json part"},
		{"plain text", []byte("Subject: hi\r\n\r\nhello\r\n"), Limits{}, ErrNotReport, "no application/tlsrpt+gzip"},
		{"two reports", twoParts, Limits{}, ErrMalformed, "more than one report part"},
		{"malformed json", email(stdHdr, reportCT, ContentTypeJSON, "7bit", js[:100]), Limits{}, ErrMalformed, "not JSON"},
		{"gzip not gzip", email(stdHdr, reportCT, ContentTypeGzip, "base64", js), Limits{}, ErrMalformed, "not gzip"},
		{"bad report", email(stdHdr, reportCT, ContentTypeJSON, "7bit", bytes.Replace(js, []byte(`"sts"`), []byte(`"dane"`), 1)), Limits{}, ErrMalformed, "policy-type"},
		{"message too large", email(stdHdr, reportCT, ContentTypeJSON, "7bit", js), Limits{MaxMessage: 1000}, ErrTooLarge, "message over 1000 bytes"},
		{"part too large", email(stdHdr, reportCT, ContentTypeGzip, "base64", gz(t, js)), Limits{MaxBody: 100}, ErrTooLarge, "body over 100 bytes"},
		{"inflates too large", email(stdHdr, reportCT, ContentTypeGzip, "base64", gz(t, js)), Limits{MaxJSON: 500}, ErrDecompressionLimit, "more than 500 bytes of JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseEmail(bytes.NewReader(c.msg), c.lim)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Errorf("error %v, want %v containing %q", err, c.want, c.text)
			}
		})
	}

	// A gzip bomb in an email: 4 GiB of zeros (about 4 MB base64'd),
	// refused at MaxJSON.
	var b bytes.Buffer
	zb, _ := io.ReadAll(bomb(4 << 30))
	b.Write(email(stdHdr, reportCT, ContentTypeGzip, "base64", zb))
	if _, err := ParseEmail(&b, Limits{MaxJSON: 1 << 20}); !errors.Is(err, ErrDecompressionLimit) {
		t.Errorf("bomb: %v", err)
	}
}

func testHandler() (*Handler, *[]*Received) {
	var stored []*Received
	seen := map[string]bool{}
	return &Handler{
		Limits: Limits{MaxBody: 64 << 10, MaxJSON: 256 << 10},
		Accept: func(ctx context.Context, r *Received) (bool, error) {
			if r.Report.ReportID == "fail-store" {
				return false, errors.New("disk full")
			}
			if seen[r.Report.ReportID] {
				return false, nil
			}
			seen[r.Report.ReportID] = true
			stored = append(stored, r)
			return true, nil
		},
	}, &stored
}

func post(t *testing.T, url, ctype, cenc string, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if cenc != "" {
		req.Header.Set("Content-Encoding", cenc)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestHandler(t *testing.T) {
	h, stored := testHandler()
	var refusals []string
	h.Refused = func(reason string, err error) { refusals = append(refusals, reason) }
	srv := httptest.NewServer(h)
	defer srv.Close()
	js := appendixB(t)
	big := bytes.Repeat([]byte(" "), 70<<10)
	for _, c := range []struct {
		name        string
		ctype, cenc string
		body        []byte
		want        int
	}{
		{"gzip", ContentTypeGzip, "", gz(t, js), http.StatusCreated},
		{"duplicate", ContentTypeGzip, "", gz(t, js), http.StatusOK},
		{"json", ContentTypeJSON, "", bytes.Replace(js, []byte("5065427c"), []byte("other-id"), 1), http.StatusCreated},
		{"json with content-encoding gzip", ContentTypeJSON + "; charset=utf-8", "gzip", gz(t, bytes.Replace(js, []byte("5065427c"), []byte("third-id"), 1)), http.StatusCreated},
		{"wrong type", "application/json", "", js, http.StatusUnsupportedMediaType},
		{"no type", "", "", js, http.StatusUnsupportedMediaType},
		{"wrong encoding", ContentTypeJSON, "br", js, http.StatusUnsupportedMediaType},
		{"malformed", ContentTypeJSON, "", js[:50], http.StatusBadRequest},
		{"not gzip", ContentTypeGzip, "", js, http.StatusBadRequest},
		{"too large", ContentTypeJSON, "", append(append([]byte{}, js...), big...), http.StatusRequestEntityTooLarge},
		{"bomb", ContentTypeGzip, "", gz(t, append(append([]byte{}, js...), bytes.Repeat(big, 4)...)), http.StatusRequestEntityTooLarge},
		{"store fails", ContentTypeJSON, "", bytes.Replace(js, []byte("5065427c-23d3-47ca-b6e0-946ea0e8c4be"), []byte("fail-store"), 1), http.StatusServiceUnavailable},
	} {
		if got := post(t, srv.URL, c.ctype, c.cenc, c.body); got != c.want {
			t.Errorf("%s: status %d, want %d", c.name, got, c.want)
		}
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET: %s allow %q", resp.Status, resp.Header.Get("Allow"))
	}
	if len(*stored) != 3 {
		t.Errorf("%d stored, want 3", len(*stored))
	}
	want := []string{"not-a-report", "not-a-report", "not-a-report", "malformed", "malformed", "too-large", "decompression-limit", "store-error", "method"}
	if !reflect.DeepEqual(refusals, want) {
		t.Errorf("refusals %q\nwant %q", refusals, want)
	}
}
