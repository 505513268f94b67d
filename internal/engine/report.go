package engine

import (
	"cmp"
	"fmt"
	"regexp"
	"strings"

	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// What each verdict contributes to the daily TLS report (RFC 8460), the
// table in docs/tlsrpt.md. ReportRecord is pure; the caller adds the
// receiving and sending IPs of failures (CachedQuerier.ReceivingIP,
// SendingIP) and stores the record.

var daneResultTypes = map[string]bool{
	tlsrpt.ResultTLSAInvalid: true, tlsrpt.ResultDNSSECInvalid: true, tlsrpt.ResultDANERequired: true,
}

var stsResultTypes = map[string]bool{
	tlsrpt.ResultSTSPolicyFetchError: true, tlsrpt.ResultSTSPolicyInvalid: true, tlsrpt.ResultSTSWebPKIInvalid: true,
}

// ReportRecord maps a verdict to a report record. ok=false means the
// verdict is not reported: transient DNS trouble and local problems
// (RFC 8460 §4.3.4).
func ReportRecord(v *Verdict) (rec tlsrpt.Record, ok bool) {
	rec = tlsrpt.Record{Domain: v.Domain, PolicyDomain: v.Domain, MXHost: v.MX, PolicyType: tlsrpt.PolicyNotFound}
	switch {
	case !v.OK():
		if v.ReportType == "" {
			return rec, false
		}
		rec.ResultType = v.ReportType
		rec.FailureReason = failureReason(v)
	case v.Reason == ReasonSTSTestingFailure:
		// RFC 8461 §5: a testing-mode policy failed; the message went out,
		// the failure is reported.
		rec.ResultType = cmp.Or(v.ReportType, tlsrpt.ResultValidationFailure)
		rec.FailureReason = failureReason(v)
	case v.Result == Plaintext:
		// Delivered, but without TLS: the receiving domain wants to know.
		rec.ResultType = tlsrpt.ResultSTARTTLSNotSupported
		rec.FailureReason = string(v.Reason)
	case v.Reason == ReasonDANEUnusable:
		// RFC 8460 §4.3.2.1: none of the TLSA records was usable. The
		// message went out encrypted, but the DANE policy is broken.
		rec.ResultType = tlsrpt.ResultTLSAInvalid
		rec.FailureReason = string(v.Reason)
	default:
		rec.Success = true
	}

	// The MTA-STS policy of the domain, when MTA-STS is on and DANE does
	// not govern this host: the one the decision was made with, not a
	// fresh lookup, since the report must describe the policy applied.
	var sts *mtastsfallback.Result
	if v.Mechanism != MechDANE {
		sts = v.STS
	}
	if sts != nil && sts.Policy == nil && sts.Err != nil && rec.Success {
		// RFC 8461 §6 / RFC 8460 §4.3.2.2: the domain announces MTA-STS
		// but its policy could not be obtained or is invalid. Delivery
		// went on without it; the domain is told.
		if rt := string(mtastsfallback.ReasonOf(sts.Err)); stsResultTypes[rt] {
			rec.Success = false
			rec.ResultType = rt
			rec.FailureReason = sts.Err.Error()
		}
	}

	switch {
	case v.Mechanism == MechDANE || daneResultTypes[rec.ResultType]:
		rec.PolicyType = tlsrpt.PolicyTLSA
		// RFC 8460 §1.1: for DANE the policy domain is the TLSA base
		// domain.
		rec.PolicyDomain = cmp.Or(v.TLSABase, v.MX, v.Domain)
		rec.PolicyStrings = tlsaStrings(v)
	case v.Mechanism == MechMTASTS || v.STSPolicyID != "" || stsResultTypes[rec.ResultType]:
		rec.PolicyType = tlsrpt.PolicySTS
		rec.PolicyDomain = v.Domain
		rec.PolicyStrings = stsPolicyStrings(v)
		if sts != nil && sts.Policy != nil {
			// RFC 8460 §4.5: the policy as published, one line per
			// string; its mx patterns are the "mx-host".
			rec.PolicyStrings = sts.Policy.Lines()
			rec.MXPatterns = append([]string(nil), sts.Policy.MX...)
		}
	}
	return rec, true
}

func failureReason(v *Verdict) string {
	if v.Detail != "" {
		return stableReason(v.Detail)
	}
	return string(v.Reason)
}

// x509Clock matches the verification time crypto/x509 writes into its
// validity errors ("current time 2026-05-01T10:00:00Z is after ...").
var x509Clock = regexp.MustCompile(`current time \S+ is (after|before) `)

// localPort matches the local address of a failed connection
// ("192.0.2.1:54321->"), new for every attempt.
var localPort = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]):\d+->`)

// stableReason drops the per-attempt parts of a failure text. The
// failure-reason-code is part of what the store aggregates on (RFC 8460
// §4.4 failure details): with the verification time in it, every session
// with an expired certificate became an aggregate of its own, growing the
// store and the report by one entry per second of failures. The
// certificate's own date, the cause, is kept; so is the remote address of
// a failed policy fetch, without the local port.
func stableReason(s string) string {
	s = x509Clock.ReplaceAllString(s, "not valid $1 ")
	return localPort.ReplaceAllString(s, "$1->")
}

// tlsaStrings returns the TLSA RRset the verdict was reached with, in the
// RFC 8460 §4.5 form ("3 1 1 <HEX>").
func tlsaStrings(v *Verdict) []string {
	if len(v.TLSARRset) == 0 {
		return nil
	}
	out := make([]string, 0, len(v.TLSARRset))
	for _, rr := range v.TLSARRset {
		out = append(out, fmt.Sprintf("%d %d %d %s", rr.Usage, rr.Selector, rr.MatchingType, strings.ToUpper(rr.Certificate)))
	}
	return out
}

// stsPolicyStrings renders what the verdict says about the MTA-STS policy
// applied, for when the policy itself is not at hand.
func stsPolicyStrings(v *Verdict) []string {
	var out []string
	if v.STSPolicyID != "" || v.STSMode != "" {
		out = append(out, "version: STSv1")
	}
	if v.STSMode != "" {
		out = append(out, "mode: "+v.STSMode)
	}
	return out
}

// ProviderDomain is the domain of an MX host whose "_smtp._tls" record
// also receives the DANE results of sessions with that host: the host
// name without its first label (mx1.provider.example -> provider.example),
// when at least two labels remain. A hosting provider runs the MX hosts of
// many recipient domains and publishes TLSA records under its own name
// (the TLSA base domain is its host name, RFC 8460 §1.1), so it is the
// one able to act on a DANE failure; the recipient domain may publish no
// TLSRPT record at all. The parent is taken as written, without a
// public-suffix list: the zone the MX host lives in is the one its
// operator controls, and a TLD is never asked (docs/tlsrpt.md).
func ProviderDomain(mx string) string {
	mx = CanonicalDomain(mx)
	_, parent, ok := strings.Cut(mx, ".")
	if !ok || !strings.Contains(parent, ".") {
		return ""
	}
	return parent
}

// ProviderRecord is the copy of a DANE record that goes to the MX host's
// domain (ProviderDomain), when that differs from the recipient domain.
// Only records of policy type tlsa qualify: an MTA-STS or no-policy result
// is about the recipient domain's own policy. The caller records it only
// if that domain publishes a TLSRPT record.
func ProviderRecord(rec tlsrpt.Record) (tlsrpt.Record, bool) {
	if rec.PolicyType != tlsrpt.PolicyTLSA {
		return rec, false
	}
	pd := ProviderDomain(rec.MXHost)
	if pd == "" || pd == CanonicalDomain(rec.Domain) {
		return rec, false
	}
	out := rec
	out.Domain = pd
	if out.PolicyDomain == "" {
		out.PolicyDomain = rec.Domain
	}
	return out, true
}
