package dane

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"strings"
	"time"
)

// VerifyOptions are the inputs of Verify besides the chain and records.
type VerifyOptions struct {
	// ReferenceNames are the names a DANE-TA(2) server certificate must
	// carry (RFC 7672 §3.2.2): the TLSA base domain first, then, when the
	// MX RRset was secure, the next-hop domain and its CNAME expansion.
	// Case and a trailing dot are ignored. Not used for DANE-EE(3).
	ReferenceNames []string
	// Now is the time at which DANE-TA(2) chains are checked. Zero means
	// time.Now(). DANE-EE(3) ignores certificate dates (RFC 7672 §3.1.1).
	Now time.Time
	// Intermediates are extra CA certificates, beyond those the server
	// sent, that may be used to build a DANE-TA(2) chain and that a
	// DANE-TA(2) record may match.
	Intermediates []*x509.Certificate
	// DigestOrder is the digest preference used to classify the records;
	// nil means DefaultDigestOrder.
	DigestOrder DigestOrder
}

// Match describes a successful authentication.
type Match struct {
	// Record is the TLSA record that authenticated the server.
	Record Record
	// Chain is the verified chain, leaf first. For DANE-EE(3) it is just
	// the leaf. For DANE-TA(2) it ends with the trust anchor certificate,
	// or, when the anchor is a bare public key from DNS, with the
	// certificate that key signed.
	Chain []*x509.Certificate
	// Anchor is the certificate a DANE-TA(2) record designated as trust
	// anchor: found in the presented chain or Intermediates, or taken
	// from a Cert(0) Full(0) record. For an SPKI(1) record only its public
	// key was trusted. Nil for DANE-EE(3) and for bare keys from DNS.
	Anchor *x509.Certificate
	// AnchorFromDNS is set when the DANE-TA(2) trust anchor came from the
	// TLSA record itself (a Full(0) record) because no certificate in the
	// chain matched it (RFC 7671 §5.2.2, §5.2.3).
	AnchorFromDNS bool
	// Name is the reference identifier the certificate matched
	// (DANE-TA(2) only).
	Name string
}

// String summarises the match for logs.
func (m *Match) String() string {
	if m == nil {
		return "<no match>"
	}
	var b strings.Builder
	b.WriteString(m.Record.Mnemonic())
	if m.Record.Usage == DANETA {
		switch {
		case m.AnchorFromDNS:
			b.WriteString(", trust anchor from DNS")
		case m.Anchor != nil:
			fmt.Fprintf(&b, ", trust anchor %q", m.Anchor.Subject.String())
		}
		fmt.Fprintf(&b, ", name %s", m.Name)
	}
	return b.String()
}

// Reason is a stable, machine-readable failure reason, for logs, metrics and
// TLS reports. Verify and Decide produce them.
type Reason string

// Failure reasons.
const (
	// ReasonNoUsableRecords: no usable TLSA record to authenticate with.
	ReasonNoUsableRecords Reason = "no-usable-tlsa"
	// ReasonNoCertificate: the server presented no certificate.
	ReasonNoCertificate Reason = "no-certificate"
	// ReasonNoMatch: no record matched the leaf (DANE-EE(3)) or any
	// certificate or key usable as trust anchor (DANE-TA(2)).
	ReasonNoMatch Reason = "no-match"
	// ReasonChainBuild: a trust anchor was identified but no valid chain
	// leads from the leaf to it (missing intermediate, bad signature,
	// intermediate that is not a CA, ...).
	ReasonChainBuild Reason = "chain-build-failed"
	// ReasonConstraint: a chain exists but breaks a CA constraint: name
	// constraints, path length, extended key usage nesting, policies,
	// unhandled critical extension.
	ReasonConstraint Reason = "constraint-violation"
	// ReasonExpired: a certificate on the chain has expired.
	ReasonExpired Reason = "expired"
	// ReasonNotYetValid: a certificate on the chain is not valid yet.
	ReasonNotYetValid Reason = "not-yet-valid"
	// ReasonNameMismatch: the chain is valid but the leaf carries none of
	// the reference identifiers.
	ReasonNameMismatch Reason = "name-mismatch"

	// ReasonLookupFailed: the TLSA (or a prerequisite) lookup failed or
	// was bogus (RFC 7672 §2.1.1).
	ReasonLookupFailed Reason = "tlsa-lookup-failed"
	// ReasonTLSRequired: TLSA records exist, so TLS is mandatory, but no
	// TLS session was established (RFC 7672 §2.2).
	ReasonTLSRequired Reason = "tls-required"
	// ReasonDANERequired: local policy mandates DANE (RFC 7672 §6) and
	// the server has no usable TLSA records. It is the RFC 8460 result
	// type of the same name, and the engine's reason.
	ReasonDANERequired Reason = tlsrpt.ResultDANERequired
	// ReasonNotVerified: usable TLSA records exist and TLS was
	// established, but no verification result was supplied.
	ReasonNotVerified Reason = "not-verified"
	// ReasonInvalidState: Decide got an input it does not know.
	ReasonInvalidState Reason = "invalid-state"
)

