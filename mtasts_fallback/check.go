package mtastsfallback

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// CheckConn applies policy p to an SMTP connection to mxHost after
// STARTTLS (RFC 8461 §4 and §5). state is the client side's
// tls.ConnectionState; pass the zero value when the server did not offer
// STARTTLS or the handshake failed. The TLS session may have been set up
// with InsecureSkipVerify (as opportunistic SMTP clients do): CheckConn does
// the verification itself.
//
// With a nil policy or mode none it returns nil. Otherwise it requires, in
// this order:
//
//   - mxHost matches an mx pattern (§4.1; see Policy.CheckMX);
//   - a completed TLS handshake (§4, §5: reason starttls-not-supported);
//   - TLS 1.2 or later (§7.2: validation-failure, code
//     CodeTLSVersion);
//   - a certificate chain that is valid under PKIX (§4.2): the peer's
//     leaf, with the other certificates it sent as intermediates, must
//     chain to roots (nil means the system roots), be valid at now (the
//     zero time means time.Now) and name mxHost in a DNS subjectAltName,
//     with "*" matching only a whole left-most label (RFC 6125 rules, as
//     implemented by crypto/x509).
//
// Failures are *Error values with the RFC 8460 §4.3 result types
// certificate-host-mismatch, certificate-expired (also used for "not yet
// valid"), certificate-not-trusted (unknown CA, broken chain, name
// constraints, wrong key usage), starttls-not-supported or
// validation-failure. In testing mode the same error is returned with
// ReportOnly set, so that the caller can log it and still deliver.
//
// DANE, where it applies, takes precedence over MTA-STS (RFC 8461 §2);
// that choice is the caller's.
func CheckConn(p *Policy, mxHost string, state tls.ConnectionState, roots *x509.CertPool, now time.Time) error {
	if p == nil || p.Mode == ModeNone {
		return nil
	}
	if err := p.CheckMX(mxHost); err != nil {
		return err
	}
	reportOnly := p.Mode == ModeTesting
	fail := func(r Reason, code string, err error) error {
		return &Error{Reason: r, Code: code, ReportOnly: reportOnly, Err: err}
	}
	if !state.HandshakeComplete {
		return fail(ReasonSTARTTLSNotSupported, CodeNoTLS, fmt.Errorf("no TLS session with %s", mxHost))
	}
	if state.Version < tls.VersionTLS12 {
		return fail(ReasonValidationFailure, CodeTLSVersion,
			fmt.Errorf("%s negotiated %s, MTA-STS requires TLS 1.2 or later", mxHost, tls.VersionName(state.Version)))
	}
	certs := state.PeerCertificates
	if len(certs) == 0 {
		return fail(ReasonCertNotTrusted, CodeNoCertificate, fmt.Errorf("%s presented no certificate", mxHost))
	}
	if now.IsZero() {
		now = time.Now()
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		DNSName:       strings.TrimSuffix(mxHost, "."),
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		r, code := classifyCertError(err)
		return fail(r, code, err)
	}
	return nil
}

// classifyCertError maps a crypto/x509 verification error to an RFC 8460
// §4.3.1 result type and a Code.
func classifyCertError(err error) (Reason, string) {
	var (
		hn x509.HostnameError
		ua x509.UnknownAuthorityError
		ci x509.CertificateInvalidError
		sr x509.SystemRootsError
	)
	switch {
	case errors.As(err, &hn):
		return ReasonCertHostMismatch, CodeHostMismatch
	case errors.As(err, &ci):
		if ci.Reason == x509.Expired {
			return ReasonCertExpired, CodeExpired
		}
		return ReasonCertNotTrusted, CodeBadChain
	case errors.As(err, &ua), errors.As(err, &sr):
		return ReasonCertNotTrusted, CodeUnknownCA
	default:
		return ReasonValidationFailure, CodeVerify
	}
}
