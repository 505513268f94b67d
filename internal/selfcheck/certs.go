package selfcheck

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoCertificate: a file holds no PEM CERTIFICATE block.
var ErrNoCertificate = errors.New("selfcheck: no PEM certificate")

// ReadChain reads a PEM chain, leaf first, as `tls file CERT KEY` loads it.
func ReadChain(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w in %s", ErrNoCertificate, path)
	}
	return chain, nil
}

// ACMECertPath finds the certificate maddy's ACME loader keeps for host
// under its store (default <state_dir>/acme): certmagic's FileStorage
// layout is certificates/<issuer key>/<host>/<host>.crt, the PEM chain
// leaf first (certmagic v0.21 storage.go KeyBuilder.SiteCert). With more
// than one issuer directory the newest file wins, as certmagic loads the
// most recent one.
func ACMECertPath(store, host string) (string, error) {
	safe := certmagicSafe(host)
	matches, err := filepath.Glob(filepath.Join(store, "certificates", "*", safe, safe+".crt"))
	if err != nil {
		return "", err
	}
	if len(matches) == 0 {
		return "", fmt.Errorf("no ACME certificate for %s under %s (certificates/*/%s/%s.crt): has the loader obtained one yet?", host, store, safe, safe)
	}
	best, bestTime := "", int64(0)
	for _, m := range matches {
		st, err := os.Stat(m)
		if err == nil && (best == "" || st.ModTime().UnixNano() > bestTime) {
			best, bestTime = m, st.ModTime().UnixNano()
		}
	}
	return best, nil
}

// certmagicSafe is certmagic's KeyBuilder.Safe for host names: lower
// case, wildcard "*" written as "wildcard_".
func certmagicSafe(s string) string {
	s = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	return strings.NewReplacer(" ", "_", "+", "_plus_", "*", "wildcard_", ":", "-", "..", "").Replace(s)
}

func certOf(c *x509.Certificate) Cert {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return Cert{
		Subject: c.Subject.String(), Issuer: c.Issuer.String(), DNSNames: c.DNSNames,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, SPKISHA256: hex.EncodeToString(sum[:]),
	}
}
