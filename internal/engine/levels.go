package engine

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// Level is the security a destination domain requires, named after the
// levels of Postfix's TLS policy table so that mail operators can carry
// their knowledge over.
type Level string

// The levels, weakest first.
const (
	// LevelNone: no security requirement at all. maddy still tries STARTTLS
	// opportunistically; nothing is checked and plaintext is acceptable.
	LevelNone Level = "none"
	// LevelMay: opportunistic TLS. Same outcome as none for this policy,
	// but documents intent. No DNS lookups are done.
	LevelMay Level = "may"
	// LevelEncrypt: TLS is mandatory, any certificate is accepted.
	LevelEncrypt Level = "encrypt"
	// LevelDANE: opportunistic DANE (RFC 7672) with MTA-STS fallback where
	// DANE does not apply (when MTA-STS is enabled). The default.
	LevelDANE Level = "dane"
	// LevelDANEOnly: mandatory DANE: a secure MX RRset and usable TLSA
	// records are required and the server must authenticate with them
	// (RFC 7672 §6).
	LevelDANEOnly Level = "dane-only"
	// LevelMTASTS: MTA-STS required: the domain must publish an enforce
	// mode policy (RFC 8461) and the connection must satisfy it. DANE still
	// takes precedence on MX hosts that have usable TLSA records.
	LevelMTASTS Level = "mtasts"
	// LevelVerify: TLS with a certificate valid under the WebPKI roots for
	// the MX host name or the next-hop domain.
	LevelVerify Level = "verify"
	// LevelFingerprint: TLS with a certificate or public key whose digest
	// is one of the configured pins.
	LevelFingerprint Level = "fingerprint"
)

// Levels lists every level, for config validation and docs.
var Levels = []Level{LevelNone, LevelMay, LevelEncrypt, LevelDANE, LevelDANEOnly, LevelMTASTS, LevelVerify, LevelFingerprint}

// ParseLevel validates a level name.
func ParseLevel(s string) (Level, error) {
	for _, l := range Levels {
		if string(l) == s {
			return l, nil
		}
	}
	names := make([]string, len(Levels))
	for i, l := range Levels {
		names[i] = string(l)
	}
	return "", fmt.Errorf("unknown security level %q (valid: %s)", s, strings.Join(names, ", "))
}

// Fingerprint pins a server certificate (Cert) or its public key (SPKI) by
// digest, for LevelFingerprint.
type Fingerprint struct {
	SPKI   bool   // digest of the SubjectPublicKeyInfo rather than the whole certificate
	Algo   string // "sha256" or "sha512"
	Digest []byte
}

// ParseFingerprint parses "sha256:HEX", "sha512:HEX", "spki-sha256:HEX" or
// "spki-sha512:HEX". Colons between hex byte pairs are accepted, as
// "openssl x509 -fingerprint" prints them.
func ParseFingerprint(s string) (Fingerprint, error) {
	kind, hexPart, ok := strings.Cut(s, ":")
	if !ok {
		return Fingerprint{}, fmt.Errorf("fingerprint %q: want ALGO:HEX, e.g. sha256:ab12...", s)
	}
	var fp Fingerprint
	switch strings.ToLower(kind) {
	case "sha256":
		fp.Algo = "sha256"
	case "sha512":
		fp.Algo = "sha512"
	case "spki-sha256":
		fp.Algo, fp.SPKI = "sha256", true
	case "spki-sha512":
		fp.Algo, fp.SPKI = "sha512", true
	default:
		return Fingerprint{}, fmt.Errorf("fingerprint %q: unknown algorithm %q (sha256, sha512, spki-sha256, spki-sha512)", s, kind)
	}
	digest, err := hex.DecodeString(strings.ReplaceAll(hexPart, ":", ""))
	if err != nil {
		return Fingerprint{}, fmt.Errorf("fingerprint %q: %v", s, err)
	}
	want := sha256.Size
	if fp.Algo == "sha512" {
		want = sha512.Size
	}
	if len(digest) != want {
		return Fingerprint{}, fmt.Errorf("fingerprint %q: %s digest must be %d bytes, got %d", s, fp.Algo, want, len(digest))
	}
	fp.Digest = digest
	return fp, nil
}

// Matches reports whether cert matches the pin.
func (fp Fingerprint) Matches(cert *x509.Certificate) bool {
	data := cert.Raw
	if fp.SPKI {
		data = cert.RawSubjectPublicKeyInfo
	}
	var sum []byte
	if fp.Algo == "sha512" {
		s := sha512.Sum512(data)
		sum = s[:]
	} else {
		s := sha256.Sum256(data)
		sum = s[:]
	}
	return string(sum) == string(fp.Digest)
}

func (fp Fingerprint) String() string {
	p := fp.Algo
	if fp.SPKI {
		p = "spki-" + p
	}
	return p + ":" + hex.EncodeToString(fp.Digest)
}

// DomainPolicy is what the operator requires for one destination domain.
type DomainPolicy struct {
	Level        Level
	Fingerprints []Fingerprint // LevelFingerprint only
	// Source says where the policy came from, for logs: "default",
	// "inline", "table".
	Source string
	// Key is the policy table key that matched (the domain, or ".parent"
	// for a parent-domain entry); empty for the default.
	Key string
}

// ParsePolicySpec parses a policy table value: a level followed, for
// fingerprint, by one or more pins. Example values:
//
//	dane-only
//	fingerprint sha256:3b5c...  spki-sha256:9f86...
func ParsePolicySpec(spec string) (DomainPolicy, error) {
	fields := strings.Fields(spec)
	if len(fields) == 0 {
		return DomainPolicy{}, fmt.Errorf("empty policy")
	}
	lvl, err := ParseLevel(strings.ToLower(fields[0]))
	if err != nil {
		return DomainPolicy{}, err
	}
	p := DomainPolicy{Level: lvl}
	if lvl == LevelFingerprint {
		if len(fields) < 2 {
			return DomainPolicy{}, fmt.Errorf("fingerprint needs at least one pin, e.g. 'fingerprint sha256:HEX'")
		}
		for _, f := range fields[1:] {
			fp, err := ParseFingerprint(f)
			if err != nil {
				return DomainPolicy{}, err
			}
			p.Fingerprints = append(p.Fingerprints, fp)
		}
	} else if len(fields) > 1 {
		return DomainPolicy{}, fmt.Errorf("level %s takes no arguments, got %q", lvl, strings.Join(fields[1:], " "))
	}
	return p, nil
}
