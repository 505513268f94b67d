package dane_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/maddy-dane/daneguard/dane"
)

func ExampleParseRecord() {
	// Numbers and RFC 7218 acronyms are both accepted; the hex may be split.
	r, err := dane.ParseRecord("DANE-EE SPKI SHA2-256 " +
		"8d02536c887482bc34ff54e41d2ba659 bf85b341a0a20afadb5813dcfbcf286d")
	if err != nil {
		panic(err)
	}
	fmt.Println(r.Mnemonic())
	fmt.Println(r)
	_, err = dane.ParseRecord("3 1 1")
	fmt.Println(err)
	// Output:
	// DANE-EE(3) SPKI(1) SHA2-256(1)
	// 3 1 1 8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d
	// dane: TLSA record needs usage, selector, matching type and association data
}

func ExampleClassify() {
	var records []dane.Record
	for _, s := range []string{
		"3 1 1 " + strings.Repeat("ab", 32), // set aside: a 3 1 2 record exists
		"3 1 2 " + strings.Repeat("cd", 64), // used
		"2 0 1 " + strings.Repeat("ef", 32), // used
		"1 1 1 " + strings.Repeat("01", 32), // PKIX-EE: never used for SMTP
		"3 1 1 abcd",                        // digest too short
	} {
		r, err := dane.ParseRecord(s)
		if err != nil {
			panic(err)
		}
		records = append(records, r)
	}
	usable, unusable := dane.Classify(records)
	for _, r := range usable {
		fmt.Println("usable:  ", r.Mnemonic())
	}
	for _, u := range unusable {
		fmt.Println("unusable:", u.Record.Mnemonic(), u.Reason)
	}
	fmt.Println("state:", dane.TLSAStateOf(usable, unusable))

	// A secure RRset of unusable records still makes TLS mandatory.
	usable, unusable = dane.Classify(records[3:])
	fmt.Println("state:", dane.TLSAStateOf(usable, unusable))
	// Output:
	// usable:   DANE-EE(3) SPKI(1) SHA2-512(2)
	// usable:   DANE-TA(2) Cert(0) SHA2-256(1)
	// unusable: PKIX-EE(1) SPKI(1) SHA2-256(1) pkix-usage
	// unusable: DANE-EE(3) SPKI(1) SHA2-256(1) bad-digest-length
	// unusable: DANE-EE(3) SPKI(1) SHA2-256(1) superseded-digest
	// state: usable
	// state: unusable
}

func ExampleDigestOrder_Classify() {
	// A client that only accepts SHA2-256 digests.
	order := dane.DigestOrder{dane.SHA2_256}
	fmt.Println(order.Validate())
	r1, _ := dane.ParseRecord("3 1 1 " + strings.Repeat("ab", 32))
	r2, _ := dane.ParseRecord("3 1 2 " + strings.Repeat("cd", 64))
	usable, unusable := order.Classify([]dane.Record{r1, r2})
	fmt.Println(len(usable), usable[0].Mnemonic())
	fmt.Println(unusable[0].Reason)
	fmt.Println(dane.DigestOrder{dane.Full}.Validate())
	// Output:
	// <nil>
	// 1 DANE-EE(3) SPKI(1) SHA2-256(1)
	// unsupported-matching-type
	// dane: digest order: Full(0) is not a supported digest
}

