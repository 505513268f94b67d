package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// KeyType selects the algorithm of a generated key pair.
type KeyType int

const (
	// ECDSAP256 is an ECDSA key on the NIST P-256 curve. It is the zero
	// value and therefore the default.
	ECDSAP256 KeyType = iota
	// ECDSAP384 is an ECDSA key on the NIST P-384 curve.
	ECDSAP384
	// RSA2048 is a 2048-bit RSA key.
	RSA2048
	// Ed25519 is an Ed25519 key.
	Ed25519
)

// String returns a short human-readable name of k.
func (k KeyType) String() string {
	switch k {
	case ECDSAP256:
		return "ECDSA-P256"
	case ECDSAP384:
		return "ECDSA-P384"
	case RSA2048:
		return "RSA-2048"
	case Ed25519:
		return "Ed25519"
	default:
		return fmt.Sprintf("KeyType(%d)", int(k))
	}
}

// Default validity windows, relative to the wall clock at creation time.
// Tests that run on an injected clock should set NotBefore and NotAfter
// explicitly.
const (
	// DefaultBackdate is how far in the past NotBefore lies by default, so
	// that small clock differences never make a fresh certificate "not yet
	// valid".
	DefaultBackdate = time.Hour
	// DefaultCALifetime is the default lifetime of a CA certificate.
	DefaultCALifetime = 10 * 365 * 24 * time.Hour
	// DefaultLeafLifetime is the default lifetime of a leaf certificate.
	DefaultLeafLifetime = 90 * 24 * time.Hour
)

// CAOptions describes a certificate authority to create.
type CAOptions struct {
	// CommonName is the subject CN of the CA certificate. Required.
	CommonName string
	// KeyType selects the CA's key algorithm (default ECDSA P-256).
	KeyType KeyType
	// NotBefore and NotAfter bound the CA certificate's validity. Zero
	// values mean now-DefaultBackdate and now+DefaultCALifetime.
	NotBefore, NotAfter time.Time
	// PermittedDNSDomains and ExcludedDNSDomains become an RFC 5280
	// §4.2.1.10 name constraints extension. A leaf below this CA whose SAN
	// dNSName is outside a permitted subtree, or inside an excluded one,
	// fails PKIX verification. A constraint "example" matches "example"
	// and every name below it.
	PermittedDNSDomains, ExcludedDNSDomains []string
	// NameConstraintsCritical marks the name constraints extension
	// critical, as RFC 5280 requires of conforming CAs.
	NameConstraintsCritical bool
}

// CA is a certificate authority that can issue intermediates and leaves.
// A CA is safe for concurrent use once created.
type CA struct {
	// Cert is the CA's own certificate.
	Cert *x509.Certificate
	// Key is the CA's private key.
	Key crypto.Signer
	// Parent is the CA that issued Cert, nil for a self-signed root.
	Parent *CA
}

// LeafOptions describes an end-entity certificate to create.
type LeafOptions struct {
	// DNSNames are written to the subjectAltName extension as dNSName
	// entries. Wildcards ("*.example") are written as given.
	DNSNames []string
	// IPAddresses are written to the subjectAltName extension as
	// iPAddress entries.
	IPAddresses []net.IP
	// CommonName is the subject CN. Empty means the first DNS name.
	// Modern PKIX verifiers, including crypto/x509, ignore the CN for
	// host name checks.
	CommonName string
	// NoSAN omits the subjectAltName extension entirely, leaving only the
	// CN (legacy certificates that PKIX host name checks must reject).
	NoSAN bool
	// KeyType selects the leaf's key algorithm (default ECDSA P-256).
	KeyType KeyType
	// Key, when set, is used instead of a fresh key (KeyType is then
	// ignored): a certificate for a key made elsewhere, as a CA signs a
	// CSR.
	Key crypto.Signer
	// NotBefore and NotAfter bound the validity. Zero values mean
	// now-DefaultBackdate and now+DefaultLeafLifetime. To make an expired
	// certificate set both in the past; to make a not-yet-valid one set
	// both in the future.
	NotBefore, NotAfter time.Time
	// ExtKeyUsage overrides the extended key usages. Nil means serverAuth
	// and clientAuth; an empty non-nil slice omits the extension.
	ExtKeyUsage []x509.ExtKeyUsage
}

// Leaf is an end-entity certificate with its key and issuing chain.
type Leaf struct {
	// Cert is the end-entity certificate.
	Cert *x509.Certificate
	// Key is its private key.
	Key crypto.Signer
	// Chain holds the intermediate CA certificates between Cert and the
	// root, the issuer of Cert first. It excludes the root and is empty
	// for leaves issued by a root or self-signed.
	Chain []*x509.Certificate
	// Root is the trust anchor at the top of the hierarchy: the root CA's
	// certificate, or Cert itself for a self-signed leaf.
	Root *x509.Certificate
	// Issuer is the CA that signed Cert, nil for a self-signed leaf.
	Issuer *CA
}

