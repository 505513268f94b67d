package tlsrpt

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// received builds an entry: a report by org about domain for day, with
// ok successes and the given failure details.
func received(id, org, domain, day string, ok uint64, fds ...FailureDetail) ReceivedEntry {
	start, _ := ParseDay(day)
	var fail uint64
	for _, f := range fds {
		fail += f.FailedSessionCount
	}
	return ReceivedEntry{
		Report: Report{OrganizationName: org, ContactInfo: "r@" + strings.ToLower(strings.ReplaceAll(org, " ", "")) + ".example", ReportID: id,
			DateRange: DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)},
			Policies: []PolicyResult{{
				Policy:         ReportPolicy{PolicyType: PolicyTLSA, PolicyString: []string{"3 1 1 AB"}, PolicyDomain: domain, MXHost: "mx." + domain},
				Summary:        Summary{TotalSuccessful: ok, TotalFailure: fail},
				FailureDetails: fds,
			}}},
		ReceivedAt: start.Add(30 * time.Hour), Transport: "email", MediaType: ContentTypeGzip, DKIM: "pass", DKIMDomain: "x.example",
	}
}

func mismatch(ip string, n uint64) FailureDetail {
	return FailureDetail{ResultType: ResultCertificateHostMismatch, ReceivingIP: ip, ReceivingMXHostname: "mx.example.org", FailedSessionCount: n, FailureReasonCode: "no TLSA match"}
}

func TestReceivedStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "received.db")
	st, err := OpenReceivedStore(path, StoreOptions{OnCorrupt: func(m string, err error) { t.Errorf("corrupt: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	a := received("id-a", "Google", "example.org", "2026-11-28", 10, mismatch("2001:db8::25", 2))
	b := received("id-b", "Microsoft", "example.org", "2026-11-29", 5)
	b.DKIM, b.Transport = "", "https"
	c := received("id-c", "Google", "example.org", "2026-11-30", 7)
	for _, e := range []ReceivedEntry{a, b, c} {
		if added, err := st.AddReceived(ctx, e); err != nil || !added {
			t.Fatalf("%s: %v %v", e.Report.ReportID, added, err)
		}
	}
	// The same report-id again (even with other content) counts once.
	dup := received("id-a", "Google", "example.org", "2026-11-28", 999)
	if added, err := st.AddReceived(ctx, dup); err != nil || added {
		t.Fatalf("duplicate: %v %v", added, err)
	}
	// Reopened: everything read back field for field.
	st, err = OpenReceivedStore(path, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.ReceivedSince(ctx, "2026-11-28")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !reflect.DeepEqual(got[0], a) || !reflect.DeepEqual(got[1], b) || !reflect.DeepEqual(got[2], c) {
		t.Fatalf("read back:\n%+v\nwant\n%+v", got, []ReceivedEntry{a, b, c})
	}
	if got, _ := st.ReceivedSince(ctx, "2026-11-29"); len(got) != 2 || got[0].Report.ReportID != "id-b" {
		t.Errorf("since 11-29: %+v", got)
	}
	// Retention: keep 2 days up to 2026-11-30.
	cut := RetentionCutoff(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), 2)
	if cut != "2026-11-29" {
		t.Fatalf("cutoff %s", cut)
	}
	if n, err := st.PruneReceived(ctx, cut); err != nil || n != 1 {
		t.Fatalf("prune: %d %v", n, err)
	}
	if got, _ := st.ReceivedSince(ctx, "0000-00-00"); len(got) != 2 {
		t.Errorf("after prune: %d", len(got))
	}
	// After pruning, the pruned id is new again.
	if added, _ := st.AddReceived(ctx, a); !added {
		t.Errorf("pruned id not re-added")
	}
	if _, err := st.AddReceived(ctx, ReceivedEntry{}); err == nil {
		t.Errorf("empty report-id accepted")
	}
}

func TestReceivedStoreCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "received.db")
	if err := os.WriteFile(path, bytes.Repeat([]byte("junk"), 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	var moved string
	st, err := OpenReceivedStore(path, StoreOptions{OnCorrupt: func(m string, err error) { moved = m }})
	if err != nil {
		t.Fatal(err)
	}
	if moved == "" {
		t.Fatal("corrupt file not moved aside")
	}
	if added, err := st.AddReceived(context.Background(), received("x", "o", "example.org", "2026-11-30", 1)); err != nil || !added {
		t.Fatalf("fresh store: %v %v", added, err)
	}
}

func TestSummarizeReceived(t *testing.T) {
	a := received("id-a", "Google", "Example.ORG.", "2026-11-30", 10, mismatch("2001:db8::25", 2), mismatch("2001:db8::25", 1))
	a.Report.Policies[0].FailureDetails[1].FailureReasonCode = "other reason"
	b := received("id-b", "Microsoft", "example.org", "2026-11-30", 5, FailureDetail{ResultType: ResultSTARTTLSNotSupported, ReceivingIP: "192.0.2.25", FailedSessionCount: 4})
	b.DKIM = "fail"
	b.Report.Policies[0].Summary.TotalFailure = 6 // 2 more than its details
	c := received("id-c", "Google", "example.net", "2026-11-29", 3)
	days := SummarizeReceived([]ReceivedEntry{a, b, c}, SummaryOptions{
		Explain: func(dom string, f ReceivedFailure) string {
			if dom == "example.org" && f.ReceivingIP == "2001:db8::25" {
				return "2001:db8::25 serves a certificate no TLSA record matches"
			}
			return ""
		},
	})
	want := []ReceivedDay{
		{Day: "2026-11-29", PolicyDomain: "example.net", Reports: 1, Successful: 3, ByResultType: map[string]uint64{},
			Organizations: []ReceivedOrg{{Name: "Google", Reports: 1, Successful: 3}}, Failures: []ReceivedFailure{}},
		{Day: "2026-11-30", PolicyDomain: "example.org", Reports: 2, Successful: 15, Failed: 9, Unsigned: 1,
			ByResultType:  map[string]uint64{ResultCertificateHostMismatch: 3, ResultSTARTTLSNotSupported: 4, "unspecified": 2},
			Organizations: []ReceivedOrg{{Name: "Google", Reports: 1, Successful: 10, Failed: 3}, {Name: "Microsoft", Reports: 1, Successful: 5, Failed: 6}},
			Failures: []ReceivedFailure{
				{ResultType: ResultSTARTTLSNotSupported, ReceivingIP: "192.0.2.25", Organization: "Microsoft", Sessions: 4},
				{ResultType: ResultCertificateHostMismatch, ReceivingIP: "2001:db8::25", MXHost: "mx.example.org", Organization: "Google", Sessions: 3,
					Reasons: []string{"no TLSA match", "other reason"}, LikelyCause: "2001:db8::25 serves a certificate no TLSA record matches"},
				{ResultType: "unspecified", Organization: "Microsoft", Sessions: 2},
			}},
	}
	if !reflect.DeepEqual(days, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", days, want)
	}

	var buf bytes.Buffer
	if err := WriteReceivedText(&buf, days); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, s := range []string{
		"2026-11-30 example.org: 2 report(s), 15 sessions successful, 9 failed (1 report(s) by email without a DKIM pass)",
		"reported by: Google (10 ok, 3 failed), Microsoft (5 ok, 6 failed)",
		"certificate-host-mismatch  2001:db8::25  mx.example.org  Google        no TLSA match; other reason; likely cause: 2001:db8::25 serves",
		"starttls-not-supported     192.0.2.25    -               Microsoft",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("text lacks %q:\n%s", s, text)
		}
	}
	buf.Reset()
	if err := WriteReceivedJSON(&buf, days); err != nil {
		t.Fatal(err)
	}
	var back []ReceivedDay
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || !reflect.DeepEqual(back, want) {
		t.Errorf("JSON: %v\n%s", err, buf.String())
	}
	buf.Reset()
	WriteReceivedJSON(&buf, nil)
	if strings.TrimSpace(buf.String()) != "[]" {
		t.Errorf("empty JSON %q", buf.String())
	}
}

func TestReceivedMetrics(t *testing.T) {
	m := NewReceivedMetrics("maddy", "daneguard", MetricsOptions{PolicyDomains: []string{"example.org"}, MaxOrganizations: 2})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	a := received("id-a", "Google", "example.org", "2026-11-30", 10, mismatch("2001:db8::25", 2))
	b := received("id-b", "Microsoft", "EXAMPLE.org", "2026-11-30", 5, FailureDetail{ResultType: "brand-new-type", FailedSessionCount: 1})
	c := received("id-c", "Third Org", "example.net", "2026-11-30", 7)
	c.Report.Policies[0].Summary.TotalFailure = 4
	for _, e := range []ReceivedEntry{a, b, c} {
		m.Accepted("email", &e.Report)
	}
	m.Duplicate("email")
	m.Refused("https", RefusedDecompress)
	m.Refused("email", RefusedMalformed)
	m.Refused("email", RefusedMalformed)
	want := `
# HELP maddy_daneguard_tlsrpt_received_reports_total TLS reports (RFC 8460) received about the local domains, by transport (email, https) and result (accepted, duplicate, or why refused).
# TYPE maddy_daneguard_tlsrpt_received_reports_total counter
maddy_daneguard_tlsrpt_received_reports_total{result="accepted",transport="email"} 3
maddy_daneguard_tlsrpt_received_reports_total{result="decompression-limit",transport="https"} 1
maddy_daneguard_tlsrpt_received_reports_total{result="duplicate",transport="email"} 1
maddy_daneguard_tlsrpt_received_reports_total{result="malformed",transport="email"} 2
# HELP maddy_daneguard_tlsrpt_received_sessions_total Sessions counted by accepted TLS reports from other MTAs, by policy domain, reporting organization and result (success or the RFC 8460 result type).
# TYPE maddy_daneguard_tlsrpt_received_sessions_total counter
maddy_daneguard_tlsrpt_received_sessions_total{organization="Google",policy_domain="example.org",result="certificate-host-mismatch"} 2
maddy_daneguard_tlsrpt_received_sessions_total{organization="Google",policy_domain="example.org",result="success"} 10
maddy_daneguard_tlsrpt_received_sessions_total{organization="Microsoft",policy_domain="example.org",result="other"} 1
maddy_daneguard_tlsrpt_received_sessions_total{organization="Microsoft",policy_domain="example.org",result="success"} 5
maddy_daneguard_tlsrpt_received_sessions_total{organization="other",policy_domain="other",result="success"} 7
maddy_daneguard_tlsrpt_received_sessions_total{organization="other",policy_domain="other",result="unspecified"} 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