// ResultType maps the reason onto an RFC 8460 §4.3 result type for TLS
// reporting. It returns "" for reasons that are not failures of their own.
func (r Reason) ResultType() string {
	switch r {
	case ReasonNameMismatch, ReasonNoMatch:
		// RFC 8460 §4.3.1: certificate-host-mismatch is a certificate that
		// "did not adhere to the constraints specified in the ... DANE
		// policy"; the TLSA records are those constraints. A mismatch is
		// not a PKIX trust failure (DANE-EE ignores CAs, RFC 7672 §3.1.1)
		// nor a broken record (tlsa-invalid, §4.3.2.1). docs/tlsrpt.md.
		return tlsrpt.ResultCertificateHostMismatch
	case ReasonExpired:
		return tlsrpt.ResultCertificateExpired
	case ReasonChainBuild, ReasonConstraint, ReasonNotYetValid:
		return tlsrpt.ResultCertificateNotTrusted
	case ReasonNoUsableRecords:
		return tlsrpt.ResultTLSAInvalid
	case ReasonLookupFailed:
		return tlsrpt.ResultDNSSECInvalid
	case ReasonTLSRequired:
		return tlsrpt.ResultSTARTTLSNotSupported
	case ReasonDANERequired:
		return tlsrpt.ResultDANERequired
	case ReasonNoCertificate, ReasonNotVerified, ReasonInvalidState:
		return tlsrpt.ResultValidationFailure
	}
	return ""
}

// VerifyError is the error Verify returns. Use errors.As to get it.
type VerifyError struct {
	// Reason is the failure of the attempt that got furthest (see
	// Attempts); ReasonNoMatch when no record matched anything.
	Reason Reason
	// Detail explains the failure for humans.
	Detail string
	// Record is the TLSA record of that attempt; nil when none matched.
	Record *Record
	// Cert is the certificate at fault, when one is (the expired one, the
	// leaf for a name mismatch, ...).
	Cert *x509.Certificate
	// Err is the underlying crypto/x509 error, if any.
	Err error
	// Attempts lists every DANE-TA(2) trust anchor that was tried and why
	// it failed, for diagnostics. When the attempt budget ran out (see
	// Verify), a last entry with a zero Record says so.
	Attempts []Attempt
}

// Attempt is one failed attempt to authenticate via a DANE-TA(2) anchor.
type Attempt struct {
	Record Record
	Reason Reason
	Detail string
}

func (e *VerifyError) Error() string {
	s := "dane: " + string(e.Reason)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Record != nil {
		s += " (TLSA " + e.Record.Mnemonic() + ")"
	}
	return s
}

// Unwrap returns the underlying crypto/x509 error.
func (e *VerifyError) Unwrap() error { return e.Err }

