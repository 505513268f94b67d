package mtastsfallback

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Mode is a policy's "mode" field (RFC 8461 §5).
type Mode string

// The three modes of RFC 8461 §3.2 and §5.
const (
	// ModeEnforce: do not deliver to an MX that fails validation.
	ModeEnforce Mode = "enforce"
	// ModeTesting: report validation failures, deliver anyway.
	ModeTesting Mode = "testing"
	// ModeNone: the domain has withdrawn MTA-STS; treat it as having no
	// policy (RFC 8461 §8.3).
	ModeNone Mode = "none"
)

// Valid reports whether m is one of the three defined modes.
func (m Mode) Valid() bool {
	return m == ModeEnforce || m == ModeTesting || m == ModeNone
}

// MaxMaxAge is the largest max_age RFC 8461 §3.2 allows, in seconds (one
// Julian year). Larger values are capped to it by ParsePolicy.
const MaxMaxAge = 31557600

// maxAgeDigits is the most digits sts-policy-max-age-value may have.
const maxAgeDigits = 10

// Policy is a parsed MTA-STS policy (RFC 8461 §3.2), plus the bookkeeping
// that a cache needs (Domain, ID, FetchedAt, Expires), which ParsePolicy
// leaves empty and Fetcher and Manager fill in.
//
// A Policy handed out by a Manager is shared with other callers and must
// not be modified.
//
// Policy marshals to JSON with encoding/json; MarshalPolicy and
// UnmarshalPolicy add a format version and validation for persistent
// storage.
type Policy struct {
	// Mode is enforce, testing or none.
	Mode Mode `json:"mode"`
	// MaxAge is the policy lifetime in seconds, 0 to MaxMaxAge.
	MaxAge int64 `json:"max_age"`
	// MX holds the MX patterns in lower case, without trailing dots, in
	// the order of the policy, duplicates removed. A pattern is a host
	// name or "*." followed by a host name.
	MX []string `json:"mx,omitempty"`
	// Extensions holds fields this package does not know, first
	// occurrence of each name only. They are kept for display and for
	// TLSRPT's policy-string; they never affect decisions.
	Extensions map[string]string `json:"extensions,omitempty"`

	// Domain is the Policy Domain the policy was fetched for.
	Domain string `json:"domain,omitempty"`
	// ID is the "id" of the TXT record that announced the policy.
	ID string `json:"id,omitempty"`
	// FetchedAt is when the policy was fetched.
	FetchedAt time.Time `json:"fetched_at,omitzero"`
	// Expires is FetchedAt + MaxAge: the policy must not be used from
	// then on (RFC 8461 §3.2, §5.1).
	Expires time.Time `json:"expires,omitzero"`
}

// Lifetime returns MaxAge as a time.Duration.
func (p *Policy) Lifetime() time.Duration {
	return time.Duration(p.MaxAge) * time.Second
}

// ValidAt reports whether p has been stamped with an expiry time and that
// time is after t. A nil Policy is never valid.
func (p *Policy) ValidAt(t time.Time) bool {
	return p != nil && !p.Expires.IsZero() && t.Before(p.Expires)
}

