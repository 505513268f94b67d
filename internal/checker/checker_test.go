package checker_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/checker"
	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
)

func TestMain(m *testing.M) { netns.Main(m) }

// bed is one signed DNS tree behind a real unbound on 127.0.0.1:53 (the
// namespace's resolv.conf), with SMTP servers on 127.0.0.x:25.
type bed struct {
	t    *testing.T
	dns  *dnsbed.Server
	ca   *pki.CA
	ip   int
	srvs map[string]*smtpbed.Server
}

func (b *bed) smtp(host string, leaf *pki.Leaf) string {
	b.ip++
	ip := fmt.Sprintf("127.0.0.%d", b.ip)
	o := smtpbed.Options{Addr: ip + ":25", Hostname: host}
	if leaf != nil {
		o.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()}}
	}
	b.srvs[host] = smtpbed.Start(b.t, o)
	return ip
}

func tlsa(t *testing.T, host string, u, s, m uint8, l *pki.Leaf) string {
	return pki.TLSA(t, "_25._tcp."+host+".", u, s, m, l.Cert)
}

// newBed builds the destinations every test below uses:
//
//	dane.example     secure MX, mx1 pins another key (plus a PKIX-TA
//	                 record), mx2 authenticates: DANE-EE
//	cname.example    MX host is a CNAME into another signed zone
//	plain.example    unsigned zone, server without STARTTLS
//	notlsa.example   signed, no TLSA, STARTTLS with a self-signed cert
//	sts.example      MTA-STS enforce policy served over HTTPS on :443
func newBed(t *testing.T) *bed {
	netns.Required(t)
	b := &bed{t: t, dns: dnsbed.NewServer(), ca: pki.NewCA(t, "checker test root"), ip: 20, srvs: map[string]*smtpbed.Server{}}
	zone := func(name string, opts ...dnsbed.ZoneOption) *dnsbed.Zone {
		return b.dns.Zone(t, name+".", append([]dnsbed.ZoneOption{dnsbed.TTL(300)}, opts...)...)
	}
	self := func(n string) *pki.Leaf { return pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{n}}) }

	l1, l2, other := self("mx1.dane.example"), self("mx2.dane.example"), self("attacker.example")
	ip1, ip2 := b.smtp("mx1.dane.example", l1), b.smtp("mx2.dane.example", l2)
	zone("dane.example").Add(t, "@ MX 10 mx1", "@ MX 20 mx2", "mx1 A "+ip1, "mx2 A "+ip2,
		tlsa(t, "mx1.dane.example", 3, 1, 1, other),
		tlsa(t, "mx1.dane.example", 0, 0, 1, l1),
		tlsa(t, "mx2.dane.example", 3, 1, 1, l2))

	lc := self("host.target.example")
	ipc := b.smtp("host.target.example", lc)
	zone("target.example").Add(t, "host A "+ipc, tlsa(t, "host.target.example", 3, 1, 1, lc))
	zone("cname.example").Add(t, "@ MX 10 mx", "mx CNAME host.target.example.")

	ipp := b.smtp("mx.plain.example", nil)
	zone("plain.example", dnsbed.Unsigned()).Add(t, "@ MX 10 mx", "mx A "+ipp)

	ipn := b.smtp("mx.notlsa.example", self("mx.notlsa.example"))
	zone("notlsa.example").Add(t, "@ MX 10 mx", "mx A "+ipn)

	// No MX records: the domain is its own server; a null MX (RFC 7505).
	ipi := b.smtp("implicit.example", self("implicit.example"))
	zone("implicit.example").Add(t, "@ A "+ipi, tlsa(t, "implicit.example", 3, 1, 1, self("other.invalid")))
	zone("nullmx.example").Add(t, "@ MX 0 .")

	// Broken signatures: the MX lookup fails (SERVFAIL from unbound).
	zone("bogus.example", dnsbed.BadSignatures()).Add(t, "@ MX 10 mx", "mx A 127.0.0.99")

	// MTA-STS: TXT record, policy host with a certificate from the test CA.
	// stsbad.example's policy does not list its MX host.
	sts := b.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mta-sts.sts.example", "mx.sts.example", "mta-sts.stsbad.example", "mx.stsbad.example"}})
	ips := b.smtp("mx.sts.example", sts)
	ipsBad := b.smtp("mx.stsbad.example", sts)
	b.ip++
	ipWeb := fmt.Sprintf("127.0.0.%d", b.ip)
	zone("sts.example", dnsbed.Unsigned()).Add(t, "@ MX 10 mx", "mx A "+ips, "mta-sts A "+ipWeb,
		`_mta-sts TXT "v=STSv1; id=20261201T1;"`)
	zone("stsbad.example", dnsbed.Unsigned()).Add(t, "@ MX 10 mx", "mx A "+ipsBad, "mta-sts A "+ipWeb,
		`_mta-sts TXT "v=STSv1; id=20261201T2;"`)
	ln, err := net.Listen("tcp", ipWeb+":443")
	if err != nil {
		t.Fatal(err)
	}
	web := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			mx := "mx.sts.example"
			if strings.HasPrefix(r.Host, "mta-sts.stsbad.example") {
				mx = "mx.elsewhere.example"
			}
			fmt.Fprintf(w, "version: STSv1\r\nmode: enforce\r\nmx: %s\r\nmax_age: 86400\r\n", mx)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{sts.TLSCertificate()}},
	}
	go func() { _ = web.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = web.Close() })

	b.dns.Start(t, "127.0.0.2:53")
	dnsbed.StartUnbound(t, b.dns, dnsbed.UnboundOptions{})
	return b
}

