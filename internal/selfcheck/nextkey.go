package selfcheck

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/miekg/dns"
)

// The next-key workflow for `tls file` certificates (RFC 7671 §8.1,
// RFC 7672 §4): make the next key now, publish its 3 1 1 beside the
// current one, wait until the new RRset has been visible for two TTLs,
// then deploy a certificate for the next key.

// Sentinel errors of the next-key workflow.
var (
	ErrKeyExists    = errors.New("selfcheck: the next key file exists already; not overwriting it")
	ErrUnknownKey   = errors.New("selfcheck: unsupported private key type")
	ErrNotYet       = errors.New("selfcheck: the next key's TLSA record has not been published long enough")
	ErrNotVisible   = errors.New("selfcheck: the next key's TLSA record is not in the secure TLSA RRset")
	ErrCertWrongKey = errors.New("selfcheck: the new certificate is not for the next key")
)

// ReadPrivateKey reads a PEM private key (PKCS #8, SEC 1 EC or PKCS #1
// RSA), as maddy's `tls file` accepts.
func ReadPrivateKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return nil, fmt.Errorf("%s: no PEM private key", path)
		}
		var k any
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: %w %T", path, ErrUnknownKey, k)
		}
		return s, nil
	}
}

// NewKeyLike makes a key of the same algorithm and size as cur.
func NewKeyLike(cur crypto.Signer) (crypto.Signer, error) {
	switch k := cur.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return ecdsa.GenerateKey(k.Curve, rand.Reader)
		}
	case *rsa.PrivateKey:
		return rsa.GenerateKey(rand.Reader, k.N.BitLen())
	case ed25519.PrivateKey:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("%w %T", ErrUnknownKey, cur)
}

// WriteNewKey writes key as PKCS #8 PEM to path with mode 0600; it never
// replaces an existing file.
func WriteNewKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: %s", ErrKeyExists, path)
	}
	if err != nil {
		return err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// NextKeyPath is the default place of the next key: beside the current
// one, "<key>.next".
func NextKeyPath(currentKey string) string { return currentKey + ".next" }

// StatePath is where the workflow remembers when the record was first
// seen: beside the next key, "<next key>.state.json", so that it travels
// with the key and needs no state directory.
func StatePath(nextKey string) string { return nextKey + ".state.json" }

// RecordOf returns the 3 1 1 record of a key.
func RecordOf(key crypto.Signer) (dane.Record, error) {
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return dane.Record{}, err
	}
	return SPKIRecord(dane.DANEEE, spki), nil
}

// NextKeyState is the state file of the workflow.
type NextKeyState struct {
	Version int    `json:"version"`
	Owner   string `json:"tlsa_owner"`
	Record  string `json:"record"`
	// FirstSeen is when a run first saw the record in the secure RRset;
	// zero while it has not been seen (it is reset when the record
	// disappears again).
	FirstSeen time.Time `json:"first_seen,omitzero"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	// MaxTTL is the largest TTL of the TLSA RRset seen. A resolver reports
	// the remaining TTL of its cached copy, so the largest seen is the best
	// estimate of the zone's TTL; the workflow never uses less.
	MaxTTL int64 `json:"max_ttl_seconds"`
}

// NextKeyStatus is the outcome of one status run.
type NextKeyStatus struct {
	State NextKeyState `json:"state"`
	// Visible: the record is in the secure TLSA RRset now.
	Visible bool `json:"visible"`
	// SafeAt is FirstSeen + 2 × MaxTTL (RFC 7671 §8.1); zero while not
	// visible.
	SafeAt time.Time `json:"safe_at,omitzero"`
	Safe   bool      `json:"safe"`
	// Err is nil when Safe, ErrNotYet or ErrNotVisible otherwise.
	Err error `json:"-"`
}

// LoadState reads the state file; a missing file gives a fresh state.
func LoadState(path, owner string, rec dane.Record) (NextKeyState, error) {
	st := NextKeyState{Version: 1, Owner: dns.Fqdn(owner), Record: rec.String()}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	var old NextKeyState
	if err := json.Unmarshal(data, &old); err != nil {
		return st, fmt.Errorf("%s: %w (delete it to start the wait afresh)", path, err)
	}
	if old.Version != 1 || old.Record != st.Record || old.Owner != st.Owner {
		// Another key or owner: its observations do not count.
		return st, nil
	}
	return old, nil
}

// SaveState writes the state file atomically (mode 0600).
func SaveState(path string, st NextKeyState) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".daneguard-state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Observe is the pure step of the workflow: given the previous state and
// what the resolver shows now, the new state and whether switching is
// safe.
func Observe(st NextKeyState, visible bool, ttl time.Duration, now time.Time) NextKeyStatus {
	if !visible {
		st.FirstSeen = time.Time{}
		return NextKeyStatus{State: st, Err: ErrNotVisible}
	}
	if st.FirstSeen.IsZero() {
		st.FirstSeen = now
	}
	st.LastSeen = now
	if s := int64(ttl / time.Second); s > st.MaxTTL {
		st.MaxTTL = s
	}
	ns := NextKeyStatus{State: st, Visible: true, SafeAt: st.FirstSeen.Add(2 * time.Duration(st.MaxTTL) * time.Second)}
	ns.Safe = !now.Before(ns.SafeAt)
	if !ns.Safe {
		ns.Err = ErrNotYet
	}
	return ns
}

// CheckNextKey looks up the TLSA RRset at owner through q, updates the
// state file at statePath and says whether the key behind rec may be
// deployed now.
func CheckNextKey(ctx context.Context, q dane.Querier, owner string, rec dane.Record, statePath string, now time.Time) (NextKeyStatus, error) {
	st, err := LoadState(statePath, owner, rec)
	if err != nil {
		return NextKeyStatus{}, err
	}
	ans, err := q.Query(ctx, dns.Fqdn(owner), dns.TypeTLSA)
	if err != nil {
		return NextKeyStatus{}, err
	}
	visible := false
	if ans.Secure {
		for _, rr := range ans.Records {
			if t, ok := rr.(*dns.TLSA); ok {
				if r, err := dane.FromRR(t); err == nil && r.Equal(rec) {
					visible = true
				}
			}
		}
	}
	ns := Observe(st, visible, ans.TTL, now)
	if err := SaveState(statePath, ns.State); err != nil {
		return ns, err
	}
	return ns, nil
}

// CertMatchesKey reports whether the leaf of a certificate file carries
// key's public key.
func CertMatchesKey(chain []*x509.Certificate, key crypto.Signer) error {
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if len(chain) == 0 || string(chain[0].RawSubjectPublicKeyInfo) != string(spki) {
		return ErrCertWrongKey
	}
	return nil
}
