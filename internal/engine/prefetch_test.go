package engine_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/miekg/dns"
)

// The concurrency of the cold path (prefetch.go), without root or network:
// a map-backed DNS whose questions can be held back, and events that show
// which questions were in flight together. Nothing here measures time:
// "in flight together" means asked while another was still unanswered.

// gatedDNS answers from a map; a question with a gate waits until the gate
// is opened. Every question asked is announced on asked.
type gatedDNS struct {
	answers mapQuerier
	asked   chan engine.QueryKey

	mu    sync.Mutex
	gates map[engine.QueryKey]chan struct{}
	log   []engine.QueryKey
}

func newGatedDNS(answers mapQuerier) *gatedDNS {
	return &gatedDNS{answers: answers, asked: make(chan engine.QueryKey, 100), gates: map[engine.QueryKey]chan struct{}{}}
}

// hold makes the question wait until the returned function is called.
func (g *gatedDNS) hold(name string, qtype uint16) (release func()) {
	ch := make(chan struct{})
	g.mu.Lock()
	g.gates[engine.QueryKey{Name: dns.Fqdn(name), Qtype: qtype}] = ch
	g.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (g *gatedDNS) Query(ctx context.Context, name string, qtype uint16) (*dane.Answer, error) {
	k := engine.QueryKey{Name: dns.Fqdn(name), Qtype: qtype}
	g.mu.Lock()
	gate := g.gates[k]
	g.log = append(g.log, k)
	g.mu.Unlock()
	g.asked <- k
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.answers.Query(ctx, name, qtype)
}

func (g *gatedDNS) questions() []engine.QueryKey {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]engine.QueryKey(nil), g.log...)
}

// expectAsked waits until every one of want was asked (in any order).
// The deadline only bounds a broken test.
func (g *gatedDNS) expectAsked(t *testing.T, what string, want ...engine.QueryKey) {
	t.Helper()
	missing := map[engine.QueryKey]bool{}
	for _, k := range want {
		missing[k] = true
	}
	timeout := time.After(10 * time.Second)
	for len(missing) != 0 {
		select {
		case k := <-g.asked:
			delete(missing, k)
		case <-timeout:
			t.Fatalf("%s: never asked %v (asked: %v)", what, missing, g.questions())
		}
	}
}

func key(name string, qtype uint16) engine.QueryKey {
	return engine.QueryKey{Name: dns.Fqdn(name), Qtype: qtype}
}

func rrHdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: dns.Fqdn(name), Rrtype: t, Class: dns.ClassINET, Ttl: 3600}
}

// coldWorld is one destination, cold.example, with MX hosts hosts (DANE-EE
// records matching leaf for each, secure), a TXT record _mta-sts and
// whatever else add puts in.
func coldWorld(t *testing.T, leaf *pki.Leaf, secureMX bool, tlsa bool, hosts ...string) mapQuerier {
	q := mapQuerier{}
	var mxs []dns.RR
	for i, h := range hosts {
		mxs = append(mxs, &dns.MX{Hdr: rrHdr("cold.example", dns.TypeMX), Preference: uint16(10 * (i + 1)), Mx: h + "."})
		q[key(h, dns.TypeA)] = answer(h+".", dns.TypeA, true, &dns.A{Hdr: rrHdr(h, dns.TypeA), A: net.IPv4(192, 0, 2, byte(i+1))})
		owner := "_25._tcp." + h + "."
		if tlsa {
			q[key(owner, dns.TypeTLSA)] = answer(owner, dns.TypeTLSA, true, pki.TLSARR(t, owner, 3, 1, 1, leaf.Cert))
		} else {
			q[key(owner, dns.TypeTLSA)] = answer(owner, dns.TypeTLSA, true)
		}
	}
	q[key("cold.example", dns.TypeMX)] = answer("cold.example.", dns.TypeMX, secureMX, mxs...)
	q[key("_mta-sts.cold.example", dns.TypeTXT)] = answer("_mta-sts.cold.example.", dns.TypeTXT, true,
		&dns.TXT{Hdr: rrHdr("_mta-sts.cold.example", dns.TypeTXT), Txt: []string{"v=STSv1; id=c1;"}})
	return q
}

