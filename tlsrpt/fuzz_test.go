package tlsrpt

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzParsePolicy: the parser never panics, and what it accepts renders
// back to a record that parses to the same URIs.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"v=TLSRPTv1;rua=mailto:reports@example.com",
		"v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt",
		"v=TLSRPTv1 ; rua=mailto:a@example.com , https://r.example/x ;",
		"v=TLSRPTv1;rua=mailto:a@example.com;ext=1",
		"v=TLSRPTv1;rua=mailto:a@example.com%2Cb@example.org?subject=x",
		"v=TLSRPTv1;;",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rec string) {
		p, err := ParsePolicy(rec)
		if err != nil {
			return
		}
		if len(p.RUA) == 0 {
			t.Fatalf("%q: accepted without URIs", rec)
		}
		for _, u := range p.RUA {
			if u.Scheme != "https" && u.Scheme != "mailto" {
				t.Fatalf("%q: scheme %q", rec, u.Scheme)
			}
		}
		again, err := ParsePolicy(p.String())
		if err != nil {
			t.Fatalf("%q rendered as %q does not parse: %v", rec, p.String(), err)
		}
		a, b := []string{}, []string{}
		for _, u := range p.RUA {
			a = append(a, u.String())
		}
		for _, u := range again.RUA {
			b = append(b, u.String())
		}
		if strings.Join(a, ",") != strings.Join(b, ",") {
			t.Fatalf("%q: %v then %v", rec, a, b)
		}
	})
}

// FuzzParseReport: the JSON parser never panics, and a report it accepts
// encodes (with the sender's encoder) to JSON it accepts again, equal.
func FuzzParseReport(f *testing.F) {
	f.Add(appendixB(f))
	f.Add([]byte(`{"organization-name":"o","date-range":{"start-datetime":"2026-01-01T00:00:00Z","end-datetime":"2026-01-01T23:59:59Z"},"contact-info":"a@b","report-id":"r","policies":[]}`))
	f.Add([]byte(`{"policies":[{"policy":{"mx-host":["a"]},"summary":{"total-failure-session-count":-0}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, _, err := ParseReport(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		js, err := rep.JSON()
		if err != nil {
			t.Fatalf("accepted report does not encode: %v", err)
		}
		again, _, err := ParseReport(js)
		if err != nil {
			t.Fatalf("re-encoded report refused: %v\n%s", err, js)
		}
		// Times are compared at the second: the sender writes whole
		// seconds.
		rep.DateRange.Start = rep.DateRange.Start.Truncate(time.Second)
		rep.DateRange.End = rep.DateRange.End.Truncate(time.Second)
		if !reflect.DeepEqual(normEmpty(rep), normEmpty(again)) {
			t.Fatalf("round trip differs:\n%+v\n%+v", rep, again)
		}
	})
}

// normEmpty maps the empty slices the encoder omits to nil.
func normEmpty(r *Report) *Report {
	c := *r
	c.Policies = append([]PolicyResult(nil), r.Policies...)
	for i := range c.Policies {
		p := &c.Policies[i]
		if len(p.Policy.PolicyString) == 0 {
			p.Policy.PolicyString = nil
		}
		if len(p.FailureDetails) == 0 {
			p.FailureDetails = nil
		}
		if s, ok := p.Policy.MXHost.(string); ok && s == "" {
			p.Policy.MXHost = nil
		}
		if s, ok := p.Policy.MXHost.([]string); ok && len(s) == 0 {
			p.Policy.MXHost = nil
		}
	}
	if c.Policies == nil {
		c.Policies = []PolicyResult{}
	}
	return &c
}

// FuzzParseEmail: the email parser never panics on any message, and
// every error it returns is one of the sentinel errors.
func FuzzParseEmail(f *testing.F) {
	js := appendixB(f)
	f.Add(email(stdHdr, reportCT, ContentTypeJSON, "7bit", js))
	f.Add(email(stdHdr, reportCT, ContentTypeGzip, "base64", gz(f, js)))
	f.Add([]byte("Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: application/tlsrpt+gzip\r\n\r\n\x1f\x8b\r\n--x--\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		r, err := ParseEmail(bytes.NewReader(msg), Limits{MaxMessage: 1 << 20, MaxBody: 256 << 10, MaxJSON: 1 << 20})
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotReport) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrDecompressionLimit) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if r.Report == nil || r.Report.ReportID == "" {
			t.Fatalf("accepted without a report: %+v", r)
		}
	})
}