// ParsePolicy parses a policy body as served at
// https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 §3.2).
//
// The body is a list of "key: value" lines ended by LF or CRLF. Only the
// first ":" separates key and value, so extension values may contain
// colons; spaces and tabs around the value are dropped. Keys are
// case-sensitive. The rules:
//
//   - "version" must be "STSv1", "mode" one of enforce, testing, none, and
//     "max_age" 1 to 10 decimal digits; all three are required.
//   - max_age above MaxMaxAge (31557600 s) is capped to MaxMaxAge rather
//     than rejected: the ABNF admits 10 digits while the prose sets the
//     maximum, and "SHOULD cache for up to" means a shorter cache lifetime
//     is always allowed.
//   - At least one "mx" line is required unless mode is none. An mx value
//     is a host name (RFC 5321 Domain) or "*." followed by one, in ASCII
//     (A-labels for internationalized names); one trailing dot is
//     tolerated and removed; case is folded to lower.
//   - If a field other than mx is repeated, the first occurrence counts
//     and the others are ignored, as RFC 8461 §3.2 requires.
//   - Unknown keys are ignored if their name is well-formed; their value
//     must be valid UTF-8 without control characters other than tab.
//   - Leniencies beyond the ABNF, for robustness against real-world
//     files: blank lines are skipped and a leading UTF-8 byte order mark
//     is dropped.
//
// Any other deviation makes the whole policy invalid: the error wraps
// ErrInvalidPolicy and names the offending line.
func ParsePolicy(body []byte) (*Policy, error) {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	p := &Policy{}
	var haveVersion, haveMode, haveMaxAge bool
	lineNo := 0
	for len(body) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(bytes.Trim(line, " \t")) == 0 {
			continue
		}
		errf := func(format string, args ...any) error {
			return fmt.Errorf("%w: line %d: %s", ErrInvalidPolicy, lineNo, fmt.Sprintf(format, args...))
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return nil, errf("%q is not a \"key: value\" pair", truncate(line))
		}
		key := string(line[:colon])
		value := string(bytes.Trim(line[colon+1:], " \t"))
		if !validFieldName(key) {
			return nil, errf("invalid field name %q", truncate([]byte(key)))
		}
		switch key {
		case "version":
			if haveVersion {
				continue
			}
			haveVersion = true
			if value != "STSv1" {
				return nil, errf("version %q is not \"STSv1\"", truncate([]byte(value)))
			}
		case "mode":
			if haveMode {
				continue
			}
			haveMode = true
			m := Mode(value)
			if !m.Valid() {
				return nil, errf("mode %q is not enforce, testing or none", truncate([]byte(value)))
			}
			p.Mode = m
		case "max_age":
			if haveMaxAge {
				continue
			}
			haveMaxAge = true
			n, err := parseMaxAge(value)
			if err != nil {
				return nil, errf("max_age: %v", err)
			}
			p.MaxAge = n
		case "mx":
			pat, err := normalizeMXPattern(value)
			if err != nil {
				return nil, errf("mx: %v", err)
			}
			if !slices.Contains(p.MX, pat) {
				p.MX = append(p.MX, pat)
			}
		default:
			if err := checkPolicyExtValue(value); err != nil {
				return nil, errf("field %q: %v", key, err)
			}
			if _, dup := p.Extensions[key]; !dup {
				if p.Extensions == nil {
					p.Extensions = map[string]string{}
				}
				p.Extensions[key] = value
			}
		}
	}
	switch {
	case !haveVersion:
		return nil, fmt.Errorf("%w: the version field is missing", ErrInvalidPolicy)
	case !haveMode:
		return nil, fmt.Errorf("%w: the mode field is missing", ErrInvalidPolicy)
	case !haveMaxAge:
		return nil, fmt.Errorf("%w: the max_age field is missing", ErrInvalidPolicy)
	case len(p.MX) == 0 && p.Mode != ModeNone:
		return nil, fmt.Errorf("%w: mode %s requires at least one mx field", ErrInvalidPolicy, p.Mode)
	}
	return p, nil
}

// truncate shortens b for inclusion in an error message.
func truncate(b []byte) string {
	const max = 80
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// parseMaxAge parses sts-policy-max-age-value: 1*10(DIGIT), then caps it.
func parseMaxAge(v string) (int64, error) {
	if v == "" {
		return 0, fmt.Errorf("empty value")
	}
	if len(v) > maxAgeDigits {
		return 0, fmt.Errorf("%q has more than %d digits", truncate([]byte(v)), maxAgeDigits)
	}
	for i := 0; i < len(v); i++ {
		if !isDigit(v[i]) {
			return 0, fmt.Errorf("%q is not a non-negative decimal integer", v)
		}
	}
	n, err := strconv.ParseInt(v, 10, 64) // 10 digits always fit
	if err != nil {
		return 0, err
	}
	return min(n, MaxMaxAge), nil
}

// normalizeMXPattern validates an mx value (RFC 8461 §3.2:
// ["*."] Domain) and returns it in lower case without a trailing dot.
func normalizeMXPattern(v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("empty value")
	}
	name := strings.TrimSuffix(v, ".")
	wild := strings.HasPrefix(name, "*.")
	if wild {
		name = name[2:]
	}
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			return "", fmt.Errorf("%q is not ASCII; internationalized names must be given as A-labels", truncate([]byte(v)))
		}
	}
	if err := checkHostname(name); err != nil {
		return "", fmt.Errorf("%q is not a host name or \"*.\" and a host name: %v", truncate([]byte(v)), err)
	}
	name = strings.ToLower(name)
	if wild {
		return "*." + name, nil
	}
	return name, nil
}

// checkPolicyExtValue checks an unknown field's value. The ABNF
// (sts-policy-ext-value) allows printable ASCII, space and UTF-8; this is
// slightly more lenient and also allows tabs and an empty value.
func checkPolicyExtValue(v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("value is not valid UTF-8")
	}
	for _, r := range v {
		if (r < 0x20 && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("control character %U in value", r)
		}
	}
	return nil
}

// MatchMX reports whether host matches one of the policy's mx patterns
// (RFC 8461 §4.1). Matching ignores ASCII case and one trailing dot on
// either side. A pattern "*.example.com" matches a host with exactly one
// more label, of any content: "mx.example.com" but neither "example.com" nor
// "a.b.example.com". Hosts that are not ASCII (U-labels) or contain "*" never
// match; a nil Policy matches nothing.
func (p *Policy) MatchMX(host string) bool {
	if p == nil {
		return false
	}
	h := strings.TrimSuffix(host, ".")
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		if h[i] >= 0x80 || h[i] == '*' {
			return false
		}
	}
	for _, pat := range p.MX {
		if matchPattern(strings.TrimSuffix(pat, "."), h) {
			return true
		}
	}
	return false
}

func matchPattern(pat, h string) bool {
	if suffix, ok := strings.CutPrefix(pat, "*"); ok {
		// suffix is ".example.com": the host must be one non-empty,
		// dot-free label followed by it.
		if len(suffix) < 2 || suffix[0] != '.' || len(h) <= len(suffix) {
			return false
		}
		cut := len(h) - len(suffix)
		return equalFoldASCII(h[cut:], suffix) && !strings.Contains(h[:cut], ".")
	}
	return equalFoldASCII(pat, h)
}