// blockedSTS is an MTA-STS component whose lookup waits for release and
// then returns a testing-mode policy (id c1) listing every host.
type blockedSTS struct {
	release chan struct{}
	asked   chan struct{}
	once    sync.Once
}

func newBlockedSTS() *blockedSTS {
	return &blockedSTS{release: make(chan struct{}), asked: make(chan struct{})}
}

func (b *blockedSTS) Policy(ctx context.Context, domain string) (*mtastsfallback.Result, error) {
	b.once.Do(func() { close(b.asked) })
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	now := time.Now()
	return &mtastsfallback.Result{Domain: domain, Source: mtastsfallback.SourceFetched, Policy: &mtastsfallback.Policy{
		Mode: mtastsfallback.ModeTesting, MaxAge: 86400, MX: []string{"*.cold.example"}, Domain: domain, ID: "c1",
		FetchedAt: now, Expires: now.Add(24 * time.Hour)}}, nil
}

// TestPrepareMXAndMTASTSTogether: the MX RRset and the _mta-sts TXT record
// (through the real MTA-STS manager, on the same cached querier) are in
// flight at the same time, and PrepareDomain's Prepare returns before
// either is answered.
func TestPrepareMXAndMTASTSTogether(t *testing.T) {
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.cold.example"}})
	g := newGatedDNS(coldWorld(t, leaf, true, true, "mx.cold.example"))
	releaseMX := g.hold("cold.example", dns.TypeMX)
	releaseTXT := g.hold("_mta-sts.cold.example", dns.TypeTXT)
	defer releaseMX()
	defer releaseTXT()
	cq := engine.NewCachedQuerier(g, policycache.Config{}, nil)
	mgr, err := mtastsfallback.NewManager(mtastsfallback.Config{LookupTXT: cq.LookupTXT,
		IsNotFound: func(err error) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	e, err := engine.New(engine.Config{DNS: cq, STS: mgr})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Prepare(context.Background(), "cold.example")
	defer d.Release()
	// Both questions asked while both are held: in flight together.
	g.expectAsked(t, "cold destination", key("cold.example", dns.TypeMX), key("_mta-sts.cold.example", dns.TypeTXT))
	if d.Done() {
		t.Fatal("destination done while its MX and TXT questions are unanswered")
	}
	releaseMX()
	releaseTXT()
	if err := d.Wait(tctx(t)); err != nil {
		t.Fatal(err)
	}
	if d.MXErr != nil || len(d.MX.Hosts) != 1 || d.STS == nil {
		t.Fatalf("MX %+v (%v), STS %+v", d.MX, d.MXErr, d.STS)
	}
}

// TestPrepareHostsTogether: as soon as the MX RRset is known, the A and
// TLSA questions of both MX hosts are in flight together, and the glue is
// told to warm the dial's AAAA for each; the verdicts are DANE's.
func TestPrepareHostsTogether(t *testing.T) {
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx1.cold.example", "mx2.cold.example"}})
	g := newGatedDNS(coldWorld(t, leaf, true, true, "mx1.cold.example", "mx2.cold.example"))
	var held []engine.QueryKey
	var releases []func()
	for _, h := range []string{"mx1.cold.example", "mx2.cold.example"} {
		for _, k := range []engine.QueryKey{key(h, dns.TypeA), key("_25._tcp."+h, dns.TypeTLSA)} {
			r := g.hold(k.Name, k.Qtype)
			defer r()
			releases = append(releases, r)
			held = append(held, k)
		}
	}
	var warmMu sync.Mutex
	var warmed []string
	e, err := engine.New(engine.Config{DNS: engine.NewCachedQuerier(g, policycache.Config{}, nil),
		WarmDial: func(_ context.Context, host string) {
			warmMu.Lock()
			warmed = append(warmed, host)
			warmMu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Prepare(context.Background(), "cold.example")
	defer d.Release()
	g.expectAsked(t, "two MX hosts", append([]engine.QueryKey{key("cold.example", dns.TypeMX)}, held...)...)
	warmMu.Lock()
	if len(warmed) != 2 {
		t.Errorf("dial warm-up for %v, want both hosts", warmed)
	}
	warmMu.Unlock()
	// Only now are the four answered.
	for _, r := range releases {
		r()
	}
	st := tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13, PeerCertificates: leafChain(leaf)}
	for _, h := range []string{"mx1.cold.example", "mx2.cold.example"} {
		v := e.CheckMX(tctx(t), d, h)
		if !v.OK() || v.Mechanism != engine.MechDANE {
			t.Fatalf("CheckMX(%s): %+v", h, v)
		}
		wantAuthenticated(t, e.CheckConn(tctx(t), d, h, st))
	}
	// Each question once: CheckMX used the lookups under way.
	seen := map[engine.QueryKey]int{}
	for _, k := range g.questions() {
		seen[k]++
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%v asked %d times", k, n)
		}
	}
}

func leafChain(l *pki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert} }

var errNoFetch = errors.New("no policy host in this test")

// TestCheckMXDANEDoesNotWaitForMTASTS: a host DANE governs on a secure MX
// RRset is passed by CheckMX while the MTA-STS lookup is still blocked;
// CheckConn then names the policy in the verdict, as before.
func TestCheckMXDANEDoesNotWaitForMTASTS(t *testing.T) {
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.cold.example"}})
	sts := newBlockedSTS()
	e, err := engine.New(engine.Config{DNS: engine.NewCachedQuerier(coldWorld(t, leaf, true, true, "mx.cold.example"), policycache.Config{}, nil), STS: sts})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Prepare(context.Background(), "cold.example")
	defer d.Release()
	<-sts.asked
	// The MTA-STS lookup never ends unless released: CheckMX returning
	// at all shows it did not wait.
	v := e.CheckMX(tctx(t), d, "mx.cold.example")
	if !v.OK() || v.Mechanism != engine.MechDANE || !v.MXSecure || v.STSPolicyID != "" {
		t.Fatalf("CheckMX: %+v", v)
	}
	close(sts.release)
	st := tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13, PeerCertificates: leafChain(leaf)}
	cv := e.CheckConn(tctx(t), d, "mx.cold.example", st)
	wantAuthenticated(t, cv)
	if cv.STSPolicyID != "c1" || cv.STSMode != "testing" {
		t.Fatalf("CheckConn verdict lacks the MTA-STS policy: %+v", cv)
	}
}

// TestCheckMXWaitsForMTASTSWithoutDANE: a host without TLSA records (DANE
// does not apply) and one whose MX RRset is insecure both wait for the
// MTA-STS policy: their verdicts carry the policy, which exists only once
// the lookup is released.
func TestCheckMXWaitsForMTASTSWithoutDANE(t *testing.T) {
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.cold.example"}})
	for _, tc := range []struct {
		name     string
		secureMX bool
		tlsa     bool
		mech     engine.Mechanism
	}{
		{"no-tlsa", true, false, engine.MechMTASTS},
		{"dane-insecure-mx", false, true, engine.MechDANE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sts := newBlockedSTS()
			e, err := engine.New(engine.Config{DNS: engine.NewCachedQuerier(coldWorld(t, leaf, tc.secureMX, tc.tlsa, "mx.cold.example"), policycache.Config{}, nil), STS: sts})
			if err != nil {
				t.Fatal(err)
			}
			d := e.Prepare(context.Background(), "cold.example")
			defer d.Release()
			<-sts.asked
			got := make(chan *engine.Verdict, 1)
			go func() { got <- e.CheckMX(tctx(t), d, "mx.cold.example") }()
			close(sts.release)
			v := <-got
			if !v.OK() || v.Mechanism != tc.mech || v.STSPolicyID != "c1" {
				t.Fatalf("CheckMX did not decide with the MTA-STS policy: %+v", v)
			}
		})
	}
}