// stsEngine is engine with MTA-STS on, as `maddy check` builds it.
func (b *bed) stsEngine(pol engine.PolicyLookup) *engine.Engine {
	q := b.querier()
	mgr, err := mtastsfallback.NewManager(mtastsfallback.Config{
		LookupTXT: q.LookupTXT,
		Fetcher:   &mtastsfallback.Fetcher{RootCAs: b.ca.Pool(), Timeout: 10 * time.Second},
	})
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = mgr.Close() })
	eng, err := engine.New(engine.Config{DNS: q, STS: mgr, Policies: pol, Roots: b.ca.Pool()})
	if err != nil {
		b.t.Fatal(err)
	}
	return eng
}

func (b *bed) engine(pol engine.PolicyLookup) *engine.Engine {
	eng, err := engine.New(engine.Config{DNS: b.querier(), Policies: pol, Roots: b.ca.Pool()})
	if err != nil {
		b.t.Fatal(err)
	}
	return eng
}

// querier is the cached querier over the test bed's unbound.
func (b *bed) querier() *engine.CachedQuerier {
	res, err := dane.NewResolver(dane.ResolverConfig{Servers: []string{"127.0.0.1:53"}, Timeout: 3 * time.Second})
	if err != nil {
		b.t.Fatal(err)
	}
	return engine.NewCachedQuerier(res, policycache.Config{}, nil)
}

// check runs the checker and returns its JSON document decoded both into
// the Report type and as a generic map (to pin the field names).
func (b *bed) check(o checker.Options, domain string) (*checker.Report, map[string]any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if o.Engine == nil {
		o.Engine = b.engine(nil)
	}
	if o.Roots == nil {
		o.Roots = b.ca.Pool()
	}
	rep, err := checker.Run(ctx, o, domain)
	if err != nil {
		b.t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		b.t.Fatal(err)
	}
	return decode(b.t, buf.Bytes())
}

func decode(t *testing.T, js []byte) (*checker.Report, map[string]any) {
	t.Helper()
	var r checker.Report
	if err := json.Unmarshal(js, &r); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	return &r, m
}

// path digs into a decoded JSON document: path(m, "hosts", 0, "name").
func path(t *testing.T, v any, keys ...any) any {
	t.Helper()
	for _, k := range keys {
		if k == "#len" {
			a, ok := v.([]any)
			if !ok {
				t.Fatalf("%v: not an array", keys)
			}
			v = len(a)
			continue
		}
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not an object at %q", keys, k)
			}
			v, ok = m[k]
			if !ok {
				t.Fatalf("%v: no field %q in %v", keys, k, m)
			}
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				t.Fatalf("%v: no element %d", keys, k)
			}
			v = a[k]
		}
	}
	return v
}

func want(t *testing.T, m map[string]any, value any, keys ...any) {
	t.Helper()
	if got := path(t, m, keys...); fmt.Sprint(got) != fmt.Sprint(value) {
		t.Errorf("%v = %v, want %v", keys, got, value)
	}
}

