package engine_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/miekg/dns"
)

// clock is the injectable clock the engine and its cache read: it moves
// only when the test says so.
type clock struct {
	mu  sync.Mutex
	t0  time.Time
	off time.Duration
}

func newClock() *clock { return &clock{t0: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t0.Add(c.off)
}

// At sets the clock to t0+d.
func (c *clock) At(d time.Duration) {
	c.mu.Lock()
	c.off = d
	c.mu.Unlock()
}

// bed is a signed DNS tree served by dnsbed, validated by a real unbound
// that logs every client query, and an engine in front of that unbound.
type bed struct {
	t    testing.TB
	auth *dnsbed.Server
	ub   *dnsbed.Unbound
	clk  *clock
	// unboundExtra is added to unbound's server: clause (start).
	unboundExtra string
}

func needUnbound(t testing.TB) {
	t.Helper()
	netns.Required(t)
	for _, bin := range []string{dnsbed.UnboundBinary, dnsbed.UnboundControlBinary} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (apt-get install unbound)", bin)
		}
	}
}

func newBed(t testing.TB) *bed {
	needUnbound(t)
	return &bed{t: t, auth: dnsbed.NewServer(), clk: newClock()}
}

// start starts the authoritative server and unbound on free loopback
// ports.
func (b *bed) start() {
	b.auth.Start(b.t, "127.0.0.1:0")
	b.ub = dnsbed.StartUnbound(b.t, b.auth, dnsbed.UnboundOptions{Addr: "127.0.0.1:0", LogQueries: true, Extra: b.unboundExtra})
}

// engine returns a new engine with a cold cache, reading b's clock.
func (b *bed) engine(cc policycache.Config) *engine.Engine {
	b.t.Helper()
	r, err := dane.NewResolver(dane.ResolverConfig{Servers: []string{b.ub.Addr()}})
	if err != nil {
		b.t.Fatal(err)
	}
	cc.Now = b.clk.Now
	e, err := engine.New(engine.Config{DNS: engine.NewCachedQuerier(r, cc, nil), Now: b.clk.Now})
	if err != nil {
		b.t.Fatal(err)
	}
	return e
}

// q names one DNS question.
type q struct {
	name  string
	qtype uint16
}

func (x q) String() string { return x.name + "/" + dns.TypeToString[x.qtype] }

// counts returns, for each question, how many times unbound was asked it by
// a client (cache hits at unbound included).
func (b *bed) counts(qs ...q) []int64 {
	b.t.Helper()
	out := make([]int64, len(qs))
	for i, x := range qs {
		out[i] = b.ub.ClientQueries(b.t, x.name, x.qtype)
	}
	return out
}

// expectCounts fails unless unbound saw exactly want[i] queries for qs[i].
func (b *bed) expectCounts(when string, qs []q, want ...int64) {
	b.t.Helper()
	got := b.counts(qs...)
	for i := range qs {
		if got[i] != want[i] {
			b.t.Fatalf("%s: unbound saw %d client queries for %s, want %d (all: %v = %v)", when, got[i], qs[i], want[i], qs, got)
		}
	}
}

// handshake runs a real TLS handshake with a server presenting leaf and
// returns the client's view of it, as target.remote hands it to CheckConn.
func handshake(t testing.TB, leaf *pki.Leaf, serverName string) tls.ConnectionState {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srv := tls.Server(c1, &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()}})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	// DANE replaces WebPKI checks: the engine authenticates the chain.
	cli := tls.Client(c2, &tls.Config{InsecureSkipVerify: true, ServerName: serverName})
	if err := cli.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("TLS handshake (server): %v", err)
	}
	return cli.ConnectionState()
}

// daneZone publishes domain with one MX host "mx", its address and a TLSA
// record for leaf; ttls gives the TTLs of the MX, A and TLSA RRsets.
func (b *bed) daneZone(domain string, leaf *pki.Leaf, mxTTL, aTTL, tlsaTTL uint32, opts ...dnsbed.ZoneOption) (mx string, qs []q) {
	z := b.auth.Zone(b.t, domain+".", opts...)
	mx = "mx." + domain + "."
	tlsa := pki.TLSARR(b.t, "_25._tcp."+mx, 3, 1, 1, leaf.Cert)
	tlsa.Hdr.Ttl = tlsaTTL
	z.Add(b.t,
		fmt.Sprintf("%s. %d IN MX 10 %s", domain, mxTTL, mx),
		fmt.Sprintf("%s %d IN A 127.0.0.25", mx, aTTL),
		tlsa.String())
	return mx, []q{{domain + ".", dns.TypeMX}, {mx, dns.TypeA}, {"_25._tcp." + mx, dns.TypeTLSA}}
}

