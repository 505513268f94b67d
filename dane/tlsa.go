package dane

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// Usage is the certificate usage field of a TLSA record (RFC 6698 §2.1.1).
type Usage uint8

// Certificate usages with their RFC 7218 acronyms.
const (
	PKIXTA   Usage = 0   // PKIX-TA: CA constraint; unusable for SMTP (RFC 7672 §3.1.3)
	PKIXEE   Usage = 1   // PKIX-EE: service certificate constraint; unusable for SMTP
	DANETA   Usage = 2   // DANE-TA: trust anchor assertion (RFC 7672 §3.1.2)
	DANEEE   Usage = 3   // DANE-EE: domain-issued certificate (RFC 7672 §3.1.1)
	PrivCert Usage = 255 // PrivCert: private use; never usable here
)

// Selector is the selector field of a TLSA record (RFC 6698 §2.1.2): which
// part of a certificate the association data refers to.
type Selector uint8

// Selectors with their RFC 7218 acronyms.
const (
	Cert    Selector = 0   // Cert: the whole DER certificate
	SPKI    Selector = 1   // SPKI: the DER SubjectPublicKeyInfo
	PrivSel Selector = 255 // PrivSel: private use; never usable here
)

// MatchingType is the matching type field of a TLSA record (RFC 6698
// §2.1.3): how the selected data is compared.
type MatchingType uint8

// Matching types with their RFC 7218 acronyms.
const (
	Full      MatchingType = 0   // Full: the selected data itself
	SHA2_256  MatchingType = 1   // SHA2-256: its SHA-256 digest
	SHA2_512  MatchingType = 2   // SHA2-512: its SHA-512 digest
	PrivMatch MatchingType = 255 // PrivMatch: private use; never usable here
)

// String returns the RFC 7218 acronym with the number, e.g. "DANE-EE(3)".
// Unassigned values print as "Unassigned(n)".
func (u Usage) String() string {
	switch u {
	case PKIXTA:
		return "PKIX-TA(0)"
	case PKIXEE:
		return "PKIX-EE(1)"
	case DANETA:
		return "DANE-TA(2)"
	case DANEEE:
		return "DANE-EE(3)"
	case PrivCert:
		return "PrivCert(255)"
	}
	return "Unassigned(" + strconv.Itoa(int(u)) + ")"
}

// String returns the RFC 7218 acronym with the number, e.g. "SPKI(1)".
func (s Selector) String() string {
	switch s {
	case Cert:
		return "Cert(0)"
	case SPKI:
		return "SPKI(1)"
	case PrivSel:
		return "PrivSel(255)"
	}
	return "Unassigned(" + strconv.Itoa(int(s)) + ")"
}

// String returns the RFC 7218 acronym with the number, e.g. "SHA2-256(1)".
func (m MatchingType) String() string {
	switch m {
	case Full:
		return "Full(0)"
	case SHA2_256:
		return "SHA2-256(1)"
	case SHA2_512:
		return "SHA2-512(2)"
	case PrivMatch:
		return "PrivMatch(255)"
	}
	return "Unassigned(" + strconv.Itoa(int(m)) + ")"
}

// digestLen is the association data length a digest matching type requires,
// or 0 for a type that is not a digest this package implements.
func (m MatchingType) digestLen() int {
	switch m {
	case SHA2_256:
		return 32
	case SHA2_512:
		return 64
	}
	return 0
}

// Record is one TLSA certificate association: the three TLSA parameters and
// the certificate association data (raw bytes, not hex).
type Record struct {
	Usage        Usage
	Selector     Selector
	MatchingType MatchingType
	Data         []byte
}

// String renders the record in presentation form, "3 1 1 <hex>", with the
// data in lower-case hex.
func (r Record) String() string {
	s := strconv.Itoa(int(r.Usage)) + " " + strconv.Itoa(int(r.Selector)) + " " + strconv.Itoa(int(r.MatchingType))
	if len(r.Data) != 0 {
		s += " " + hex.EncodeToString(r.Data)
	}
	return s
}