// Verify authenticates a server certificate chain with TLSA records
// (RFC 7672 §3). The server is authenticated if any usable record matches
// (RFC 6698 §4.1); the records are tried DANE-EE(3) first, then DANE-TA(2),
// each in the given order.
//
// records may be a whole RRset: Verify classifies it again with
// opts.DigestOrder (Classify) and uses only the usable records. chain is
// the certificate list as the server sent it, leaf first; the rest may be in
// any order, incomplete or padded with unrelated certificates.
//
// DANE-EE(3): the leaf's certificate or public key must match. Names,
// dates and the rest of the chain are not looked at (RFC 7672 §3.1.1,
// §3.2.1).
//
// DANE-TA(2): the record designates a trust anchor, either a certificate
// of the chain or of opts.Intermediates, or (Full(0) records only) a
// certificate or bare public key carried by the record itself
// (RFC 7671 §5.2.2, §5.2.3). A chain must lead from the leaf to that
// anchor and be valid at opts.Now:
//
//   - With a Cert(0) record the anchor is the whole certificate: crypto/x509
//     verifies the chain and enforces the anchor's basic constraints, path
//     length and name constraints (RFC 7672 §3.1.2) and, like OpenSSL and
//     crypto/x509 do for any root, its validity dates.
//   - With an SPKI(1) record only the public key is trusted: the anchor
//     certificate's other fields are mutable (RFC 7672 §3.1.2), so its
//     name, dates and constraints are not consulted; the chain must end
//     with a certificate whose signature that key verifies.
//   - A DANE-TA(2) record may match the leaf itself (typically a
//     self-signed certificate): the leaf is then its own trust anchor, and
//     only its dates and names are checked.
//
// With DANE-TA(2) the dates of the leaf and intermediates are always
// checked. Extended key
// usage is not: many MTA certificates from private CAs lack serverAuth or
// carry only clientAuth, RFC 7672 does not require it, and the anchor and
// the names already bind the certificate to the service.
//
// The leaf must then carry one of opts.ReferenceNames (RFC 7672 §3.2.3):
// its DNS subjectAltNames if it has any, otherwise its subject common name.
// A wildcard is accepted only as the whole left-most label and matches
// exactly one label ("*.example.com" matches "mx.example.com", not
// "example.com" or "a.b.example.com"), and never directly under a top-level
// domain. The matched name must also satisfy the DNS name constraints of
// every CA certificate on the chain; this also covers names taken from the
// common name, which crypto/x509 does not constrain.
//
// At most 32 trust anchor candidates are tried per call (a bound against
// hostile input; real RRsets hold a few records).
//
// On failure the error is a *VerifyError.
func Verify(chain []*x509.Certificate, records []Record, opts VerifyOptions) (*Match, error) {
	order := opts.DigestOrder
	if order == nil {
		order = DefaultDigestOrder
	}
	usable, _ := order.classify(records)
	if len(usable) == 0 {
		return nil, &VerifyError{Reason: ReasonNoUsableRecords, Detail: "none of the TLSA records is usable"}
	}
	if len(chain) == 0 || chain[0] == nil || len(chain[0].Raw) == 0 {
		return nil, &VerifyError{Reason: ReasonNoCertificate, Detail: "the server presented no certificate"}
	}
	v := newVerifier(chain, opts)

	// RFC 7672 §3.1.1: DANE-EE(3) needs only a leaf match.
	for _, r := range usable {
		if r.Usage == DANEEE && v.certs[0].matches(r.Record) {
			return &Match{Record: r.Record, Chain: []*x509.Certificate{v.leaf}}, nil
		}
	}
	var best *VerifyError
	var attempts []Attempt
	for _, r := range usable {
		if r.Usage != DANETA {
			continue
		}
		if v.attempts >= maxAnchorAttempts {
			v.gaveUp = true
			break
		}
		m, fails := v.tryTA(r)
		if m != nil {
			return m, nil
		}
		for _, f := range fails {
			attempts = append(attempts, Attempt{Record: r.Record, Reason: f.Reason, Detail: f.Detail})
			if best == nil || reasonRank(f.Reason) > reasonRank(best.Reason) {
				best = f
			}
		}
	}
	if best == nil {
		return nil, &VerifyError{
			Reason: ReasonNoMatch,
			Detail: fmt.Sprintf("none of %d usable TLSA records matches the %d presented certificates", len(usable), v.presented),
			Cert:   v.leaf,
		}
	}
	if v.gaveUp {
		detail := fmt.Sprintf("gave up after %d trust anchor attempts", maxAnchorAttempts)
		attempts = append(attempts, Attempt{Reason: ReasonChainBuild, Detail: detail})
		best.Detail += "; " + detail
	}
	best.Attempts = attempts
	return nil, best
}

