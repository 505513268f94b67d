package tlsrpt

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
)

// Policy is a domain's TLSRPT policy (RFC 8460 §3).
type Policy struct {
	// RUA holds the report URIs in the order given, each "mailto:" or
	// "https:"; URIs of other schemes are dropped.
	RUA []*url.URL
	// Extensions are the fields other than v and rua, kept for logs.
	Extensions map[string]string
}

// ErrNoPolicy means the domain has no usable TLSRPT record: reports must
// not be sent.
var ErrNoPolicy = errors.New("tlsrpt: no TLSRPT policy")

// LookupTXTFunc returns the TXT records at name, each one's strings
// already concatenated without separators. A name without TXT records
// returns no records and no error.
type LookupTXTFunc func(ctx context.Context, name string) ([]string, error)

// Discover finds the TLSRPT policy of domain at "_smtp._tls.<domain>".
// It returns ErrNoPolicy when there is none (or more than one, or one that
// does not parse), and the lookup's error when the lookup failed.
func Discover(ctx context.Context, lookup LookupTXTFunc, domain string) (*Policy, error) {
	txts, err := lookup(ctx, "_smtp._tls."+normDomain(domain)+".")
	if err != nil {
		return nil, err
	}
	return SelectPolicy(txts)
}

// SelectPolicy applies RFC 8460 §3 to the TXT records found: records not
// starting with "v=TLSRPTv1" are discarded, and exactly one must remain.
func SelectPolicy(txts []string) (*Policy, error) {
	var found []string
	for _, t := range txts {
		if hasVersion(t) {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("%w: %d TLSRPTv1 records", ErrNoPolicy, len(found))
	}
	p, err := ParsePolicy(found[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoPolicy, err)
	}
	return p, nil
}

// hasVersion reports whether a TXT record starts with the version field,
// "v=TLSRPTv1" followed by the field delimiter (or nothing).
func hasVersion(t string) bool {
	const v = "v=TLSRPTv1"
	if !strings.HasPrefix(t, v) {
		return false
	}
	rest := strings.TrimLeft(t[len(v):], " \t")
	return rest == "" || rest[0] == ';'
}

// ParsePolicy parses one TLSRPT TXT record per the ABNF of RFC 8460 §3:
//
//	tlsrpt-record = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
//
// The rua field is required; unknown extension fields are ignored (after a
// syntax check). URIs of schemes other than mailto and https are ignored;
// a record left without any usable URI is an error.
func ParsePolicy(rec string) (*Policy, error) {
	if !hasVersion(rec) {
		return nil, errors.New("record does not start with v=TLSRPTv1")
	}
	fields := strings.Split(rec, ";")
	// The first field is the version (checked), the last may be empty
	// (a trailing delimiter).
	if n := len(fields); n > 1 && strings.Trim(fields[n-1], " \t") == "" {
		fields = fields[:n-1]
	}
	if len(fields) < 2 {
		return nil, errors.New("no fields after the version")
	}
	p := &Policy{Extensions: map[string]string{}}
	sawRUA := false
	for _, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		name, value, ok := strings.Cut(f, "=")
		if !ok || !validExtName(name) {
			return nil, fmt.Errorf("malformed field %q", f)
		}
		if name == "rua" {
			if sawRUA {
				return nil, errors.New("more than one rua field")
			}
			sawRUA = true
			uris, err := parseRUA(value)
			if err != nil {
				return nil, err
			}
			p.RUA = uris
			continue
		}
		if name == "v" {
			return nil, errors.New("repeated version field")
		}
		if !validExtValue(value) {
			return nil, fmt.Errorf("malformed value of field %q", name)
		}
		p.Extensions[name] = value
	}
	if !sawRUA {
		return nil, errors.New("no rua field")
	}
	if len(p.RUA) == 0 {
		return nil, errors.New("no mailto: or https: URI in rua")
	}
	return p, nil
}

// parseRUA parses `tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)`.
func parseRUA(v string) ([]*url.URL, error) {
	var out []*url.URL
	for _, part := range strings.Split(v, ",") {
		part = strings.Trim(part, " \t")
		if part == "" {
			return nil, errors.New("empty URI in rua")
		}
		for _, c := range part {
			if c <= ' ' || c >= 0x7f || c == '!' {
				// RFC 8460 §3: the URI must have "!" (and ",", ";")
				// percent-encoded; spaces and non-ASCII are not URIs.
				return nil, fmt.Errorf("invalid character in rua URI %q", part)
			}
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, fmt.Errorf("rua URI %q: %v", part, err)
		}
		switch strings.ToLower(u.Scheme) {
		case "https":
			if u.Host == "" {
				return nil, fmt.Errorf("rua URI %q has no host", part)
			}
			u.Scheme = "https"
			out = append(out, u)
		case "mailto":
			if _, err := MailtoAddresses(u); err != nil {
				return nil, fmt.Errorf("rua URI %q: %v", part, err)
			}
			u.Scheme = "mailto"
			out = append(out, u)
		default:
			// Other schemes are not defined for TLSRPT: skip them, the
			// others may still work.
		}
	}
	return out, nil
}

// MailtoAddresses returns the addresses of a mailto: URI (RFC 6068),
// ignoring its header fields (?subject=...).
func MailtoAddresses(u *url.URL) ([]string, error) {
	raw := u.Opaque
	if raw == "" {
		raw = u.Path
	}
	addrs, err := url.PathUnescape(raw)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range strings.Split(addrs, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		pa, err := mail.ParseAddress(a)
		if err != nil || pa.Name != "" {
			return nil, fmt.Errorf("bad address %q", a)
		}
		out = append(out, pa.Address)
	}
	if len(out) == 0 {
		return nil, errors.New("no address")
	}
	return out, nil
}

// validExtName: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".").
func validExtName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return false
		}
		if !alnum && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validExtValue: 1*(%x21-3A / %x3C / %x3E-7E).
func validExtValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 0x21 && c <= 0x3a || c == 0x3c || c >= 0x3e && c <= 0x7e) {
			return false
		}
	}
	return true
}

// String renders the policy as a TXT record.
func (p *Policy) String() string {
	uris := make([]string, len(p.RUA))
	for i, u := range p.RUA {
		uris[i] = u.String()
	}
	return "v=TLSRPTv1; rua=" + strings.Join(uris, ",")
}