// deliver runs what target.remote does for one message to domain through
// mx: Destination, CheckMX and, if the MX may be used, CheckConn with st.
func deliver(ctx context.Context, e *engine.Engine, domain, mx string, st tls.ConnectionState) *engine.Verdict {
	d := e.Destination(ctx, domain)
	if v := e.CheckMX(ctx, d, mx); !v.OK() {
		return v
	}
	return e.CheckConn(ctx, d, mx, st)
}

func wantAuthenticated(t testing.TB, v *engine.Verdict) {
	t.Helper()
	if v.Result != engine.Authenticated || v.Reason != engine.ReasonDANEMatch {
		t.Fatalf("verdict %v, want authenticated by DANE", v)
	}
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestConcurrentColdCache: 1,000 deliveries to one DANE destination, all
// at once against one engine with a cold cache, ask the resolver each
// question exactly once; all are authenticated.
func TestConcurrentColdCache(t *testing.T) {
	b := newBed(t)
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.good.example"}})
	mx, qs := b.daneZone("good.example", leaf, 300, 300, 300)
	// The authoritative side is counted too; under load (-race, 1,000
	// goroutines in this process, which also serves the zone) an answer
	// can take longer than unbound's first retransmission timeout, and a
	// retransmitted query would count twice. A floor on unbound's timeout
	// keeps that count about the cache.
	b.unboundExtra = "infra-cache-min-rtt: 5000"
	b.start()
	st := handshake(t, leaf, "mx.good.example")
	e := b.engine(policycache.Config{})
	ctx := tctx(t)

	before := b.ub.QueryCount(t)
	const n = 1000
	var wg sync.WaitGroup
	start := make(chan struct{})
	verdicts := make([]*engine.Verdict, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			verdicts[i] = deliver(ctx, e, "good.example", mx, st)
		}()
	}
	close(start)
	wg.Wait()
	for _, v := range verdicts {
		wantAuthenticated(t, v)
	}

	b.expectCounts("after 1,000 concurrent deliveries", qs, 1, 1, 1)
	if got := b.ub.QueryCount(t) - before; got != int64(len(qs)) {
		t.Fatalf("unbound answered %d client queries in all, want %d", got, len(qs))
	}
	// unbound's cache was cold too: the authoritative server saw each
	// question once.
	for _, x := range qs {
		if c := b.auth.QueryCount(x.name, x.qtype); c != 1 {
			t.Fatalf("authoritative server saw %d queries for %s, want 1", c, x)
		}
	}
	s := e.DNS().Cache().Stats()
	if s.Fetches != uint64(len(qs)) || s.Hits+s.Misses != 3*n {
		t.Fatalf("cache stats %+v: want %d fetches and %d lookups", s, len(qs), 3*n)
	}
	t.Logf("1,000 concurrent deliveries: %d resolver queries; cache hits %d, misses %d (collapsed %d)", s.Fetches, s.Hits, s.Misses, s.Collapsed)
}

// TestExpiryAtTTL: every cached answer is used until exactly its RRset's
// TTL has passed and never at or after it; each RRset expires on its own.
func TestExpiryAtTTL(t *testing.T) {
	b := newBed(t)
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.ttl.example"}})
	mx, qs := b.daneZone("ttl.example", leaf, 300, 120, 60)
	b.start()
	st := handshake(t, leaf, "mx.ttl.example")
	// No refresh-ahead: this test is about expiry alone.
	e := b.engine(policycache.Config{RefreshWindow: -1})
	ctx := tctx(t)
	run := func(at time.Duration) {
		t.Helper()
		b.clk.At(at)
		wantAuthenticated(t, deliver(ctx, e, "ttl.example", mx, st))
	}
	const eps = time.Nanosecond
	run(0)
	b.expectCounts("cold", qs, 1, 1, 1)
	run(60*time.Second - eps)
	b.expectCounts("just before the TLSA TTL", qs, 1, 1, 1)
	run(60 * time.Second)
	b.expectCounts("at the TLSA TTL", qs, 1, 1, 2)
	run(120*time.Second - eps)
	b.expectCounts("just before the A TTL", qs, 1, 1, 2)
	run(120 * time.Second)
	// The TLSA answer fetched at 60 s expires at 120 s as well.
	b.expectCounts("at the A TTL", qs, 1, 2, 3)
	// Nothing is asked between 120 s and 300 s-eps: the A and TLSA answers
	// fetched at 120 s expired at 240 s and 180 s, and are fetched again
	// now, each living its TTL from this fetch.
	run(300*time.Second - eps)
	b.expectCounts("just before the MX TTL", qs, 1, 3, 4)
	run(300 * time.Second)
	b.expectCounts("at the MX TTL", qs, 2, 3, 4)
	run(360*time.Second - 2*eps)
	b.expectCounts("just before the new TLSA TTL", qs, 2, 3, 4)
	run(360*time.Second - eps)
	b.expectCounts("at the new TLSA TTL", qs, 2, 3, 5)
}

