package engine

import (
	"strings"

	"golang.org/x/net/idna"
)

// CanonicalDomain returns the form of a domain name the engine works with:
// lower case, without the trailing dot, internationalized labels as
// A-labels ("xn--..."). DNS lookups need A-labels, and so do reports
// (RFC 8460 §4.4) and MTA-STS (RFC 8461 §3); maddy v0.8.2 hands policies
// the U-label form of a recipient domain. A name that is not a valid IDNA
// name is only lower-cased: its lookups then fail and the delivery waits.
func CanonicalDomain(domain string) string {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if a, err := idna.Lookup.ToASCII(domain); err == nil && a != "" {
		return a
	}
	return domain
}
