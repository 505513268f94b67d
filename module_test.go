package daneguard_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
)

func TestMain(m *testing.M) { netns.Main(m) }

// TestIntegrationSelfCheck fails if a `mx_auth { dane { } }` block stops
// reaching this package's policy in the maddy linked into the tests.
func TestIntegrationSelfCheck(t *testing.T) {
	if err := daneguard.CheckIntegration(); err != nil {
		t.Fatalf("daneguard is not behind mx_auth { dane }: %v", err)
	}
	// Independently of CheckIntegration: build a group through maddy's
	// registry and config code and look at what it keeps.
	grp, err := module.Get("mx_auth")("mx_auth", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	block := config.Node{Name: "mx_auth", Children: []config.Node{
		{Name: "dane", Children: []config.Node{{Name: "resolver", Args: []string{"127.0.0.1:53"}}}},
		{Name: "local_policy", Children: []config.Node{}},
	}}
	if err := grp.Init(config.NewMap(map[string]interface{}{}, block)); err != nil {
		t.Fatal(err)
	}
	l := reflect.ValueOf(grp).Elem().FieldByName("L")
	if l.Len() != 2 {
		t.Fatalf("mx_auth kept %d policies, want 2", l.Len())
	}
	if _, ok := l.Index(0).Interface().(*daneguard.Policy); !ok {
		t.Fatalf("first policy behind mx_auth is %T, want *daneguard.Policy", l.Index(0).Interface())
	}
}

// TestConfigErrors: an unknown or malformed directive is a start-up error
// naming the file and line.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"dane { no_such_directive yes }", "unexpected directive"},
		{"dane { default_level dane-onyl }", "unknown security level"},
		{"dane { policy example.org fingerprint sha256:zz }", "fingerprint"},
		{"dane { policy example.org }", "usage: policy"},
		{"dane { cache_failure_max 1h }", "cache_failure"},
		{"dane { cache_max_ttl 0s }", "cache_max_ttl must be between"},
		// Keys no destination can match would silently leave the domain
		// at default_level.
		{"dane { policy *.bank.example dane-only }", "write .bank.example for every domain below bank.example"},
		{"dane { policy . dane-only }", "not a domain name"},
		{"dane { policy alice@bank.example dane-only }", "not a domain name"},
		{"dane { policy ..bank.example dane-only }", "empty label"},
		// These two lost their file and line before the directives moved
		// to internal/service.
		{"dane { cache_max_entries 0 }", "cache_max_entries must be at least 1"},
		{"dane { roots /nonexistent/roots.pem }", "roots: open /nonexistent/roots.pem"},
		{"dane { resolver_timeout -1s }", "duration must not be negative"},
	} {
		grp, err := module.Get("mx_auth")("mx_auth", "", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var args []string
		name, rest, _ := strings.Cut(strings.TrimSpace(tc.body), " { ")
		rest = strings.TrimSuffix(rest, " }")
		args = strings.Fields(rest)
		block := config.Node{Name: "mx_auth", Children: []config.Node{
			{Name: name, File: "test.conf", Line: 7, Children: []config.Node{{Name: args[0], Args: args[1:], File: "test.conf", Line: 8}}},
		}}
		err = grp.Init(config.NewMap(map[string]interface{}{}, block))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "test.conf:8") {
			t.Errorf("%s: error %v, want one containing %q and test.conf:8", tc.body, err, tc.want)
		}
	}
}

// world is the test bed shared by the end-to-end tests: a signed DNS tree
// served on 127.0.0.2:53, unbound validating it on 127.0.0.1:53 (the
// namespace's resolv.conf), and SMTP servers on 127.0.0.x:25.
type world struct {
	t    *testing.T
	dns  *dnsbed.Server
	ub   *dnsbed.Unbound
	ca   *pki.CA
	ip   int
	srvs map[string]*smtpbed.Server
}

func newWorld(t *testing.T) *world {
	netns.Required(t)
	w := &world{t: t, dns: dnsbed.NewServer(), ip: 10, srvs: map[string]*smtpbed.Server{}}
	w.ca = pki.NewCA(t, "daneguard test root")
	return w
}

// server starts an SMTP server for host on the next free loopback address
// and returns that address.
func (w *world) server(host string, cert *pki.Leaf) (string, *smtpbed.Server) {
	if cert == nil {
		return w.serverTLS(host, nil)
	}
	return w.serverTLS(host, &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate()}})
}