// TestMaxTTLCap: cache_max_ttl shortens the life of every entry whose TTL
// is longer.
func TestMaxTTLCap(t *testing.T) {
	b := newBed(t)
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.cap.example"}})
	mx, qs := b.daneZone("cap.example", leaf, 3600, 3600, 600)
	b.start()
	st := handshake(t, leaf, "mx.cap.example")
	e := b.engine(policycache.Config{RefreshWindow: -1, MaxTTL: 30 * time.Second})
	ctx := tctx(t)
	for _, step := range []struct {
		at   time.Duration
		want int64
	}{{0, 1}, {30*time.Second - time.Nanosecond, 1}, {30 * time.Second, 2}, {60*time.Second - time.Nanosecond, 2}, {60 * time.Second, 3}} {
		b.clk.At(step.at)
		wantAuthenticated(t, deliver(ctx, e, "cap.example", mx, st))
		b.expectCounts(fmt.Sprintf("at %v", step.at), qs, step.want, step.want, step.want)
	}
}

// TestNegativeCaching: NODATA and NXDOMAIN answers are cached for the
// SOA-derived negative TTL, min(SOA TTL, MINIMUM) (RFC 2308 §5).
func TestNegativeCaching(t *testing.T) {
	b := newBed(t)
	z := b.auth.Zone(t, "neg.example.", dnsbed.TTL(300), dnsbed.NegativeTTL(45))
	z.Add(t, "@ MX 10 mx", "mx A 127.0.0.26")
	b.start()
	e := b.engine(policycache.Config{RefreshWindow: -1})
	ctx := tctx(t)
	// No TLSA records: the TLSA query gets a (secure) NODATA answer.
	qs := []q{{"neg.example.", dns.TypeMX}, {"mx.neg.example.", dns.TypeA}, {"_25._tcp.mx.neg.example.", dns.TypeTLSA}, {"nx.neg.example.", dns.TypeMX}}
	run := func(at time.Duration) {
		t.Helper()
		b.clk.At(at)
		d := e.Destination(ctx, "neg.example")
		v := e.CheckMX(ctx, d, "mx.neg.example.")
		if !v.OK() || v.Mechanism == engine.MechDANE {
			t.Fatalf("neg.example without TLSA: %v", v)
		}
		// A next-hop domain that does not exist: NXDOMAIN.
		if nx := e.Destination(ctx, "nx.neg.example"); nx.MXErr != nil || nx.MX == nil || !nx.MX.Secure || len(nx.MX.Hosts) != 0 {
			t.Fatalf("nx.neg.example: %+v %v", nx.MX, nx.MXErr)
		}
	}
	run(0)
	b.expectCounts("cold", qs, 1, 1, 1, 1)
	run(45*time.Second - time.Nanosecond)
	b.expectCounts("just before the negative TTL", qs, 1, 1, 1, 1)
	run(45 * time.Second)
	b.expectCounts("at the negative TTL", qs, 1, 1, 2, 2)
	run(90*time.Second - time.Nanosecond)
	b.expectCounts("just before the second negative TTL", qs, 1, 1, 2, 2)
	run(300 * time.Second)
	b.expectCounts("at the positive TTL", qs, 2, 2, 3, 3)
}

