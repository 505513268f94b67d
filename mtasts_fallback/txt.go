package mtastsfallback

import (
	"fmt"
	"strings"
)

// stsVersion is the version field every MTA-STS TXT record starts with
// (RFC 8461 §3.1). The comparison is case-sensitive (%s in the ABNF).
const stsVersion = "v=STSv1"

// maxIDLen is the longest policy id (RFC 8461 §3.1: 1*32(ALPHA / DIGIT)).
const maxIDLen = 32

// ParseTXT finds the MTA-STS record among the TXT records published at
// "_mta-sts.<domain>" and returns its policy id.
//
// Each element of records is one whole TXT record. When a record is made of
// several character-strings, they must be joined without separators before
// calling ParseTXT (RFC 8461 §3.1); net.Resolver.LookupTXT and the usual DNS
// libraries' helpers already do that.
//
// Following RFC 8461 §3.1, records that do not begin with the "v=STSv1"
// field are ignored (SPF records and the like may share the name). If none
// is left, the error wraps ErrNoRecord; if more than one is left, it wraps
// ErrMultipleRecords; if the one left does not follow the ABNF, it wraps
// ErrInvalidTXT. In all three cases the sender must behave as if the
// domain had no MTA-STS TXT record, though a cached policy stays in force
// (RFC 8461 §5.1).
//
// Field syntax: fields are separated by ";" with optional spaces or tabs
// around it, a trailing ";" is allowed, each field is name=value. The id is
// 1 to 32 letters and digits. Unknown fields are ignored if they are
// well-formed; if a field appears more than once, the first one counts
// (RFC 8461 §3.2, last paragraph). As a small leniency, white space at the
// very end of the record is accepted.
func ParseTXT(records []string) (id string, err error) {
	var found []string
	for _, r := range records {
		if isSTSRecord(r) {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 0:
		return "", ErrNoRecord
	case 1:
		return parseSTSRecord(found[0])
	default:
		return "", fmt.Errorf("%w: %d records begin with %q", ErrMultipleRecords, len(found), stsVersion)
	}
}

// isSTSRecord reports whether r begins with the sts-version field: the
// literal "v=STSv1" followed by a field delimiter or the end of the record,
// so that "v=STSv10;..." does not count.
func isSTSRecord(r string) bool {
	rest, ok := strings.CutPrefix(r, stsVersion)
	if !ok {
		return false
	}
	rest = strings.TrimLeft(rest, " \t")
	return rest == "" || rest[0] == ';'
}

func parseSTSRecord(r string) (string, error) {
	fields := strings.Split(r[len(stsVersion):], ";")
	// fields[0] is what lies between "v=STSv1" and the first ";": only
	// white space is allowed there (isSTSRecord checked it).
	var id string
	haveID := false
	nFields := 0
	for i := 1; i < len(fields); i++ {
		f := strings.Trim(fields[i], " \t")
		if f == "" {
			if i == len(fields)-1 {
				break // the optional trailing delimiter
			}
			return "", fmt.Errorf("%w: empty field %d in %q", ErrInvalidTXT, i+1, r)
		}
		nFields++
		name, value, ok := strings.Cut(f, "=")
		if !ok {
			return "", fmt.Errorf("%w: field %q has no \"=\"", ErrInvalidTXT, f)
		}
		if !validFieldName(name) {
			return "", fmt.Errorf("%w: invalid field name %q", ErrInvalidTXT, name)
		}
		if name == "id" {
			if !validID(value) {
				return "", fmt.Errorf("%w: id %q is not 1 to %d letters and digits", ErrInvalidTXT, value, maxIDLen)
			}
			if !haveID { // RFC 8461 §3.2: duplicates after the first are ignored
				id, haveID = value, true
			}
			continue
		}
		if err := checkTXTExtValue(value); err != nil {
			return "", fmt.Errorf("%w: field %q: %v", ErrInvalidTXT, name, err)
		}
	}
	if nFields == 0 || !haveID {
		return "", fmt.Errorf("%w: no id field in %q", ErrInvalidTXT, r)
	}
	return id, nil
}

// validFieldName checks sts-ext-name and sts-policy-ext-name (RFC 8461
// §3.1, §3.2): a letter or digit, then up to 31 letters, digits, "_", "-"
// or ".".
func validFieldName(s string) bool {
	if len(s) == 0 || len(s) > 32 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validID checks sts-id's value: 1*32(ALPHA / DIGIT).
func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

// checkTXTExtValue checks sts-ext-value: 1*(%x21-3A / %x3C / %x3E-7E), that
// is printable US-ASCII except "=", ";" and space.
func checkTXTExtValue(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x21 || c > 0x7e || c == '=' || c == ';' {
			return fmt.Errorf("character %q not allowed in a value", c)
		}
	}
	return nil
}