// NewCA creates a self-signed root CA with an ECDSA P-256 key.
func NewCA(t testing.TB, commonName string) *CA {
	t.Helper()
	return NewCAWith(t, CAOptions{CommonName: commonName})
}

// NewCAWith creates a self-signed root CA described by opts.
func NewCAWith(t testing.TB, opts CAOptions) *CA {
	t.Helper()
	ca, err := newCA(nil, opts)
	if err != nil {
		t.Fatalf("pki: creating root CA %q: %v", opts.CommonName, err)
	}
	return ca
}

// Intermediate creates an intermediate CA signed by ca.
func (ca *CA) Intermediate(t testing.TB, commonName string) *CA {
	t.Helper()
	return ca.IntermediateWith(t, CAOptions{CommonName: commonName})
}

// IntermediateWith creates an intermediate CA signed by ca, described by
// opts.
func (ca *CA) IntermediateWith(t testing.TB, opts CAOptions) *CA {
	t.Helper()
	sub, err := newCA(ca, opts)
	if err != nil {
		t.Fatalf("pki: creating intermediate CA %q: %v", opts.CommonName, err)
	}
	return sub
}

// Leaf issues an end-entity certificate signed by ca.
func (ca *CA) Leaf(t testing.TB, opts LeafOptions) *Leaf {
	t.Helper()
	l, err := newLeaf(ca, opts)
	if err != nil {
		t.Fatalf("pki: issuing leaf %v from %q: %v", opts.DNSNames, ca.Cert.Subject.CommonName, err)
	}
	return l
}

// SelfSigned creates an end-entity certificate signed by its own key, as
// many mail servers use with DANE-EE(3) TLSA records.
func SelfSigned(t testing.TB, opts LeafOptions) *Leaf {
	t.Helper()
	l, err := newLeaf(nil, opts)
	if err != nil {
		t.Fatalf("pki: creating self-signed leaf %v: %v", opts.DNSNames, err)
	}
	return l
}

// Root returns the self-signed CA at the top of ca's hierarchy.
func (ca *CA) Root() *CA {
	r := ca
	for r.Parent != nil {
		r = r.Parent
	}
	return r
}

// Pool returns a new certificate pool holding only ca's own certificate.
// Use the root's pool (ca.Root().Pool()) as a trust store.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// PEM returns ca's own certificate PEM-encoded, suitable as a CA file for
// TLS clients.
func (ca *CA) PEM() []byte {
	return certPEM(ca.Cert)
}

// WritePEM writes ca's certificate into dir (t.TempDir() if dir is empty)
// and returns the file's path.
func (ca *CA) WritePEM(t testing.TB, dir string) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("ca-%x.pem", ca.Cert.SerialNumber.Bytes()[:8]))
	if err := os.WriteFile(path, ca.PEM(), 0o644); err != nil {
		t.Fatalf("pki: %v", err)
	}
	return path
}

// TLSCertificate returns the leaf with its intermediates (not the root), the
// chain a correctly configured server sends.
func (l *Leaf) TLSCertificate() tls.Certificate {
	return l.tlsCert(l.Chain)
}

// TLSCertificateLeafOnly returns the leaf without intermediates, as sent by
// a server that forgot to configure its chain.
func (l *Leaf) TLSCertificateLeafOnly() tls.Certificate {
	return l.tlsCert(nil)
}

// TLSCertificateWithRoot returns the leaf, its intermediates and the root.
// RFC 7672 §3.1.2 asks servers whose DANE-TA(2) record names the root to
// send it in the chain, since the client has no other copy of it.
func (l *Leaf) TLSCertificateWithRoot() tls.Certificate {
	chain := append([]*x509.Certificate(nil), l.Chain...)
	if l.Issuer != nil {
		chain = append(chain, l.Root)
	}
	return l.tlsCert(chain)
}

func (l *Leaf) tlsCert(chain []*x509.Certificate) tls.Certificate {
	c := tls.Certificate{
		Certificate: [][]byte{l.Cert.Raw},
		PrivateKey:  l.Key,
		Leaf:        l.Cert,
	}
	for _, ic := range chain {
		c.Certificate = append(c.Certificate, ic.Raw)
	}
	return c
}

// SPKI returns the DER-encoded SubjectPublicKeyInfo of the leaf, the data
// that TLSA selector 1 refers to (RFC 6698 §2.1.2).
func (l *Leaf) SPKI() []byte {
	return l.Cert.RawSubjectPublicKeyInfo
}

// DER returns the DER encoding of the leaf certificate, the data that TLSA
// selector 0 refers to.
func (l *Leaf) DER() []byte {
	return l.Cert.Raw
}

// Pool returns a certificate pool holding the leaf's trust anchor (Root).
func (l *Leaf) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(l.Root)
	return p
}

// Intermediates returns a pool holding l.Chain, for
// x509.VerifyOptions.Intermediates.
func (l *Leaf) Intermediates() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range l.Chain {
		p.AddCert(c)
	}
	return p
}