// TestSpeculativeTLSAIgnoredWhenInsecure: the TLSA question goes out beside
// the address question; for a host in an unsigned zone whose nameserver
// fails TLSA queries (RFC 7672 §2.2.2's reason for the order), the failure
// changes nothing: DANE does not apply, as with the sequential order, and
// the failure is not left in the cache.
func TestSpeculativeTLSAIgnoredWhenInsecure(t *testing.T) {
	owner := "_25._tcp.mx.plain.example."
	q := mapQuerier{
		key("plain.example", dns.TypeMX):   answer("plain.example.", dns.TypeMX, false, &dns.MX{Hdr: rrHdr("plain.example", dns.TypeMX), Preference: 10, Mx: "mx.plain.example."}),
		key("mx.plain.example", dns.TypeA): answer("mx.plain.example.", dns.TypeA, false, &dns.A{Hdr: rrHdr("mx.plain.example", dns.TypeA), A: net.IPv4(192, 0, 2, 9)}),
		key(owner, dns.TypeTLSA):           &dane.LookupError{Name: owner, Type: dns.TypeTLSA, Kind: dane.ErrServFail, Rcode: dns.RcodeServerFailure, EDE: -1},
	}
	g := newGatedDNS(q)
	releaseA := g.hold("mx.plain.example", dns.TypeA)
	cq := engine.NewCachedQuerier(g, policycache.Config{}, nil)
	e, err := engine.New(engine.Config{DNS: cq})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Prepare(context.Background(), "plain.example")
	defer d.Release()
	// The TLSA question is asked while the address answer is held.
	g.expectAsked(t, "speculative TLSA", key("mx.plain.example", dns.TypeA), key(owner, dns.TypeTLSA))
	releaseA()
	v := e.CheckMX(tctx(t), d, "mx.plain.example")
	if !v.OK() || v.Mechanism == engine.MechDANE || v.TLSARRset != nil {
		t.Fatalf("CheckMX: %s %s %q %s", v.Result, v.Reason, v.Mechanism, v.Detail)
	}
	cv := e.CheckConn(tctx(t), d, "mx.plain.example", tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13})
	if cv.Result != engine.Encrypted || cv.Reason != engine.ReasonInsecureMX {
		t.Fatalf("CheckConn: %+v", cv)
	}
	// The ignored failure is forgotten once its query ended.
	deadline := time.After(10 * time.Second)
	for cq.Fresh(owner, dns.TypeTLSA) {
		select {
		case <-deadline:
			t.Fatal("the ignored TLSA failure stays cached")
		case <-time.After(time.Millisecond):
		}
	}
}

