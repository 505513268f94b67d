package mtastsfallback

import (
	"fmt"
	"net/netip"
	"strings"
)

// maxNameLen is the longest textual domain name without the trailing dot
// (RFC 1035 §2.3.4: 255 octets on the wire).
const maxNameLen = 253

// NormalizeDomain checks that s is an ASCII host name and returns it in
// lower case without a trailing dot.
//
// Internationalized names must be converted to their A-label (Punycode)
// form by the caller first, for example with golang.org/x/net/idna's
// Lookup.ToASCII: RFC 8461 §3.2 has policies name MX hosts by A-label, and
// the policy host "mta-sts.<domain>" is looked up in DNS and checked against
// certificates in that form too. Address literals and IP addresses are
// refused: MTA-STS has no policy for them (RFC 8461 §3.4).
func NormalizeDomain(s string) (string, error) {
	d := strings.TrimSuffix(s, ".")
	if d == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidDomain)
	}
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			return "", fmt.Errorf("%w: %q is not ASCII; convert it to an A-label (IDNA ToASCII) first", ErrInvalidDomain, s)
		}
	}
	d = strings.ToLower(d)
	if err := checkHostname(d); err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrInvalidDomain, s, err)
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return "", fmt.Errorf("%w: %q is an IP address", ErrInvalidDomain, s)
	}
	return d, nil
}

// checkHostname validates a lower- or mixed-case ASCII name without trailing
// dot against the RFC 5321 §4.1.2 "Domain" syntax: dot-separated labels of
// letters, digits and hyphens that neither start nor end with a hyphen,
// 1 to 63 octets each, at most 253 octets in all.
func checkHostname(d string) error {
	if len(d) == 0 {
		return fmt.Errorf("empty name")
	}
	if len(d) > maxNameLen {
		return fmt.Errorf("name longer than %d characters", maxNameLen)
	}
	start := 0
	for i := 0; i <= len(d); i++ {
		if i < len(d) && d[i] != '.' {
			c := d[i]
			if !isAlnum(c) && c != '-' {
				return fmt.Errorf("character %q not allowed in a host name", c)
			}
			continue
		}
		label := d[start:i]
		switch {
		case len(label) == 0:
			return fmt.Errorf("empty label")
		case len(label) > 63:
			return fmt.Errorf("label %q longer than 63 characters", label)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("label %q starts or ends with a hyphen", label)
		}
		start = i + 1
	}
	return nil
}

func isAlnum(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// lowerASCII returns c in lower case if it is an ASCII capital letter.
func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// equalFoldASCII compares two strings, ignoring the case of ASCII letters
// only. (strings.EqualFold applies Unicode folding, under which the Kelvin
// sign U+212A equals "k": not what host name matching wants.)
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}