// TestFailureCaching: a SERVFAIL is cached for at least 1 s and at most
// 5 min, the time doubling while the name keeps failing (RFC 9520 §3.2);
// concurrent deliveries share one failing query; a repaired destination
// recovers at the end of the current failure period and a new failure
// starts again at 1 s.
func TestFailureCaching(t *testing.T) {
	b := newBed(t)
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.fail.example"}})
	// Long TTLs: the MX and address answers stay cached throughout.
	mx, qs := b.daneZone("fail.example", leaf, 3600, 3600, 3600)
	b.start()
	tlsaQ := qs[2]
	b.auth.SetFault(t, tlsaQ.name, dns.TypeTLSA, dnsbed.ServFail)
	st := handshake(t, leaf, "mx.fail.example")
	e := b.engine(policycache.Config{})
	ctx := tctx(t)

	deferred := func(at time.Duration) {
		t.Helper()
		b.clk.At(at)
		v := deliver(ctx, e, "fail.example", mx, st)
		if v.OK() || v.Code != 451 || v.EnhancedCode != [3]int{4, 4, 3} {
			t.Fatalf("at %v: verdict %v (%d %v), want a 451 4.4.3 deferral", at, v, v.Code, v.EnhancedCode)
		}
	}

	// 100 concurrent deliveries with a cold cache: one failing query.
	var wg sync.WaitGroup
	cold := make([]*engine.Verdict, 100)
	for i := range cold {
		wg.Add(1)
		go func() { defer wg.Done(); cold[i] = deliver(ctx, e, "fail.example", mx, st) }()
	}
	wg.Wait()
	for _, v := range cold {
		if v.OK() || v.Code != 451 {
			t.Fatalf("cold: verdict %v, want a 451 deferral", v)
		}
	}
	b.expectCounts("cold", qs, 1, 1, 1)

	at, ttl, n := time.Duration(0), time.Second, int64(1)
	var seen []time.Duration
	for ttl < 5*time.Minute || len(seen) < 2 || seen[len(seen)-2] != 5*time.Minute {
		deferred(at + ttl - time.Nanosecond)
		b.expectCounts(fmt.Sprintf("failure cached for %v, just before it ends", ttl), qs, 1, 1, n)
		at += ttl
		deferred(at)
		n++
		b.expectCounts(fmt.Sprintf("failure cached for %v, at its end", ttl), qs, 1, 1, n)
		seen = append(seen, ttl)
		ttl = min(2*ttl, 5*time.Minute)
		if len(seen) > 20 {
			t.Fatalf("failure TTLs never settled: %v", seen)
		}
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300}
	for i := range want {
		want[i] *= time.Second
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("failure TTLs %v, want %v", seen, want)
	}

	// Repaired: served again once the current failure period is over.
	b.auth.ClearFaults()
	b.ub.Flush(t)
	deferred(at + ttl - time.Nanosecond)
	at += ttl
	b.clk.At(at)
	wantAuthenticated(t, deliver(ctx, e, "fail.example", mx, st))
	n++
	b.expectCounts("repaired", qs, 1, 1, n)

	// Broken again after the TLSA answer expired: the backoff starts over
	// at one second.
	b.auth.SetFault(t, tlsaQ.name, dns.TypeTLSA, dnsbed.ServFail)
	b.ub.Flush(t)
	at += 3600 * time.Second
	deferred(at)
	n++
	if s := e.DNS().Cache().Stats(); s.FailuresCached == 0 {
		t.Fatalf("no failure cached: %+v", s)
	}
	deferred(at + time.Second - time.Nanosecond)
	b.expectCounts("new failure, just before 1 s", qs[2:], n)
	deferred(at + time.Second)
	b.expectCounts("new failure, at 1 s", qs[2:], n+1)
}

// TestRefreshAhead: a hit in the last 10% of an entry's lifetime starts one
// background query, so a busy destination never waits for a lookup at
// expiry; the refreshed answer lives its own TTL from the refresh.
func TestRefreshAhead(t *testing.T) {
	b := newBed(t)
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.hot.example"}})
	mx, qs := b.daneZone("hot.example", leaf, 300, 300, 300)
	b.start()
	st := handshake(t, leaf, "mx.hot.example")
	e := b.engine(policycache.Config{}) // default refresh window: 10%
	ctx := tctx(t)
	run := func(at time.Duration) {
		t.Helper()
		b.clk.At(at)
		wantAuthenticated(t, deliver(ctx, e, "hot.example", mx, st))
	}
	// settled waits until no fetch is in progress; the test's clock does
	// not move meanwhile, so this is not a timing assumption.
	settled := func() policycache.Stats {
		t.Helper()
		for {
			s := e.DNS().Cache().Stats()
			if s.InFlight == 0 {
				return s
			}
			select {
			case <-ctx.Done():
				t.Fatalf("refresh never finished: %+v", s)
			default:
				runtime.Gosched()
			}
		}
	}
	run(0)
	run(270*time.Second - time.Nanosecond)
	b.expectCounts("before the refresh window", qs, 1, 1, 1)
	// In the window: served from the cache, one refresh per entry started.
	run(270 * time.Second)
	if s := settled(); s.Refreshes != 3 {
		t.Fatalf("refreshes %d, want 3: %+v", s.Refreshes, s)
	}
	b.expectCounts("after the refresh", qs, 2, 2, 2)
	// At the old expiry nothing is asked: the refreshed entries live until
	// 570 s, their own refresh window opening at 540 s.
	run(300 * time.Second)
	run(540*time.Second - time.Nanosecond)
	b.expectCounts("at the old expiry and after", qs, 2, 2, 2)
	if s := e.DNS().Cache().Stats(); s.Misses != 3 {
		t.Fatalf("%d misses, want only the 3 cold ones: %+v", s.Misses, s)
	}
}
