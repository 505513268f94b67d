package dnsbed

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// canonicalName validates a domain name and returns its canonical form:
// fully qualified, ASCII letters lowered (RFC 4034 §6.2), and escapes written
// the way miekg/dns prints them, so that two spellings of one name always
// give the same string. Relative names are not accepted here.
func canonicalName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("empty domain name")
	}
	if !dns.IsFqdn(name) {
		return "", fmt.Errorf("domain name %q is not fully qualified (add a trailing dot)", name)
	}
	wire, err := nameWire(name)
	if err != nil {
		return "", err
	}
	lowerASCII(wire)
	out, _, err := dns.UnpackDomainName(wire, 0)
	if err != nil {
		return "", fmt.Errorf("domain name %q: %v", name, err)
	}
	return out, nil
}

// nameWire returns the uncompressed wire form of a fully qualified name.
func nameWire(name string) ([]byte, error) {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(name, buf, 0, nil, false)
	if err != nil {
		return nil, fmt.Errorf("domain name %q: %v", name, err)
	}
	return buf[:n], nil
}

func lowerASCII(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
}

// wireLabels splits an uncompressed wire-format name into its labels, root
// label excluded, leftmost label first.
func wireLabels(wire []byte) [][]byte {
	var labels [][]byte
	for off := 0; off < len(wire); {
		l := int(wire[off])
		if l == 0 || off+1+l > len(wire) {
			break
		}
		labels = append(labels, wire[off+1:off+1+l])
		off += 1 + l
	}
	return labels
}

// canonicalCompare orders two domain names as RFC 4034 §6.1 prescribes:
// label by label starting from the rightmost, each label compared as a
// lowercased octet string, with a name that runs out of labels sorting
// first. It returns -1, 0 or +1. Names that cannot be packed sort by their
// text so that the function is total.
func canonicalCompare(a, b string) int {
	wa, errA := nameWire(dns.Fqdn(a))
	wb, errB := nameWire(dns.Fqdn(b))
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	lowerASCII(wa)
	lowerASCII(wb)
	la, lb := wireLabels(wa), wireLabels(wb)
	for i, j := len(la)-1, len(lb)-1; ; i, j = i-1, j-1 {
		switch {
		case i < 0 && j < 0:
			return 0
		case i < 0:
			return -1
		case j < 0:
			return 1
		}
		if c := bytes.Compare(la[i], lb[j]); c != 0 {
			return c
		}
	}
}

// parentName returns the name with its leftmost label removed; the parent of
// the root is the root.
func parentName(name string) string {
	off, end := dns.NextLabel(name, 0)
	if end {
		return "."
	}
	return name[off:]
}

// ancestors returns name followed by each of its ancestors up to and
// including stop (which must be an ancestor of name or name itself).
func ancestors(name, stop string) []string {
	out := []string{name}
	for name != stop && name != "." {
		name = parentName(name)
		out = append(out, name)
	}
	return out
}

// absoluteName turns a name given relative to origin (or "@") into a fully
// qualified canonical name.
func absoluteName(name, origin string) (string, error) {
	switch {
	case name == "@":
		return origin, nil
	case name == "":
		return "", fmt.Errorf("empty domain name")
	case !dns.IsFqdn(name):
		if origin == "." {
			name += "."
		} else {
			name += "." + origin
		}
	}
	return canonicalName(name)
}