// Mnemonic names the record's parameters with their RFC 7218 acronyms, e.g.
// "DANE-EE(3) SPKI(1) SHA2-256(1)".
func (r Record) Mnemonic() string {
	return r.Usage.String() + " " + r.Selector.String() + " " + r.MatchingType.String()
}

// Equal reports whether two records are identical.
func (r Record) Equal(o Record) bool {
	return r.Usage == o.Usage && r.Selector == o.Selector && r.MatchingType == o.MatchingType && string(r.Data) == string(o.Data)
}

// Matches reports whether the record's association data matches cert
// according to its selector and matching type. It ignores the usage, and
// does no other check: see Verify for authentication. A certificate without
// DER bytes (not produced by a parser) never matches.
func (r Record) Matches(cert *x509.Certificate) bool {
	if cert == nil || len(cert.Raw) == 0 {
		return false
	}
	return matchData(r, selectData(cert, r.Selector))
}

// FromRR converts a TLSA resource record. It fails, without panicking, on a
// nil record and on association data that is not valid hex (the record is
// then unusable: RFC 6698 §4.1). Whitespace inside the hex is accepted
// (RFC 6698 §2.2). The returned Record carries the parameters even on error.
func FromRR(rr *dns.TLSA) (Record, error) {
	if rr == nil {
		return Record{}, errors.New("dane: nil TLSA record")
	}
	r := Record{Usage: Usage(rr.Usage), Selector: Selector(rr.Selector), MatchingType: MatchingType(rr.MatchingType)}
	data, err := decodeHex(rr.Certificate)
	if err != nil {
		return r, fmt.Errorf("dane: TLSA %s: certificate association data: %w", r.Mnemonic(), err)
	}
	r.Data = data
	return r, nil
}

func decodeHex(s string) ([]byte, error) {
	if strings.ContainsAny(s, " \t\r\n") {
		s = strings.Join(strings.Fields(s), "")
	}
	if len(s)%2 != 0 {
		return nil, errors.New("odd number of hex digits")
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, errors.New("not valid hex")
	}
	return b, nil
}

// ParseRecord parses the presentation form of TLSA RDATA: three parameters
// followed by the hex association data, which may be split by whitespace
// (RFC 6698 §2.2). The parameters may be numbers or RFC 7218 acronyms in any
// case ("DANE-EE SPKI SHA2-256 ..."). ParseRecord does not judge
// usability: pass the result to Classify.
func ParseRecord(s string) (Record, error) {
	f := strings.Fields(s)
	if len(f) < 4 {
		return Record{}, errors.New("dane: TLSA record needs usage, selector, matching type and association data")
	}
	u, err := parseParam(f[0], map[string]uint8{"pkix-ta": 0, "pkix-ee": 1, "dane-ta": 2, "dane-ee": 3, "privcert": 255})
	if err != nil {
		return Record{}, fmt.Errorf("dane: TLSA usage: %w", err)
	}
	sel, err := parseParam(f[1], map[string]uint8{"cert": 0, "spki": 1, "privsel": 255})
	if err != nil {
		return Record{}, fmt.Errorf("dane: TLSA selector: %w", err)
	}
	mt, err := parseParam(f[2], map[string]uint8{"full": 0, "sha2-256": 1, "sha2-512": 2, "privmatch": 255})
	if err != nil {
		return Record{}, fmt.Errorf("dane: TLSA matching type: %w", err)
	}
	// f[3:] is non-empty, so valid hex gives at least one byte.
	data, err := decodeHex(strings.Join(f[3:], ""))
	if err != nil {
		return Record{}, fmt.Errorf("dane: TLSA association data: %w", err)
	}
	return Record{Usage: Usage(u), Selector: Selector(sel), MatchingType: MatchingType(mt), Data: data}, nil
}

