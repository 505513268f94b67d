package engine

import (
	"context"
	"crypto/tls"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
	"github.com/maddy-dane/daneguard/internal/testbed/stsbed"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
)

// fakeClock is the injectable clock of the engine's DNS cache and of the
// MTA-STS manager.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// stsWorld: signed and unsigned zones on dnsbed (127.0.0.2:53), real
// unbound validating them on 127.0.0.1:53 (the namespace's resolv.conf, used
// by the policy fetcher too), an HTTPS policy server on 127.0.0.3:443 and
// SMTP servers on loopback.
type stsWorld struct {
	t      *testing.T
	dns    *dnsbed.Server
	ub     *dnsbed.Unbound
	ca     *pki.CA
	sts    *stsbed.Server
	clock  *fakeClock
	eng    *Engine
	mgr    *mtastsfallback.Manager
	levels map[string]Level
}

func newSTSWorld(t *testing.T) *stsWorld {
	netns.Required(t)
	w := &stsWorld{t: t, dns: dnsbed.NewServer(), ca: pki.NewCA(t, "sts test root"),
		clock: &fakeClock{t: time.Now()}, levels: map[string]Level{}}
	w.sts = stsbed.Start(t, "127.0.0.3:443", w.ca)
	return w
}

// stsDomain publishes an MTA-STS domain: an unsigned zone (signed with
// signed=true), MX mx.<domain>, the TXT id, the policy host, and an SMTP
// server with cert (nil: no STARTTLS).
func (w *stsWorld) stsDomain(domain, id, policy string, cert *pki.Leaf, signed ...bool) (*dnsbed.Zone, *stsbed.Site, *smtpbed.Server) {
	opts := []dnsbed.ZoneOption{dnsbed.TTL(300)}
	if len(signed) == 0 || !signed[0] {
		opts = append(opts, dnsbed.Unsigned())
	}
	var cfg *tls.Config
	if cert != nil {
		cfg = &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate()}}
	}
	srv := smtpbed.Start(w.t, smtpbed.Options{Hostname: "mx." + domain, TLS: cfg})
	z := w.dns.Zone(w.t, domain+".", opts...)
	z.Add(w.t, "@ MX 10 mx", "mx A 127.0.0.1", "mta-sts A "+w.sts.IP(),
		`_mta-sts TXT "v=STSv1; id=`+id+`;"`)
	site := w.sts.Site(domain)
	if policy != "" {
		site.SetPolicy(policy)
	}
	return z, site, srv
}

