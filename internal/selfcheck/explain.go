package selfcheck

import (
	"fmt"
	"net"
	"strings"

	"github.com/maddy-dane/daneguard/tlsrpt"
)

// Explain closes the loop between the TLS reports other MTAs send about
// this server (RFC 8460) and what the self-check sees: for a group of
// failed sessions reported for policyDomain (the TLSA base domain of a
// "tlsa" policy, RFC 8460 §1.1, or the domain of an "sts" one), it
// returns the self-check's finding that most likely caused them, or ""
// when the self-check finds nothing that fits (fixed since, another
// server, or a problem on the sender's side).
//
// The result type picks what to look at (RFC 8460 §4.3): certificate
// results the certificate the reported address serves, dnssec-invalid
// the TLSA lookup, starttls-not-supported the STARTTLS probe, sts-*
// results the MTA-STS policy and its "mx" lines.
func (r *Report) Explain(policyDomain string, f tlsrpt.ReceivedFailure) string {
	dom := trimDot(policyDomain)
	hi := r.host(trimDot(f.MXHost))
	if hi == nil {
		hi = r.host(dom)
	}
	var ap *AddrProbe
	if hi != nil && f.ReceivingIP != "" {
		for i := range hi.Addresses {
			if h, _, err := net.SplitHostPort(hi.Addresses[i].Address); err == nil && sameIP(h, f.ReceivingIP) {
				ap = &hi.Addresses[i]
			}
		}
	}
	sts := r.sts(dom)
	mx := nonEmptyStr(trimDot(f.MXHost), dom)
	switch f.ResultType {
	case tlsrpt.ResultCertificateHostMismatch, tlsrpt.ResultCertificateNotTrusted, tlsrpt.ResultValidationFailure,
		tlsrpt.ResultCertificateExpired, tlsrpt.ResultTLSAInvalid, tlsrpt.ResultSTSWebPKIInvalid:
		if sts != nil && contains(sts.Unlisted, mx) {
			return fmt.Sprintf("the MTA-STS policy of %s does not list the MX host %s", dom, mx)
		}
		if ap != nil {
			switch {
			case ap.Result == "mismatch":
				return fmt.Sprintf("%s serves a certificate that %s does not match: %s", ap.Address, hi.TLSAOwner, ap.Detail)
			case ap.Leaf != nil && !r.CheckedAt.IsZero() && ap.Leaf.NotAfter.Before(r.CheckedAt):
				return fmt.Sprintf("%s serves a certificate that expired on %s", ap.Address, ap.Leaf.NotAfter.UTC().Format("2006-01-02"))
			case ap.WebPKI != "" && ap.WebPKI != "ok" && (sts != nil && sts.State != "none" || f.ResultType != tlsrpt.ResultCertificateHostMismatch):
				return fmt.Sprintf("%s serves a certificate that fails WebPKI validation for %s (MTA-STS senders refuse it): %s", ap.Address, hi.Name, ap.WebPKI)
			case ap.Result != "match" && ap.Result != "no-tlsa" && ap.Detail != "":
				return fmt.Sprintf("%s: %s", ap.Address, ap.Detail)
			}
		}
		if hi != nil && strings.HasPrefix(hi.LoadedMatch, "MISMATCH") {
			return fmt.Sprintf("the certificate maddy loads does not match %s: %s", hi.TLSAOwner, strings.TrimPrefix(hi.LoadedMatch, "MISMATCH: "))
		}
	case tlsrpt.ResultDNSSECInvalid:
		if hi != nil && hi.TLSAStatus == "lookup-failed" {
			return fmt.Sprintf("the TLSA lookup for _25._tcp.%s fails: %s", hi.Name, hi.TLSAError)
		}
	case tlsrpt.ResultSTARTTLSNotSupported:
		if ap != nil && (ap.Result == "no-starttls" || ap.Result == "tls-failed" || ap.Result == "connect-failed") {
			return fmt.Sprintf("%s: %s", ap.Address, nonEmptyStr(ap.Detail, ap.Result))
		}
	case tlsrpt.ResultSTSPolicyFetchError, tlsrpt.ResultSTSPolicyInvalid:
		if sts != nil {
			switch {
			case sts.FetchError != "":
				return "fetching the MTA-STS policy fails: " + sts.FetchError
			case sts.TXTError != "":
				return "the _mta-sts TXT record is invalid: " + sts.TXTError
			}
		}
	}
	// Otherwise: a broken-now problem about the host or the address.
	for _, p := range r.Problems {
		if p.Severity != SevError {
			continue
		}
		if hi != nil && strings.Contains(p.Subject, hi.Name) && (f.ReceivingIP == "" || !strings.Contains(p.Subject, ":25") || strings.Contains(p.Subject, f.ReceivingIP)) {
			return p.Message
		}
	}
	return ""
}

func (r *Report) host(name string) *HostInfo {
	if name == "" {
		return nil
	}
	for i := range r.Hosts {
		if r.Hosts[i].Name == name {
			return &r.Hosts[i]
		}
	}
	return nil
}

func (r *Report) sts(domain string) *STSInfo {
	for _, d := range r.Domains {
		if d.Name == domain {
			return d.MTASTS
		}
	}
	return nil
}

func sameIP(a, b string) bool {
	x, y := net.ParseIP(a), net.ParseIP(b)
	return x != nil && x.Equal(y)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func nonEmptyStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