func parseParam(s string, names map[string]uint8) (uint8, error) {
	if v, ok := names[strings.ToLower(s)]; ok {
		return v, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("%q is neither a number from 0 to 255 nor a known acronym", s)
	}
	return uint8(n), nil
}

// UnusableReason says, in a stable machine-readable form, why a TLSA record
// is not used.
type UnusableReason string

// Reasons for which a TLSA record is not used.
const (
	// UnusablePKIX: PKIX-TA(0) or PKIX-EE(1); SMTP has no agreed set of
	// public CAs, so these usages are unsupported (RFC 7672 §3.1.3).
	UnusablePKIX UnusableReason = "pkix-usage"
	// UnusableUsage: an unassigned or private-use certificate usage
	// (RFC 6698 §4.1).
	UnusableUsage UnusableReason = "unknown-usage"
	// UnusableSelector: an unassigned or private-use selector.
	UnusableSelector UnusableReason = "unknown-selector"
	// UnusableMatchingType: a matching type that is unassigned, private
	// use, or a digest this client does not accept (see DigestOrder).
	UnusableMatchingType UnusableReason = "unsupported-matching-type"
	// UnusableDigestLength: digest data of the wrong length for its
	// algorithm: not 32 bytes for SHA2-256, not 64 for SHA2-512.
	UnusableDigestLength UnusableReason = "bad-digest-length"
	// UnusableCertificate: Cert(0) Full(0) data that is not a DER
	// certificate.
	UnusableCertificate UnusableReason = "malformed-certificate"
	// UnusableSPKI: SPKI(1) Full(0) data that is not a DER
	// SubjectPublicKeyInfo.
	UnusableSPKI UnusableReason = "malformed-spki"
	// UnusableKeyAlgorithm: a DANE-TA(2) Full(0) record whose public key
	// algorithm this client cannot verify signatures with.
	UnusableKeyAlgorithm UnusableReason = "unsupported-key-algorithm"
	// UnusableEncoding: the record could not be decoded at all (bad hex,
	// nil record).
	UnusableEncoding UnusableReason = "bad-encoding"
	// UnusableSuperseded: not malformed, but ignored by digest algorithm
	// agility because a stronger digest is published for the same usage
	// and selector (RFC 7671 §9).
	UnusableSuperseded UnusableReason = "superseded-digest"
)

// Unusable is a TLSA record that Classify set aside, with the reason.
type Unusable struct {
	// Record is the record as far as it could be decoded (Data is nil when
	// the hex was bad).
	Record Record
	Reason UnusableReason
	// Detail is a human-readable explanation for logs.
	Detail string
}

// String renders the record and reason for logs.
func (u Unusable) String() string {
	return u.Record.Mnemonic() + ": " + string(u.Reason) + ": " + u.Detail
}

// DigestOrder ranks the digest matching types a client accepts, strongest
// first. It drives digest algorithm agility (RFC 7671 §9): for each
// combination of usage and selector only the records using the strongest
// digest present are used, together with all Full(0) records (which use no
// digest and are never set aside).
//
// Digest matching types that are absent from the order are treated as
// unsupported: their records are unusable (RFC 6698 §4.1 lets a client
// refuse algorithms it considers too weak). Entries other than SHA2_256 and
// SHA2_512 are ignored, since this package implements no other digest;
// duplicates count at their first position. Use Validate to reject such
// entries in configuration.
type DigestOrder []MatchingType

// DefaultDigestOrder prefers SHA2-512(2) over SHA2-256(1), the common client
// preference. With it, a "3 1 1" record is ignored when a "3 1 2" record is
// also published, while "3 1 0" and "3 0 1" records are still used.
var DefaultDigestOrder = DigestOrder{SHA2_512, SHA2_256}