// reasonRank orders failures by how far authentication got, to report the
// most informative one.
func reasonRank(r Reason) int {
	switch r {
	case ReasonNameMismatch:
		return 5
	case ReasonExpired, ReasonNotYetValid:
		return 4
	case ReasonConstraint:
		return 3
	case ReasonChainBuild:
		return 2
	}
	return 1
}

// certInfo caches the digests of one candidate certificate.
type certInfo struct {
	cert    *x509.Certificate
	digests map[digestKey][]byte
}

type digestKey struct {
	s Selector
	m MatchingType
}

func (c *certInfo) matches(r Record) bool {
	if r.MatchingType == Full {
		return bytes.Equal(selectData(c.cert, r.Selector), r.Data)
	}
	k := digestKey{r.Selector, r.MatchingType}
	d, ok := c.digests[k]
	if !ok {
		d = digest(r.MatchingType, selectData(c.cert, r.Selector))
		if c.digests == nil {
			c.digests = make(map[digestKey][]byte, 2)
		}
		c.digests[k] = d
	}
	return d != nil && bytes.Equal(d, r.Data)
}

// selectData returns the part of cert a selector designates
// (RFC 6698 §2.1.2), or nil.
func selectData(cert *x509.Certificate, s Selector) []byte {
	switch s {
	case Cert:
		return cert.Raw
	case SPKI:
		return cert.RawSubjectPublicKeyInfo
	}
	return nil
}

func digest(m MatchingType, data []byte) []byte {
	if len(data) == 0 {
		return nil
	}
	switch m {
	case SHA2_256:
		d := sha256.Sum256(data)
		return d[:]
	case SHA2_512:
		d := sha512.Sum512(data)
		return d[:]
	}
	return nil
}

// matchData compares selected data with a record (RFC 6698 §2.1.3).
func matchData(r Record, data []byte) bool {
	if len(data) == 0 {
		return false
	}
	if r.MatchingType == Full {
		return bytes.Equal(data, r.Data)
	}
	d := digest(r.MatchingType, data)
	return d != nil && bytes.Equal(d, r.Data)
}

type verifier struct {
	leaf      *x509.Certificate
	certs     []*certInfo // leaf first, then the other distinct candidates
	presented int         // how many of certs the server sent
	now       time.Time
	names     []string
	attempts  int  // trust anchor attempts made, see maxAnchorAttempts
	gaveUp    bool // candidates were left untried
}

func newVerifier(chain []*x509.Certificate, opts VerifyOptions) *verifier {
	v := &verifier{leaf: chain[0], now: opts.Now, names: opts.ReferenceNames}
	if v.now.IsZero() {
		v.now = time.Now()
	}
	add := func(c *x509.Certificate) {
		if c == nil || len(c.Raw) == 0 {
			return
		}
		for _, have := range v.certs {
			if bytes.Equal(have.cert.Raw, c.Raw) {
				return
			}
		}
		v.certs = append(v.certs, &certInfo{cert: c})
	}
	for _, c := range chain {
		add(c)
	}
	v.presented = len(v.certs)
	for _, c := range opts.Intermediates {
		add(c)
	}
	return v
}

