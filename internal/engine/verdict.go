package engine

import (
	"crypto/tls"
	"fmt"
	"strings"

	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	"github.com/miekg/dns"
)

// Result is the outcome of one connection check, the "verdict" log field.
type Result string

const (
	// Authenticated: TLS with a server authenticated by DANE, MTA-STS,
	// WebPKI (verify) or a pin (fingerprint). maddy's TLS level becomes
	// "authenticated".
	Authenticated Result = "authenticated"
	// Encrypted: TLS without (required) authentication. Delivery goes on.
	Encrypted Result = "encrypted"
	// Plaintext: no TLS, and the policy allows that. Delivery goes on.
	Plaintext Result = "plaintext"
	// Deferred: the policy forbids using this server now. maddy tries the
	// next MX; if none is left the message stays queued (4xx).
	Deferred Result = "deferred"
)

// Reason is a stable, machine-readable explanation of a verdict: the
// "reason" log field and the "reason" label of the verdict metric.
type Reason string

// Reasons. The RFC 8460 failure type each maps to is given by ReportType.
const (
	ReasonDANEMatch          Reason = "dane-match"             // a usable TLSA record matched
	ReasonDANEMatchInsecure  Reason = "dane-match-insecure-mx" // matched, but the MX RRset was insecure
	ReasonDANEUnusable       Reason = "tlsa-unusable"          // TLSA present, none usable: TLS required, any certificate
	ReasonNoTLSA             Reason = "no-tlsa"                // DANE does not apply to this server
	ReasonInsecureMX         Reason = "insecure-mx"            // the MX host's address records are not DNSSEC-signed: DANE cannot apply
	ReasonSTSValid           Reason = "mtasts-valid"           // MTA-STS enforce policy satisfied
	ReasonSTSTestingFailure  Reason = "mtasts-testing-failure" // policy in testing mode failed; delivered anyway
	ReasonVerifyValid        Reason = "webpki-valid"           // level verify satisfied
	ReasonFingerprintMatch   Reason = "fingerprint-match"      // level fingerprint satisfied
	ReasonPolicyNone         Reason = "policy-none"            // the domain's level is none or may
	ReasonEncryptRequired    Reason = "encrypt-satisfied"      // level encrypt satisfied
	ReasonNoTLS              Reason = "starttls-not-supported"
	ReasonDANEMismatch       Reason = "tlsa-mismatch"         // no usable TLSA record matched the certificate
	ReasonDANERequired       Reason = "dane-required"         // dane-only, but DANE does not apply
	ReasonDNSFailure         Reason = "dns-failure"           // a lookup failed (SERVFAIL, timeout, ...)
	ReasonDNSSECBogus        Reason = "dnssec-invalid"        // the resolver said validation failed
	ReasonNoAddress          Reason = "no-address"            // the MX host has no address records
	ReasonSTSMXMismatch      Reason = "mtasts-mx-mismatch"    // enforce policy does not list this MX
	ReasonSTSCertInvalid     Reason = "mtasts-webpki-invalid" // enforce policy and no WebPKI-valid certificate
	ReasonSTSTLSVersion      Reason = "mtasts-tls-version"    // enforce policy and TLS older than 1.2
	ReasonSTSRequired        Reason = "mtasts-required"       // level mtasts, but no enforce policy
	ReasonSTSFetchFailure    Reason = "mtasts-fetch-failure"  // level mtasts and the policy cannot be fetched
	ReasonVerifyFailed       Reason = "webpki-invalid"        // level verify not satisfied
	ReasonFingerprintMissing Reason = "fingerprint-mismatch"  // level fingerprint not satisfied
	ReasonPolicyLookup       Reason = "policy-lookup-failure" // the policy table could not be read
)

// Mechanism names what decided the verdict: the "mechanism" log field.
type Mechanism string

const (
	MechDANE        Mechanism = "dane"
	MechMTASTS      Mechanism = "mta-sts"
	MechVerify      Mechanism = "verify"
	MechFingerprint Mechanism = "fingerprint"
	MechEncrypt     Mechanism = "encrypt"
	MechNone        Mechanism = "none"
)

// Verdict is the decision about one MX host or one connection, with
// everything the logs, metrics and reports need.
type Verdict struct {
	Domain    string
	MX        string
	MXSecure  bool
	Level     Level
	Result    Result
	Reason    Reason
	Mechanism Mechanism
	// Detail is a human-readable explanation (error text, ...).
	Detail string
	// TLSA is the TLSA record that authenticated the server
	// ("usage selector mtype" form), TLSABase its base domain.
	TLSA     string
	TLSABase string
	// TLSARRset is the MX host's DNSSEC-validated TLSA RRset when DANE
	// applied, for reports (RFC 8460 §4.5 policy strings).
	TLSARRset []*dns.TLSA
	// STS is the destination's MTA-STS lookup that this verdict was
	// reached with; nil when MTA-STS was not consulted.
	STS *mtastsfallback.Result
	// STSPolicyID is the id of the MTA-STS policy applied, STSMode its mode.
	STSPolicyID string
	STSMode     string
	// STSMXMatched: an enforce-mode MTA-STS policy lists this MX host
	// (maddy's MX level "mtasts").
	STSMXMatched bool
	TLSVersion   string
	// SMTP reply for Deferred verdicts.
	Code         int
	EnhancedCode [3]int
	Message      string
	// ReportType is the RFC 8460 §4.3 result type for failures, "" for
	// successes.
	ReportType string
}

// OK reports whether delivery may proceed.
func (v *Verdict) OK() bool { return v.Result != Deferred }

// String renders a verdict for debugging.
func (v *Verdict) String() string {
	return fmt.Sprintf("%s via %s: %s (%s)", v.Result, v.Mechanism, v.Reason, v.Detail)
}

// tlsVersionName renders a TLS version for the tls_version log field:
// crypto/tls's name without its space ("TLS1.2", "TLS1.3", as
// docs/logging.md documents), "none" without TLS.
func tlsVersionName(st tls.ConnectionState) string {
	if !st.HandshakeComplete {
		return "none"
	}
	return strings.ReplaceAll(tls.VersionName(st.Version), " ", "")
}
