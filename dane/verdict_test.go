package dane

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	match := &Match{Record: Record{DANEEE, SPKI, SHA2_256, bytesOf(32, 1)}}
	nameErr := &VerifyError{Reason: ReasonNameMismatch, Detail: "names"}
	wrapped := fmt.Errorf("smtp: %w", &VerifyError{Reason: ReasonExpired})
	other := errors.New("handshake aborted")
	cases := []struct {
		name    string
		o       Observation
		verdict Verdict
		reason  Reason
	}{
		// RFC 7672 §2.2: lookup errors make the server unreachable.
		{"lookup failed", Observation{TLSA: TLSALookupFailed}, Defer, ReasonLookupFailed},
		{"lookup failed despite TLS and match", Observation{TLSA: TLSALookupFailed, TLS: true, Match: match}, Defer, ReasonLookupFailed},

		// No secure TLSA: DANE does not apply, cleartext included.
		{"none cleartext", Observation{TLSA: TLSANone}, NotApplicable, ""},
		{"none TLS", Observation{TLSA: TLSANone, TLS: true}, NotApplicable, ""},
		{"none verify failed", Observation{TLSA: TLSANone, TLS: true, VerifyErr: nameErr}, NotApplicable, ""},
		{"none mandatory", Observation{TLSA: TLSANone, TLS: true, Mandatory: true}, Fail, ReasonDANERequired},

		// Only unusable TLSA: TLS required, authentication not.
		{"unusable cleartext", Observation{TLSA: TLSAUnusable}, Fail, ReasonTLSRequired},
		{"unusable TLS", Observation{TLSA: TLSAUnusable, TLS: true}, EncryptedOnly, ReasonNoUsableRecords},
		{"unusable TLS mandatory", Observation{TLSA: TLSAUnusable, TLS: true, Mandatory: true}, Fail, ReasonNoUsableRecords},

		// Usable TLSA: TLS and authentication required.
		{"usable cleartext", Observation{TLSA: TLSAUsable}, Fail, ReasonTLSRequired},
		{"usable cleartext with match", Observation{TLSA: TLSAUsable, Match: match}, Fail, ReasonTLSRequired},
		{"usable authenticated", Observation{TLSA: TLSAUsable, TLS: true, Match: match}, Authenticated, ""},
		{"usable authenticated mandatory", Observation{TLSA: TLSAUsable, TLS: true, Match: match, Mandatory: true}, Authenticated, ""},
		{"usable name mismatch", Observation{TLSA: TLSAUsable, TLS: true, VerifyErr: nameErr}, Fail, ReasonNameMismatch},
		{"usable wrapped error", Observation{TLSA: TLSAUsable, TLS: true, VerifyErr: wrapped}, Fail, ReasonExpired},
		{"usable foreign error", Observation{TLSA: TLSAUsable, TLS: true, VerifyErr: other}, Fail, ReasonNotVerified},
		{"usable not verified", Observation{TLSA: TLSAUsable, TLS: true}, Fail, ReasonNotVerified},
		{"usable error wins over match", Observation{TLSA: TLSAUsable, TLS: true, Match: match, VerifyErr: nameErr}, Fail, ReasonNameMismatch},

		{"unknown state", Observation{TLSA: 42, TLS: true, Match: match}, Defer, ReasonInvalidState},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(c.o)
			if d.Verdict != c.verdict || d.Reason != c.reason {
				t.Fatalf("Decide = %s / %q, want %s / %q", d.Verdict, d.Reason, c.verdict, c.reason)
			}
			if d.Verdict == Authenticated && d.Match != c.o.Match {
				t.Error("match not passed on")
			}
			if d.Verdict == Fail && c.o.VerifyErr != nil && c.o.TLSA == TLSAUsable && c.o.TLS && d.Err != c.o.VerifyErr {
				t.Error("verification error not passed on")
			}
			// Only the three delivering verdicts proceed, and never
			// without TLS when TLSA records exist.
			if d.Verdict.Proceed() && (c.o.TLSA == TLSAUsable || c.o.TLSA == TLSAUnusable) && !c.o.TLS {
				t.Error("cleartext allowed despite TLSA records")
			}
		})
	}
}

func TestVerdictNames(t *testing.T) {
	want := map[Verdict]string{Defer: "defer", Fail: "fail", NotApplicable: "not-applicable", EncryptedOnly: "encrypted-only", Authenticated: "authenticated", 9: "verdict(9)"}
	for v, s := range want {
		if v.String() != s {
			t.Errorf("%d.String() = %q, want %q", v, v.String(), s)
		}
	}
	proceed := map[Verdict]bool{Defer: false, Fail: false, NotApplicable: true, EncryptedOnly: true, Authenticated: true, 9: false}
	for v, p := range proceed {
		if v.Proceed() != p {
			t.Errorf("%s.Proceed() = %v", v, v.Proceed())
		}
	}
	var zero Verdict
	if zero != Defer {
		t.Error("zero Verdict must be Defer")
	}
	states := map[TLSAState]string{TLSANone: "none", TLSAUnusable: "unusable", TLSAUsable: "usable", TLSALookupFailed: "lookup-failed", 7: "tlsa-state(7)"}
	for s, n := range states {
		if s.String() != n {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), n)
		}
	}
}

func TestDecisionString(t *testing.T) {
	f := sharedFixture(t)
	_, err := Verify(chainOf(f.otherName, f.inter), []Record{rec(DANETA, SPKI, SHA2_256, f.inter.cert)}, opts())
	d := Decide(Observation{TLSA: TLSAUsable, TLS: true, VerifyErr: err})
	if s := d.String(); !strings.HasPrefix(s, "fail: name-mismatch: ") || !strings.Contains(s, "mail.example.net") {
		t.Errorf("String() = %q", s)
	}
	if s := Decide(Observation{TLSA: TLSAUnusable}).String(); s != "fail: tls-required" {
		t.Errorf("String() = %q", s)
	}
	m, err := Verify(chainOf(f.leaf), []Record{rec(DANEEE, SPKI, SHA2_256, f.leaf.cert)}, opts())
	if err != nil {
		t.Fatal(err)
	}
	if s := Decide(Observation{TLSA: TLSAUsable, TLS: true, Match: m}).String(); s != "authenticated: DANE-EE(3) SPKI(1) SHA2-256(1)" {
		t.Errorf("String() = %q", s)
	}
	if s := Decide(Observation{}).String(); s != "not-applicable" {
		t.Errorf("String() = %q", s)
	}
}