// tryTA tries one DANE-TA(2) record against every candidate anchor.
func (v *verifier) tryTA(r classified) (*Match, []*VerifyError) {
	var fails []*VerifyError
	matched := false
	for i, ci := range v.certs {
		if !ci.matches(r.Record) {
			continue
		}
		matched = true
		if !v.spend() {
			return nil, fails
		}
		var m *Match
		var err *VerifyError
		switch {
		case i == 0:
			// The leaf is its own trust anchor.
			m, err = v.leafAnchor()
		case r.Selector == Cert:
			m, err = v.certAnchor(ci.cert)
		default:
			m, err = v.keyAnchor(ci.cert.PublicKey, ci.cert.RawSubjectPublicKeyInfo)
			if m != nil && m.Chain[len(m.Chain)-1] != ci.cert {
				m.Chain = append(m.Chain, ci.cert)
			}
		}
		if m != nil {
			m.Record, m.Anchor = r.Record, ci.cert
			return m, nil
		}
		err.Record = &r.Record
		fails = append(fails, err)
	}
	if matched || r.MatchingType != Full {
		return nil, fails
	}
	// RFC 7671 §5.2.2, §5.2.3: a Full(0) record can supply an anchor the
	// server did not send.
	if !v.spend() {
		return nil, fails
	}
	var m *Match
	var err *VerifyError
	if r.Selector == Cert {
		m, err = v.certAnchor(r.cert)
		if m != nil {
			m.Anchor = r.cert
		}
	} else {
		m, err = v.keyAnchor(r.key, r.Data)
	}
	if m != nil {
		m.Record, m.AnchorFromDNS = r.Record, true
		return m, nil
	}
	err.Record = &r.Record
	return nil, append(fails, err)
}

// maxAnchorAttempts bounds the chain verifications one Verify call runs, so
// that a hostile TLSA RRset or chain cannot make it burn CPU. Real RRsets
// hold a handful of records.
const maxAnchorAttempts = 32

// spend accounts for one trust anchor attempt; false when the budget is
// used up.
func (v *verifier) spend() bool {
	if v.attempts >= maxAnchorAttempts {
		v.gaveUp = true
		return false
	}
	v.attempts++
	return true
}

// leafAnchor handles a DANE-TA(2) record matching the leaf itself.
func (v *verifier) leafAnchor() (*Match, *VerifyError) {
	if err := v.checkDates(v.leaf); err != nil {
		return nil, err
	}
	chain := []*x509.Certificate{v.leaf}
	name, err := v.checkNames(chain)
	if err != nil {
		return nil, err
	}
	return &Match{Chain: chain, Name: name}, nil
}

// certAnchor verifies the leaf up to the anchor certificate ta, with the
// other candidates as intermediates.
func (v *verifier) certAnchor(ta *x509.Certificate) (*Match, *VerifyError) {
	roots := x509.NewCertPool()
	roots.AddCert(ta)
	return v.build(roots, func(c *x509.Certificate) bool { return c == ta })
}

// keyAnchor verifies the leaf up to any certificate signed by the bare
// public key (RFC 7671 §5.2.3). crypto/x509 needs a root certificate, so
// the key is wrapped in stand-in roots that carry nothing but the key and
// the issuer names found on the candidates; they impose no dates and no
// constraints, and never appear in the returned chain.
func (v *verifier) keyAnchor(key crypto.PublicKey, spki []byte) (*Match, *VerifyError) {
	alg := keyAlgorithm(key)
	if alg == x509.UnknownPublicKeyAlgorithm {
		return nil, &VerifyError{Reason: ReasonChainBuild, Detail: "trust anchor public key algorithm is not supported"}
	}
	roots := x509.NewCertPool()
	stand := map[*x509.Certificate]bool{}
	seen := map[string]bool{}
	for _, ci := range v.certs {
		issuer := string(ci.cert.RawIssuer)
		if seen[issuer] {
			continue
		}
		seen[issuer] = true
		ta := &x509.Certificate{
			// Raw only has to be unique per stand-in: CertPool keys on it.
			Raw:                     append([]byte("dane-bare-key-anchor:"+issuer+":"), spki...),
			RawSubject:              ci.cert.RawIssuer,
			RawSubjectPublicKeyInfo: spki,
			PublicKey:               key,
			PublicKeyAlgorithm:      alg,
			BasicConstraintsValid:   true,
			IsCA:                    true,
			MaxPathLen:              -1,
			NotAfter:                time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		}
		stand[ta] = true
		roots.AddCert(ta)
	}
	m, err := v.build(roots, func(c *x509.Certificate) bool { return stand[c] })
	if m != nil {
		m.Chain = m.Chain[:len(m.Chain)-1]
	}
	return m, err
}