// TestWarmDeliveryAsksNothing: once a destination is cached, a delivery
// through Prepare asks no question and warms no dial.
func TestWarmDeliveryAsksNothing(t *testing.T) {
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx1.cold.example", "mx2.cold.example"}})
	g := newGatedDNS(coldWorld(t, leaf, true, true, "mx1.cold.example", "mx2.cold.example"))
	var warmMu sync.Mutex
	warm := 0
	cq := engine.NewCachedQuerier(g, policycache.Config{}, nil)
	mgr, err := mtastsfallback.NewManager(mtastsfallback.Config{LookupTXT: cq.LookupTXT, Fetcher: &mtastsfallback.Fetcher{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return nil, errNoFetch },
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	e, err := engine.New(engine.Config{DNS: cq, STS: mgr, WarmDial: func(context.Context, string) {
		warmMu.Lock()
		warm++
		warmMu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	st := tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13, PeerCertificates: leafChain(leaf)}
	deliverAll := func() {
		d := e.Prepare(context.Background(), "cold.example")
		defer d.Release()
		for _, h := range []string{"mx1.cold.example", "mx2.cold.example"} {
			wantAuthenticated(t, e.CheckConn(tctx(t), d, h, st))
		}
		if err := d.Wait(tctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	deliverAll()
	cold, coldWarm := len(g.questions()), warm
	for range 5 {
		deliverAll()
	}
	if n := len(g.questions()) - cold; n != 0 {
		t.Fatalf("warm deliveries asked %d questions: %v", n, g.questions()[cold:])
	}
	if warm != coldWarm || coldWarm != 2 {
		t.Fatalf("dial warm-ups: %d cold (want 2), %d more when warm (want 0)", coldWarm, warm-coldWarm)
	}
}

// cnameWorld is cold.example whose MX host mx.cold.example is an alias
// (a secure chain) to chain's last name, whose TLSA RRset matches leaf.
// The probe answers mx.cold.example's CNAME question with probeTarget.
func cnameWorld(t *testing.T, leaf *pki.Leaf, probeTarget string, chain ...string) mapQuerier {
	q := mapQuerier{}
	host := "mx.cold.example."
	q[key("cold.example", dns.TypeMX)] = answer("cold.example.", dns.TypeMX, true,
		&dns.MX{Hdr: rrHdr("cold.example", dns.TypeMX), Preference: 10, Mx: host})
	var cnames []*dns.CNAME
	from := host
	for _, to := range chain {
		cnames = append(cnames, &dns.CNAME{Hdr: rrHdr(from, dns.TypeCNAME), Target: dns.Fqdn(to)})
		from = dns.Fqdn(to)
	}
	a := answer(host, dns.TypeA, true, &dns.A{Hdr: rrHdr(from, dns.TypeA), A: net.IPv4(192, 0, 2, 7)})
	a.CNAMEs, a.Target = cnames, from
	q[key(host, dns.TypeA)] = a
	q[key(host, dns.TypeCNAME)] = answer(host, dns.TypeCNAME, true, &dns.CNAME{Hdr: rrHdr(host, dns.TypeCNAME), Target: dns.Fqdn(probeTarget)})
	owner := "_25._tcp." + from
	q[key(owner, dns.TypeTLSA)] = answer(owner, dns.TypeTLSA, true, pki.TLSARR(t, owner, 3, 1, 1, leaf.Cert))
	q[key("_25._tcp."+host, dns.TypeTLSA)] = answer("_25._tcp."+host, dns.TypeTLSA, true)
	return q
}

// sequentialVerdicts is what the checker's path (Destination: RFC 7672
// §2.2.2's order, no speculation, no probe) decides for mx on a fresh
// engine over q.
func sequentialVerdicts(t *testing.T, q mapQuerier, mx string, st tls.ConnectionState) (*engine.Verdict, *engine.Verdict) {
	t.Helper()
	e, err := engine.New(engine.Config{DNS: engine.NewCachedQuerier(q, policycache.Config{}, nil)})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Destination(tctx(t), "cold.example")
	return e.CheckMX(tctx(t), d, mx), e.CheckConn(tctx(t), d, mx, st)
}

func sameVerdict(t *testing.T, what string, got, want *engine.Verdict) {
	t.Helper()
	if got.Result != want.Result || got.Reason != want.Reason || got.Mechanism != want.Mechanism || got.TLSABase != want.TLSABase || got.Detail != want.Detail {
		t.Fatalf("%s: %+v, sequential order gives %+v", what, got, want)
	}
}

// TestPrepareCNAMETargetTLSAWithTargetA: for a cold MX host that is an
// alias, the CNAME probe names the target and the target's TLSA question
// is in flight while the address answer (which must follow the alias and
// validate the target's zone) is still held back. The verdict is the
// sequential one, the target's TLSA question is asked once, and the probe
// leaves nothing in the cache.
func TestPrepareCNAMETargetTLSAWithTargetA(t *testing.T) {
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mail.hoster.example"}})
	q := cnameWorld(t, leaf, "mail.hoster.example", "mail.hoster.example")
	g := newGatedDNS(q)
	releaseA := g.hold("mx.cold.example", dns.TypeA)
	defer releaseA()
	cq := engine.NewCachedQuerier(g, policycache.Config{}, nil)
	e, err := engine.New(engine.Config{DNS: cq})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Prepare(context.Background(), "cold.example")
	defer d.Release()
	target := key("_25._tcp.mail.hoster.example", dns.TypeTLSA)
	g.expectAsked(t, "alias", key("mx.cold.example", dns.TypeA), key("mx.cold.example", dns.TypeCNAME), target)
	releaseA()

	st := tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13, ServerName: "mx.cold.example", PeerCertificates: leafChain(leaf)}
	v := e.CheckMX(tctx(t), d, "mx.cold.example")
	cv := e.CheckConn(tctx(t), d, "mx.cold.example", st)
	wantAuthenticated(t, cv)
	if v.TLSABase != "mail.hoster.example" {
		t.Fatalf("TLSA base %q, want the expanded name", v.TLSABase)
	}
	seqMX, seqConn := sequentialVerdicts(t, q, "mx.cold.example", st)
	sameVerdict(t, "CheckMX", v, seqMX)
	sameVerdict(t, "CheckConn", cv, seqConn)
	n := 0
	for _, k := range g.questions() {
		if k == target {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("target TLSA asked %d times, want once: %v", n, g.questions())
	}
	if cq.Fresh("mx.cold.example", dns.TypeCNAME) {
		t.Fatal("the CNAME probe's answer is in the cache")
	}
	if s := cq.Cache().Stats(); s.Fetches != 4 {
		// MX, A, the host's own TLSA (speculative) and the target's TLSA.
		t.Fatalf("cache fetched %d answers, want 4 (the probe is not one of them)", s.Fetches)
	}
}

// TestPrepareCNAMEProbeMismatch: a double alias (mx.cold.example →
// relay.hoster.example → mail.hoster.example). The probe names the first
// hop only, so the TLSA question it starts (which fails here) is not the
// one RFC 7672 §2.2.3 asks: it is ignored and forgotten, and the expanded
// name's TLSA question is asked after the address answer, as in the
// sequential order, with the same verdict.
func TestPrepareCNAMEProbeMismatch(t *testing.T) {
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mail.hoster.example"}})
	q := cnameWorld(t, leaf, "relay.hoster.example", "relay.hoster.example", "mail.hoster.example")
	hop := "_25._tcp.relay.hoster.example."
	q[key(hop, dns.TypeTLSA)] = &dane.LookupError{Name: hop, Type: dns.TypeTLSA, Kind: dane.ErrServFail, Rcode: dns.RcodeServerFailure, EDE: -1}
	g := newGatedDNS(q)
	releaseA := g.hold("mx.cold.example", dns.TypeA)
	defer releaseA()
	cq := engine.NewCachedQuerier(g, policycache.Config{}, nil)
	e, err := engine.New(engine.Config{DNS: cq})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Prepare(context.Background(), "cold.example")
	defer d.Release()
	g.expectAsked(t, "double alias", key("mx.cold.example", dns.TypeA), key("mx.cold.example", dns.TypeCNAME), key(hop, dns.TypeTLSA))
	final := key("_25._tcp.mail.hoster.example", dns.TypeTLSA)
	// The address answer is still held: nothing but it can name the
	// final target, so its TLSA question has not been asked.
	for _, k := range g.questions() {
		if k == final {
			t.Fatalf("final target's TLSA asked before the address answer: %v", g.questions())
		}
	}
	releaseA()
	st := tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13, ServerName: "mx.cold.example", PeerCertificates: leafChain(leaf)}
	v := e.CheckMX(tctx(t), d, "mx.cold.example")
	cv := e.CheckConn(tctx(t), d, "mx.cold.example", st)
	wantAuthenticated(t, cv)
	seqMX, seqConn := sequentialVerdicts(t, q, "mx.cold.example", st)
	sameVerdict(t, "CheckMX", v, seqMX)
	sameVerdict(t, "CheckConn", cv, seqConn)
	if v.TLSABase != "mail.hoster.example" {
		t.Fatalf("TLSA base %q, want the final expanded name", v.TLSABase)
	}
	deadline := time.After(10 * time.Second)
	for cq.Fresh(hop, dns.TypeTLSA) {
		select {
		case <-deadline:
			t.Fatal("the ignored TLSA failure at the first hop stays cached")
		case <-time.After(time.Millisecond):
		}
	}
}

// TestWarmDeliveryNoCNAMEProbe: once an alias MX host is cached, a delivery
// asks nothing, the CNAME probe included.
func TestWarmDeliveryNoCNAMEProbe(t *testing.T) {
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mail.hoster.example"}})
	g := newGatedDNS(cnameWorld(t, leaf, "mail.hoster.example", "mail.hoster.example"))
	e, err := engine.New(engine.Config{DNS: engine.NewCachedQuerier(g, policycache.Config{}, nil)})
	if err != nil {
		t.Fatal(err)
	}
	st := tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13, ServerName: "mx.cold.example", PeerCertificates: leafChain(leaf)}
	deliverOne := func() {
		d := e.Prepare(context.Background(), "cold.example")
		defer d.Release()
		wantAuthenticated(t, e.CheckConn(tctx(t), d, "mx.cold.example", st))
	}
	deliverOne()
	cold := len(g.questions())
	for range 3 {
		deliverOne()
	}
	if n := len(g.questions()) - cold; n != 0 {
		t.Fatalf("warm deliveries asked %d questions: %v", n, g.questions()[cold:])
	}
}