// CheckMX applies the MX host validation of RFC 8461 §4.1 under the
// policy's mode (§5). It returns nil if host is allowed, and otherwise an
// *Error with Reason validation-failure and Code CodeMXNotInPolicy. In
// testing mode the error has ReportOnly set: log or report it, then deliver.
// In mode none, or with a nil Policy, every host is allowed. An unknown mode
// in a hand-made Policy is treated like enforce.
func (p *Policy) CheckMX(host string) error {
	if p == nil || p.Mode == ModeNone {
		return nil
	}
	if p.MatchMX(host) {
		return nil
	}
	return &Error{
		Reason:     ReasonValidationFailure,
		Code:       CodeMXNotInPolicy,
		ReportOnly: p.Mode == ModeTesting,
		Err:        fmt.Errorf("MX host %q does not match any mx pattern of the policy for %q", host, p.Domain),
	}
}

// Lines returns the policy as "key: value" lines in a canonical order:
// version, mode, mx..., max_age, then extensions sorted by name. It is what
// RFC 8460 §4.4 calls the policy-string of an MTA-STS policy.
func (p *Policy) Lines() []string {
	lines := make([]string, 0, 3+len(p.MX)+len(p.Extensions))
	lines = append(lines, "version: STSv1", "mode: "+string(p.Mode))
	for _, mx := range p.MX {
		lines = append(lines, "mx: "+mx)
	}
	lines = append(lines, "max_age: "+strconv.FormatInt(p.MaxAge, 10))
	keys := make([]string, 0, len(p.Extensions))
	for k := range p.Extensions {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		lines = append(lines, k+": "+p.Extensions[k])
	}
	return lines
}

// Validate checks that p could have come out of ParsePolicy and, if set,
// that Domain and ID are well-formed and Expires is not later than
// FetchedAt + MaxAge. UnmarshalPolicy calls it, so that a damaged or
// tampered store entry cannot inject an impossible policy.
func (p *Policy) Validate() error {
	if p == nil {
		return fmt.Errorf("%w: nil policy", ErrInvalidPolicy)
	}
	if !p.Mode.Valid() {
		return fmt.Errorf("%w: mode %q", ErrInvalidPolicy, p.Mode)
	}
	if p.MaxAge < 0 || p.MaxAge > MaxMaxAge {
		return fmt.Errorf("%w: max_age %d out of range", ErrInvalidPolicy, p.MaxAge)
	}
	if len(p.MX) == 0 && p.Mode != ModeNone {
		return fmt.Errorf("%w: mode %s requires at least one mx pattern", ErrInvalidPolicy, p.Mode)
	}
	for _, mx := range p.MX {
		n, err := normalizeMXPattern(mx)
		if err != nil || n != mx {
			return fmt.Errorf("%w: mx pattern %q is not in normal form", ErrInvalidPolicy, mx)
		}
	}
	for k, v := range p.Extensions {
		if !validFieldName(k) || checkPolicyExtValue(v) != nil {
			return fmt.Errorf("%w: extension field %q", ErrInvalidPolicy, k)
		}
	}
	if p.Domain != "" {
		if d, err := NormalizeDomain(p.Domain); err != nil || d != p.Domain {
			return fmt.Errorf("%w: domain %q", ErrInvalidPolicy, p.Domain)
		}
	}
	if p.ID != "" && !validID(p.ID) {
		return fmt.Errorf("%w: id %q", ErrInvalidPolicy, p.ID)
	}
	if !p.Expires.IsZero() && p.Expires.After(p.FetchedAt.Add(p.Lifetime())) {
		return fmt.Errorf("%w: expiry %s is later than fetch time + max_age", ErrInvalidPolicy, p.Expires.Format(time.RFC3339))
	}
	return nil
}

// storageFormat is the version of the MarshalPolicy encoding.
const storageFormat = 1

type storedPolicy struct {
	Format int     `json:"format"`
	Policy *Policy `json:"policy"`
}

// MarshalPolicy encodes p for a persistent store: JSON with a format
// version, {"format":1,"policy":{...}}.
func MarshalPolicy(p *Policy) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(storedPolicy{Format: storageFormat, Policy: p})
}

// UnmarshalPolicy decodes the output of MarshalPolicy and validates the
// result. Unknown format versions, trailing garbage and invalid policies
// are errors wrapping ErrInvalidPolicy.
func UnmarshalPolicy(data []byte) (*Policy, error) {
	var sp storedPolicy
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&sp); err != nil {
		return nil, fmt.Errorf("%w: stored policy: %v", ErrInvalidPolicy, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: stored policy: trailing data", ErrInvalidPolicy)
	}
	if sp.Format != storageFormat {
		return nil, fmt.Errorf("%w: stored policy: unknown format %d", ErrInvalidPolicy, sp.Format)
	}
	if err := sp.Policy.Validate(); err != nil {
		return nil, err
	}
	return sp.Policy, nil
}