func keyAlgorithm(key crypto.PublicKey) x509.PublicKeyAlgorithm {
	switch key.(type) {
	case *rsa.PublicKey:
		return x509.RSA
	case *ecdsa.PublicKey:
		return x509.ECDSA
	case ed25519.PublicKey:
		return x509.Ed25519
	}
	return x509.UnknownPublicKeyAlgorithm
}

// build runs crypto/x509 path building from the leaf to roots, then the
// name checks. isRoot recognises the root that ends a chain.
func (v *verifier) build(roots *x509.CertPool, isRoot func(*x509.Certificate) bool) (*Match, *VerifyError) {
	inter := x509.NewCertPool()
	for _, ci := range v.certs[1:] {
		inter.AddCert(ci.cert)
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   v.now,
		// See Verify: extended key usage is not enforced.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	chains, err := v.leaf.Verify(opts)
	if err != nil {
		return nil, v.diagnose(err, opts)
	}
	chain := shortest(chains)
	if !isRoot(chain[len(chain)-1]) {
		// Cannot happen: roots holds only the anchor.
		return nil, &VerifyError{Reason: ReasonChainBuild, Detail: "chain does not end at the trust anchor"}
	}
	name, verr := v.checkNames(chain)
	if verr != nil {
		return nil, verr
	}
	return &Match{Chain: chain, Name: name}, nil
}

func shortest(chains [][]*x509.Certificate) []*x509.Certificate {
	best := chains[0]
	for _, c := range chains[1:] {
		if len(c) < len(best) {
			best = c
		}
	}
	return best
}

// diagnose turns a crypto/x509 failure into a VerifyError. crypto/x509 hides
// an expired intermediate or anchor behind "unknown authority", so when the
// chain cannot be built at v.now, it is built again at times when the leaf
// was valid; if that works, the certificate of that chain that is not valid
// at v.now is the culprit.
func (v *verifier) diagnose(err error, opts x509.VerifyOptions) *VerifyError {
	var cie x509.CertificateInvalidError
	if errors.As(err, &cie) && cie.Reason == x509.Expired && cie.Cert != nil {
		if e := v.checkDates(cie.Cert); e != nil {
			e.Err = err
			return e
		}
	}
	if errors.As(err, &cie) {
		return &VerifyError{Reason: ReasonConstraint, Detail: err.Error(), Cert: cie.Cert, Err: err}
	}
	var uce x509.UnhandledCriticalExtension
	if errors.As(err, &uce) {
		return &VerifyError{Reason: ReasonConstraint, Detail: err.Error(), Cert: v.leaf, Err: err}
	}
	nb, na := v.leaf.NotBefore, v.leaf.NotAfter
	for _, t := range []time.Time{nb, nb.Add(na.Sub(nb) / 2), na} {
		if t.Equal(v.now) {
			continue
		}
		o := opts
		o.CurrentTime = t
		chains, terr := v.leaf.Verify(o)
		if terr != nil {
			continue
		}
		for _, c := range shortest(chains) {
			if e := v.checkDates(c); e != nil {
				e.Err = err
				return e
			}
		}
	}
	return &VerifyError{Reason: ReasonChainBuild, Detail: err.Error(), Err: err}
}

// checkDates checks c's validity period against v.now. Stand-in roots for
// bare keys always pass: their dates are unbounded.
func (v *verifier) checkDates(c *x509.Certificate) *VerifyError {
	switch {
	case v.now.Before(c.NotBefore):
		return &VerifyError{
			Reason: ReasonNotYetValid,
			Detail: fmt.Sprintf("certificate %q is not valid before %s", c.Subject.String(), c.NotBefore.UTC().Format(time.RFC3339)),
			Cert:   c,
		}
	case v.now.After(c.NotAfter):
		return &VerifyError{
			Reason: ReasonExpired,
			Detail: fmt.Sprintf("certificate %q expired at %s", c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339)),
			Cert:   c,
		}
	}
	return nil
}