func (w *stsWorld) start() {
	w.dns.Start(w.t, "127.0.0.2:53")
	w.ub = dnsbed.StartUnbound(w.t, w.dns, dnsbed.UnboundOptions{})
	res, err := dane.NewResolver(dane.ResolverConfig{Servers: []string{w.ub.Addr()}, Timeout: 3 * time.Second})
	if err != nil {
		w.t.Fatal(err)
	}
	q := NewCachedQuerier(res, policycache.Config{Now: w.clock.Now}, nil)
	w.mgr, err = mtastsfallback.NewManager(mtastsfallback.Config{
		LookupTXT: q.LookupTXT,
		Fetcher:   &mtastsfallback.Fetcher{RootCAs: w.ca.Pool(), Timeout: 10 * time.Second},
		Now:       w.clock.Now,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { w.mgr.Close() })
	w.eng, err = New(Config{
		DNS:   q,
		STS:   w.mgr,
		Roots: w.ca.Pool(),
		Now:   w.clock.Now,
		Policies: func(_ context.Context, d string) (DomainPolicy, bool, error) {
			l, ok := w.levels[d]
			return DomainPolicy{Level: l, Source: "test"}, ok, nil
		},
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

// tlsState connects to srv as an opportunistic SMTP client would (STARTTLS
// without verification, SNI = mx) and returns the TLS state.
func tlsState(t *testing.T, srv *smtpbed.Server, mx string) tls.ConnectionState {
	t.Helper()
	c, err := smtp.Dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("engine.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		return tls.ConnectionState{}
	}
	// MinVersion TLS 1.0: an MTA accepts old servers and lets the policy
	// judge (RFC 8461 §7.2 is the policy's rule, not the client's).
	if err := c.StartTLS(&tls.Config{ServerName: mx, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10}); err != nil {
		t.Fatal(err)
	}
	// go-smtp defers the handshake to the next command.
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	st, _ := c.TLSConnectionState()
	return st
}

// deliver runs CheckMX and, if it passes, CheckConn against srv.
func (w *stsWorld) deliver(t *testing.T, domain string, srv *smtpbed.Server) *Verdict {
	t.Helper()
	ctx := context.Background()
	d := w.eng.Destination(ctx, domain)
	mx := "mx." + domain
	v := w.eng.CheckMX(ctx, d, mx)
	if !v.OK() {
		return v
	}
	return w.eng.CheckConn(ctx, d, mx, tlsState(t, srv, mx))
}

func want(t *testing.T, v *Verdict, res Result, reason Reason) {
	t.Helper()
	if v.Result != res || v.Reason != reason {
		t.Fatalf("verdict %s/%s (%s), want %s/%s", v.Result, v.Reason, v.Detail, res, reason)
	}
	if !v.OK() && (v.Code/100 != 4 || v.EnhancedCode[0] != 4) {
		t.Fatalf("deferral with %d %v: policy failures must be temporary", v.Code, v.EnhancedCode)
	}
}

func TestMTASTSEngine(t *testing.T) {
	w := newSTSWorld(t)
	ca := w.ca
	leaf := func(names ...string) *pki.Leaf { return ca.Leaf(t, pki.LeafOptions{DNSNames: names}) }

	_, sMatch, srvMatch := w.stsDomain("match.example", "m1", stsbed.Policy("enforce", 86400, "*.match.example"), leaf("mx.match.example"))
	_, _, _ = w.stsDomain("mismatch.example", "x1", stsbed.Policy("enforce", 86400, "mail.elsewhere.example"), leaf("mx.mismatch.example"))
	_, _, srvBadCert := w.stsDomain("badcert.example", "b1", stsbed.Policy("enforce", 86400, "mx.badcert.example"), pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.badcert.example"}}))
	_, _, srvNoTLS := w.stsDomain("notls.example", "n1", stsbed.Policy("enforce", 86400, "mx.notls.example"), nil)
	_, _, srvTesting := w.stsDomain("testing.example", "t1", stsbed.Policy("testing", 86400, "mx.testing.example"), leaf("wrong-name.example"))
	_, _, srvNone := w.stsDomain("none.example", "z1", stsbed.Policy("none", 86400), leaf("wrong-name.example"))
	zChange, sChange, srvChange := w.stsDomain("change.example", "c1", stsbed.Policy("enforce", 86400, "mx.change.example"), leaf("mx.change.example"))
	zDown, sDown, srvDown := w.stsDomain("down.example", "d1", stsbed.Policy("enforce", 86400, "mx.down.example"), leaf("mx.down.example"))
	_, sBig, srvBig := w.stsDomain("big.example", "g1", "", leaf("mx.big.example"))
	sBig.SetPolicy(stsbed.Policy("enforce", 86400, "mx.big.example") + "x-pad: " + strings.Repeat("a", 70<<10) + "\r\n")
	_, _, _ = w.stsDomain("bigreq.example", "g1", "", nil)
	w.sts.Site("bigreq.example").SetPolicy(stsbed.Policy("enforce", 86400, "mx.bigreq.example") + "x-pad: " + strings.Repeat("a", 70<<10) + "\r\n")
	_, sBad, _ := w.stsDomain("malformed.example", "f1", "version: STSv1\r\nmode: enforce\r\nmx: mx.malformed.example\r\n", nil)
	_, sRedir, _ := w.stsDomain("redirect.example", "r1", "", nil)
	sRedir.SetResponse(stsbed.Response{Status: http.StatusMovedPermanently, Location: "https://mta-sts.match.example/.well-known/mta-sts.txt"})
	_, _, _ = w.stsDomain("nopolicy.example", "p1", "", nil)
	w.dns.Zone(t, "nopolicy.example.").Remove(t, "_mta-sts.nopolicy.example.", 16)

	// DANE and MTA-STS on one signed domain. mx.both.example: DANE-EE on a
	// self-signed certificate, listed in the enforce policy. The policy
	selfBoth := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.both.example"}})
	zBoth, sBoth, srvBoth := w.stsDomain("both.example", "bo1", stsbed.Policy("enforce", 86400, "mx.both.example"), selfBoth, true)
	zBoth.Add(t, pki.TLSA(t, "_25._tcp.mx.both.example.", 3, 1, 1, selfBoth.Cert))
	// mx.danefail.example: WebPKI-valid certificate that satisfies the
	// policy, but the TLSA record pins another key: DANE fails and
	// MTA-STS must not rescue it (RFC 8461 §2).
	other := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"attacker.example"}})
	zFail, _, srvFail := w.stsDomain("danefail.example", "df1", stsbed.Policy("enforce", 86400, "mx.danefail.example"), leaf("mx.danefail.example"), true)
	zFail.Add(t, pki.TLSA(t, "_25._tcp.mx.danefail.example.", 3, 1, 1, other.Cert))
	// mx.daneunlisted.example: the MX is not in the enforce policy, the MX RRset
	// is signed and the host has usable TLSA: DANE governs.
	selfOnly := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.daneunlisted.example"}})
	zUnl, _, srvUnl := w.stsDomain("daneunlisted.example", "du1", stsbed.Policy("enforce", 86400, "other.daneunlisted.example"), selfOnly, true)
	zUnl.Add(t, pki.TLSA(t, "_25._tcp.mx.daneunlisted.example.", 3, 1, 1, selfOnly.Cert))

	// An old server: TLS 1.1 at most, WebPKI-valid certificate.
	oldLeaf := leaf("mx.oldtls.example")
	_, _, _ = w.stsDomain("oldtls.example", "o1", stsbed.Policy("enforce", 86400, "mx.oldtls.example"), nil)
	srvOld := smtpbed.Start(t, smtpbed.Options{Hostname: "mx.oldtls.example", TLS: &tls.Config{
		Certificates: []tls.Certificate{oldLeaf.TLSCertificate()},
		MinVersion:   tls.VersionTLS10, MaxVersion: tls.VersionTLS11,
	}})

	// Only unusable TLSA records (PKIX-TA, usage 0) and an enforce policy:
	// TLS is mandatory by DANE, authentication is MTA-STS's.
	unSelf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.unusable.example"}})
	zUn, _, srvUn := w.stsDomain("unusable.example", "u1", stsbed.Policy("enforce", 86400, "mx.unusable.example"), unSelf, true)
	zUn.Add(t, pki.TLSA(t, "_25._tcp.mx.unusable.example.", 0, 1, 1, unSelf.Cert))

	w.levels["bigreq.example"] = LevelMTASTS
	w.levels["malformed.example"] = LevelMTASTS
	w.levels["redirect.example"] = LevelMTASTS
	w.levels["nopolicy.example"] = LevelMTASTS
	w.levels["daneonly.example"] = LevelDANEOnly
	_, sDaneOnly, _ := w.stsDomain("daneonly.example", "do1", stsbed.Policy("enforce", 86400, "mx.daneonly.example"), nil)
	w.start()

	t.Run("enforce-match", func(t *testing.T) {
		v := w.deliver(t, "match.example", srvMatch)
		want(t, v, Authenticated, ReasonSTSValid)
		if v.Mechanism != MechMTASTS || v.STSPolicyID != "m1" || v.STSMode != "enforce" || !v.STSMXMatched {
			t.Fatalf("verdict %+v", v)
		}
		if sMatch.Fetches() != 1 {
			t.Fatalf("%d fetches, want 1", sMatch.Fetches())
		}
		// A second delivery uses the cached policy and the cached TXT.
		want(t, w.deliver(t, "match.example", srvMatch), Authenticated, ReasonSTSValid)
		if sMatch.Fetches() != 1 {
			t.Fatalf("%d fetches after a second delivery, want 1", sMatch.Fetches())
		}
	})
	t.Run("enforce-mx-mismatch", func(t *testing.T) {
		v := w.deliver(t, "mismatch.example", nil)
		want(t, v, Deferred, ReasonSTSMXMismatch)
		if v.EnhancedCode != [3]int{4, 7, 4} || v.ReportType != "validation-failure" || v.STSPolicyID != "x1" {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("enforce-cert-not-webpki", func(t *testing.T) {
		v := w.deliver(t, "badcert.example", srvBadCert)
		want(t, v, Deferred, ReasonSTSCertInvalid)
		if v.EnhancedCode != [3]int{4, 7, 5} || v.ReportType != "certificate-not-trusted" {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("enforce-no-starttls", func(t *testing.T) {
		v := w.deliver(t, "notls.example", srvNoTLS)
		want(t, v, Deferred, ReasonNoTLS)
		if v.Mechanism != MechMTASTS || v.ReportType != "starttls-not-supported" {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("enforce-tls-too-old", func(t *testing.T) {
		v := w.deliver(t, "oldtls.example", srvOld)
		want(t, v, Deferred, ReasonSTSTLSVersion)
		if v.TLSVersion != "TLS1.1" || v.EnhancedCode != [3]int{4, 7, 5} || v.ReportType != "validation-failure" {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("testing-mode-failure-delivers", func(t *testing.T) {
		v := w.deliver(t, "testing.example", srvTesting)
		want(t, v, Encrypted, ReasonSTSTestingFailure)
		if v.ReportType != "certificate-host-mismatch" || v.STSMode != "testing" {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("mode-none", func(t *testing.T) {
		v := w.deliver(t, "none.example", srvNone)
		want(t, v, Encrypted, ReasonInsecureMX)
		if v.Mechanism != MechNone || v.STSMode != "none" || v.ReportType != "" {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("txt-id-change-refetches", func(t *testing.T) {
		want(t, w.deliver(t, "change.example", srvChange), Authenticated, ReasonSTSValid)
		if sChange.Fetches() != 1 {
			t.Fatalf("%d fetches, want 1", sChange.Fetches())
		}
		// New policy (the MX is no longer listed) under a new id.
		sChange.SetPolicy(stsbed.Policy("enforce", 86400, "new.change.example"))
		zChange.Replace(t, `_mta-sts TXT "v=STSv1; id=c2;"`)
		// Same id in every cache: no fetch, old policy.
		want(t, w.deliver(t, "change.example", srvChange), Authenticated, ReasonSTSValid)
		if sChange.Fetches() != 1 {
			t.Fatalf("%d fetches before the TXT TTL ran out, want 1", sChange.Fetches())
		}
		w.ub.Flush(t)
		w.clock.Advance(301 * time.Second)
		v := w.deliver(t, "change.example", srvChange)
		want(t, v, Deferred, ReasonSTSMXMismatch)
		if sChange.Fetches() != 2 || v.STSPolicyID != "c2" {
			t.Fatalf("%d fetches, policy id %q; want 2 and c2", sChange.Fetches(), v.STSPolicyID)
		}
	})
	t.Run("server-down-cached-policy-enforced", func(t *testing.T) {
		want(t, w.deliver(t, "down.example", srvDown), Authenticated, ReasonSTSValid)
		sDown.SetDown(true)
		zDown.Replace(t, `_mta-sts TXT "v=STSv1; id=d2;"`, "@ MX 10 rogue", "rogue A 127.0.0.1")
		w.ub.Flush(t)
		w.clock.Advance(301 * time.Second)
		ctx := context.Background()
		d := w.eng.Destination(ctx, "down.example")
		if sDown.Fetches() != 2 {
			t.Fatalf("%d fetches, want 2 (the new id was tried)", sDown.Fetches())
		}
		if d.STS == nil || d.STS.Source != mtastsfallback.SourceStale || d.STS.Err == nil {
			t.Fatalf("policy result %+v, want the stale cached policy with the fetch error", d.STS)
		}
		v := w.eng.CheckMX(ctx, d, "rogue.down.example")
		want(t, v, Deferred, ReasonSTSMXMismatch)
		if v.STSPolicyID != "d1" {
			t.Fatalf("applied policy %q, want the cached d1", v.STSPolicyID)
		}
		// The listed host is still usable under the cached policy.
		v = w.eng.CheckMX(ctx, d, "mx.down.example")
		if !v.OK() {
			t.Fatalf("cached policy refused its own MX: %+v", v)
		}
	})
	t.Run("oversized-policy", func(t *testing.T) {
		// Level dane: no usable policy, opportunistic delivery.
		v := w.deliver(t, "big.example", srvBig)
		want(t, v, Encrypted, ReasonInsecureMX)
		if v.STSPolicyID != "" || sBig.Fetches() != 1 || !strings.Contains(v.Detail, "body-too-large") {
			t.Fatalf("verdict %+v after %d fetches", v, sBig.Fetches())
		}
		// Level mtasts: deferred.
		v = w.deliver(t, "bigreq.example", nil)
		want(t, v, Deferred, ReasonSTSFetchFailure)
		if v.ReportType != "sts-policy-fetch-error" || !strings.Contains(v.Detail, "body-too-large") {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("malformed-policy", func(t *testing.T) {
		v := w.deliver(t, "malformed.example", nil)
		want(t, v, Deferred, ReasonSTSFetchFailure)
		if v.ReportType != "sts-policy-invalid" || sBad.Fetches() != 1 {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("redirect-refused", func(t *testing.T) {
		before := sMatch.Fetches()
		v := w.deliver(t, "redirect.example", nil)
		want(t, v, Deferred, ReasonSTSFetchFailure)
		if !strings.Contains(v.Detail, "http-redirect") || sRedir.Fetches() != 1 || sMatch.Fetches() != before {
			t.Fatalf("verdict %+v; redirect target fetched %d times", v, sMatch.Fetches()-before)
		}
	})
	t.Run("level-mtasts-without-policy", func(t *testing.T) {
		v := w.deliver(t, "nopolicy.example", nil)
		want(t, v, Deferred, ReasonSTSRequired)
	})
	t.Run("mtasts-disabled", func(t *testing.T) {
		// An engine without the MTA-STS component: level dane is plain
		// opportunistic DANE, level mtasts cannot be satisfied.
		before := sMatch.Fetches()
		e2, err := New(Config{DNS: w.eng.cfg.DNS, Roots: w.ca.Pool(), Now: w.clock.Now,
			Policies: func(_ context.Context, d string) (DomainPolicy, bool, error) {
				return DomainPolicy{Level: LevelMTASTS}, d == "mismatch.example", nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		d := e2.Destination(ctx, "match.example")
		v := e2.CheckConn(ctx, d, "mx.match.example", tlsState(t, srvMatch, "mx.match.example"))
		want(t, v, Encrypted, ReasonInsecureMX)
		if d.STS != nil || v.STSPolicyID != "" || sMatch.Fetches() != before {
			t.Fatalf("MTA-STS consulted although disabled: %+v", v)
		}
		v = e2.CheckMX(ctx, e2.Destination(ctx, "mismatch.example"), "mx.mismatch.example")
		want(t, v, Deferred, ReasonSTSRequired)
		if !strings.Contains(v.Message, "disabled") {
			t.Fatalf("message %q does not say MTA-STS is disabled", v.Message)
		}
	})
	t.Run("dane-only-never-uses-sts", func(t *testing.T) {
		d := w.eng.Destination(context.Background(), "daneonly.example")
		if d.STS != nil || sDaneOnly.Fetches() != 0 {
			t.Fatalf("dane-only destination consulted MTA-STS: %+v, %d fetches", d.STS, sDaneOnly.Fetches())
		}
		want(t, w.eng.CheckMX(context.Background(), d, "mx.daneonly.example"), Deferred, ReasonDANERequired)
	})
	t.Run("dane-and-sts-dane-governs", func(t *testing.T) {
		// Self-signed, not WebPKI-valid: DANE authenticates it and the
		// enforce policy does not fail it.
		v := w.deliver(t, "both.example", srvBoth)
		want(t, v, Authenticated, ReasonDANEMatch)
		if v.Mechanism != MechDANE || v.STSPolicyID != "bo1" || !v.STSMXMatched || sBoth.Fetches() != 1 {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("dane-failure-not-rescued-by-sts", func(t *testing.T) {
		v := w.deliver(t, "danefail.example", srvFail)
		want(t, v, Deferred, ReasonDANEMismatch)
		if v.Mechanism != MechDANE {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("unusable-tlsa-sts-authenticates", func(t *testing.T) {
		v := w.deliver(t, "unusable.example", srvUn)
		want(t, v, Deferred, ReasonSTSCertInvalid)
		if v.Mechanism != MechMTASTS || v.ReportType != "certificate-not-trusted" {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("dane-host-not-in-policy-secure-mx", func(t *testing.T) {
		v := w.deliver(t, "daneunlisted.example", srvUnl)
		want(t, v, Authenticated, ReasonDANEMatch)
		if !v.MXSecure || v.STSMXMatched || !strings.Contains(v.Detail, "DANE governs") {
			t.Fatalf("verdict %+v", v)
		}
	})
}
