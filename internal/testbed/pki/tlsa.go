package pki

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// Certificate usage field values (RFC 6698 §2.1.1; names from RFC 7218
// §2.1). SMTP clients use only DANE-TA and DANE-EE (RFC 7672 §3.1); the PKIX
// usages exist here so tests can publish records that clients must treat as
// unusable.
const (
	UsagePKIXTA uint8 = 0
	UsagePKIXEE uint8 = 1
	UsageDANETA uint8 = 2
	UsageDANEEE uint8 = 3
)

// Selector field values (RFC 6698 §2.1.2).
const (
	// SelectorCert matches the full DER certificate.
	SelectorCert uint8 = 0
	// SelectorSPKI matches the DER SubjectPublicKeyInfo.
	SelectorSPKI uint8 = 1
)

// Matching type field values (RFC 6698 §2.1.3).
const (
	// MatchFull carries the selected data itself.
	MatchFull uint8 = 0
	// MatchSHA256 carries the SHA-256 digest of the selected data.
	MatchSHA256 uint8 = 1
	// MatchSHA512 carries the SHA-512 digest of the selected data.
	MatchSHA512 uint8 = 2
)

// DefaultTLSATTL is the TTL written by TLSA and TLSARR.
const DefaultTLSATTL = 300

// TLSAOwner returns the owner name of the TLSA RRset for a TCP service on
// host, "_<port>._tcp.<host>." (RFC 6698 §3). SMTP uses port 25 (RFC 7672
// §2.2). The host is not validated here; TLSA and TLSARR validate the name
// they are given.
func TLSAOwner(host string, port uint16) string {
	return dns.Fqdn(fmt.Sprintf("_%d._tcp.%s", port, host))
}

// TLSAData computes the certificate association data of a TLSA record with
// the given selector and matching type for cert. It returns an error for
// selector or matching type values RFC 6698 does not define.
func TLSAData(selector, mtype uint8, cert *x509.Certificate) ([]byte, error) {
	if cert == nil {
		return nil, fmt.Errorf("pki: TLSA data for a nil certificate")
	}
	var data []byte
	switch selector {
	case SelectorCert:
		data = cert.Raw
	case SelectorSPKI:
		data = cert.RawSubjectPublicKeyInfo
	default:
		return nil, fmt.Errorf("pki: TLSA selector %d is not defined by RFC 6698 (use TLSARaw for arbitrary data)", selector)
	}
	switch mtype {
	case MatchFull:
		return append([]byte(nil), data...), nil
	case MatchSHA256:
		sum := sha256.Sum256(data)
		return sum[:], nil
	case MatchSHA512:
		sum := sha512.Sum512(data)
		return sum[:], nil
	default:
		return nil, fmt.Errorf("pki: TLSA matching type %d is not defined by RFC 6698 (use TLSARaw for arbitrary data)", mtype)
	}
}

// TLSA returns a TLSA record in presentation format, for example
//
//	_25._tcp.mx1.example. 300 IN TLSA 3 1 1 9f86d0...
//
// name is the owner name (see TLSAOwner); a missing final dot is added.
// Any usage value is accepted, so tests can publish records with unknown
// usages; selector and matching type must be ones TLSAData knows. Invalid
// input fails the test.
func TLSA(t testing.TB, name string, usage, selector, mtype uint8, cert *x509.Certificate) string {
	t.Helper()
	return TLSARR(t, name, usage, selector, mtype, cert).String()
}

// TLSARR is like TLSA but returns the parsed record, whose header (for
// example the TTL) the caller may adjust.
func TLSARR(t testing.TB, name string, usage, selector, mtype uint8, cert *x509.Certificate) *dns.TLSA {
	t.Helper()
	data, err := TLSAData(selector, mtype, cert)
	if err != nil {
		t.Fatal(err)
	}
	return tlsaRR(t, name, usage, selector, mtype, data)
}

// TLSARaw returns a TLSA record in presentation format carrying data
// unchanged, with any usage, selector and matching type. Use it for records
// that must not match anything or that use values RFC 6698 leaves
// undefined. data must not be empty; an invalid name or empty data fails
// the test.
func TLSARaw(t testing.TB, name string, usage, selector, mtype uint8, data []byte) string {
	t.Helper()
	return tlsaRR(t, name, usage, selector, mtype, data).String()
}

func tlsaRR(t testing.TB, name string, usage, selector, mtype uint8, data []byte) *dns.TLSA {
	t.Helper()
	if len(data) == 0 {
		t.Fatal("pki: TLSA certificate association data is empty")
	}
	fq, err := checkOwner(name)
	if err != nil {
		t.Fatal(err)
	}
	return &dns.TLSA{
		Hdr: dns.RR_Header{
			Name:   fq,
			Rrtype: dns.TypeTLSA,
			Class:  dns.ClassINET,
			Ttl:    DefaultTLSATTL,
		},
		Usage:        usage,
		Selector:     selector,
		MatchingType: mtype,
		Certificate:  hex.EncodeToString(data),
	}
}

// checkOwner validates a TLSA owner name and returns it fully qualified.
// Only plain ASCII names are accepted: labels of letters, digits, '-', '_'
// and '*', as host names and the "_port._tcp" prefix need. Presentation
// escapes are refused on purpose; they are never needed for test names and
// make it easy to render a record whose owner differs from the one meant.
func checkOwner(name string) (string, error) {
	fq := name
	if !strings.HasSuffix(fq, ".") {
		fq += "."
	}
	if fq == "." {
		return "", fmt.Errorf("pki: TLSA owner name %q is empty or the root", name)
	}
	// RFC 1035 §3.1: at most 255 octets in wire form, which is the
	// presentation length plus one for a name without escapes.
	if len(fq)+1 > 255 {
		return "", fmt.Errorf("pki: TLSA owner name %q is longer than 255 octets", name)
	}
	for _, label := range strings.Split(strings.TrimSuffix(fq, "."), ".") {
		if label == "" {
			return "", fmt.Errorf("pki: TLSA owner name %q has an empty label", name)
		}
		if len(label) > 63 {
			return "", fmt.Errorf("pki: TLSA owner name %q has a label longer than 63 octets", name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '*'
			if !ok {
				return "", fmt.Errorf("pki: TLSA owner name %q contains %q; only letters, digits, '-', '_' and '*' are allowed", name, c)
			}
		}
	}
	return fq, nil
}
