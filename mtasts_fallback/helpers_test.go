package mtastsfallback

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ---- in-test PKI ----

var serial atomic.Int64

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool // a pool holding the root of this CA's hierarchy
	// chain holds the CA certificates between a leaf and the root,
	// excluding the root.
	chain []*x509.Certificate
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-24 * time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// intermediate returns a CA signed by ca; permitted, if not empty, becomes
// a DNS name constraint.
func (ca *testCA) intermediate(t testing.TB, cn string, permitted ...string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-24 * time.Hour),
		NotAfter:              time.Now().Add(5 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
		PermittedDNSDomains:   permitted,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pool: ca.pool, chain: append([]*x509.Certificate{cert}, ca.chain...)}
}

// leaf issues a server certificate for names, valid in [notBefore,
// notAfter); zero times mean "an hour ago" and "in a day".
func (ca *testCA) leaf(t testing.TB, names []string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	for _, ic := range ca.chain {
		c.Certificate = append(c.Certificate, ic.Raw)
	}
	return c
}

// ---- loopback HTTPS policy server ----

// startTLSServer serves h over HTTPS on loopback with cert.
func startTLSServer(t testing.TB, cert tls.Certificate, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// dialTo returns a DialContext hook that connects every request to addr
// and records the address asked for.
func dialTo(addr string, asked *[]string, mu *sync.Mutex) func(ctx context.Context, network, a string) (net.Conn, error) {
	return func(ctx context.Context, network, a string) (net.Conn, error) {
		if asked != nil {
			mu.Lock()
			*asked = append(*asked, a)
			mu.Unlock()
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// policySite serves policies by Host header and counts requests.
type policySite struct {
	mu     sync.Mutex
	bodies map[string]string // host -> body; absent -> 404
	status map[string]int    // host -> status override
	hits   map[string]int
	hitCh  chan string // if not nil, receives the host of every request
}

func newPolicySite() *policySite {
	return &policySite{bodies: map[string]string{}, status: map[string]int{}, hits: map[string]int{}}
}

func (s *policySite) set(domain, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bodies["mta-sts."+domain] = body
	delete(s.status, "mta-sts."+domain)
}

func (s *policySite) fail(domain string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status["mta-sts."+domain] = status
}

func (s *policySite) count(domain string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits["mta-sts."+domain]
}

func (s *policySite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.hits[r.Host]++
	body, ok := s.bodies[r.Host]
	status := s.status[r.Host]
	ch := s.hitCh
	s.mu.Unlock()
	if ch != nil {
		ch <- r.Host
	}
	if r.URL.Path != wellKnownPath {
		http.NotFound(w, r)
		return
	}
	if status != 0 {
		http.Error(w, "broken", status)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, body)
}

// testDomains are the Policy Domains the test certificate covers.
var testDomains = []string{"example.com", "example.net", "example.org", "test.example"}

// siteFetcher starts a policy site for testDomains and returns a Fetcher
// aimed at it.
func siteFetcher(t testing.TB) (*policySite, *Fetcher) {
	t.Helper()
	ca := newCA(t, "site root")
	var names []string
	for _, d := range testDomains {
		names = append(names, "mta-sts."+d)
	}
	site := newPolicySite()
	srv := startTLSServer(t, ca.leaf(t, names, time.Time{}, time.Time{}), site)
	return site, &Fetcher{RootCAs: ca.pool, DialContext: dialTo(srv.Listener.Addr().String(), nil, nil)}
}

func policyText(mode string, maxAge int, mx ...string) string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: " + mode + "\r\n")
	for _, m := range mx {
		b.WriteString("mx: " + m + "\r\n")
	}
	b.WriteString("max_age: " + strconv.Itoa(maxAge) + "\r\n")
	return b.String()
}

// ---- fake clock ----

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// ---- canned DNS ----

// fakeTXT is a canned TXT "zone" for _mta-sts names, with a lookup counter.
type fakeTXT struct {
	mu      sync.Mutex
	records map[string][]string // domain -> records
	errs    map[string]error
	calls   map[string]int
	block   chan struct{} // if not nil, lookups wait on it
	entered chan string   // if not nil, receives the domain of every lookup
}

func newFakeTXT() *fakeTXT {
	return &fakeTXT{records: map[string][]string{}, errs: map[string]error{}, calls: map[string]int{}}
}

func (f *fakeTXT) set(domain string, recs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records[domain] = recs
	delete(f.errs, domain)
}

func (f *fakeTXT) setErr(domain string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[domain] = err
}

func (f *fakeTXT) remove(domain string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.records, domain)
	delete(f.errs, domain)
}

func (f *fakeTXT) count(domain string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[domain]
}

func (f *fakeTXT) Lookup(ctx context.Context, name string) ([]string, error) {
	d, ok := strings.CutPrefix(name, "_mta-sts.")
	if !ok {
		return nil, fmt.Errorf("unexpected name %q", name)
	}
	f.mu.Lock()
	f.calls[d]++
	recs, have := f.records[d]
	err := f.errs[d]
	block, entered := f.block, f.entered
	f.mu.Unlock()
	if entered != nil {
		entered <- d
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	if !have {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return recs, nil
}

// ---- file-backed Store ----

var errStoreNotFound = fmt.Errorf("test store: %w", fs.ErrNotExist)

// fileStore keeps one file per key: "<expiry unix nanos>\n<value>".
type fileStore struct {
	dir string
	mu  sync.Mutex
}

func newFileStore(t testing.TB, dir string) *fileStore {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return &fileStore{dir: dir}
}

func (s *fileStore) path(key string) string {
	return filepath.Join(s.dir, hex.EncodeToString([]byte(key)))
}

func (s *fileStore) Get(key string) ([]byte, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := os.ReadFile(s.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, time.Time{}, errStoreNotFound
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	head, val, ok := strings.Cut(string(b), "\n")
	n, perr := strconv.ParseInt(head, 10, 64)
	if !ok || perr != nil {
		return nil, time.Time{}, fmt.Errorf("test store: corrupt entry %q", key)
	}
	return []byte(val), time.Unix(0, n), nil
}

func (s *fileStore) Put(key string, value []byte, expires time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data := strconv.FormatInt(expires.UnixNano(), 10) + "\n" + string(value)
	return os.WriteFile(s.path(key), []byte(data), 0o600)
}

func (s *fileStore) Delete(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := os.Remove(s.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (s *fileStore) Keys() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, e := range ents {
		k, err := hex.DecodeString(e.Name())
		if err != nil {
			continue
		}
		keys = append(keys, string(k))
	}
	return keys, nil
}

// brokenStore fails every operation.
type brokenStore struct{ calls atomic.Int64 }

var errBroken = errors.New("disk on fire")

func (b *brokenStore) Get(string) ([]byte, time.Time, error) {
	b.calls.Add(1)
	return nil, time.Time{}, errBroken
}
func (b *brokenStore) Put(string, []byte, time.Time) error { b.calls.Add(1); return errBroken }
func (b *brokenStore) Delete(string) error                 { b.calls.Add(1); return errBroken }
func (b *brokenStore) Keys() ([]string, error)             { b.calls.Add(1); return nil, errBroken }

// wantReason fails the test unless err is an *Error with reason r and code.
func wantReason(t testing.TB, err error, r Reason, code string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if e.Reason != r || (code != "" && e.Code != code) {
		t.Fatalf("error %v: got reason %q code %q, want %q %q", err, e.Reason, e.Code, r, code)
	}
	return e
}

func tlsCert(chain [][]byte, key any) tls.Certificate {
	return tls.Certificate{Certificate: chain, PrivateKey: key}
}

func hexKey(key string) string { return hex.EncodeToString([]byte(key)) }

func writeRaw(path, data string) error { return os.WriteFile(path, []byte(data), 0o600) }