// serverTLS is server with a TLS configuration of the caller's (nil: no
// STARTTLS).
func (w *world) serverTLS(host string, cfg *tls.Config) (string, *smtpbed.Server) {
	w.ip++
	ip := fmt.Sprintf("127.0.0.%d", w.ip)
	o := smtpbed.Options{Addr: ip + ":25", Hostname: host, TLS: cfg}
	s := smtpbed.Start(w.t, o)
	w.srvs[host] = s
	return ip, s
}

func (w *world) start() {
	w.dns.Start(w.t, "127.0.0.2:53")
	w.ub = dnsbed.StartUnbound(w.t, w.dns, dnsbed.UnboundOptions{})
}

func selfSigned(t *testing.T, names ...string) *pki.Leaf {
	return pki.SelfSigned(t, pki.LeafOptions{DNSNames: names})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// verdictFor returns the daneguard verdict lines for domain.
func verdictFor(m *maddybed.Maddy, domain string) []maddybed.Entry {
	var out []maddybed.Entry
	for _, e := range m.Entries("daneguard", "verdict") {
		if e.Fields["domain"] == domain {
			out = append(out, e)
		}
	}
	return out
}

func lastVerdict(t *testing.T, m *maddybed.Maddy, domain string) maddybed.Entry {
	t.Helper()
	vs := verdictFor(m, domain)
	if len(vs) == 0 {
		t.Fatalf("no daneguard verdict logged for %s:\n%s", domain, m.Log())
	}
	return vs[len(vs)-1]
}

func expectDelivered(t *testing.T, m *maddybed.Maddy, s *smtpbed.Server, domain string) {
	t.Helper()
	res := m.Send("alice@sender.test", []string{"bob@" + domain}, "hello "+domain)
	if res.Err != nil {
		t.Fatalf("delivery to %s failed: %v\n%s", domain, res.Err, m.Log())
	}
	msgs, err := s.WaitMessages(ctx(t), 1)
	if err != nil || len(msgs) == 0 {
		t.Fatalf("server for %s got no message: %v", domain, err)
	}
}

func expectDeferred(t *testing.T, m *maddybed.Maddy, domain string, servers ...*smtpbed.Server) maddybed.SendResult {
	t.Helper()
	res := m.Send("alice@sender.test", []string{"bob@" + domain}, "hello "+domain)
	if res.Err == nil {
		t.Fatalf("delivery to %s succeeded, want a deferral\n%s", domain, m.Log())
	}
	if res.Code/100 != 4 {
		t.Fatalf("delivery to %s: reply %d %s %q, want 4xx (deferral, never a bounce)", domain, res.Code, res.Enh, res.Text)
	}
	for _, s := range servers {
		if n := len(s.Messages()); n != 0 {
			t.Fatalf("server %s received %d messages for a deferred delivery", s.Hostname(), n)
		}
	}
	return res
}

func field(e maddybed.Entry, k string) string {
	v, ok := e.Fields[k]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

func wantVerdict(t *testing.T, e maddybed.Entry, verdict, reason string) {
	t.Helper()
	if field(e, "verdict") != verdict || field(e, "reason") != reason {
		t.Fatalf("verdict %s/%s, want %s/%s: %v", field(e, "verdict"), field(e, "reason"), verdict, reason, e.Fields)
	}
}

// TestEndToEndFoundation proves the joint: the real custom maddy, with
// mx_auth { dane { } }, delivers through target.remote and the decision is
// daneguard's, visible in maddy's log; and a daneguard deferral reaches the
// submitting client as 4xx with nothing delivered.
func TestEndToEndFoundation(t *testing.T) {
	w := newWorld(t)
	ok := selfSigned(t, "mx.good.example")
	bad := selfSigned(t, "mx.bad.example")
	other := selfSigned(t, "elsewhere.example")

	good := w.dns.Zone(t, "good.example.", dnsbed.TTL(300))
	ipGood, sGood := w.server("mx.good.example", ok)
	good.Add(t, "@ MX 10 mx", "mx A "+ipGood, pki.TLSA(t, "_25._tcp.mx.good.example.", 3, 1, 1, ok.Cert))

	badZ := w.dns.Zone(t, "bad.example.", dnsbed.TTL(300))
	ipBad, sBad := w.server("mx.bad.example", bad)
	// The TLSA record pins another key: an attacker's certificate, say.
	badZ.Add(t, "@ MX 10 mx", "mx A "+ipBad, pki.TLSA(t, "_25._tcp.mx.bad.example.", 3, 1, 1, other.Cert))
	w.start()

	m := maddybed.Start(t, maddybed.Options{MXAuth: "dane { }"})

	expectDelivered(t, m, sGood, "good.example")
	v := lastVerdict(t, m, "good.example")
	wantVerdict(t, v, "authenticated", "dane-match")
	if field(v, "mx") != "mx.good.example" || field(v, "mx_secure") != "true" || field(v, "tlsa") != "3 1 1" {
		t.Fatalf("verdict fields: %v", v.Fields)
	}
	if msgs := sGood.Messages(); !msgs[0].TLS.Used {
		t.Fatal("message to the DANE server was not sent over TLS")
	}

	res := expectDeferred(t, m, "bad.example", sBad)
	v = lastVerdict(t, m, "bad.example")
	wantVerdict(t, v, "deferred", "tlsa-mismatch")
	if field(v, "smtp_code") != "451" || field(v, "smtp_enchcode") != "4.7.5" {
		t.Fatalf("deferral codes in the log: %v", v.Fields)
	}
	if res.Code != 451 || !strings.Contains(res.Text, "4.7.5 tlsa-mismatch") || !strings.Contains(res.Text, "DANE") {
		t.Fatalf("client reply %d %s %q does not explain the DANE failure", res.Code, res.Enh, res.Text)
	}
}

// TestEndToEndDANE runs the RFC 7672 scenarios through the real maddy
// pipeline: one signed DNS tree, one maddy, one destination domain per
// scenario.
func TestEndToEndDANE(t *testing.T) {
	w := newWorld(t)
	ca := w.ca
	inter := ca.Intermediate(t, "daneguard test intermediate")
	zone := func(name string, opts ...dnsbed.ZoneOption) *dnsbed.Zone {
		return w.dns.Zone(t, name+".", append([]dnsbed.ZoneOption{dnsbed.TTL(300)}, opts...)...)
	}
	tlsa := func(host string, u, s, m uint8, c *pki.Leaf) string {
		return pki.TLSA(t, "_25._tcp."+host+".", u, s, m, c.Cert)
	}
	caTLSA := func(host string, u, s, m uint8, c *pki.CA) string {
		return pki.TLSA(t, "_25._tcp."+host+".", u, s, m, c.Cert)
	}
	past := time.Now().Add(-48 * time.Hour)

	// DANE-EE(3) SPKI(1) SHA2-256(1) on a self-signed certificate.
	eeLeaf := selfSigned(t, "mx.ee.example")
	ipEE, sEE := w.server("mx.ee.example", eeLeaf)
	zone("ee.example").Add(t, "@ MX 10 mx", "mx A "+ipEE, tlsa("mx.ee.example", 3, 1, 1, eeLeaf))

	// DANE-EE Cert(0) SHA2-512(2), the name in the certificate is irrelevant.
	ee2Leaf := selfSigned(t, "unrelated.invalid")
	ipEE2, sEE2 := w.server("mx.ee2.example", ee2Leaf)
	zone("ee2.example").Add(t, "@ MX 10 mx", "mx A "+ipEE2, tlsa("mx.ee2.example", 3, 0, 2, ee2Leaf))

	// DANE-TA(2) Cert(0) SHA2-256(1) on the root; the server sends leaf,
	// intermediate and root (a digest names an anchor the server must
	// present, RFC 7671 §5.2.2); the name matches the MX host.
	withRoot := func(l *pki.Leaf) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{l.TLSCertificateWithRoot()}}
	}
	taLeaf := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.ta.example"}})
	ipTA, sTA := w.serverTLS("mx.ta.example", withRoot(taLeaf))
	zone("ta.example").Add(t, "@ MX 10 mx", "mx A "+ipTA, caTLSA("mx.ta.example", 2, 0, 1, ca))

	// DANE-TA: a certificate for the next-hop domain only is accepted
	// (RFC 7672 §3.2.2, secure MX: the domain is a reference identifier).
	taDomLeaf := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"tadom.example"}})
	ipTADom, sTADom := w.serverTLS("mx.tadom.example", withRoot(taDomLeaf))
	zone("tadom.example").Add(t, "@ MX 10 mx", "mx A "+ipTADom, caTLSA("mx.tadom.example", 2, 0, 1, ca))

	// DANE-TA(2) Cert(0) Full(0): the anchor is in DNS, the server does not
	// send it.
	taFull := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.tafull.example"}})
	ipTAF, sTAF := w.server("mx.tafull.example", taFull)
	zone("tafull.example").Add(t, "@ MX 10 mx", "mx A "+ipTAF, caTLSA("mx.tafull.example", 2, 0, 0, ca))

	// DANE-TA with a certificate for another name: defer.
	taWrong := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"wrong.example"}})
	ipTAW, sTAW := w.serverTLS("mx.taname.example", withRoot(taWrong))
	zone("taname.example").Add(t, "@ MX 10 mx", "mx A "+ipTAW, caTLSA("mx.taname.example", 2, 0, 1, ca))

	// DANE-TA with an expired leaf: defer.
	taExp := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.taexp.example"}, NotBefore: past.Add(-24 * time.Hour), NotAfter: past})
	ipTAE, sTAE := w.serverTLS("mx.taexp.example", withRoot(taExp))
	zone("taexp.example").Add(t, "@ MX 10 mx", "mx A "+ipTAE, caTLSA("mx.taexp.example", 2, 0, 1, ca))

	// TLSA present, server without STARTTLS: never plaintext.
	ipNoTLS, sNoTLS := w.server("mx.notls.example", nil)
	zone("notls.example").Add(t, "@ MX 10 mx", "mx A "+ipNoTLS, tlsa("mx.notls.example", 3, 1, 1, eeLeaf))

	// Only unusable records (PKIX-TA, a malformed digest): TLS required,
	// no authentication.
	unLeaf := selfSigned(t, "mx.unusable.example")
	ipUn, sUn := w.server("mx.unusable.example", unLeaf)
	zone("unusable.example").Add(t, "@ MX 10 mx", "mx A "+ipUn,
		tlsa("mx.unusable.example", 0, 0, 1, unLeaf),
		pki.TLSARaw(t, "_25._tcp.mx.unusable.example.", 3, 1, 1, []byte{1, 2, 3}))

	// Mixed set: unusable, malformed and one good record: authenticated.
	mixLeaf := selfSigned(t, "mx.mixed.example")
	ipMix, sMix := w.server("mx.mixed.example", mixLeaf)
	zone("mixed.example").Add(t, "@ MX 10 mx", "mx A "+ipMix,
		tlsa("mx.mixed.example", 1, 1, 1, mixLeaf),
		pki.TLSARaw(t, "_25._tcp.mx.mixed.example.", 3, 1, 2, []byte{9, 9}),
		pki.TLSARaw(t, "_25._tcp.mx.mixed.example.", 3, 1, 1, make([]byte, 32)),
		tlsa("mx.mixed.example", 3, 1, 1, mixLeaf))

	// Two MX hosts: the better one fails DANE, the second passes.
	twoBad := selfSigned(t, "mx1.two.example")
	twoGood := selfSigned(t, "mx2.two.example")
	ipTwo1, sTwo1 := w.server("mx1.two.example", twoBad)
	ipTwo2, sTwo2 := w.server("mx2.two.example", twoGood)
	zone("two.example").Add(t, "@ MX 10 mx1", "@ MX 20 mx2", "mx1 A "+ipTwo1, "mx2 A "+ipTwo2,
		tlsa("mx1.two.example", 3, 1, 1, twoGood), // pins the other server's key
		tlsa("mx2.two.example", 3, 1, 1, twoGood))

	// CNAME'd MX host: mx.cname.example -> host.target.example, both signed;
	// TLSA at the expanded name is the base domain (RFC 7672 §2.2.3).
	cnLeaf := selfSigned(t, "host.target.example")
	ipCN, sCN := w.server("host.target.example", cnLeaf)
	zone("target.example").Add(t, "host A "+ipCN, tlsa("host.target.example", 3, 1, 1, cnLeaf))
	zone("cname.example").Add(t, "@ MX 10 mx", "mx CNAME host.target.example.")

	// CNAME'd MX host into an unsigned zone, TLSA at the original name
	// (initial CNAME secure): the original name is the base domain.
	cn2Leaf := selfSigned(t, "host.unsigned.example")
	ipCN2, sCN2 := w.server("host.unsigned.example", cn2Leaf)
	zone("unsigned.example", dnsbed.Unsigned()).Add(t, "host A "+ipCN2)
	zone("cname2.example").Add(t, "@ MX 10 mx", "mx CNAME host.unsigned.example.", tlsa("mx.cname2.example", 3, 1, 1, cn2Leaf))

	// Bogus TLSA: the TLSA name is an alias into a zone whose signatures
	// are broken; unbound answers SERVFAIL: defer with a DNS error.
	bgLeaf := selfSigned(t, "mx.bogustlsa.example")
	ipBG, sBG := w.server("mx.bogustlsa.example", bgLeaf)
	zone("broken.example", dnsbed.BadSignatures()).Add(t, tlsa("x.broken.example", 3, 1, 1, bgLeaf))
	zone("bogustlsa.example").Add(t, "@ MX 10 mx", "mx A "+ipBG, "_25._tcp.mx CNAME _25._tcp.x.broken.example.")

	// Unsigned destination: DANE does not apply, plaintext is fine.
	ipIns, sIns := w.server("mx.insecure.example", nil)
	zone("insecure.example", dnsbed.Unsigned()).Add(t, "@ MX 10 mx", "mx A "+ipIns)

	// Unsigned domain whose MX host lives in a signed zone with TLSA: the
	// host's TLSA is used (RFC 7672 §2.2.1 allows it), but it is never
	// logged as secure delivery to the domain.
	hostedLeaf := selfSigned(t, "mx.provider.example")
	ipHosted, sHosted := w.server("mx.provider.example", hostedLeaf)
	zone("provider.example").Add(t, "mx A "+ipHosted, tlsa("mx.provider.example", 3, 1, 1, hostedLeaf))
	zone("hosted.example", dnsbed.Unsigned()).Add(t, "@ MX 10 mx.provider.example.")

	// No MX records: the domain is its own server (RFC 7672 §2.2.2).
	noMXLeaf := selfSigned(t, "nomx.example")
	ipNoMX, sNoMX := w.server("nomx.example", noMXLeaf)
	zone("nomx.example").Add(t, "@ A "+ipNoMX, tlsa("nomx.example", 3, 1, 1, noMXLeaf))

	// Mandatory DANE (dane-only) on a domain without TLSA.
	ipOnly, sOnly := w.server("mx.only.example", selfSigned(t, "mx.only.example"))
	zone("only.example").Add(t, "@ MX 10 mx", "mx A "+ipOnly)

	w.start()
	m := maddybed.Start(t, maddybed.Options{MXAuth: "dane {\n policy only.example dane-only\n }"})

	t.Run("ee-spki-sha256", func(t *testing.T) {
		expectDelivered(t, m, sEE, "ee.example")
		v := lastVerdict(t, m, "ee.example")
		wantVerdict(t, v, "authenticated", "dane-match")
		if field(v, "tlsa") != "3 1 1" || field(v, "tlsa_base") != "mx.ee.example" {
			t.Fatalf("fields: %v", v.Fields)
		}
	})
	t.Run("ee-cert-sha512-name-ignored", func(t *testing.T) {
		expectDelivered(t, m, sEE2, "ee2.example")
		v := lastVerdict(t, m, "ee2.example")
		wantVerdict(t, v, "authenticated", "dane-match")
		if field(v, "tlsa") != "3 0 2" {
			t.Fatalf("fields: %v", v.Fields)
		}
	})
	t.Run("ta-root-anchor", func(t *testing.T) {
		expectDelivered(t, m, sTA, "ta.example")
		wantVerdict(t, lastVerdict(t, m, "ta.example"), "authenticated", "dane-match")
	})
	t.Run("ta-full-anchor-from-dns", func(t *testing.T) {
		expectDelivered(t, m, sTAF, "tafull.example")
		v := lastVerdict(t, m, "tafull.example")
		wantVerdict(t, v, "authenticated", "dane-match")
		if field(v, "tlsa") != "2 0 0" {
			t.Fatalf("fields: %v", v.Fields)
		}
	})
	t.Run("ta-next-hop-name", func(t *testing.T) {
		expectDelivered(t, m, sTADom, "tadom.example")
		wantVerdict(t, lastVerdict(t, m, "tadom.example"), "authenticated", "dane-match")
	})
	t.Run("ta-wrong-name", func(t *testing.T) {
		expectDeferred(t, m, "taname.example", sTAW)
		wantVerdict(t, lastVerdict(t, m, "taname.example"), "deferred", "tlsa-mismatch")
	})
	t.Run("ta-expired", func(t *testing.T) {
		expectDeferred(t, m, "taexp.example", sTAE)
		wantVerdict(t, lastVerdict(t, m, "taexp.example"), "deferred", "tlsa-mismatch")
	})
	t.Run("no-starttls-never-plaintext", func(t *testing.T) {
		res := expectDeferred(t, m, "notls.example", sNoTLS)
		wantVerdict(t, lastVerdict(t, m, "notls.example"), "deferred", "starttls-not-supported")
		if !strings.Contains(res.Text, "4.7.4") {
			t.Fatalf("reply %q lacks 4.7.4", res.Text)
		}
	})
	t.Run("only-unusable-records", func(t *testing.T) {
		expectDelivered(t, m, sUn, "unusable.example")
		wantVerdict(t, lastVerdict(t, m, "unusable.example"), "encrypted", "tlsa-unusable")
		if !sUn.Messages()[0].TLS.Used {
			t.Fatal("delivered without TLS although TLSA records exist")
		}
	})
	t.Run("mixed-set", func(t *testing.T) {
		expectDelivered(t, m, sMix, "mixed.example")
		v := lastVerdict(t, m, "mixed.example")
		wantVerdict(t, v, "authenticated", "dane-match")
		if field(v, "tlsa") != "3 1 1" {
			t.Fatalf("fields: %v", v.Fields)
		}
	})
	t.Run("second-mx-passes", func(t *testing.T) {
		expectDelivered(t, m, sTwo2, "two.example")
		if n := len(sTwo1.Messages()); n != 0 {
			t.Fatalf("first MX got %d messages despite failing DANE", n)
		}
		vs := verdictFor(m, "two.example")
		if len(vs) < 2 {
			t.Fatalf("want verdicts for both MX hosts, got %v", vs)
		}
		wantVerdict(t, vs[len(vs)-2], "deferred", "tlsa-mismatch")
		if field(vs[len(vs)-2], "mx") != "mx1.two.example" || field(vs[len(vs)-1], "mx") != "mx2.two.example" {
			t.Fatalf("MX order: %v / %v", vs[len(vs)-2].Fields, vs[len(vs)-1].Fields)
		}
		wantVerdict(t, vs[len(vs)-1], "authenticated", "dane-match")
	})
	t.Run("cname-expanded-base", func(t *testing.T) {
		expectDelivered(t, m, sCN, "cname.example")
		v := lastVerdict(t, m, "cname.example")
		wantVerdict(t, v, "authenticated", "dane-match")
		if field(v, "tlsa_base") != "host.target.example" || field(v, "mx") != "mx.cname.example" {
			t.Fatalf("fields: %v", v.Fields)
		}
	})
	t.Run("cname-insecure-target-original-base", func(t *testing.T) {
		expectDelivered(t, m, sCN2, "cname2.example")
		v := lastVerdict(t, m, "cname2.example")
		wantVerdict(t, v, "authenticated", "dane-match")
		if field(v, "tlsa_base") != "mx.cname2.example" {
			t.Fatalf("fields: %v", v.Fields)
		}
	})
	t.Run("bogus-tlsa-defers", func(t *testing.T) {
		res := expectDeferred(t, m, "bogustlsa.example", sBG)
		v := lastVerdict(t, m, "bogustlsa.example")
		if field(v, "verdict") != "deferred" || !strings.HasPrefix(field(v, "reason"), "dns") {
			t.Fatalf("verdict: %v", v.Fields)
		}
		if !strings.Contains(res.Text, "4.4.3") {
			t.Fatalf("reply %q lacks 4.4.3", res.Text)
		}
		if n := sBG.ConnectionCount(); n != 0 {
			t.Fatalf("maddy connected %d times to a server whose TLSA lookup failed", n)
		}
	})
	t.Run("insecure-domain-plaintext", func(t *testing.T) {
		expectDelivered(t, m, sIns, "insecure.example")
		v := lastVerdict(t, m, "insecure.example")
		if field(v, "verdict") != "plaintext" || field(v, "mx_secure") != "false" {
			t.Fatalf("verdict: %v", v.Fields)
		}
	})
	t.Run("insecure-mx-host-tlsa", func(t *testing.T) {
		expectDelivered(t, m, sHosted, "hosted.example")
		v := lastVerdict(t, m, "hosted.example")
		wantVerdict(t, v, "authenticated", "dane-match-insecure-mx")
		if field(v, "mx_secure") != "false" || field(v, "mx") != "mx.provider.example" {
			t.Fatalf("fields: %v", v.Fields)
		}
	})
	t.Run("implicit-mx", func(t *testing.T) {
		expectDelivered(t, m, sNoMX, "nomx.example")
		wantVerdict(t, lastVerdict(t, m, "nomx.example"), "authenticated", "dane-match")
	})
	t.Run("dane-only-without-tlsa", func(t *testing.T) {
		expectDeferred(t, m, "only.example", sOnly)
		wantVerdict(t, lastVerdict(t, m, "only.example"), "deferred", "dane-required")
	})
}