// Validate reports entries that cannot take part in the order: matching
// types that are not implemented digests, and duplicates. An empty order is
// an error too: it would make every digest record unusable.
func (o DigestOrder) Validate() error {
	if len(o) == 0 {
		return errors.New("dane: digest order is empty")
	}
	seen := map[MatchingType]bool{}
	for _, m := range o {
		if m.digestLen() == 0 {
			return fmt.Errorf("dane: digest order: %s is not a supported digest", m)
		}
		if seen[m] {
			return fmt.Errorf("dane: digest order: %s listed twice", m)
		}
		seen[m] = true
	}
	return nil
}

// rank returns the position of m in the order (0 = strongest), or -1 when m
// is not an accepted digest.
func (o DigestOrder) rank(m MatchingType) int {
	if m.digestLen() == 0 {
		return -1
	}
	for i, x := range o {
		if x == m {
			return i
		}
	}
	return -1
}

// Classify splits records into those the client uses and those it sets
// aside, using DefaultDigestOrder. See DigestOrder.Classify.
func Classify(records []Record) (usable []Record, unusable []Unusable) {
	return DefaultDigestOrder.Classify(records)
}

// Classify splits a TLSA RRset into the records used for authentication and
// the others, each with a reason. Both lists keep the input order.
//
// A record is unusable (RFC 7672 §3.1, RFC 6698 §4.1) when its usage is
// PKIX-TA(0), PKIX-EE(1) or unknown; its selector or matching type is
// unknown; a digest has the wrong length; or Full(0) data does not parse as
// a certificate (Cert(0)) or a SubjectPublicKeyInfo (SPKI(1)). A DANE-TA(2)
// Full(0) record must moreover carry a public key this client can verify
// signatures with, since it may serve as a trust anchor absent from the
// server's chain.
//
// Digest algorithm agility (RFC 7671 §9) is then applied to the remaining
// records, which sets weaker digests aside with reason UnusableSuperseded.
// Agility never empties the usable set: whenever a record is usable before
// agility, at least one is after it.
func (o DigestOrder) Classify(records []Record) (usable []Record, unusable []Unusable) {
	cs, unusable := o.classify(records)
	for _, c := range cs {
		usable = append(usable, c.Record)
	}
	return usable, unusable
}

// ClassifyRRs converts and classifies a TLSA RRset as returned by DNS, with
// DefaultDigestOrder. Records that fail to convert are unusable with reason
// UnusableEncoding.
func ClassifyRRs(rrs []*dns.TLSA) (usable []Record, unusable []Unusable) {
	return DefaultDigestOrder.ClassifyRRs(rrs)
}

// ClassifyRRs is Classify for records as returned by DNS. Records that fail
// to convert are unusable with reason UnusableEncoding and are listed first.
func (o DigestOrder) ClassifyRRs(rrs []*dns.TLSA) (usable []Record, unusable []Unusable) {
	recs := make([]Record, 0, len(rrs))
	var bad []Unusable
	for _, rr := range rrs {
		r, err := FromRR(rr)
		if err != nil {
			bad = append(bad, Unusable{Record: r, Reason: UnusableEncoding, Detail: err.Error()})
			continue
		}
		recs = append(recs, r)
	}
	usable, unusable = o.Classify(recs)
	return usable, append(bad, unusable...)
}

// TLSAStateOf summarises Classify's result for a secure TLSA RRset: no
// records at all is TLSANone, any usable record TLSAUsable, otherwise
// TLSAUnusable.
func TLSAStateOf(usable []Record, unusable []Unusable) TLSAState {
	switch {
	case len(usable) != 0:
		return TLSAUsable
	case len(unusable) != 0:
		return TLSAUnusable
	}
	return TLSANone
}

// classified is a usable record with its Full(0) data parsed.
type classified struct {
	Record
	cert *x509.Certificate // Cert(0) Full(0)
	key  crypto.PublicKey  // DANE-TA(2) SPKI(1) Full(0)
}

