package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustJSON(t *testing.T, r *Report) map[string]any {
	t.Helper()
	js, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return sortStrings(out)
}

func sortStrings(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// TestBuildReportFields checks every field of RFC 8460 §4.4 in the JSON.
func TestBuildReportFields(t *testing.T) {
	st := openT(t, filepath.Join(t.TempDir(), "tlsrpt.db"))
	add := func(n int, r Record) {
		for i := 0; i < n; i++ {
			if err := st.Add(day1, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	tlsa := []string{"3 1 1 0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B56664C5D3D6"}
	add(5, Record{Domain: "Example.ORG", PolicyType: PolicyTLSA, PolicyStrings: tlsa, PolicyDomain: "mx.example.org.", MXHost: "MX.example.org", Success: true})
	add(2, Record{Domain: "example.org", PolicyType: PolicyTLSA, PolicyStrings: tlsa, PolicyDomain: "mx.example.org", MXHost: "mx.example.org",
		ResultType: ResultValidationFailure, ReceivingIP: "192.0.2.25", SendingIP: "198.51.100.7", FailureReason: "no TLSA record matched"})
	add(1, Record{Domain: "example.org", PolicyType: PolicySTS, PolicyStrings: []string{"version: STSv1", "mode: enforce", "mx: *.example.org", "max_age: 86400"},
		MXPatterns: []string{"*.example.org"}, MXHost: "mx2.example.org", ResultType: ResultSTSWebPKIInvalid})
	add(3, Record{Domain: "example.org", MXHost: "mx3.example.org", Success: true})
	add(4, Record{Domain: "example.org", MXHost: "mx3.example.org", ResultType: ResultSTARTTLSNotSupported})
	add(9, okRec("other.example", "mx.other.example")) // another domain: not in this report

	aggs, err := st.Aggregates("2026-11-30", "example.org")
	if err != nil {
		t.Fatal(err)
	}
	meta := ReportMeta{OrganizationName: "Sender Org", ContactInfo: "tlsrpt@sender.example"}
	id := ReportID("2026-11-30", "example.org", meta.Submitter())
	rep, err := BuildReport(meta, "2026-11-30", "example.org", id, aggs)
	if err != nil {
		t.Fatal(err)
	}
	m := mustJSON(t, rep)
	if got := keys(m); !reflect.DeepEqual(got, []string{"contact-info", "date-range", "organization-name", "policies", "report-id"}) {
		t.Fatalf("top-level fields %v", got)
	}
	if m["organization-name"] != "Sender Org" || m["contact-info"] != "tlsrpt@sender.example" || m["report-id"] != "20261130.example.org@sender.example" {
		t.Fatalf("metadata: %v", m)
	}
	dr := m["date-range"].(map[string]any)
	if dr["start-datetime"] != "2026-11-30T00:00:00Z" || dr["end-datetime"] != "2026-11-30T23:59:59Z" || len(dr) != 2 {
		t.Fatalf("date-range %v", dr)
	}
	pols := m["policies"].([]any)
	if len(pols) != 3 {
		t.Fatalf("%d policies, want 3: %v", len(pols), pols)
	}
	// Sorted by policy-domain, then type: example.org/no-policy-found,
	// example.org/sts, mx.example.org/tlsa.
	np := pols[0].(map[string]any)
	wantPolicy := func(p map[string]any, want map[string]any) {
		t.Helper()
		got := p["policy"].(map[string]any)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("policy %v, want %v", got, want)
		}
	}
	wantSummary := func(p map[string]any, ok, fail float64) {
		t.Helper()
		s := p["summary"].(map[string]any)
		if s["total-successful-session-count"] != ok || s["total-failure-session-count"] != fail || len(s) != 2 {
			t.Fatalf("summary %v, want %v/%v", s, ok, fail)
		}
	}
	wantPolicy(np, map[string]any{"policy-type": "no-policy-found", "policy-domain": "example.org", "mx-host": "mx3.example.org"})
	wantSummary(np, 3, 4)
	fd := np["failure-details"].([]any)
	if len(fd) != 1 || !reflect.DeepEqual(fd[0], map[string]any{
		"result-type": "starttls-not-supported", "receiving-mx-hostname": "mx3.example.org", "failed-session-count": float64(4),
	}) {
		t.Fatalf("no-policy failure-details %v", fd)
	}

	sts := pols[1].(map[string]any)
	wantPolicy(sts, map[string]any{"policy-type": "sts", "policy-domain": "example.org",
		"policy-string": []any{"version: STSv1", "mode: enforce", "mx: *.example.org", "max_age: 86400"},
		"mx-host":       []any{"*.example.org"}})
	wantSummary(sts, 0, 1)

	dane := pols[2].(map[string]any)
	wantPolicy(dane, map[string]any{"policy-type": "tlsa", "policy-domain": "mx.example.org",
		"policy-string": []any{tlsa[0]}, "mx-host": "mx.example.org"})
	wantSummary(dane, 5, 2)
	fd = dane["failure-details"].([]any)
	if len(fd) != 1 || !reflect.DeepEqual(fd[0], map[string]any{
		"result-type": "validation-failure", "sending-mta-ip": "198.51.100.7", "receiving-mx-hostname": "mx.example.org",
		"receiving-ip": "192.0.2.25", "failed-session-count": float64(2), "failure-reason-code": "no TLSA record matched",
	}) {
		t.Fatalf("tlsa failure-details %v", fd)
	}
	if _, ok := dane["failure-details"]; !ok {
		t.Fatal("failure-details missing")
	}
	if _, ok := (pols[0].(map[string]any))["failure-details"]; !ok {
		t.Fatal("failure-details missing")
	}
	// A policy without failures has no failure-details array.
	rep2, _ := BuildReport(meta, "2026-11-30", "other.example", "x@y", mustAggs(t, st, "other.example"))
	p2 := mustJSON(t, rep2)["policies"].([]any)[0].(map[string]any)
	if _, ok := p2["failure-details"]; ok {
		t.Fatalf("failure-details present without failures: %v", p2)
	}

	// Filename (§5.1) and gzip (§5.2).
	dayStart := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC).Unix()
	if fn := rep.Filename(meta.Submitter(), "example.org"); fn != fmt.Sprintf("sender.example!example.org!%d!%d.json.gz", dayStart, dayStart+86399) {
		t.Fatalf("filename %q", fn)
	}
	gz, err := rep.Gzip()
	if err != nil || gz[0] != 0x1f || gz[1] != 0x8b {
		t.Fatalf("gzip: %v % x", err, gz[:2])
	}
	zr, _ := gzip.NewReader(bytes.NewReader(gz))
	plain, _ := io.ReadAll(zr)
	js, _ := rep.JSON()
	if !bytes.Equal(plain, js) {
		t.Fatal("gzip does not hold the JSON")
	}
}

func mustAggs(t *testing.T, st *Store, domain string) []Aggregate {
	a, err := st.Aggregates("2026-11-30", domain)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestComposeEmail checks the RFC 8460 §5.3 message.
func TestComposeEmail(t *testing.T) {
	gz := []byte{0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	gz = append(gz, bytes.Repeat([]byte{0xAA}, 200)...)
	raw, err := ComposeEmail(EmailOptions{
		From: "tlsrpt@sender.example", To: []string{"reports@example.org"}, Domain: "example.org",
		Submitter: "sender.example", ReportID: "20261130.example.org@sender.example",
		Filename: "sender.example!example.org!1!2.json.gz", Gzip: gz, Date: day1,
		Start: day1, End: day1.Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Header
	if h.Get("TLS-Report-Domain") != "example.org" || h.Get("TLS-Report-Submitter") != "sender.example" {
		t.Fatalf("report headers: %v", h)
	}
	subj := strings.Join(strings.Fields(h.Get("Subject")), " ")
	if subj != "Report Domain: example.org Submitter: sender.example Report-ID: <20261130.example.org@sender.example>" {
		t.Fatalf("subject %q", subj)
	}
	if h.Get("From") != "<tlsrpt@sender.example>" || h.Get("To") != "<reports@example.org>" || h.Get("MIME-Version") != "1.0" {
		t.Fatalf("headers %v", h)
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("content-type %q", h.Get("Content-Type"))
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	p1, err := mr.NextPart()
	if err != nil || !strings.HasPrefix(p1.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("first part: %v %v", p1.Header, err)
	}
	p2, err := mr.NextPart()
	if err != nil || p2.Header.Get("Content-Type") != "application/tlsrpt+gzip" || p2.Header.Get("Content-Transfer-Encoding") != "base64" {
		t.Fatalf("second part: %v %v", p2.Header, err)
	}
	if _, dp, _ := mime.ParseMediaType(p2.Header.Get("Content-Disposition")); dp["filename"] != "sender.example!example.org!1!2.json.gz" {
		t.Fatalf("disposition %q", p2.Header.Get("Content-Disposition"))
	}
	b64, _ := io.ReadAll(p2)
	got, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(b64)))
	if err != nil || !bytes.Equal(got, gz) {
		t.Fatalf("attachment differs: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\r\n") {
		if len(line) > 78 {
			t.Fatalf("line longer than 78: %q", line)
		}
	}
}

// TestComposeEmailNonASCIIOrganization: an organization name outside
// ASCII is not sent as 8-bit data in a part declared us-ascii/7bit.
func TestComposeEmailNonASCIIOrganization(t *testing.T) {
	raw, err := ComposeEmail(EmailOptions{
		From: "tlsrpt@sender.example", To: []string{"reports@example.org"}, Domain: "example.org",
		Submitter: "sender.example", ReportID: "20261130.example.org@sender.example",
		Filename: "sender.example!example.org!1!2.json.gz", Gzip: []byte{0x1f, 0x8b}, Date: day1,
		Organization: "Müller Straße AG", Start: day1, End: day1.Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range raw {
		if c >= 0x80 {
			t.Fatalf("8-bit byte at %d: %q", i, raw[max(0, i-20):min(len(raw), i+20)])
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	p1, err := multipart.NewReader(msg.Body, params["boundary"]).NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if _, cp, _ := mime.ParseMediaType(p1.Header.Get("Content-Type")); cp["charset"] != "utf-8" {
		t.Fatalf("text part %v", p1.Header)
	}
	text, _ := io.ReadAll(p1) // multipart decodes quoted-printable
	if !strings.Contains(string(text), "Müller Straße AG") {
		t.Fatalf("text part %q", text)
	}
}