// testChain makes a CA and a leaf for mx.example.net, valid around now.
func testChain(now time.Time) (leaf, ca *x509.Certificate) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Example CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		panic(err)
	}
	ca, _ = x509.ParseCertificate(der)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "mx.example.net"},
		DNSNames:     []string{"mx.example.net"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err = x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		panic(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	return leaf, ca
}

func ExampleVerify() {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	leaf, ca := testChain(now)
	chain := []*x509.Certificate{leaf, ca} // as the server sent it, leaf first

	// "3 1 1": the SHA-256 digest of the leaf's public key. Names and
	// dates are not checked.
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	ee := dane.Record{Usage: dane.DANEEE, Selector: dane.SPKI, MatchingType: dane.SHA2_256, Data: spki[:]}
	m, err := dane.Verify(chain, []dane.Record{ee}, dane.VerifyOptions{Now: now.AddDate(5, 0, 0)})
	fmt.Println(m, err)

	// "2 0 1": the SHA-256 digest of the CA certificate, the trust anchor.
	// The chain must be valid and the leaf must name a reference identifier.
	caHash := sha256.Sum256(ca.Raw)
	ta := dane.Record{Usage: dane.DANETA, Selector: dane.Cert, MatchingType: dane.SHA2_256, Data: caHash[:]}
	m, err = dane.Verify(chain, []dane.Record{ta}, dane.VerifyOptions{
		ReferenceNames: []string{"mx.example.net", "example.net"},
		Now:            now,
	})
	fmt.Println(m, err)

	// The same record, but the leaf does not carry the expected name.
	_, err = dane.Verify(chain, []dane.Record{ta}, dane.VerifyOptions{
		ReferenceNames: []string{"mail.example.org"},
		Now:            now,
	})
	var ve *dane.VerifyError
	if errors.As(err, &ve) {
		fmt.Println(ve.Reason, ve.Reason.ResultType())
	}
	// Output:
	// DANE-EE(3) SPKI(1) SHA2-256(1) <nil>
	// DANE-TA(2) Cert(0) SHA2-256(1), trust anchor "CN=Example CA", name mx.example.net <nil>
	// name-mismatch certificate-host-mismatch
}

func ExampleDecide() {
	for _, o := range []dane.Observation{
		{TLSA: dane.TLSALookupFailed, TLS: true},
		{TLSA: dane.TLSANone},
		{TLSA: dane.TLSANone, Mandatory: true},
		{TLSA: dane.TLSAUnusable},
		{TLSA: dane.TLSAUnusable, TLS: true},
		{TLSA: dane.TLSAUsable, TLS: true, VerifyErr: &dane.VerifyError{Reason: dane.ReasonExpired}},
		{TLSA: dane.TLSAUsable, TLS: true, Match: &dane.Match{Record: dane.Record{Usage: dane.DANEEE, Selector: dane.SPKI, MatchingType: dane.SHA2_256}}},
	} {
		d := dane.Decide(o)
		fmt.Printf("tlsa=%-13s tls=%-5v -> %-14s proceed=%-5v %q\n", o.TLSA, o.TLS, d.Verdict, d.Verdict.Proceed(), d.Reason.ResultType())
	}
	// Output:
	// tlsa=lookup-failed tls=true  -> defer          proceed=false "dnssec-invalid"
	// tlsa=none          tls=false -> not-applicable proceed=true  ""
	// tlsa=none          tls=false -> fail           proceed=false "dane-required"
	// tlsa=unusable      tls=false -> fail           proceed=false "starttls-not-supported"
	// tlsa=unusable      tls=true  -> encrypted-only proceed=true  "tlsa-invalid"
	// tlsa=usable        tls=true  -> fail           proceed=false "certificate-expired"
	// tlsa=usable        tls=true  -> authenticated  proceed=true  ""
}

// Example_delivery shows the whole flow for one next-hop domain: MX and
// TLSA discovery through a local validating resolver, then one decision per
// connection. It needs a resolver and the network, so it is compiled but
// not run.
func Example_delivery() {
	ctx := context.Background()
	res, err := dane.NewResolver(dane.ResolverConfig{Servers: []string{"127.0.0.1:53"}})
	if err != nil {
		panic(err)
	}
	d := &dane.Discoverer{Q: res} // wrap res in a cache in a real MTA

	mx, err := d.LookupMX(ctx, "example.com")
	if err != nil {
		return // RFC 7672 §2.1.2: keep the message queued, retry later
	}
	if mx.NullMX {
		return // RFC 7505: the domain accepts no mail
	}
	for _, h := range mx.Hosts {
		host, err := d.LookupHost(ctx, h.Host)
		state := dane.TLSANone
		var usable []dane.Record
		switch {
		case err != nil:
			state = dane.TLSALookupFailed
		case host.Status == dane.HasTLSA:
			var unusable []dane.Unusable
			usable, unusable = dane.ClassifyRRs(host.TLSA)
			state = dane.TLSAStateOf(usable, unusable)
		}
		if state == dane.TLSALookupFailed {
			continue // this server counts as unreachable
		}

		// Connect, EHLO, STARTTLS with InsecureSkipVerify: DANE does the
		// authentication. With TLSA records the SNI must be the TLSA base
		// domain (RFC 7672 §8.1).
		cs, tlsOK := startTLS(h.Host, host.BaseDomain)
		o := dane.Observation{TLSA: state, TLS: tlsOK}
		if tlsOK && state == dane.TLSAUsable {
			o.Match, o.VerifyErr = dane.Verify(cs.PeerCertificates, usable, dane.VerifyOptions{
				ReferenceNames: dane.ReferenceNames(mx, host),
			})
		}
		dec := dane.Decide(o)
		if !dec.Verdict.Proceed() {
			fmt.Println("not delivering to", h.Host+":", dec)
			continue // next MX host
		}
		// dec.Verdict is Authenticated, EncryptedOnly or NotApplicable
		// (then the MTA's other policies decide): deliver.
		return
	}
}

// startTLS stands for the MTA's own SMTP client.
func startTLS(host, sni string) (tls.ConnectionState, bool) {
	return tls.ConnectionState{}, false
}