// checkNames matches the leaf against the reference identifiers
// (RFC 7672 §3.2.2, §3.2.3) and the matched name against the DNS name
// constraints of the CAs on the chain. It returns the matched reference
// identifier.
func (v *verifier) checkNames(chain []*x509.Certificate) (string, *VerifyError) {
	leaf := chain[0]
	if len(v.names) == 0 {
		return "", &VerifyError{Reason: ReasonNameMismatch, Detail: "no reference identifiers to check DANE-TA(2) names against", Cert: leaf}
	}
	// RFC 7672 §3.2.3: DNS-IDs if there are any, else the CN-ID.
	presented := leaf.DNSNames
	if len(presented) == 0 && leaf.Subject.CommonName != "" {
		presented = []string{leaf.Subject.CommonName}
	}
	var constrained string
	for _, ref := range v.names {
		ref = normalizeName(ref)
		if ref == "" || strings.Contains(ref, "*") {
			continue
		}
		for _, p := range presented {
			if !matchHostname(p, ref) {
				continue
			}
			if ca, ok := violatesDNSConstraints(ref, chain[1:]); ok {
				constrained = fmt.Sprintf("name %s is outside the name constraints of %q", ref, ca.Subject.String())
				continue
			}
			return ref, nil
		}
	}
	if constrained != "" {
		return "", &VerifyError{Reason: ReasonConstraint, Detail: constrained, Cert: leaf}
	}
	what := "DNS names " + strings.Join(leaf.DNSNames, ", ")
	if len(leaf.DNSNames) == 0 {
		what = fmt.Sprintf("common name %q", leaf.Subject.CommonName)
	}
	return "", &VerifyError{
		Reason: ReasonNameMismatch,
		Detail: fmt.Sprintf("certificate %s match none of %s", what, strings.Join(v.names, ", ")),
		Cert:   leaf,
	}
}

// normalizeName lower-cases an ASCII DNS name and drops one trailing dot.
// Names that are not ASCII (U-labels) are returned empty: references and
// certificates both use A-labels.
func normalizeName(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return ""
		}
	}
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

// matchHostname matches a presented identifier against a normalised
// reference identifier (RFC 7672 §3.2.3, RFC 6125 §6.4).
func matchHostname(pattern, ref string) bool {
	pattern = normalizeName(pattern)
	if pattern == "" || ref == "" || !validLabels(ref) {
		return false
	}
	rest, wild := strings.CutPrefix(pattern, "*.")
	if !wild {
		return !strings.Contains(pattern, "*") && validLabels(pattern) && pattern == ref
	}
	// The wildcard must be the whole first label, stand for exactly one
	// label, and not sit directly under a top-level domain.
	if strings.Contains(rest, "*") || !validLabels(rest) || !strings.Contains(rest, ".") {
		return false
	}
	first, tail, ok := strings.Cut(ref, ".")
	return ok && first != "" && tail == rest
}

// validLabels reports whether s is a dot-separated list of non-empty
// labels.
func validLabels(s string) bool {
	if s == "" {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" {
			return false
		}
	}
	return true
}

// violatesDNSConstraints checks name against the permitted and excluded DNS
// name constraints of each CA (RFC 5280 §4.2.1.10, with the crypto/x509
// reading that a leading dot means "strict subdomains only"). It returns
// the first CA the name violates.
func violatesDNSConstraints(name string, cas []*x509.Certificate) (*x509.Certificate, bool) {
	for _, ca := range cas {
		if len(ca.PermittedDNSDomains) != 0 {
			ok := false
			for _, c := range ca.PermittedDNSDomains {
				if inDNSSubtree(name, c) {
					ok = true
					break
				}
			}
			if !ok {
				return ca, true
			}
		}
		for _, c := range ca.ExcludedDNSDomains {
			if inDNSSubtree(name, c) {
				return ca, true
			}
		}
	}
	return nil, false
}

func inDNSSubtree(name, constraint string) bool {
	c := strings.ToLower(strings.TrimSuffix(constraint, "."))
	if c == "" {
		return true
	}
	if strings.HasPrefix(c, ".") {
		return strings.HasSuffix(name, c) && len(name) > len(c)
	}
	return name == c || strings.HasSuffix(name, "."+c)
}