func TestChecker(t *testing.T) {
	b := newBed(t)

	t.Run("dane-second-mx-authenticates", func(t *testing.T) {
		rep, m := b.check(checker.Options{Connect: true, MTASTS: true}, "dane.example")
		want(t, m, checker.Schema, "schema")
		want(t, m, "dane", "policy", "level")
		want(t, m, "default", "policy", "source")
		want(t, m, true, "mx", "dnssec_secure")
		want(t, m, "mx1.dane.example", "hosts", 0, "name")
		want(t, m, 10, "hosts", 0, "preference")
		want(t, m, "mx2.dane.example", "hosts", 1, "name")
		want(t, m, "127.0.0.21", "hosts", 0, "addresses", 0)
		want(t, m, true, "hosts", 0, "address_dnssec_secure")
		want(t, m, "tlsa", "hosts", 0, "dane", "status")
		want(t, m, "mx1.dane.example", "hosts", 0, "dane", "tlsa_base")
		want(t, m, "_25._tcp.mx1.dane.example", "hosts", 0, "dane", "tlsa_owner")
		// One usable record, the PKIX-TA one set aside with its reason.
		recs := rep.Hosts[0].DANE.Records
		if len(recs) != 2 || !recs[0].Usable || !strings.HasPrefix(recs[0].Record, "3 1 1 ") ||
			recs[1].Usable || recs[1].Reason != string(dane.UnusablePKIX) || recs[1].Mnemonic != "PKIX-TA(0) Cert(0) SHA2-256(1)" {
			t.Errorf("TLSA records of mx1: %+v", recs)
		}
		want(t, m, "ok", "hosts", 0, "mx_check", "result")
		want(t, m, "deferred", "hosts", 0, "connection", "verdict", "result")
		want(t, m, "tlsa-mismatch", "hosts", 0, "connection", "verdict", "reason")
		want(t, m, "4.7.5", "hosts", 0, "connection", "verdict", "smtp_enhanced_code")
		want(t, m, 451, "hosts", 0, "connection", "verdict", "smtp_code")
		want(t, m, true, "hosts", 0, "connection", "starttls_offered")
		want(t, m, "authenticated", "hosts", 1, "connection", "verdict", "result")
		want(t, m, "dane-match", "hosts", 1, "connection", "verdict", "reason")
		want(t, m, "3 1 1", "hosts", 1, "connection", "verdict", "tlsa")
		want(t, m, "TLS 1.3", "hosts", 1, "connection", "tls_version")
		want(t, m, "authenticated", "result")
		want(t, m, "mx2.dane.example", "selected_mx")
		want(t, m, checker.ExitAuthenticated, "exit_code")
		want(t, m, true, "connected")
		// No MTA-STS policy is published.
		if rep.MTASTS == nil || rep.MTASTS.ID != "" || rep.MTASTS.TXTError == "" {
			t.Errorf("mta_sts: %+v", rep.MTASTS)
		}
		// The certificate the second host showed is reported with the
		// digests an operator pins.
		crt := rep.Hosts[1].Connection.Certificates
		if len(crt) != 1 || len(crt[0].SHA256) != 64 || len(crt[0].SPKISHA256) != 64 || crt[0].DNSNames[0] != "mx2.dane.example" {
			t.Errorf("certificates: %+v", crt)
		}
		// Like maddy: SNI is the MX host name.
		conns := b.srvs["mx2.dane.example"].Connections()
		if last := conns[len(conns)-1]; last.ServerName != "mx2.dane.example" || last.Helo != "localhost" || !last.StartTLS {
			t.Errorf("connection seen by the server: %+v", last)
		}
		var text bytes.Buffer
		if err := rep.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"MX 10 mx1.dane.example", "unusable  0 0 1", "verdict:    deferred (tlsa-mismatch", "Result: authenticated"} {
			if !strings.Contains(text.String(), s) {
				t.Errorf("text output lacks %q:\n%s", s, text.String())
			}
		}
	})

	t.Run("without-connect", func(t *testing.T) {
		before := b.srvs["mx1.dane.example"].ConnectionCount()
		_, m := b.check(checker.Options{}, "dane.example")
		want(t, m, checker.ResultNotConnected, "result")
		want(t, m, checker.ExitAuthenticated, "exit_code")
		if _, ok := path(t, m, "hosts", 0).(map[string]any)["connection"]; ok {
			t.Error("connection reported without --connect")
		}
		if n := b.srvs["mx1.dane.example"].ConnectionCount(); n != before {
			t.Errorf("checker connected without --connect (%d connections)", n-before)
		}
	})

	t.Run("cname-chain-and-base", func(t *testing.T) {
		_, m := b.check(checker.Options{Connect: true}, "cname.example")
		want(t, m, "[mx.cname.example host.target.example]", "hosts", 0, "cname_chain")
		want(t, m, "host.target.example", "hosts", 0, "dane", "tlsa_base")
		want(t, m, "authenticated", "result")
	})

	t.Run("plaintext-allowed", func(t *testing.T) {
		_, m := b.check(checker.Options{Connect: true}, "plain.example")
		want(t, m, false, "mx", "dnssec_secure")
		want(t, m, "no-tlsa", "hosts", 0, "dane", "status")
		want(t, m, "insecure-mx-host", "hosts", 0, "dane", "no_tlsa_reason")
		want(t, m, false, "hosts", 0, "connection", "starttls_offered")
		want(t, m, "plaintext", "hosts", 0, "connection", "verdict", "result")
		want(t, m, "plaintext", "result")
		want(t, m, checker.ExitUnauthenticated, "exit_code")
	})

	t.Run("dane-only-refused-before-connecting", func(t *testing.T) {
		only := func(context.Context, string) (engine.DomainPolicy, bool, error) {
			return engine.DomainPolicy{Level: engine.LevelDANEOnly, Source: "command-line"}, true, nil
		}
		before := b.srvs["mx.notlsa.example"].ConnectionCount()
		_, m := b.check(checker.Options{Engine: b.engine(only), Connect: true}, "notlsa.example")
		want(t, m, "dane-only", "policy", "level")
		want(t, m, "deferred", "hosts", 0, "mx_check", "result")
		want(t, m, "dane-required", "hosts", 0, "mx_check", "reason")
		want(t, m, "deferred", "result")
		want(t, m, checker.ExitDeferred, "exit_code")
		if n := b.srvs["mx.notlsa.example"].ConnectionCount(); n != before {
			t.Errorf("checker connected to a host the policy refuses")
		}
	})

	t.Run("policy-error-defers", func(t *testing.T) {
		broken := func(context.Context, string) (engine.DomainPolicy, bool, error) {
			return engine.DomainPolicy{}, false, fmt.Errorf("policy_table entry %q: bad level", "notlsa.example")
		}
		_, m := b.check(checker.Options{Engine: b.engine(broken), Connect: true}, "notlsa.example")
		want(t, m, "deferred", "result")
		want(t, m, "policy-lookup-failure", "hosts", 0, "mx_check", "reason")
		if s := path(t, m, "policy", "error").(string); !strings.Contains(s, "bad level") {
			t.Errorf("policy error %q", s)
		}
	})

	t.Run("no-such-domain", func(t *testing.T) {
		_, m := b.check(checker.Options{Connect: true}, "nosuch.example")
		want(t, m, true, "mx", "nxdomain")
		want(t, m, true, "mx", "dnssec_secure") // the denial is signed
		want(t, m, 0, "hosts", "#len")
		want(t, m, "deferred", "result")
		want(t, m, checker.ExitDeferred, "exit_code")
	})

	t.Run("implicit-mx", func(t *testing.T) {
		_, m := b.check(checker.Options{Connect: true}, "implicit.example")
		want(t, m, true, "mx", "implicit")
		want(t, m, "implicit.example", "hosts", 0, "name")
		want(t, m, "tlsa", "hosts", 0, "dane", "status")
		want(t, m, "tlsa-mismatch", "hosts", 0, "connection", "verdict", "reason")
		want(t, m, checker.ExitDeferred, "exit_code")
	})

	t.Run("null-mx", func(t *testing.T) {
		rep, m := b.check(checker.Options{}, "nullmx.example")
		want(t, m, true, "mx", "null_mx")
		want(t, m, 0, "hosts", "#len")
		want(t, m, "deferred", "result")
		var text bytes.Buffer
		if err := rep.WriteText(&text); err != nil || !strings.Contains(text.String(), "null MX (accepts no mail)") {
			t.Errorf("text output (%v):\n%s", err, text.String())
		}
	})

	t.Run("bogus-mx-defers", func(t *testing.T) {
		_, m := b.check(checker.Options{Connect: true}, "bogus.example")
		if s := path(t, m, "mx", "error").(string); !strings.Contains(s, "MX lookup for bogus.example. failed") {
			t.Errorf("mx.error %q", s)
		}
		want(t, m, "deferred", "result")
		want(t, m, checker.ExitDeferred, "exit_code")
	})

	t.Run("mta-sts-one-shot", func(t *testing.T) {
		// The engine has no MTA-STS component: the lookup is shown for
		// information and the verdict ignores it.
		f := &mtastsfallback.Fetcher{RootCAs: b.ca.Pool(), Timeout: 10 * time.Second}
		rep, m := b.check(checker.Options{Connect: true, MTASTS: true, Fetcher: f}, "sts.example")
		want(t, m, "lookup", "mta_sts", "from")
		want(t, m, "20261201T1", "mta_sts", "id")
		want(t, m, "enforce", "mta_sts", "mode")
		want(t, m, true, "hosts", 0, "mta_sts_mx_match")
		want(t, m, "ok", "hosts", 0, "connection", "mta_sts_check")
		want(t, m, "encrypted", "result")
		if rep.MTASTS.FetchError != "" {
			t.Errorf("fetch error: %s", rep.MTASTS.FetchError)
		}
	})

	t.Run("mta-sts", func(t *testing.T) {
		rep, m := b.check(checker.Options{Engine: b.stsEngine(nil), Connect: true, MTASTS: true}, "sts.example")
		want(t, m, "engine", "mta_sts", "from")
		want(t, m, "fetched", "mta_sts", "policy_source")
		want(t, m, "20261201T1", "mta_sts", "id")
		want(t, m, "enforce", "mta_sts", "mode")
		want(t, m, "[mx.sts.example]", "mta_sts", "mx")
		want(t, m, 86400, "mta_sts", "max_age")
		want(t, m, true, "hosts", 0, "mta_sts_mx_match")
		want(t, m, "ok", "hosts", 0, "connection", "mta_sts_check")
		if rep.MTASTS.FetchError != "" {
			t.Errorf("fetch error: %s", rep.MTASTS.FetchError)
		}
		want(t, m, "authenticated", "hosts", 0, "connection", "verdict", "result")
		want(t, m, "mtasts-valid", "hosts", 0, "connection", "verdict", "reason")
		want(t, m, "20261201T1", "hosts", 0, "connection", "verdict", "sts_id")
		want(t, m, "authenticated", "result")

		// The policy does not list the MX host: refused before connecting.
		before := b.srvs["mx.stsbad.example"].ConnectionCount()
		_, m = b.check(checker.Options{Engine: b.stsEngine(nil), Connect: true, MTASTS: true}, "stsbad.example")
		want(t, m, false, "hosts", 0, "mta_sts_mx_match")
		want(t, m, "deferred", "hosts", 0, "mx_check", "result")
		want(t, m, "mtasts-mx-mismatch", "hosts", 0, "mx_check", "reason")
		want(t, m, checker.ExitDeferred, "exit_code")
		if n := b.srvs["mx.stsbad.example"].ConnectionCount(); n != before {
			t.Error("checker connected to an MX host the MTA-STS policy excludes")
		}
	})

	t.Run("binary", func(t *testing.T) {
		bin := maddybed.Binary(t)
		runRaw := func(args ...string) (int, []byte) {
			t.Helper()
			var out, errb bytes.Buffer
			cmd := exec.Command(bin, args...)
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			t.Logf("maddy %s: exit %d, stderr %s", strings.Join(args, " "), code, errb.String())
			return code, out.Bytes()
		}
		run := func(args ...string) (int, []byte) {
			t.Helper()
			return runRaw(append([]string{"check"}, args...)...)
		}

		code, out := run("--json", "--connect", "--no-mtasts", "--resolver", "127.0.0.1", "dane.example")
		_, m := decode(t, out)
		t.Logf("JSON output:\n%s", out)
		if code != checker.ExitAuthenticated {
			t.Errorf("exit status %d, want %d", code, checker.ExitAuthenticated)
		}
		want(t, m, "authenticated", "result")
		want(t, m, "mx2.dane.example", "selected_mx")
		want(t, m, "tlsa-mismatch", "hosts", 0, "connection", "verdict", "reason")

		// The human-readable form of the same check.
		code, out = run("--connect", "--no-mtasts", "dane.example")
		if code != checker.ExitAuthenticated || !bytes.Contains(out, []byte("Result: authenticated: mail would go to mx2.dane.example")) {
			t.Errorf("text output (exit %d):\n%s", code, out)
		}
		t.Logf("text output:\n%s", out)

		code, out = run("--json", "--connect", "--no-mtasts", "plain.example")
		_, m = decode(t, out)
		if code != checker.ExitUnauthenticated {
			t.Errorf("exit status %d, want %d", code, checker.ExitUnauthenticated)
		}
		want(t, m, "plaintext", "result")

		// Policies from a maddy.conf: an inline entry and a table.file
		// entry for a parent domain.
		dir := t.TempDir()
		table := filepath.Join(dir, "tls_policy")
		if err := os.WriteFile(table, []byte(".example: dane-only\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, "maddy.conf")
		body := fmt.Sprintf(`state_dir %[1]s
runtime_dir %[1]s
hostname sender.test
table.file tls_policy {
    file tls_policy
}
target.remote remote {
    mx_auth {
        dane {
            mtasts_dir %[1]s/sts-store
            resolver 127.0.0.1
            policy plain.example encrypt
            policy_table &tls_policy
        }
    }
}
smtp tcp://127.0.0.1:2599 {
    deliver_to &remote
}
`, dir)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out = run("--config", conf, "--json", "--connect", "--no-mtasts", "plain.example")
		_, m = decode(t, out)
		want(t, m, "encrypt", "policy", "level")
		want(t, m, "inline", "policy", "source")
		// The EHLO name is the configuration's hostname.
		conns := b.srvs["mx.plain.example"].Connections()
		if h := conns[len(conns)-1].Helo; h != "sender.test" {
			t.Errorf("EHLO %q, want the configured hostname", h)
		}
		want(t, m, "starttls-not-supported", "hosts", 0, "connection", "verdict", "reason")
		want(t, m, "4.7.4", "hosts", 0, "connection", "verdict", "smtp_enhanced_code")
		if code != checker.ExitDeferred {
			t.Errorf("exit status %d, want %d", code, checker.ExitDeferred)
		}
		code, out = run("--config", conf, "--json", "--no-mtasts", "notlsa.example")
		_, m = decode(t, out)
		want(t, m, "dane-only", "policy", "level")
		want(t, m, "table", "policy", "source")
		want(t, m, ".example", "policy", "key")
		want(t, m, "dane-required", "hosts", 0, "mx_check", "reason")
		if code != checker.ExitDeferred {
			t.Errorf("exit status %d, want %d", code, checker.ExitDeferred)
		}
		// The checker leaves the server's MTA-STS store alone.
		for _, p := range []string{filepath.Join(dir, "sts-store"), filepath.Join(dir, "daneguard")} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("maddy check created %s (%v)", p, err)
			}
		}
		// maddy's global --config works too.
		_, out = runRaw("--config", conf, "check", "--json", "--no-mtasts", "notlsa.example")
		_, m = decode(t, out)
		want(t, m, ".example", "policy", "key")

		// --level overrides the configured policy.
		code, out = run("--config", conf, "--json", "--connect", "--no-mtasts", "--level", "none", "plain.example")
		_, m = decode(t, out)
		want(t, m, "command-line", "policy", "source")
		want(t, m, "plaintext", "result")
		if code != checker.ExitUnauthenticated {
			t.Errorf("exit status %d, want %d", code, checker.ExitUnauthenticated)
		}
		// MTA-STS through the binary: the engine applies it.
		caPEM := b.ca.WritePEM(t, dir)
		code, out = run("--json", "--connect", "--roots", caPEM, "sts.example")
		_, m = decode(t, out)
		want(t, m, "engine", "mta_sts", "from")
		want(t, m, "mtasts-valid", "hosts", 0, "connection", "verdict", "reason")
		if code != checker.ExitAuthenticated {
			t.Errorf("exit status %d, want %d", code, checker.ExitAuthenticated)
		}
		code, out = run("--connect", "--roots", caPEM, "sts.example")
		t.Logf("text output:\n%s", out)
		if !bytes.Contains(out, []byte("mode enforce, max_age 86400, mx mx.sts.example [applied; policy source fetched]")) {
			t.Errorf("text output lacks the MTA-STS policy:\n%s", out)
		}
		if code != checker.ExitAuthenticated {
			t.Errorf("exit status %d, want %d", code, checker.ExitAuthenticated)
		}

		// Usage errors.
		if code, _ := run("--json"); code != checker.ExitUsage {
			t.Errorf("no domain: exit %d", code)
		}
		if code, _ := run("--level", "dane-onyl", "plain.example"); code != checker.ExitUsage {
			t.Errorf("bad level: exit %d", code)
		}
		if code, _ := run("--config", filepath.Join(dir, "missing.conf"), "plain.example"); code != checker.ExitUsage {
			t.Errorf("missing config: exit %d", code)
		}
	})
}
