package daneguard_test

// Differential test: every scenario is judged twice, by daneguard inside the
// real maddy and by Postfix's DANE implementation (posttls-finger from
// Debian's postfix 3.7, OpenSSL's DANE verifier underneath), both resolving
// through the same validating unbound over the same signed zones and
// connecting to the same SMTP servers. The verdicts must agree, or differ
// exactly where a documented Postfix choice says they do.

import (
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/miekg/dns"
)

// postfixFinger returns the path of posttls-finger, or "".
func postfixFinger() string {
	if p, err := exec.LookPath("posttls-finger"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/posttls-finger", "/usr/local/sbin/posttls-finger"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// finger runs posttls-finger with a private main.cf (the Debian package,
// installed with "No configuration", has none).
type finger struct {
	bin, conf string
}

func newFinger(t *testing.T, bin string) *finger {
	dir := t.TempDir()
	// smtp_dns_support_level=dnssec: DANE needs DNSSEC-validated answers,
	// taken from the AD bit of the resolver in /etc/resolv.conf (unbound on
	// 127.0.0.1 in the test namespace).
	mainCF := "compatibility_level = 3.6\n" +
		"smtp_dns_support_level = dnssec\n" +
		"myhostname = sender.test\n" +
		"inet_protocols = ipv4\n"
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatal(err)
	}
	return &finger{bin: bin, conf: dir}
}

// ptfResult is posttls-finger's outcome for one destination, mapped onto
// daneguard's result names.
type ptfResult struct {
	verdict string // authenticated, encrypted, plaintext, deferred
	host    string // the server it reached, if any
	why     string
	dane    bool   // a usable TLSA RRset was in force
	word    string // Verified, Trusted, Untrusted or Anonymous
	out     string
}

var (
	ptfTLSLine  = regexp.MustCompile(`posttls-finger: (Verified|Trusted|Untrusted|Anonymous) TLS connection established to ([^\[\s]+)\[`)
	ptfConnLine = regexp.MustCompile(`posttls-finger: Connected to ([^\[\s]+)\[`)
)

// run probes dest at the given -l level. -v is needed for the lines that
// tell whether DANE was in force: posttls-finger, unlike the smtp(8)
// delivery agent, falls back to the "secure" level when no usable TLSA
// record exists (posttls-finger(1), option -l), so "Untrusted" alone does
// not tell a DANE failure from the absence of DANE.
func (f *finger) run(t *testing.T, level, dest string) ptfResult {
	t.Helper()
	cmd := exec.Command(f.bin, "-v", "-t", "5", "-T", "5", "-l", level, "-L", "summary", dest)
	cmd.Env = append(os.Environ(), "MAIL_CONFIG="+f.conf)
	outB, err := cmd.CombinedOutput()
	out := string(outB)
	if err != nil {
		t.Logf("posttls-finger %s: %v", dest, err)
	}
	return parseFinger(out, level)
}

func parseFinger(out, level string) ptfResult {
	r := ptfResult{out: out}
	tlsaSeen := strings.Contains(out, "dns_get_answer: type TLSA for ")
	// Unusable records are set aside either when the RRset is read (an
	// unknown usage) or at the handshake (a digest of the wrong length).
	unusable := strings.Contains(out, "no usable TLSA records found") ||
		strings.Contains(out, "all TLSA records unusable")
	// "no TLSA records found": the RRset seen, if any, was not secure
	// (an alias into an unsigned zone, say) or there was none.
	if strings.Contains(out, "no TLSA records found") {
		tlsaSeen = false
	}
	// DANE is in force when a (validated) TLSA RRset was found with at
	// least one usable record.
	dane := tlsaSeen && !unusable
	r.dane = dane
	// postconf(5), smtp_tls_security_level: "dane-only" defers when no
	// usable TLSA records exist; posttls-finger probes with "secure"
	// instead, which is not what the delivery agent does.
	mandatoryDANE := level == "dane-only"
	if m := ptfConnLine.FindStringSubmatch(out); m != nil {
		r.host = m[1]
	}
	switch {
	case strings.Contains(out, "TLSA lookup error"), strings.Contains(out, "Failed to establish session"),
		strings.Contains(out, "Destination address lookup failed"), strings.Contains(out, "Host or domain name not found"):
		r.verdict, r.why = "deferred", "dns"
		return r
	}
	if m := ptfTLSLine.FindStringSubmatch(out); m != nil {
		r.host, r.word = m[2], m[1]
		switch {
		case m[1] == "Verified" || m[1] == "Trusted":
			r.verdict, r.why = "authenticated", "verified"
		case dane || mandatoryDANE:
			r.verdict, r.why = "deferred", "dane-unverified"
		default:
			// No DANE: smtp(8) at level dane uses "may" (no TLSA) or
			// "encrypt" (TLSA present, none usable): TLS without
			// authentication delivers.
			r.verdict, r.why = "encrypted", "tls-unauthenticated"
		}
		return r
	}
	if r.host != "" {
		// Connected, no TLS. A TLSA RRset, usable or not, makes TLS
		// mandatory (RFC 7672 §2.2; Postfix TLS_README, "dane" level).
		if tlsaSeen || mandatoryDANE {
			r.verdict, r.why = "deferred", "no-tls"
		} else {
			r.verdict, r.why = "plaintext", "no-tls"
		}
		return r
	}
	r.verdict, r.why = "unknown", "no connection"
	return r
}

// diffCase is one destination judged by both implementations.
type diffCase struct {
	name   string
	domain string
	// hosts: the MX hosts in the order a client may try them, for
	// destinations with several. posttls-finger reports on the first
	// server it reaches only; smtp(8) moves on to the next MX after a
	// failed TLS authentication, so the test does that itself, probing each
	// further host as "[host]".
	hosts []string
	// want is the RFC 7672 outcome; both must reach it unless dgWant or
	// ptfWant says otherwise.
	want string
	// dgWant and ptfWant, when set, are daneguard's and Postfix's
	// documented departures from want; the comment at the case cites the
	// RFC section and the document that explains each.
	dgWant, ptfWant string
	// dgSNI, when set, is the SNI maddy sends where it is known to differ
	// from the TLSA base domain that posttls-finger sends.
	dgSNI string
	level string // -l for posttls-finger; "" = dane
}

func TestDANEDifferentialPostfix(t *testing.T) {
	bin := postfixFinger()
	if bin == "" {
		t.Skip("posttls-finger (Debian package postfix) is not installed; scripts/deps.sh installs it")
	}
	w := newWorld(t)
	ca := w.ca
	inter := ca.Intermediate(t, "diff test intermediate")
	zone := func(name string, opts ...dnsbed.ZoneOption) *dnsbed.Zone {
		return w.dns.Zone(t, name+".", append([]dnsbed.ZoneOption{dnsbed.TTL(300)}, opts...)...)
	}
	tlsa := func(owner string, u, s, m uint8, c *pki.Leaf) string {
		return pki.TLSA(t, owner+".", u, s, m, c.Cert)
	}
	caTLSA := func(owner string, u, s, m uint8) string {
		return pki.TLSA(t, owner+".", u, s, m, ca.Cert)
	}
	withRoot := func(l *pki.Leaf) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{l.TLSCertificateWithRoot()}}
	}
	past := time.Now().Add(-48 * time.Hour)
	var cases []diffCase
	add := func(c diffCase) { cases = append(cases, c) }

	// --- DANE-EE(3) ---
	ee := selfSigned(t, "mx.ee.example")
	ip, _ := w.server("mx.ee.example", ee)
	zone("ee.example").Add(t, "@ MX 10 mx", "mx A "+ip, tlsa("_25._tcp.mx.ee.example", 3, 1, 1, ee))
	add(diffCase{name: "ee-3-1-1", domain: "ee.example", want: "authenticated"})

	// DANE-EE ignores names (RFC 7672 §3.1.1).
	eeName := selfSigned(t, "unrelated.invalid")
	ip, _ = w.server("mx.eename.example", eeName)
	zone("eename.example").Add(t, "@ MX 10 mx", "mx A "+ip, tlsa("_25._tcp.mx.eename.example", 3, 0, 2, eeName))
	add(diffCase{name: "ee-3-0-2-wrong-name", domain: "eename.example", want: "authenticated"})

	// DANE-EE ignores validity dates (RFC 7672 §3.1.1).
	eeExp := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.eeexp.example"}, NotBefore: past.Add(-24 * time.Hour), NotAfter: past})
	ip, _ = w.server("mx.eeexp.example", eeExp)
	zone("eeexp.example").Add(t, "@ MX 10 mx", "mx A "+ip, tlsa("_25._tcp.mx.eeexp.example", 3, 1, 1, eeExp))
	add(diffCase{name: "ee-expired-leaf", domain: "eeexp.example", want: "authenticated"})

	// --- DANE-TA(2) ---
	taLeaf := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.ta.example"}})
	ip, _ = w.serverTLS("mx.ta.example", withRoot(taLeaf))
	zone("ta.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.ta.example", 2, 0, 1))
	add(diffCase{name: "ta-2-0-1-root-sent", domain: "ta.example", want: "authenticated"})

	// SPKI digest of the anchor, anchor sent (RFC 7671 §5.2.2).
	ta211 := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.ta211.example"}})
	ip, _ = w.serverTLS("mx.ta211.example", withRoot(ta211))
	zone("ta211.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.ta211.example", 2, 1, 1))
	add(diffCase{name: "ta-2-1-1-spki-digest", domain: "ta211.example", want: "authenticated"})

	// Full certificate of the anchor in DNS, not sent by the server.
	taFull := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.tafull.example"}})
	ip, _ = w.server("mx.tafull.example", taFull)
	zone("tafull.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.tafull.example", 2, 0, 0))
	add(diffCase{name: "ta-2-0-0-anchor-not-sent", domain: "tafull.example", want: "authenticated"})

	// Full SPKI of the anchor in DNS, not sent (RFC 7671 §5.2.3).
	ta210 := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.ta210.example"}})
	ip, _ = w.server("mx.ta210.example", ta210)
	zone("ta210.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.ta210.example", 2, 1, 0))
	add(diffCase{name: "ta-2-1-0-spki-not-sent", domain: "ta210.example", want: "authenticated"})

	// Wildcard SAN (RFC 7672 §3.2.3).
	taWild := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"*.tawild.example"}})
	ip, _ = w.serverTLS("mx.tawild.example", withRoot(taWild))
	zone("tawild.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.tawild.example", 2, 0, 1))
	add(diffCase{name: "ta-wildcard-san", domain: "tawild.example", want: "authenticated"})

	// The next-hop domain is a reference identifier for a secure MX
	// (RFC 7672 §3.2.2).
	taDom := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"tadom.example"}})
	ip, _ = w.serverTLS("mx.tadom.example", withRoot(taDom))
	zone("tadom.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.tadom.example", 2, 0, 1))
	add(diffCase{name: "ta-next-hop-name", domain: "tadom.example", want: "authenticated"})

	// Only the CNAME-expanded next-hop domain is in the certificate:
	// mail.tacn.example CNAME tacnreal.example, whose MX is
	// mx.tacnreal.example (RFC 7672 §3.2.2, third reference identifier).
	taCN := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"tacnreal.example"}})
	ip, _ = w.serverTLS("mx.tacnreal.example", withRoot(taCN))
	zone("tacnreal.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.tacnreal.example", 2, 0, 1))
	zone("tacn.example").Add(t, "mail CNAME tacnreal.example.")
	add(diffCase{name: "ta-cname-expanded-next-hop", domain: "mail.tacn.example", want: "authenticated"})

	taWrong := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"wrong.example"}})
	ip, _ = w.serverTLS("mx.taname.example", withRoot(taWrong))
	zone("taname.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.taname.example", 2, 0, 1))
	add(diffCase{name: "ta-wrong-name", domain: "taname.example", want: "deferred"})

	taExp := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.taexp.example"}, NotBefore: past.Add(-24 * time.Hour), NotAfter: past})
	ip, _ = w.serverTLS("mx.taexp.example", withRoot(taExp))
	zone("taexp.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.taexp.example", 2, 0, 1))
	add(diffCase{name: "ta-expired-leaf", domain: "taexp.example", want: "deferred"})

	// --- TLSA sets ---
	ip, _ = w.server("mx.notls.example", nil)
	zone("notls.example").Add(t, "@ MX 10 mx", "mx A "+ip, tlsa("_25._tcp.mx.notls.example", 3, 1, 1, ee))
	add(diffCase{name: "no-starttls", domain: "notls.example", want: "deferred"})

	unLeaf := selfSigned(t, "mx.unusable.example")
	ip, _ = w.server("mx.unusable.example", unLeaf)
	zone("unusable.example").Add(t, "@ MX 10 mx", "mx A "+ip,
		tlsa("_25._tcp.mx.unusable.example", 0, 0, 1, unLeaf),
		pki.TLSARaw(t, "_25._tcp.mx.unusable.example.", 3, 1, 1, []byte{1, 2, 3}))
	add(diffCase{name: "only-unusable", domain: "unusable.example", want: "encrypted"})

	mixLeaf := selfSigned(t, "mx.mixed.example")
	ip, _ = w.server("mx.mixed.example", mixLeaf)
	zone("mixed.example").Add(t, "@ MX 10 mx", "mx A "+ip,
		tlsa("_25._tcp.mx.mixed.example", 1, 1, 1, mixLeaf),
		pki.TLSARaw(t, "_25._tcp.mx.mixed.example.", 3, 1, 2, []byte{9, 9}),
		pki.TLSARaw(t, "_25._tcp.mx.mixed.example.", 3, 1, 1, make([]byte, 32)),
		tlsa("_25._tcp.mx.mixed.example", 3, 1, 1, mixLeaf))
	add(diffCase{name: "mixed-set", domain: "mixed.example", want: "authenticated"})

	// Digest agility (RFC 7671 §9): with 3 1 2 published, 3 1 1 records
	// for the same usage and selector are not used.
	other := selfSigned(t, "attacker.invalid")
	agA := selfSigned(t, "mx.agility1.example")
	ip, _ = w.server("mx.agility1.example", agA)
	zone("agility1.example").Add(t, "@ MX 10 mx", "mx A "+ip,
		tlsa("_25._tcp.mx.agility1.example", 3, 1, 2, other),
		tlsa("_25._tcp.mx.agility1.example", 3, 1, 1, agA))
	add(diffCase{name: "agility-sha512-fails-sha256-matches", domain: "agility1.example", want: "deferred"})
	agB := selfSigned(t, "mx.agility2.example")
	ip, _ = w.server("mx.agility2.example", agB)
	zone("agility2.example").Add(t, "@ MX 10 mx", "mx A "+ip,
		tlsa("_25._tcp.mx.agility2.example", 3, 1, 2, agB),
		tlsa("_25._tcp.mx.agility2.example", 3, 1, 1, other))
	add(diffCase{name: "agility-sha512-matches-sha256-fails", domain: "agility2.example", want: "authenticated"})

	// TLSA RRset reached through a CNAME at the _25._tcp name, into
	// another signed zone (RFC 7672 §2.2.3).
	tcLeaf := selfSigned(t, "mx.tlsacname.example")
	ip, _ = w.server("mx.tlsacname.example", tcLeaf)
	zone("tlsastore.example").Add(t, tlsa("mx-keys.tlsastore.example", 3, 1, 1, tcLeaf))
	zone("tlsacname.example").Add(t, "@ MX 10 mx", "mx A "+ip, "_25._tcp.mx CNAME mx-keys.tlsastore.example.")
	add(diffCase{name: "tlsa-via-cname", domain: "tlsacname.example", want: "authenticated"})

	// Secure denial of the TLSA name (NXDOMAIN): DANE does not apply.
	nxLeaf := selfSigned(t, "mx.tlsanx.example")
	ip, _ = w.server("mx.tlsanx.example", nxLeaf)
	zone("tlsanx.example").Add(t, "@ MX 10 mx", "mx A "+ip)
	add(diffCase{name: "tlsa-nxdomain-secure", domain: "tlsanx.example", want: "encrypted"})

	// Bogus TLSA: the TLSA name aliases into a zone with broken
	// signatures: both must defer (RFC 7672 §2.1.1).
	bg := selfSigned(t, "mx.bogustlsa.example")
	ip, _ = w.server("mx.bogustlsa.example", bg)
	zone("broken.example", dnsbed.BadSignatures()).Add(t, tlsa("x.broken.example", 3, 1, 1, bg))
	zone("bogustlsa.example").Add(t, "@ MX 10 mx", "mx A "+ip, "_25._tcp.mx CNAME x.broken.example.")
	add(diffCase{name: "bogus-tlsa", domain: "bogustlsa.example", want: "deferred"})

	// --- MX hosts ---
	t1 := selfSigned(t, "mx1.two.example")
	t2 := selfSigned(t, "mx2.two.example")
	ip1, _ := w.server("mx1.two.example", t1)
	ip2, _ := w.server("mx2.two.example", t2)
	zone("two.example").Add(t, "@ MX 10 mx1", "@ MX 20 mx2", "mx1 A "+ip1, "mx2 A "+ip2,
		tlsa("_25._tcp.mx1.two.example", 3, 1, 1, t2), tlsa("_25._tcp.mx2.two.example", 3, 1, 1, t2))
	add(diffCase{name: "first-mx-fails-second-passes", domain: "two.example",
		hosts: []string{"mx1.two.example", "mx2.two.example"}, want: "authenticated"})

	// Two MX at one preference, one failing DANE: whichever is tried
	// first, delivery ends authenticated at the other.
	s1 := selfSigned(t, "mxa.samepref.example")
	s2 := selfSigned(t, "mxb.samepref.example")
	ip1, _ = w.server("mxa.samepref.example", s1)
	ip2, _ = w.server("mxb.samepref.example", s2)
	zone("samepref.example").Add(t, "@ MX 10 mxa", "@ MX 10 mxb", "mxa A "+ip1, "mxb A "+ip2,
		tlsa("_25._tcp.mxa.samepref.example", 3, 1, 1, other), tlsa("_25._tcp.mxb.samepref.example", 3, 1, 1, s2))
	add(diffCase{name: "same-preference", domain: "samepref.example",
		hosts: []string{"mxa.samepref.example", "mxb.samepref.example"}, want: "authenticated"})

	// MX host CNAME into another signed zone: TLSA at the expanded name.
	cn := selfSigned(t, "host.target.example")
	ip, _ = w.server("host.target.example", cn)
	zone("target.example").Add(t, "host A "+ip, tlsa("_25._tcp.host.target.example", 3, 1, 1, cn))
	zone("cname.example").Add(t, "@ MX 10 mx", "mx CNAME host.target.example.")
	// maddy's target.remote sends the MX host name as SNI (connect.go sets
	// ServerName = host); RFC 7672 §8.1 asks for the TLSA base domain,
	// which posttls-finger sends (posttls-finger(1), -s). docs/dane.md#sni.
	add(diffCase{name: "mx-cname-signed-target", domain: "cname.example", want: "authenticated", dgSNI: "mx.cname.example"})

	// The same, with a server that picks its certificate by SNI: for the
	// TLSA base domain it presents the certificate the TLSA record pins,
	// for any other name another one. Postfix sends the base domain and
	// authenticates. maddy sends the MX host name (see above), gets the
	// other certificate and daneguard defers: a departure from RFC 7672
	// §8.1 that daneguard cannot repair from inside mx_auth, documented
	// in docs/dane.md#sni and docs/troubleshooting.md. The mail waits;
	// it is never sent unauthenticated.
	sniA := selfSigned(t, "host.snitarget.example")
	sniB := selfSigned(t, "default.snitarget.example")
	ip, _ = w.serverTLS("host.snitarget.example", &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c := sniB.TLSCertificate()
		if h.ServerName == "host.snitarget.example" {
			c = sniA.TLSCertificate()
		}
		return &c, nil
	}})
	zone("snitarget.example").Add(t, "host A "+ip, tlsa("_25._tcp.host.snitarget.example", 3, 1, 1, sniA))
	zone("snisel.example").Add(t, "@ MX 10 mx", "mx CNAME host.snitarget.example.")
	add(diffCase{name: "mx-cname-sni-selected-cert", domain: "snisel.example", want: "authenticated",
		dgWant: "deferred", dgSNI: "mx.snisel.example"})

	// MX host CNAME into an unsigned zone: TLSA at the original name.
	cn2 := selfSigned(t, "host.unsigned.example")
	ip, _ = w.server("host.unsigned.example", cn2)
	zone("unsigned.example", dnsbed.Unsigned()).Add(t, "host A "+ip)
	zone("cname2.example").Add(t, "@ MX 10 mx", "mx CNAME host.unsigned.example.", tlsa("_25._tcp.mx.cname2.example", 3, 1, 1, cn2))
	add(diffCase{name: "mx-cname-unsigned-target", domain: "cname2.example", want: "authenticated"})

	// Secure MX RRset, MX host (not an alias) in an unsigned zone, with a
	// TLSA record there that cannot validate: DANE does not apply
	// (RFC 7672 §2.2.2, "Non-CNAME" with insecure addresses).
	ua := selfSigned(t, "mx.unsigned2.example")
	ip, _ = w.server("mx.unsigned2.example", ua)
	zone("unsigned2.example", dnsbed.Unsigned()).Add(t, "mx A "+ip, tlsa("_25._tcp.mx.unsigned2.example", 3, 1, 1, other))
	zone("insaddr.example").Add(t, "@ MX 10 mx.unsigned2.example.")
	add(diffCase{name: "secure-mx-insecure-host", domain: "insaddr.example", want: "encrypted"})

	// No MX: the domain is its own host (RFC 7672 §2.2.2).
	nomx := selfSigned(t, "nomx.example")
	ip, _ = w.server("nomx.example", nomx)
	zone("nomx.example").Add(t, "@ A "+ip, tlsa("_25._tcp.nomx.example", 3, 1, 1, nomx))
	add(diffCase{name: "implicit-mx", domain: "nomx.example", want: "authenticated"})

	// Unsigned domain, no TLS: DANE does not apply.
	ip, _ = w.server("mx.insecure.example", nil)
	zone("insecure.example", dnsbed.Unsigned()).Add(t, "@ MX 10 mx", "mx A "+ip)
	add(diffCase{name: "insecure-domain", domain: "insecure.example", want: "plaintext"})

	// Insecure MX RRset, MX host in a signed zone with TLSA: RFC 7672
	// §2.2.1 lets the client use the host's TLSA. daneguard does; Postfix
	// does too at level dane (smtp_tls_dane_insecure_mx_policy defaults to
	// "dane" when smtp_tls_security_level is dane, postconf(5); -M in
	// posttls-finger(1)).
	hosted := selfSigned(t, "mx.provider.example")
	ip, _ = w.server("mx.provider.example", hosted)
	zone("provider.example").Add(t, "mx A "+ip, tlsa("_25._tcp.mx.provider.example", 3, 1, 1, hosted))
	zone("hosted.example", dnsbed.Unsigned()).Add(t, "@ MX 10 mx.provider.example.")
	add(diffCase{name: "insecure-mx-host-tlsa", domain: "hosted.example", want: "authenticated"})

	// dane-only without TLSA: both policies defer. posttls-finger itself
	// probes at "secure" then (posttls-finger(1), -l), so its verdict is
	// read as smtp(8) would act: postconf(5) smtp_tls_security_level
	// "dane-only" defers without usable TLSA.
	only := selfSigned(t, "mx.only.example")
	ip, _ = w.server("mx.only.example", only)
	zone("only.example").Add(t, "@ MX 10 mx", "mx A "+ip)
	add(diffCase{name: "dane-only-without-tlsa", domain: "only.example", want: "deferred", level: "dane-only"})

	// --- Wildcards (RFC 4592) ---
	// A wildcard TLSA RRset at *._tcp.<host> answers _25._tcp.<host>.
	wl := selfSigned(t, "mx.wild1.example")
	ip, _ = w.server("mx.wild1.example", wl)
	zone("wild1.example").Add(t, "@ MX 10 mx", "mx A "+ip, tlsa("*._tcp.mx.wild1.example", 3, 1, 1, wl))
	add(diffCase{name: "wildcard-tlsa", domain: "wild1.example", want: "authenticated"})

	wl2 := selfSigned(t, "mx.wild2.example")
	ip, _ = w.server("mx.wild2.example", wl2)
	zone("wild2.example").Add(t, "@ MX 10 mx", "mx A "+ip, tlsa("*._tcp.mx.wild2.example", 3, 1, 1, other))
	add(diffCase{name: "wildcard-tlsa-mismatch", domain: "wild2.example", want: "deferred"})

	// One wildcard owns the MX hosts' addresses and their TLSA records:
	// _25._tcp.mx1.hosts.wild3.example is also below the closest encloser
	// hosts.wild3.example.
	wl3 := selfSigned(t, "mx1.hosts.wild3.example")
	ip, _ = w.server("mx1.hosts.wild3.example", wl3)
	zone("wild3.example").Add(t, "@ MX 10 mx1.hosts", "*.hosts A "+ip, tlsa("*.hosts.wild3.example", 3, 1, 1, wl3))
	add(diffCase{name: "wildcard-host-and-tlsa", domain: "wild3.example", want: "authenticated"})

	// A CNAME at the TLSA name into a wildcard TLSA RRset.
	wl4 := selfSigned(t, "mx.wild4.example")
	ip, _ = w.server("mx.wild4.example", wl4)
	zone("keys.example").Add(t, tlsa("*.wild4.keys.example", 3, 1, 1, wl4))
	zone("wild4.example").Add(t, "@ MX 10 mx", "mx A "+ip, "_25._tcp.mx CNAME mx.wild4.keys.example.")
	add(diffCase{name: "tlsa-cname-to-wildcard", domain: "wild4.example", want: "authenticated"})

	// --- more DANE-EE ---
	ee310 := selfSigned(t, "mx.ee310.example")
	ip, _ = w.server("mx.ee310.example", ee310)
	zone("ee310.example").Add(t, "@ MX 10 mx", "mx A "+ip, tlsa("_25._tcp.mx.ee310.example", 3, 1, 0, ee310))
	add(diffCase{name: "ee-3-1-0-full-spki", domain: "ee310.example", want: "authenticated"})

	// DANE-EE matches the leaf only, never an issuer (RFC 7671 §5.1).
	eeInter := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.eeinter.example"}})
	ip, _ = w.server("mx.eeinter.example", eeInter)
	zone("eeinter.example").Add(t, "@ MX 10 mx", "mx A "+ip, pki.TLSA(t, "_25._tcp.mx.eeinter.example.", 3, 0, 1, eeInter.Chain[0]))
	add(diffCase{name: "ee-matches-issuer-only", domain: "eeinter.example", want: "deferred"})

	// A failing DANE-EE record next to a matching DANE-TA record.
	eeta := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.eeta.example"}})
	ip, _ = w.serverTLS("mx.eeta.example", withRoot(eeta))
	zone("eeta.example").Add(t, "@ MX 10 mx", "mx A "+ip,
		tlsa("_25._tcp.mx.eeta.example", 3, 1, 1, other), caTLSA("_25._tcp.mx.eeta.example", 2, 0, 1))
	add(diffCase{name: "ee-fails-ta-matches", domain: "eeta.example", want: "authenticated"})

	// --- more DANE-TA ---
	// A digest names an anchor the server must send (RFC 7671 §5.2.2).
	taNoRoot := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.tanoroot.example"}})
	ip, _ = w.server("mx.tanoroot.example", taNoRoot)
	zone("tanoroot.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.tanoroot.example", 2, 0, 1))
	add(diffCase{name: "ta-digest-anchor-not-sent", domain: "tanoroot.example", want: "deferred"})

	// The intermediate as the trust anchor.
	taInt := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.taint.example"}})
	ip, _ = w.server("mx.taint.example", taInt)
	zone("taint.example").Add(t, "@ MX 10 mx", "mx A "+ip, pki.TLSA(t, "_25._tcp.mx.taint.example.", 2, 1, 1, inter.Cert))
	add(diffCase{name: "ta-intermediate-anchor", domain: "taint.example", want: "authenticated"})

	// No SAN: the CN-ID is matched (RFC 7672 §3.2.3).
	taCN1 := inter.Leaf(t, pki.LeafOptions{CommonName: "mx.tacnid.example", NoSAN: true})
	ip, _ = w.serverTLS("mx.tacnid.example", withRoot(taCN1))
	zone("tacnid.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.tacnid.example", 2, 0, 1))
	add(diffCase{name: "ta-cn-only", domain: "tacnid.example", want: "authenticated"})

	// With DNS-IDs present the CN-ID is not considered (RFC 7672 §3.2.3).
	taCN2 := inter.Leaf(t, pki.LeafOptions{CommonName: "mx.tacnsan.example", DNSNames: []string{"elsewhere.example"}})
	ip, _ = w.serverTLS("mx.tacnsan.example", withRoot(taCN2))
	zone("tacnsan.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.tacnsan.example", 2, 0, 1))
	add(diffCase{name: "ta-cn-ignored-with-san", domain: "tacnsan.example", want: "deferred"})

	// A wildcard matches one label only (RFC 7672 §3.2.3).
	taW2 := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"*.tawild2.example"}})
	ip, _ = w.serverTLS("mx.sub.tawild2.example", withRoot(taW2))
	zone("tawild2.example").Add(t, "@ MX 10 mx.sub", "mx.sub A "+ip, caTLSA("_25._tcp.mx.sub.tawild2.example", 2, 0, 1))
	add(diffCase{name: "ta-wildcard-two-labels", domain: "tawild2.example", want: "deferred"})

	// The anchor's name constraints hold when the record is Cert(0)
	// (RFC 7671 §5.2.2; RFC 5280 §4.2.1.10).
	ncCA := pki.NewCAWith(t, pki.CAOptions{CommonName: "constrained root", PermittedDNSDomains: []string{"elsewhere.example"}, NameConstraintsCritical: true})
	ncLeaf := ncCA.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.tanc.example"}})
	ip, _ = w.server("mx.tanc.example", ncLeaf)
	zone("tanc.example").Add(t, "@ MX 10 mx", "mx A "+ip, pki.TLSA(t, "_25._tcp.mx.tanc.example.", 2, 0, 0, ncCA.Cert))
	add(diffCase{name: "ta-name-constraints", domain: "tanc.example", want: "deferred"})

	// An expired intermediate below a DANE-TA root.
	oldInter := ca.IntermediateWith(t, pki.CAOptions{CommonName: "expired intermediate", NotBefore: past.Add(-24 * time.Hour), NotAfter: past})
	taOld := oldInter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.taoldint.example"}})
	ip, _ = w.serverTLS("mx.taoldint.example", withRoot(taOld))
	zone("taoldint.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.taoldint.example", 2, 0, 1))
	add(diffCase{name: "ta-expired-intermediate", domain: "taoldint.example", want: "deferred"})

	// --- more discovery ---
	// TLSA name aliased into an unsigned zone: insecure, DANE does not
	// apply (RFC 7672 §2.2.3).
	tci := selfSigned(t, "mx.tlsains.example")
	ip, _ = w.server("mx.tlsains.example", tci)
	zone("unsignedkeys.example", dnsbed.Unsigned()).Add(t, tlsa("x.unsignedkeys.example", 3, 1, 1, other))
	zone("tlsains.example").Add(t, "@ MX 10 mx", "mx A "+ip, "_25._tcp.mx CNAME x.unsignedkeys.example.")
	add(diffCase{name: "tlsa-cname-insecure", domain: "tlsains.example", want: "encrypted"})

	// TLSA NODATA: the name exists with other data.
	nd := selfSigned(t, "mx.tlsanodata.example")
	ip, _ = w.server("mx.tlsanodata.example", nd)
	zone("tlsanodata.example").Add(t, "@ MX 10 mx", "mx A "+ip, `_25._tcp.mx TXT "no keys"`)
	add(diffCase{name: "tlsa-nodata-secure", domain: "tlsanodata.example", want: "encrypted"})

	// MX host CNAME: TLSA at the expanded name wins over the original
	// (RFC 7672 §2.2.3), here failing.
	cw := selfSigned(t, "host.target3.example")
	ip, _ = w.server("host.target3.example", cw)
	zone("target3.example").Add(t, "host A "+ip, tlsa("_25._tcp.host.target3.example", 3, 1, 1, other))
	zone("cname3.example").Add(t, "@ MX 10 mx", "mx CNAME host.target3.example.", tlsa("_25._tcp.mx.cname3.example", 3, 1, 1, cw))
	add(diffCase{name: "mx-cname-expanded-tlsa-first", domain: "cname3.example", want: "deferred", dgSNI: "mx.cname3.example"}) // SNI: see mx-cname-signed-target

	// Secure CNAME, no TLSA at the expanded name: the original is tried.
	co := selfSigned(t, "host.target4.example")
	ip, _ = w.server("host.target4.example", co)
	zone("target4.example").Add(t, "host A "+ip)
	zone("cname4.example").Add(t, "@ MX 10 mx", "mx CNAME host.target4.example.", tlsa("_25._tcp.mx.cname4.example", 3, 1, 1, co))
	add(diffCase{name: "mx-cname-original-fallback", domain: "cname4.example", want: "authenticated"})

	// Bogus MX RRset and bogus address records: defer.
	bm := selfSigned(t, "mx.bogusmx.example")
	ip, _ = w.server("mx.bogusmx.example", bm)
	zone("bogusmx.example", dnsbed.BadSignatures()).Add(t, "@ MX 10 mx", "mx A "+ip)
	add(diffCase{name: "bogus-mx", domain: "bogusmx.example", want: "deferred"})
	ba := selfSigned(t, "mx.badaddr.example")
	ip, _ = w.server("mx.badaddr.example", ba)
	zone("badaddr.example", dnsbed.BadSignatures()).Add(t, "mx A "+ip)
	zone("bogusaddr.example").Add(t, "@ MX 10 mx.badaddr.example.")
	add(diffCase{name: "bogus-mx-address", domain: "bogusaddr.example", want: "deferred"})

	// SERVFAIL for the TLSA query (RFC 7672 §2.1.1: defer).
	sf := selfSigned(t, "mx.tlsaservfail.example")
	ip, _ = w.server("mx.tlsaservfail.example", sf)
	zone("tlsaservfail.example").Add(t, "@ MX 10 mx", "mx A "+ip, tlsa("_25._tcp.mx.tlsaservfail.example", 3, 1, 1, sf))
	w.dns.SetFault(t, "_25._tcp.mx.tlsaservfail.example.", dns.TypeTLSA, dnsbed.ServFail)
	add(diffCase{name: "tlsa-servfail", domain: "tlsaservfail.example", want: "deferred"})

	// --- more digest agility (RFC 7671 §9) ---
	// Full(0) is never set aside for a digest.
	ag3 := selfSigned(t, "mx.agility3.example")
	ip, _ = w.server("mx.agility3.example", ag3)
	zone("agility3.example").Add(t, "@ MX 10 mx", "mx A "+ip,
		tlsa("_25._tcp.mx.agility3.example", 3, 1, 0, ag3), tlsa("_25._tcp.mx.agility3.example", 3, 1, 2, other))
	add(diffCase{name: "agility-full-kept", domain: "agility3.example", want: "authenticated"})
	// ... nor does it save a weaker digest.
	ag4 := selfSigned(t, "mx.agility4.example")
	ip, _ = w.server("mx.agility4.example", ag4)
	zone("agility4.example").Add(t, "@ MX 10 mx", "mx A "+ip,
		tlsa("_25._tcp.mx.agility4.example", 3, 1, 0, other), tlsa("_25._tcp.mx.agility4.example", 3, 1, 2, other),
		tlsa("_25._tcp.mx.agility4.example", 3, 1, 1, ag4))
	add(diffCase{name: "agility-full-and-sha512-fail", domain: "agility4.example", want: "deferred"})
	// Agility is per usage and selector.
	ag5 := selfSigned(t, "mx.agility5.example")
	ip, _ = w.server("mx.agility5.example", ag5)
	zone("agility5.example").Add(t, "@ MX 10 mx", "mx A "+ip,
		tlsa("_25._tcp.mx.agility5.example", 3, 0, 2, other), tlsa("_25._tcp.mx.agility5.example", 3, 1, 1, ag5))
	add(diffCase{name: "agility-per-selector", domain: "agility5.example", want: "authenticated"})
	// Malformed records are discarded before agility applies.
	ag6 := selfSigned(t, "mx.agility6.example")
	ip, _ = w.server("mx.agility6.example", ag6)
	zone("agility6.example").Add(t, "@ MX 10 mx", "mx A "+ip,
		pki.TLSARaw(t, "_25._tcp.mx.agility6.example.", 3, 1, 2, make([]byte, 32)), tlsa("_25._tcp.mx.agility6.example", 3, 1, 1, ag6))
	add(diffCase{name: "agility-malformed-sha512-ignored", domain: "agility6.example", want: "authenticated"})
	// Agility for DANE-TA: a wrong 2 0 2 hides the matching 2 0 1.
	ag7 := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.agility7.example"}})
	ip, _ = w.serverTLS("mx.agility7.example", withRoot(ag7))
	zone("agility7.example").Add(t, "@ MX 10 mx", "mx A "+ip,
		pki.TLSA(t, "_25._tcp.mx.agility7.example.", 2, 0, 2, other.Cert), caTLSA("_25._tcp.mx.agility7.example", 2, 0, 1))
	add(diffCase{name: "agility-ta-sha512-fails", domain: "agility7.example", want: "deferred"})

	// --- reference identifiers, more ---
	// Insecure MX: the MX host name is the only reference identifier
	// (RFC 7672 §3.2.2); a certificate for the domain alone fails.
	// Postfix departs from this on purpose: postconf(5),
	// smtp_tls_dane_insecure_mx_policy "dane": "The TLSA records will be
	// used just as with "secure" MX records", and its dane_init()
	// (src/smtp/smtp_tls_policy.c) adds the MX lookup's query and
	// CNAME-expanded names to the match list whether the MX RRset is
	// secure or not. It logs the result as "Trusted", not "Verified".
	hta := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"hostedta.example"}})
	ip, _ = w.serverTLS("mx.provta.example", withRoot(hta))
	zone("provta.example").Add(t, "mx A "+ip, caTLSA("_25._tcp.mx.provta.example", 2, 0, 1))
	zone("hostedta.example", dnsbed.Unsigned()).Add(t, "@ MX 10 mx.provta.example.")
	add(diffCase{name: "ta-insecure-mx-domain-name", domain: "hostedta.example", want: "deferred", ptfWant: "authenticated"})

	// No MX, the next-hop name is a secure CNAME: the expanded name is
	// the TLSA base domain, the original a second reference identifier
	// (RFC 7672 §3.2.2, "TLSA records for non-MX hostnames": MUST).
	// Postfix matches the TLSA base domain alone when no MX record was
	// used: dane_init() in src/smtp/smtp_tls_policy.c adds next-hop names
	// only "if (iter->mx)". posttls-finger therefore fails the name check.
	// maddy connects to, and sends as SNI, the next-hop name itself (see
	// mx-cname-signed-target for SNI).
	nm := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mail.nomxcn.example"}})
	ip, _ = w.serverTLS("real.target5.example", withRoot(nm))
	zone("target5.example").Add(t, "real A "+ip, caTLSA("_25._tcp.real.target5.example", 2, 0, 1))
	zone("nomxcn.example").Add(t, "mail CNAME real.target5.example.")
	add(diffCase{name: "ta-implicit-mx-cname-original-name", domain: "mail.nomxcn.example", want: "authenticated",
		ptfWant: "deferred", dgSNI: "mail.nomxcn.example"})

	// The same shape under dane-only, DANE-EE at the expanded name: the
	// destination is secure (the CNAME and the MX denial validate), so
	// mandatory DANE is satisfied. Regression: daneguard took maddy's
	// host, the next-hop name, for a host outside the secure MX set and
	// deferred with dane-required.
	no2 := selfSigned(t, "real.target6.example")
	ip, _ = w.server("real.target6.example", no2)
	zone("target6.example").Add(t, "real A "+ip, tlsa("_25._tcp.real.target6.example", 3, 1, 1, no2))
	zone("nomxonly.example").Add(t, "mail CNAME real.target6.example.")
	add(diffCase{name: "dane-only-implicit-mx-cname", domain: "mail.nomxonly.example", want: "authenticated",
		level: "dane-only", dgSNI: "mail.nomxonly.example"})

	// A worse MX with TLSA does not pre-empt a better one without
	// (RFC 7672 §2.2.1): delivery to the first, encrypted.
	pr1 := selfSigned(t, "mx1.pref.example")
	pr2 := selfSigned(t, "mx2.pref.example")
	ip1, _ = w.server("mx1.pref.example", pr1)
	ip2, _ = w.server("mx2.pref.example", pr2)
	zone("pref.example").Add(t, "@ MX 10 mx1", "@ MX 20 mx2", "mx1 A "+ip1, "mx2 A "+ip2, tlsa("_25._tcp.mx2.pref.example", 3, 1, 1, pr2))
	add(diffCase{name: "better-mx-without-tlsa", domain: "pref.example", want: "encrypted"})

	// MX host in an unsigned zone, a CNAME to a signed host with TLSA:
	// the initial CNAME is insecure, so DANE does not apply even though
	// the target validates (RFC 7672 §2.2.2, "Insecure CNAME").
	ic := selfSigned(t, "host.signed7.example")
	ip, _ = w.server("host.signed7.example", ic)
	zone("signed7.example").Add(t, "host A "+ip, tlsa("_25._tcp.host.signed7.example", 3, 1, 1, ic))
	zone("unsigned3.example", dnsbed.Unsigned()).Add(t, "mx CNAME host.signed7.example.")
	zone("inscname.example").Add(t, "@ MX 10 mx.unsigned3.example.")
	add(diffCase{name: "mx-host-insecure-cname-to-signed", domain: "inscname.example", want: "encrypted"})

	// The next-hop name is an insecure CNAME to a signed domain with MX
	// and TLSA: the MX RRset counts as insecure (RFC 7672 §2.1.3), the
	// host's own TLSA still authenticates it (§2.2.1), never as secure
	// delivery to the domain.
	ih := selfSigned(t, "mx.signed8.example")
	ip, _ = w.server("mx.signed8.example", ih)
	zone("signed8.example").Add(t, "@ MX 10 mx", "mx A "+ip, tlsa("_25._tcp.mx.signed8.example", 3, 1, 1, ih))
	zone("unsigned4.example", dnsbed.Unsigned()).Add(t, "mail CNAME signed8.example.")
	add(diffCase{name: "next-hop-insecure-cname-to-signed", domain: "mail.unsigned4.example", want: "authenticated"})

	// Names compare without regard to case (RFC 4343).
	up := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"MX.TAUPPER.EXAMPLE"}})
	ip, _ = w.serverTLS("mx.taupper.example", withRoot(up))
	zone("taupper.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.taupper.example", 2, 0, 1))
	add(diffCase{name: "ta-name-case-insensitive", domain: "taupper.example", want: "authenticated"})

	// Two CNAMEs from the MX host: the fully expanded name is the base.
	c2 := selfSigned(t, "b.target10.example")
	ip, _ = w.server("b.target10.example", c2)
	zone("target10.example").Add(t, "a CNAME b", "b A "+ip, tlsa("_25._tcp.b.target10.example", 3, 1, 1, c2))
	zone("cname10.example").Add(t, "@ MX 10 mx", "mx CNAME a.target10.example.")
	add(diffCase{name: "mx-double-cname", domain: "cname10.example", want: "authenticated", dgSNI: "mx.cname10.example"})

	// The TLSA lookup at the expanded name fails (SERVFAIL): a lookup
	// error delays delivery; it never moves on to the original name's
	// records (RFC 7672 §2.2.2 last paragraph, §2.1.1).
	sf2 := selfSigned(t, "host.target11.example")
	ip, _ = w.server("host.target11.example", sf2)
	zone("target11.example").Add(t, "host A "+ip, tlsa("_25._tcp.host.target11.example", 3, 1, 1, sf2))
	zone("cname11.example").Add(t, "@ MX 10 mx", "mx CNAME host.target11.example.", tlsa("_25._tcp.mx.cname11.example", 3, 1, 1, sf2))
	w.dns.SetFault(t, "_25._tcp.host.target11.example.", dns.TypeTLSA, dnsbed.ServFail)
	add(diffCase{name: "expanded-tlsa-servfail-no-fallback", domain: "cname11.example", want: "deferred"})

	// DANE-TA on a root that issued the leaf directly, root not sent.
	direct := ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.tadirect.example"}})
	ip, _ = w.server("mx.tadirect.example", direct)
	zone("tadirect.example").Add(t, "@ MX 10 mx", "mx A "+ip, caTLSA("_25._tcp.mx.tadirect.example", 2, 0, 0))
	add(diffCase{name: "ta-root-issued-leaf", domain: "tadirect.example", want: "authenticated"})

	w.start()
	m := maddybed.Start(t, maddybed.Options{MXAuth: "dane {\n policy only.example dane-only\n policy mail.nomxonly.example dane-only\n }", NoConnReuse: true})
	f := newFinger(t, bin)

	// sniSince returns the distinct SNI names sent in STARTTLS handshakes
	// on connections accepted after the counts in before. The SNI is
	// recorded from the ClientHello, before the client can finish, so it
	// is final once the client has returned.
	counts := func() map[string]int {
		out := map[string]int{}
		for h, s := range w.srvs {
			out[h] = s.ConnectionCount()
		}
		return out
	}
	sniSince := func(before map[string]int) string {
		seen := map[string]bool{}
		var out []string
		for h, s := range w.srvs {
			cs := s.Connections()
			for _, c := range cs[min(before[h], len(cs)):] {
				if c.StartTLS && !seen[c.ServerName] {
					seen[c.ServerName] = true
					out = append(out, c.ServerName)
				}
			}
		}
		slices.Sort(out)
		return strings.Join(out, ",")
	}

	type row struct{ name, dg, ptf, want, sni string }
	var table []row
	t.Cleanup(func() {
		var b strings.Builder
		fmt.Fprintf(&b, "%-36s %-14s %-37s %-31s %s\n", "scenario", "RFC", "daneguard (reason)", "posttls-finger (evidence)", "SNI (both)")
		for _, r := range table {
			fmt.Fprintf(&b, "%-36s %-14s %-37s %-31s %s\n", r.name, r.want, r.dg, r.ptf, r.sni)
		}
		t.Logf("verdicts:\n%s", b.String())
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			level := c.level
			if level == "" {
				level = "dane"
			}
			before := counts()
			pr := fingerVerdict(t, f, level, c)
			ptfSNI := sniSince(before)
			before = counts()
			dg, reason := daneguardVerdict(t, m, c.domain)
			dgSNI := sniSince(before)
			sni := ""
			// With DANE in force both send the TLSA base domain as SNI
			// (RFC 7672 §8.1; posttls-finger(1), -s).
			if len(c.hosts) < 2 && pr.dane && pr.why != "no-tls" {
				sni = ptfSNI
				wantDG := ptfSNI
				if c.dgSNI != "" {
					wantDG = c.dgSNI
					sni = "ptf " + ptfSNI + ", maddy " + dgSNI
				}
				if ptfSNI == "" || dgSNI != wantDG {
					t.Errorf("SNI: posttls-finger sent %q, maddy with daneguard %q (want %q)", ptfSNI, dgSNI, wantDG)
				}
			}
			ev := pr.word
			if ev == "" {
				ev = pr.why
			}
			table = append(table, row{c.name, dg + " (" + reason + ")", pr.verdict + " (" + ev + ")", c.want, sni})
			wantPTF := c.want
			if c.ptfWant != "" {
				wantPTF = c.ptfWant
			}
			if pr.verdict != wantPTF {
				t.Errorf("posttls-finger: %s (%s, host %s), want %s\n%s", pr.verdict, pr.why, pr.host, wantPTF, pr.out)
			}
			wantDG := c.want
			if c.dgWant != "" {
				wantDG = c.dgWant
			}
			if dg != wantDG {
				t.Errorf("daneguard: %s, want %s\n%v", dg, wantDG, verdictFor(m, c.domain))
			}
			// An authentication through an insecure MX RRset is not secure
			// delivery to the domain (RFC 7672 §2.2.1): Postfix logs it as
			// "Trusted" rather than "Verified" (postconf(5),
			// smtp_tls_dane_insecure_mx_policy), daneguard with reason
			// dane-match-insecure-mx rather than dane-match.
			if dg == "authenticated" && pr.verdict == "authenticated" {
				if (pr.word == "Trusted") != (reason == "dane-match-insecure-mx") {
					t.Errorf("posttls-finger says %s, daneguard's reason is %s", pr.word, reason)
				}
			}
			if c.ptfWant == "" && c.dgWant == "" && dg != pr.verdict {
				t.Errorf("implementations disagree: daneguard %s, posttls-finger %s", dg, pr.verdict)
			}
		})
	}
}