func (o DigestOrder) classify(records []Record) (usable []classified, unusable []Unusable) {
	type combo struct {
		u Usage
		s Selector
	}
	best := map[combo]int{}
	for _, r := range records {
		c, bad := o.check(r)
		if bad != nil {
			unusable = append(unusable, *bad)
			continue
		}
		usable = append(usable, c)
		if rk := o.rank(r.MatchingType); rk >= 0 {
			k := combo{r.Usage, r.Selector}
			if b, ok := best[k]; !ok || rk < b {
				best[k] = rk
			}
		}
	}
	// RFC 7671 §9: per usage and selector, keep Full(0) records and those
	// with the strongest digest present; set the rest aside.
	kept := usable[:0]
	for _, c := range usable {
		rk := o.rank(c.MatchingType)
		if b := best[combo{c.Usage, c.Selector}]; rk >= 0 && rk != b {
			unusable = append(unusable, Unusable{
				Record: c.Record,
				Reason: UnusableSuperseded,
				Detail: fmt.Sprintf("ignored in favour of %s records for %s %s (RFC 7671 §9)", o[b], c.Usage, c.Selector),
			})
			continue
		}
		kept = append(kept, c)
	}
	return kept, unusable
}

// check decides whether one record is usable (RFC 7672 §3.1, RFC 6698 §4.1).
func (o DigestOrder) check(r Record) (classified, *Unusable) {
	c := classified{Record: r}
	bad := func(reason UnusableReason, format string, args ...any) (classified, *Unusable) {
		return c, &Unusable{Record: r, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	switch r.Usage {
	case DANETA, DANEEE:
	case PKIXTA, PKIXEE:
		// RFC 7672 §3.1.3: SMTP clients may treat these as unusable;
		// without an agreed set of public CAs, they must.
		return bad(UnusablePKIX, "%s is not supported for SMTP (RFC 7672 §3.1.3)", r.Usage)
	default:
		return bad(UnusableUsage, "certificate usage %s is not supported", r.Usage)
	}
	if r.Selector != Cert && r.Selector != SPKI {
		return bad(UnusableSelector, "selector %s is not supported", r.Selector)
	}
	if r.MatchingType == Full {
		return o.checkFull(c, bad)
	}
	want := r.MatchingType.digestLen()
	if want == 0 || o.rank(r.MatchingType) < 0 {
		return bad(UnusableMatchingType, "matching type %s is not supported", r.MatchingType)
	}
	if len(r.Data) != want {
		return bad(UnusableDigestLength, "%s data is %d bytes, want %d", r.MatchingType, len(r.Data), want)
	}
	return c, nil
}

func (o DigestOrder) checkFull(c classified, bad func(UnusableReason, string, ...any) (classified, *Unusable)) (classified, *Unusable) {
	r := c.Record
	if r.Selector == Cert {
		cert, err := x509.ParseCertificate(r.Data)
		if err != nil {
			return bad(UnusableCertificate, "association data is not a certificate: %v", err)
		}
		if r.Usage == DANETA && cert.PublicKey == nil {
			return bad(UnusableKeyAlgorithm, "trust anchor public key algorithm is not supported")
		}
		c.cert = cert
		return c, nil
	}
	if err := checkSPKI(r.Data); err != nil {
		return bad(UnusableSPKI, "association data is not a SubjectPublicKeyInfo: %v", err)
	}
	if r.Usage == DANETA {
		// The key may have to verify the signature of the top of the
		// chain (RFC 7671 §5.2.3).
		key, err := x509.ParsePKIXPublicKey(r.Data)
		if err != nil {
			return bad(UnusableKeyAlgorithm, "trust anchor public key is not usable: %v", err)
		}
		c.key = key
	}
	return c, nil
}

// checkSPKI checks the DER structure of a SubjectPublicKeyInfo without
// requiring its algorithm to be known: a DANE-EE(3) SPKI(1) Full(0) record
// is matched byte for byte and needs no key parsing.
func checkSPKI(der []byte) error {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	rest, err := asn1.Unmarshal(der, &spki)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return errors.New("trailing data")
	}
	if len(spki.PublicKey.Bytes) == 0 {
		return errors.New("empty public key")
	}
	return nil
}
