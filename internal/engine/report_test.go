package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/miekg/dns"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// TestTLSRPTRecordMapping: how each kind of verdict is recorded (the
// table in docs/tlsrpt.md). The receiving IP is added by the caller; the
// end-to-end test covers it.
func TestTLSRPTRecordMapping(t *testing.T) {
	type want struct {
		ok       bool
		typ      tlsrpt.PolicyType
		polDom   string
		success  bool
		result   string
		polStrs  []string
		recorded bool
	}
	for _, tc := range []struct {
		name string
		v    Verdict
		w    want
	}{
		{"dane-match", Verdict{Domain: "d.example", MX: "mx.d.example", Result: Authenticated, Reason: ReasonDANEMatch, Mechanism: MechDANE, TLSABase: "mx.d.example",
			TLSARRset: []*dns.TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Certificate: "0a1b"}, {Usage: 2, Selector: 0, MatchingType: 2, Certificate: "ff"}}},
			want{recorded: true, typ: tlsrpt.PolicyTLSA, polDom: "mx.d.example", success: true, polStrs: []string{"3 1 1 0A1B", "2 0 2 FF"}}},
		{"opportunistic", Verdict{Domain: "d.example", MX: "mx.d.example", Result: Encrypted, Reason: ReasonNoTLSA, Mechanism: MechNone},
			want{recorded: true, typ: tlsrpt.PolicyNotFound, polDom: "d.example", success: true}},
		{"plaintext", Verdict{Domain: "d.example", MX: "mx.d.example", Result: Plaintext, Reason: ReasonInsecureMX, Mechanism: MechNone},
			want{recorded: true, typ: tlsrpt.PolicyNotFound, polDom: "d.example", result: "starttls-not-supported"}},
		{"tlsa-unusable", Verdict{Domain: "d.example", MX: "mx.d.example", Result: Encrypted, Reason: ReasonDANEUnusable, Mechanism: MechDANE, TLSABase: "mx.d.example"},
			want{recorded: true, typ: tlsrpt.PolicyTLSA, polDom: "mx.d.example", result: "tlsa-invalid"}},
		{"dane-mismatch", Verdict{Domain: "d.example", MX: "mx.d.example", Result: Deferred, Reason: ReasonDANEMismatch, Mechanism: MechDANE, TLSABase: "mx.d.example", ReportType: "certificate-host-mismatch"},
			want{recorded: true, typ: tlsrpt.PolicyTLSA, polDom: "mx.d.example", result: "certificate-host-mismatch"}},
		{"dns-failure-not-reported", Verdict{Domain: "d.example", MX: "mx.d.example", Result: Deferred, Reason: ReasonDNSFailure},
			want{recorded: false}},
		{"dane-required", Verdict{Domain: "d.example", MX: "mx.d.example", Result: Deferred, Reason: ReasonDANERequired, ReportType: "dane-required"},
			want{recorded: true, typ: tlsrpt.PolicyTLSA, polDom: "mx.d.example", result: "dane-required"}},
		{"dnssec-invalid-mx", Verdict{Domain: "d.example", Result: Deferred, Reason: ReasonDNSSECBogus, ReportType: "dnssec-invalid"},
			want{recorded: true, typ: tlsrpt.PolicyTLSA, polDom: "d.example", result: "dnssec-invalid"}},
		{"sts-valid", Verdict{Domain: "d.example", MX: "mx.d.example", Result: Authenticated, Reason: ReasonSTSValid, Mechanism: MechMTASTS, STSPolicyID: "x", STSMode: "enforce"},
			want{recorded: true, typ: tlsrpt.PolicySTS, polDom: "d.example", success: true, polStrs: []string{"version: STSv1", "mode: enforce"}}},
		{"sts-testing-failure", Verdict{Domain: "d.example", MX: "mx.d.example", Result: Plaintext, Reason: ReasonSTSTestingFailure, STSPolicyID: "x", STSMode: "testing", ReportType: "starttls-not-supported"},
			want{recorded: true, typ: tlsrpt.PolicySTS, polDom: "d.example", result: "starttls-not-supported", polStrs: []string{"version: STSv1", "mode: testing"}}},
		{"sts-mismatch", Verdict{Domain: "d.example", MX: "mx.d.example", Result: Deferred, Reason: ReasonSTSMXMismatch, STSPolicyID: "x", STSMode: "enforce", ReportType: "validation-failure"},
			want{recorded: true, typ: tlsrpt.PolicySTS, polDom: "d.example", result: "validation-failure", polStrs: []string{"version: STSv1", "mode: enforce"}}},
		{"sts-fetch-error", Verdict{Domain: "d.example", MX: "mx.d.example", Result: Deferred, Reason: ReasonSTSFetchFailure, ReportType: "sts-policy-fetch-error"},
			want{recorded: true, typ: tlsrpt.PolicySTS, polDom: "d.example", result: "sts-policy-fetch-error"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, ok := ReportRecord(&tc.v)
			if ok != tc.w.recorded {
				t.Fatalf("recorded=%v, want %v (%+v)", ok, tc.w.recorded, rec)
			}
			if !ok {
				return
			}
			if rec.PolicyType != tc.w.typ || rec.PolicyDomain != tc.w.polDom || rec.Success != tc.w.success ||
				rec.ResultType != tc.w.result || !reflect.DeepEqual(rec.PolicyStrings, tc.w.polStrs) || rec.MXHost != tc.v.MX {
				t.Fatalf("record %+v, want %+v", rec, tc.w)
			}
			if !rec.Success && rec.FailureReason == "" {
				t.Fatal("failure without a failure-reason-code")
			}
		})
	}
}