// TestVerifyConfigWritesNothing: `maddy verify-config` checks a
// configuration with MTA-STS and TLS reporting on without creating their
// stores: run as root, it would otherwise leave directories the server
// cannot use.
func TestVerifyConfigWritesNothing(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	conf := filepath.Join(dir, "maddy.conf")
	body := fmt.Sprintf(`state_dir %s
runtime_dir %s
hostname mx.sender.test
target.remote out {
    mx_auth {
        dane {
            debug yes
            resolver 127.0.0.1:53
            tlsrpt {
                organization "Sender Test"
                contact postmaster@sender.test
                from tlsrpt@sender.test
                deliver_to &out
            }
        }
    }
}
smtp tcp://127.0.0.1:2526 {
    tls off
    deliver_to &out
}
`, state, filepath.Join(dir, "run"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(maddybed.Binary(t), "--config", conf, "verify-config").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Fatalf("verify-config: %v\n%s", err, out)
	}
	// The block references its own target (deliver_to &out): it must
	// still be initialized once, as `maddy run` does.
	if n := strings.Count(string(out), "daneguard: initialized"); n != 1 {
		t.Fatalf("the dane block was initialized %d times, want 1:\n%s", n, out)
	}
	var written []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != dir && p != conf {
			written = append(written, p)
		}
		return nil
	})
	if len(written) != 0 {
		t.Fatalf("verify-config wrote %v", written)
	}
}