// fingerVerdict probes c with posttls-finger. For destinations with
// several MX hosts it continues, as smtp(8) does, with the remaining hosts
// after a failed authentication.
func fingerVerdict(t *testing.T, f *finger, level string, c diffCase) ptfResult {
	t.Helper()
	r := f.run(t, level, c.domain)
	if len(c.hosts) < 2 || r.verdict != "deferred" || r.why == "dns" {
		return r
	}
	tried := map[string]bool{r.host: true}
	for _, h := range c.hosts {
		if tried[h] {
			continue
		}
		tried[h] = true
		r = f.run(t, level, "["+h+"]")
		if r.verdict != "deferred" {
			return r
		}
	}
	return r
}

// daneguardVerdict submits one message to the destination through the real
// maddy and returns daneguard's final verdict, checked against what
// happened to the message.
func daneguardVerdict(t *testing.T, m *maddybed.Maddy, domain string) (verdict, reason string) {
	t.Helper()
	res := m.Send("alice@sender.test", []string{"bob@" + domain}, "hello "+domain)
	if len(verdictFor(m, domain)) == 0 && res.Err != nil && res.Code/100 == 4 {
		// maddy's own MX lookup failed (SERVFAIL) before it asked the
		// policy anything: the message is deferred all the same.
		return "deferred", "maddy-mx-lookup"
	}
	e := lastVerdict(t, m, domain)
	v := field(e, "verdict")
	switch {
	case v == "deferred" && res.Err == nil:
		t.Fatalf("daneguard deferred %s but maddy delivered", domain)
	case v != "deferred" && res.Err != nil:
		t.Fatalf("daneguard said %s for %s but delivery failed: %v", v, domain, res.Err)
	case res.Err != nil && res.Code/100 != 4:
		t.Fatalf("%s: reply %d %s %q, want 4xx", domain, res.Code, res.Enh, res.Text)
	}
	return v, field(e, "reason")
}
