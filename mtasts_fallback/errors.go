package mtastsfallback

import (
	"errors"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"strings"
)

// Reason is an RFC 8460 §4.3 result type. Every failure this package
// reports carries one, so that the caller can log it and, if it implements
// TLSRPT, count it in the right bucket of an aggregate report.
type Reason string

// Result types from RFC 8460 §4.3 used by this package, as package
// tlsrpt defines them.
const (
	// ReasonSTARTTLSNotSupported: the MX did not offer or complete TLS
	// (RFC 8460 §4.3.1).
	ReasonSTARTTLSNotSupported Reason = tlsrpt.ResultSTARTTLSNotSupported
	// ReasonCertHostMismatch: the MX certificate does not name the MX host
	// (RFC 8460 §4.3.1).
	ReasonCertHostMismatch Reason = tlsrpt.ResultCertificateHostMismatch
	// ReasonCertExpired: the MX certificate is outside its validity period
	// (RFC 8460 §4.3.1). Go reports "not yet valid" the same way; the
	// Error text tells the two apart.
	ReasonCertExpired Reason = tlsrpt.ResultCertificateExpired
	// ReasonCertNotTrusted: the MX certificate does not chain to a trusted
	// root, violates name constraints, or has an otherwise broken chain
	// (RFC 8460 §4.3.1).
	ReasonCertNotTrusted Reason = tlsrpt.ResultCertificateNotTrusted
	// ReasonValidationFailure: any other policy validation failure (RFC
	// 8460 §4.3.3): TLS older than 1.2, or an MX host the policy does not
	// list. Error.Code says which.
	ReasonValidationFailure Reason = tlsrpt.ResultValidationFailure
	// ReasonPolicyFetchError: the policy could not be retrieved: DNS
	// failure, connection failure, timeout, HTTP status other than 200,
	// a redirect, a wrong media type, an oversized body
	// (RFC 8460 §4.3.2.2).
	ReasonPolicyFetchError Reason = tlsrpt.ResultSTSPolicyFetchError
	// ReasonPolicyInvalid: the TXT record or the policy body is not valid
	// (RFC 8460 §4.3.2.2).
	ReasonPolicyInvalid Reason = tlsrpt.ResultSTSPolicyInvalid
	// ReasonWebPKIInvalid: the policy host's certificate failed PKIX
	// validation (RFC 8460 §4.3.2.2).
	ReasonWebPKIInvalid Reason = tlsrpt.ResultSTSWebPKIInvalid
)

// Codes are short, stable words placed in Error.Code. They play the role of
// RFC 8460's "failure-reason-code": a hint finer than the Reason.
const (
	CodeMXNotInPolicy  = "mx-not-in-policy"
	CodeTLSVersion     = "tls-version-too-old"
	CodeNoTLS          = "no-tls"
	CodeNoCertificate  = "no-certificate"
	CodeHostMismatch   = "host-mismatch"
	CodeExpired        = "expired"
	CodeUnknownCA      = "unknown-authority"
	CodeBadChain       = "invalid-chain"
	CodeVerify         = "verify-error"
	CodeDNS            = "dns-error"
	CodeTXTInvalid     = "txt-invalid"
	CodeConnect        = "connect-error"
	CodeTimeout        = "timeout"
	CodeRedirect       = "http-redirect"
	CodeHTTPStatus     = "http-status"
	CodeContentType    = "content-type"
	CodeBodyTooLarge   = "body-too-large"
	CodeRead           = "read-error"
	CodePolicySyntax   = "policy-syntax"
	CodeInvalidDomain  = "invalid-domain"
	CodeManagerClosing = "manager-closed"
)

// Error is a classified MTA-STS failure. Use errors.As to get at it, or
// the helpers ReasonOf and IsReportOnly.
type Error struct {
	// Reason is the RFC 8460 §4.3 result type.
	Reason Reason
	// Code is one of the Code constants: a finer, stable hint.
	Code string
	// ReportOnly is true when the policy that produced the failure is in
	// "testing" mode (RFC 8461 §5): the failure is to be logged and
	// reported, and the message delivered anyway.
	ReportOnly bool
	// Err is the underlying cause, if any.
	Err error
}

// Error implements the error interface.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("mta-sts: ")
	if e.ReportOnly {
		b.WriteString("(testing mode, report only) ")
	}
	b.WriteString(string(e.Reason))
	if e.Code != "" {
		b.WriteString(" [")
		b.WriteString(e.Code)
		b.WriteString("]")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of the first *Error in err's chain, or "" if
// there is none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// IsReportOnly reports whether err is a policy failure from a "testing"
// mode policy, which must not stop delivery (RFC 8461 §5).
func IsReportOnly(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.ReportOnly
}

// Sentinel errors. They are wrapped, so test with errors.Is.
var (
	// ErrNoRecord: the domain publishes no MTA-STS TXT record. A
	// LookupTXT function may also return it (or any error for which a
	// *net.DNSError reports IsNotFound) to say "no such record".
	ErrNoRecord = errors.New("no MTA-STS TXT record")
	// ErrMultipleRecords: more than one TXT record starts with "v=STSv1";
	// RFC 8461 §3.1 says to treat the domain as having no policy.
	ErrMultipleRecords = errors.New("more than one MTA-STS TXT record")
	// ErrInvalidTXT: the single MTA-STS TXT record is syntactically
	// invalid (RFC 8461 §3.1).
	ErrInvalidTXT = errors.New("invalid MTA-STS TXT record")
	// ErrInvalidPolicy: the policy body or a stored policy is invalid
	// (RFC 8461 §3.2).
	ErrInvalidPolicy = errors.New("invalid MTA-STS policy")
	// ErrInvalidDomain: a domain name is not a usable ASCII (A-label)
	// host name.
	ErrInvalidDomain = errors.New("invalid domain name")
)
