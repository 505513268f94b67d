package dane

import (
	"errors"
	"strconv"
	"strings"
)

// TLSAState is what the TLSA search for one SMTP server found, reduced to
// what decides the connection's security (RFC 7672 §2.2).
type TLSAState uint8

// TLSA search outcomes.
const (
	// TLSANone: no secure TLSA RRset applies: the zone is insecure, or
	// DNSSEC proved that no TLSA records exist. DANE does not apply.
	TLSANone TLSAState = iota
	// TLSAUnusable: a secure, non-empty TLSA RRset whose records are all
	// unusable. TLS is mandatory, authentication is not possible.
	TLSAUnusable
	// TLSAUsable: a secure TLSA RRset with at least one usable record.
	// TLS and DANE authentication are mandatory.
	TLSAUsable
	// TLSALookupFailed: a lookup failed or gave a bogus or indeterminate
	// answer (RFC 7672 §2.1.1). The server must be treated as unreachable.
	TLSALookupFailed
)

// String returns a stable lower-case name: "none", "unusable", "usable",
// "lookup-failed".
func (s TLSAState) String() string {
	switch s {
	case TLSANone:
		return "none"
	case TLSAUnusable:
		return "unusable"
	case TLSAUsable:
		return "usable"
	case TLSALookupFailed:
		return "lookup-failed"
	}
	return "tlsa-state(" + strconv.Itoa(int(s)) + ")"
}

// Verdict is the DANE outcome for one connection to one SMTP server.
//
// Fail and Defer both mean: do not send mail over this connection; try the
// next MX host or keep the message queued and retry later (RFC 7672 §2.2).
// Neither is a reason to bounce a message by itself. They differ only in
// what they tell the operator: Defer says the DANE policy could not be
// determined (DNS trouble), Fail that the server did not meet it.
//
// The zero value is Defer, so that a forgotten verdict never lets mail
// through.
type Verdict uint8

// Verdicts.
const (
	// Defer: the TLSA records could not be obtained; the server counts as
	// unreachable (RFC 7672 §2.1.2).
	Defer Verdict = iota
	// Fail: the server did not meet its DANE policy: no TLS although TLSA
	// records exist, or usable TLSA records but authentication failed
	// (RFC 7672 §2.2, §3.2).
	Fail
	// NotApplicable: no secure TLSA records; DANE has nothing to say and
	// the MTA's other policies (opportunistic TLS, MTA-STS) decide,
	// including whether cleartext is acceptable.
	NotApplicable
	// EncryptedOnly: TLSA records exist but none is usable; the connection
	// is encrypted, which is all that can be required of it (RFC 7672
	// §2.2, RFC 7671 §10.3). Mail may be sent; the server is not
	// authenticated.
	EncryptedOnly
	// Authenticated: the server's certificate chain matched a usable TLSA
	// record. Mail may be sent.
	Authenticated
)

// String returns a stable lower-case name for log fields and metric labels:
// "defer", "fail", "not-applicable", "encrypted-only", "authenticated".
func (v Verdict) String() string {
	switch v {
	case Defer:
		return "defer"
	case Fail:
		return "fail"
	case NotApplicable:
		return "not-applicable"
	case EncryptedOnly:
		return "encrypted-only"
	case Authenticated:
		return "authenticated"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// Proceed reports whether mail may be sent over the connection as far as
// DANE is concerned.
func (v Verdict) Proceed() bool {
	return v == Authenticated || v == EncryptedOnly || v == NotApplicable
}

// Observation is what Decide needs to know about one connection attempt.
type Observation struct {
	// TLSA is the outcome of the TLSA search for the server.
	TLSA TLSAState
	// TLS is true when a TLS handshake (STARTTLS) completed on the
	// connection. Call Decide with TLS false to learn whether a cleartext
	// connection would be acceptable.
	TLS bool
	// Match and VerifyErr are the results of Verify on the server's chain,
	// when it was run.
	Match     *Match
	VerifyErr error
	// Mandatory is set when local policy requires DANE authentication for
	// the destination (RFC 7672 §6): anything less than Authenticated
	// then fails.
	Mandatory bool
}

// Decision is a verdict with its explanation.
type Decision struct {
	Verdict Verdict
	// Reason says why, for every verdict but Authenticated and
	// NotApplicable. With EncryptedOnly it is informational
	// (ReasonNoUsableRecords).
	Reason Reason
	// Match is the authenticating match, for Authenticated.
	Match *Match
	// Err is the verification error behind a Fail, if there was one.
	Err error
}

// String renders the decision for logs, e.g. "fail: name-mismatch: ...".
func (d Decision) String() string {
	s := d.Verdict.String()
	switch {
	case d.Err != nil:
		s += ": " + strings.TrimPrefix(d.Err.Error(), "dane: ")
	case d.Reason != "":
		s += ": " + string(d.Reason)
	case d.Match != nil:
		s += ": " + d.Match.String()
	}
	return s
}

// Decide applies RFC 7672 §2.2 and §3.2 to one connection:
//
//   - lookup failed: Defer, whatever happened on the connection;
//   - no secure TLSA: NotApplicable (Fail with ReasonDANERequired when
//     Mandatory);
//   - only unusable TLSA: TLS is required but not authentication:
//     EncryptedOnly with TLS, Fail without (never cleartext);
//   - usable TLSA: TLS and a successful Verify are required: Authenticated,
//     otherwise Fail with the verification reason.
//
// Contradictory input fails safe: a VerifyErr wins over a Match, a missing
// verification result fails, an unknown TLSA state defers.
//
// internal/engine decides every connection to a server with a secure TLSA
// RRset with Decide, and under mandatory DANE refuses a server before
// connecting when Decide would fail the best connection it could offer.
func Decide(o Observation) Decision {
	switch o.TLSA {
	case TLSALookupFailed:
		// RFC 7672 §2.1.2: the server is unreachable.
		return Decision{Verdict: Defer, Reason: ReasonLookupFailed}
	case TLSANone:
		if o.Mandatory {
			return Decision{Verdict: Fail, Reason: ReasonDANERequired}
		}
		return Decision{Verdict: NotApplicable}
	case TLSAUnusable:
		if o.Mandatory {
			// RFC 7672 §6: no usable TLSA records, delivery is delayed.
			return Decision{Verdict: Fail, Reason: ReasonNoUsableRecords}
		}
		if !o.TLS {
			return Decision{Verdict: Fail, Reason: ReasonTLSRequired}
		}
		return Decision{Verdict: EncryptedOnly, Reason: ReasonNoUsableRecords}
	case TLSAUsable:
		if !o.TLS {
			return Decision{Verdict: Fail, Reason: ReasonTLSRequired}
		}
		if o.VerifyErr != nil {
			reason := ReasonNotVerified
			var ve *VerifyError
			if errors.As(o.VerifyErr, &ve) {
				reason = ve.Reason
			}
			return Decision{Verdict: Fail, Reason: reason, Err: o.VerifyErr}
		}
		if o.Match == nil {
			return Decision{Verdict: Fail, Reason: ReasonNotVerified}
		}
		return Decision{Verdict: Authenticated, Match: o.Match}
	}
	return Decision{Verdict: Defer, Reason: ReasonInvalidState}
}