// CertPEM returns the leaf followed by its intermediates, PEM-encoded.
func (l *Leaf) CertPEM() []byte {
	out := certPEM(l.Cert)
	for _, c := range l.Chain {
		out = append(out, certPEM(c)...)
	}
	return out
}

// KeyPEM returns the leaf's private key as a PEM "PRIVATE KEY" (PKCS #8)
// block. It fails the test if Key was replaced by a key that PKCS #8
// cannot encode.
func (l *Leaf) KeyPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(l.Key)
	if err != nil {
		t.Fatalf("pki: marshaling private key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WriteFiles writes CertPEM and KeyPEM into dir (t.TempDir() if dir is
// empty) and returns the two paths, for servers configured with files.
func (l *Leaf) WriteFiles(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	base := fmt.Sprintf("leaf-%x", l.Cert.SerialNumber.Bytes()[:8])
	certFile = filepath.Join(dir, base+".crt")
	keyFile = filepath.Join(dir, base+".key")
	if err := os.WriteFile(certFile, l.CertPEM(), 0o644); err != nil {
		t.Fatalf("pki: %v", err)
	}
	if err := os.WriteFile(keyFile, l.KeyPEM(t), 0o600); err != nil {
		t.Fatalf("pki: %v", err)
	}
	return certFile, keyFile
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func newKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	default:
		return nil, fmt.Errorf("unknown key type %v", kt)
	}
}

// serialLimit bounds serial numbers to 127 bits, so they stay positive and
// within the 20 octets RFC 5280 §4.1.2.2 allows.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 127)

func newSerial() (*big.Int, error) {
	for {
		s, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			return nil, err
		}
		// Serial numbers must be positive and at least 8 bytes long so
		// that file names derived from them are unique.
		if s.BitLen() > 64 {
			return s, nil
		}
	}
}

func validity(nb, na time.Time, lifetime time.Duration) (time.Time, time.Time, error) {
	now := time.Now()
	if nb.IsZero() {
		nb = now.Add(-DefaultBackdate)
	}
	if na.IsZero() {
		na = now.Add(lifetime)
	}
	if !na.After(nb) {
		return nb, na, fmt.Errorf("NotAfter %v is not after NotBefore %v", na, nb)
	}
	return nb, na, nil
}

func newCA(parent *CA, opts CAOptions) (*CA, error) {
	if opts.CommonName == "" {
		return nil, fmt.Errorf("CA common name is empty")
	}
	key, err := newKey(opts.KeyType)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	nb, na, err := validity(opts.NotBefore, opts.NotAfter, DefaultCALifetime)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:                serial,
		Subject:                     pkix.Name{CommonName: opts.CommonName, Organization: []string{"daneguard test PKI"}},
		NotBefore:                   nb,
		NotAfter:                    na,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		PermittedDNSDomains:         opts.PermittedDNSDomains,
		ExcludedDNSDomains:          opts.ExcludedDNSDomains,
		PermittedDNSDomainsCritical: opts.NameConstraintsCritical,
	}
	signer, issuer := key, tmpl
	if parent != nil {
		signer, issuer = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Parent: parent}, nil
}

func newLeaf(issuer *CA, opts LeafOptions) (*Leaf, error) {
	cn := opts.CommonName
	if cn == "" && len(opts.DNSNames) > 0 {
		cn = opts.DNSNames[0]
	}
	if cn == "" && (opts.NoSAN || (len(opts.DNSNames) == 0 && len(opts.IPAddresses) == 0)) {
		return nil, fmt.Errorf("leaf has neither a name in its SAN nor a common name")
	}
	key := opts.Key
	if key == nil {
		var err error
		if key, err = newKey(opts.KeyType); err != nil {
			return nil, err
		}
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	nb, na, err := validity(opts.NotBefore, opts.NotAfter, DefaultLeafLifetime)
	if err != nil {
		return nil, err
	}
	ku := x509.KeyUsageDigitalSignature
	if opts.KeyType == RSA2048 {
		// RSA key exchange (TLS 1.2 and older) encrypts to the key.
		ku |= x509.KeyUsageKeyEncipherment
	}
	eku := opts.ExtKeyUsage
	if eku == nil {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              ku,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
	}
	if !opts.NoSAN {
		tmpl.DNSNames = opts.DNSNames
		tmpl.IPAddresses = opts.IPAddresses
	}
	var signer crypto.Signer = key
	parentCert := tmpl
	if issuer != nil {
		signer, parentCert = issuer.Key, issuer.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	l := &Leaf{Cert: cert, Key: key, Issuer: issuer, Root: cert}
	for ca := issuer; ca != nil; ca = ca.Parent {
		if ca.Parent == nil {
			l.Root = ca.Cert
			break
		}
		l.Chain = append(l.Chain, ca.Cert)
	}
	return l, nil
}