// TestTLSRPTFailureReasonIsStable: sessions that fail on the same expired
// certificate at different times are one aggregate. crypto/x509 writes the
// verification time into its error, which used to make every such session
// a new failure detail (and a new store key).
func TestTLSRPTFailureReasonIsStable(t *testing.T) {
	ca := pki.NewCA(t, "tlsrpt test root")
	expiry := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	leaf := ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.d.example"}, NotBefore: expiry.AddDate(0, -3, 0), NotAfter: expiry})
	st := tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13, PeerCertificates: []*x509.Certificate{leaf.Cert}}

	verify := func(context.Context, string) (DomainPolicy, bool, error) {
		return DomainPolicy{Level: LevelVerify}, true, nil
	}
	var reasons, details []string
	for _, now := range []time.Time{expiry.Add(time.Hour), expiry.Add(49 * time.Hour)} {
		now := now
		eng, err := New(Config{DNS: NewCachedQuerier(failQuerier{}, policycache.Config{}, nil), Policies: verify, Roots: ca.Pool(), Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		dst := eng.Destination(context.Background(), "d.example")
		if v := eng.CheckMX(context.Background(), dst, "mx.d.example"); !v.OK() {
			t.Fatalf("CheckMX: %s", v)
		}
		v := eng.CheckConn(context.Background(), dst, "mx.d.example", st)
		if v.OK() || v.ReportType != "certificate-expired" {
			t.Fatalf("verdict %s (%s), want a certificate-expired deferral", v, v.ReportType)
		}
		rec, ok := ReportRecord(v)
		if !ok || rec.Success {
			t.Fatalf("not recorded as a failure: %+v", rec)
		}
		details = append(details, v.Detail)
		reasons = append(reasons, rec.FailureReason)
	}
	if details[0] == details[1] {
		t.Fatalf("the engine's details are identical (%q); the test no longer exercises time-stamped errors", details[0])
	}
	if reasons[0] != reasons[1] {
		t.Fatalf("failure-reason-code depends on the time of the session:\n%q\n%q", reasons[0], reasons[1])
	}
	if !strings.Contains(reasons[0], "expired") || !strings.Contains(reasons[0], expiry.Format(time.RFC3339)) {
		t.Fatalf("failure-reason-code %q lost the cause (expiry %s)", reasons[0], expiry.Format(time.RFC3339))
	}
}

type failQuerier struct{}

func (failQuerier) Query(context.Context, string, uint16) (*dane.Answer, error) {
	return nil, errors.New("no DNS in this test")
}

// TestStableReason: the per-attempt parts of error texts are dropped,
// everything else is kept.
func TestStableReason(t *testing.T) {
	for in, want := range map[string]string{
		"x509: certificate has expired or is not yet valid: current time 2026-03-01T01:00:00Z is after 2026-03-01T00:00:00Z":  "x509: certificate has expired or is not yet valid: not valid after 2026-03-01T00:00:00Z",
		"x509: certificate has expired or is not yet valid: current time 2026-03-01T01:00:00Z is before 2026-04-01T00:00:00Z": "x509: certificate has expired or is not yet valid: not valid before 2026-04-01T00:00:00Z",
		"mta-sts: sts-policy-fetch-error [network]: read tcp 192.0.2.1:54321->198.51.100.7:443: connection reset by peer":     "mta-sts: sts-policy-fetch-error [network]: read tcp 192.0.2.1->198.51.100.7:443: connection reset by peer",
		"read tcp [2001:db8::1]:40000->[2001:db8::2]:443: i/o timeout":                                                        "read tcp [2001:db8::1]->[2001:db8::2]:443: i/o timeout",
		"dane: no-match: none of 1 usable TLSA records matches the 1 presented certificates":                                  "dane: no-match: none of 1 usable TLSA records matches the 1 presented certificates",
	} {
		if got := stableReason(in); got != want {
			t.Errorf("stableReason(%q)\n = %q\nwant %q", in, got, want)
		}
	}
}