// TestDebugLookupLines: with `debug yes` every resolver question, the
// destination summary and the DANE inputs of each MX host are logged; the
// questions answered from the cache are not asked again.
func TestDebugLookupLines(t *testing.T) {
	w := newWorld(t)
	leaf := selfSigned(t, "mx.dbg.example")
	ip, srv := w.server("mx.dbg.example", leaf)
	w.dns.Zone(t, "dbg.example.", dnsbed.TTL(300)).Add(t, "@ MX 10 mx", "mx A "+ip, pki.TLSA(t, "_25._tcp.mx.dbg.example.", 3, 1, 1, leaf.Cert))
	w.start()
	m := maddybed.Start(t, maddybed.Options{MXAuth: "dane { debug yes }", NoConnReuse: true})
	expectDelivered(t, m, srv, "dbg.example")
	expectDelivered(t, m, srv, "dbg.example")

	asked := map[string]int{}
	for _, e := range m.Entries("daneguard", "dns query") {
		asked[field(e, "name")+"/"+field(e, "type")]++
		if field(e, "name") == "_25._tcp.mx.dbg.example" && (field(e, "secure") != "true" || field(e, "records") != "1" || field(e, "ttl") != "300") {
			t.Errorf("TLSA query line: %v", e.Fields)
		}
	}
	for _, q := range []string{"dbg.example/MX", "mx.dbg.example/A", "_25._tcp.mx.dbg.example/TLSA"} {
		if asked[q] != 1 {
			t.Errorf("%s logged %d times as a resolver question, want once (then cached): %v", q, asked[q], asked)
		}
	}
	dests := m.Entries("daneguard", "destination")
	if len(dests) != 2 || field(dests[0], "domain") != "dbg.example" || field(dests[0], "mx_secure") != "true" ||
		field(dests[0], "mx_hosts") != "mx.dbg.example" || field(dests[0], "level") != "dane" || field(dests[0], "policy_source") != "default" {
		t.Errorf("destination lines: %v", dests)
	}
	hosts := m.Entries("daneguard", "mx host")
	if len(hosts) != 2 || field(hosts[0], "tlsa_records") != "1" || field(hosts[0], "tlsa_base") != "mx.dbg.example" || field(hosts[0], "mechanism") != "dane" {
		t.Errorf("mx host lines: %v", hosts)
	}
}
