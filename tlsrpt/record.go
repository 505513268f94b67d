package tlsrpt

import (
	"errors"
	"strings"
	"time"
)

// PolicyType is the "policy-type" of RFC 8460 §4.4.
type PolicyType string

// The three policy types RFC 8460 §4.4 allows.
const (
	PolicyTLSA     PolicyType = "tlsa"
	PolicySTS      PolicyType = "sts"
	PolicyNotFound PolicyType = "no-policy-found"
)

// Result types of RFC 8460 §4.3 (the IANA "STARTTLS Validation Result
// Types" registry, §6.6).
const (
	ResultSTARTTLSNotSupported    = "starttls-not-supported"
	ResultCertificateHostMismatch = "certificate-host-mismatch"
	ResultCertificateExpired      = "certificate-expired"
	ResultCertificateNotTrusted   = "certificate-not-trusted"
	ResultValidationFailure       = "validation-failure"
	ResultTLSAInvalid             = "tlsa-invalid"
	ResultDNSSECInvalid           = "dnssec-invalid"
	ResultDANERequired            = "dane-required"
	ResultSTSPolicyFetchError     = "sts-policy-fetch-error"
	ResultSTSPolicyInvalid        = "sts-policy-invalid"
	ResultSTSWebPKIInvalid        = "sts-webpki-invalid"
)

// Record is the outcome of one SMTP session (one connection attempt to one
// MX host) as far as TLS reporting is concerned.
type Record struct {
	// Domain is the recipient (next-hop) domain: its "_smtp._tls" record
	// says where the report about this session goes.
	Domain string
	// PolicyType is the policy applied to the session.
	PolicyType PolicyType
	// PolicyStrings is the applied policy, RFC 8460 §4.5: one TLSA RDATA
	// per string ("3 1 1 ab12..."), or the MTA-STS policy's lines.
	PolicyStrings []string
	// PolicyDomain is the domain the policy is defined for: the TLSA base
	// domain for DANE (RFC 8460 §1.1), the recipient domain otherwise.
	// Empty means Domain.
	PolicyDomain string
	// MXHost is the MX host name the session was with
	// ("receiving-mx-hostname").
	MXHost string
	// MXPatterns are the "mx" patterns of an applied MTA-STS policy; they
	// become the policy's "mx-host" (RFC 8460 §4.4). Empty for other
	// policy types, whose "mx-host" is MXHost.
	MXPatterns []string
	// SendingIP and ReceivingIP are the session's local and remote
	// addresses, when known.
	SendingIP   string
	ReceivingIP string
	// ReceivingHELO is the server's EHLO name, when known.
	ReceivingHELO string
	// Success is true for a session that negotiated policy-compliant TLS.
	Success bool
	// ResultType is the RFC 8460 §4.3 result type of a failure.
	ResultType string
	// FailureReason is the "failure-reason-code": a short error text.
	FailureReason string
}

// maxReasonLen bounds the failure-reason-code kept per aggregate.
const maxReasonLen = 200

// maxHELOLen bounds the receiving-mx-helo kept: the server chooses it, and
// a host name has at most 255 octets (RFC 5321 §4.5.3.1.2).
const maxHELOLen = 255

// maxKeyLen bounds the encoded aggregate key. bbolt refuses keys over
// 32 KiB, and such a key would fail the whole group commit, losing the
// records of other sessions; policy strings come from the remote domain
// (an MTA-STS policy may be 64 KiB), so an oversized record is refused
// on its own, before it joins a batch.
const maxKeyLen = 16 << 10

// maxDomainLen is the longest domain name (RFC 1035 §2.3.4).
const maxDomainLen = 253

// normalize checks r and puts it in canonical form.
func (r Record) normalize() (Record, error) {
	r.Domain = normDomain(r.Domain)
	if r.Domain == "" {
		return r, errors.New("tlsrpt: record without a domain")
	}
	r.PolicyDomain = normDomain(r.PolicyDomain)
	if r.PolicyDomain == "" {
		r.PolicyDomain = r.Domain
	}
	r.MXHost = normDomain(r.MXHost)
	switch r.PolicyType {
	case PolicyTLSA, PolicySTS, PolicyNotFound:
	case "":
		r.PolicyType = PolicyNotFound
	default:
		return r, errors.New("tlsrpt: unknown policy type " + string(r.PolicyType))
	}
	if r.Success {
		r.ResultType, r.FailureReason = "", ""
		r.SendingIP, r.ReceivingIP, r.ReceivingHELO = "", "", ""
	} else if r.ResultType == "" {
		// RFC 8460 §4.3.3: the catch-all category.
		r.ResultType = ResultValidationFailure
	}
	if len(r.FailureReason) > maxReasonLen {
		r.FailureReason = r.FailureReason[:maxReasonLen]
	}
	if len(r.ReceivingHELO) > maxHELOLen {
		r.ReceivingHELO = r.ReceivingHELO[:maxHELOLen]
	}
	if len(r.Domain) > maxDomainLen {
		return r, errors.New("tlsrpt: record domain too long")
	}
	if len(r.PolicyStrings) == 0 {
		r.PolicyStrings = nil
	}
	if len(r.MXPatterns) == 0 {
		r.MXPatterns = nil
	}
	return r, nil
}

func normDomain(s string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
}

// DayLayout is how days are written: the UTC date.
const DayLayout = "2006-01-02"

// Day returns the UTC day of t as "YYYY-MM-DD".
func Day(t time.Time) string { return t.UTC().Format(DayLayout) }

// ParseDay parses a "YYYY-MM-DD" day into its start, 00:00:00 UTC.
func ParseDay(s string) (time.Time, error) {
	return time.ParseInLocation(DayLayout, s, time.UTC)
}
