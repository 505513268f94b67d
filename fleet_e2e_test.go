package daneguard_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/redisbed"
	"github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
	"github.com/maddy-dane/daneguard/internal/testbed/stsbed"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/redis/go-redis/v9"
)

// The end-to-end tests of a fleet (docs/fleet.md): a real redis-server,
// two real maddy instances with daneguard sharing it, the signed DNS tree
// behind unbound, real SMTP servers, a real MTA-STS policy host and a real
// HTTPS report collector. The maddy binary is the test-clock build
// (maddybed.TestClockBinary): writing a duration to a node's clock file
// moves its TLS report clock forward, so that a day ends without waiting
// for midnight. Nothing below asserts on elapsed time.

// TestStoreConfigErrors: errors of the store block name the file and the
// line of the directive at fault.
func TestStoreConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		store    config.Node
		want     string
		wantLine string
	}{
		{config.Node{Name: "store", Args: []string{"http://127.0.0.1"}, File: "test.conf", Line: 8}, "scheme must be redis or rediss", "test.conf:8"},
		{config.Node{Name: "store", File: "test.conf", Line: 8}, "usage: store", "test.conf:8"},
		{config.Node{Name: "store", Args: []string{"redis://127.0.0.1/0"}, File: "test.conf", Line: 8, Children: []config.Node{
			{Name: "read_timeout", Args: []string{"9s"}, File: "test.conf", Line: 9}}}, "read_timeout must be more than 0s and at most 5s", "test.conf:9"},
		{config.Node{Name: "store", Args: []string{"redis://127.0.0.1/0"}, File: "test.conf", Line: 8, Children: []config.Node{
			{Name: "no_such_option", Args: []string{"1"}, File: "test.conf", Line: 10}}}, "unexpected directive", "test.conf:10"},
		{config.Node{Name: "store", Args: []string{"rediss://127.0.0.1/0"}, File: "test.conf", Line: 8, Children: []config.Node{
			{Name: "tls", Args: []string{"off"}, File: "test.conf", Line: 9}}}, "tls off contradicts", "test.conf:8"},
		{config.Node{Name: "store", Args: []string{"redis://127.0.0.1/0"}, File: "test.conf", Line: 8, Children: []config.Node{
			{Name: "claim_ttl", Args: []string{"1h"}, File: "test.conf", Line: 11}}}, "claim_ttl must be between", "test.conf:11"},
	} {
		grp, err := module.Get("mx_auth")("mx_auth", "", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		block := config.Node{Name: "mx_auth", Children: []config.Node{
			{Name: "dane", File: "test.conf", Line: 7, Children: []config.Node{tc.store}},
		}}
		err = grp.Init(config.NewMap(map[string]interface{}{}, block))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.wantLine) {
			t.Errorf("%v: error %v, want one containing %q and %s", tc.store, err, tc.want, tc.wantLine)
		}
	}
}

// reportCollector is an HTTPS report endpoint that can hold requests:
// while held, a POST waits until Release or until its client goes away.
// Only answered reports count as accepted.
type reportCollector struct {
	mu       sync.Mutex
	accepted []map[string]any
	arrived  int
	hold     chan struct{}
}

const fleetCollectorIP = "127.0.0.50"

func startReportCollector(t *testing.T, cert *pki.Leaf) *reportCollector {
	c := &reportCollector{}
	ln, err := net.Listen("tcp", fleetCollectorIP+":443")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			http.Error(w, "not gzip", http.StatusBadRequest)
			return
		}
		js, _ := io.ReadAll(zr)
		var m map[string]any
		if err := json.Unmarshal(js, &m); err != nil {
			http.Error(w, "bad report", http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		c.arrived++
		hold := c.hold
		c.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return // the sender went away: not accepted
			}
		}
		c.mu.Lock()
		c.accepted = append(c.accepted, m)
		c.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})}
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate()}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return c
}

func (c *reportCollector) Hold() {
	c.mu.Lock()
	c.hold = make(chan struct{})
	c.mu.Unlock()
}

func (c *reportCollector) Release() {
	c.mu.Lock()
	if c.hold != nil {
		close(c.hold)
		c.hold = nil
	}
	c.mu.Unlock()
}

func (c *reportCollector) Arrived() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.arrived
}

// Reports returns the accepted reports about domain.
func (c *reportCollector) Reports(domain string) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, r := range c.accepted {
		if id, _ := r["report-id"].(string); strings.Contains(id, "."+domain+"@") {
			out = append(out, r)
		}
	}
	return out
}

// fleetWorld is the test bed of a fleet.
type fleetWorld struct {
	*world
	redis  *redisbed.Server
	rdb    *redis.Client
	col    *reportCollector
	caPath string
	good   *smtpbed.Server // mx.dane.example: DANE-EE match
	bad    *smtpbed.Server // mx.bad.example: DANE-EE mismatch
	sts    *stsbed.Server
	site   *stsbed.Site // mta-sts.learn.example
	rogue  *smtpbed.Server
	stsMX  *smtpbed.Server
}

const fleetRUA = "https://reports.collector.example/v1/tlsrpt"

// newFleetWorld starts DNS, the SMTP servers, the policy host, the
// collector and Redis (with AOF: a restart keeps what it acknowledged).
func newFleetWorld(t *testing.T) *fleetWorld {
	w := newWorld(t)
	fw := &fleetWorld{world: w}
	zone := func(name string, opts ...dnsbed.ZoneOption) *dnsbed.Zone {
		return w.dns.Zone(t, name+".", append([]dnsbed.ZoneOption{dnsbed.TTL(300)}, opts...)...)
	}
	goodLeaf := selfSigned(t, "mx.dane.example")
	ip, s := w.server("mx.dane.example", goodLeaf)
	fw.good = s
	zone("dane.example").Add(t, "@ MX 10 mx", "mx A "+ip, pki.TLSA(t, "_25._tcp.mx.dane.example.", 3, 1, 1, goodLeaf.Cert),
		`_smtp._tls TXT "v=TLSRPTv1; rua=`+fleetRUA+`"`)
	badLeaf := selfSigned(t, "mx.bad.example")
	ip, s = w.server("mx.bad.example", badLeaf)
	fw.bad = s
	zone("bad.example").Add(t, "@ MX 10 mx", "mx A "+ip, pki.TLSA(t, "_25._tcp.mx.bad.example.", 3, 1, 1, selfSigned(t, "attacker.example").Cert),
		`_smtp._tls TXT "v=TLSRPTv1; rua=`+fleetRUA+`"`)

	// learn.example: unsigned (DANE does not apply), an enforce-mode
	// MTA-STS policy that lists mx.learn.example only; the preferred MX
	// is a rogue host the policy does not list.
	fw.sts = stsbed.Start(t, stsAddr, w.ca)
	ipRogue, rogue := w.server("rogue.learn.example", selfSigned(t, "rogue.learn.example"))
	ipSTS, stsMX := w.server("mx.learn.example", w.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.learn.example"}}))
	fw.rogue, fw.stsMX = rogue, stsMX
	zone("learn.example", dnsbed.Unsigned()).Add(t, "@ MX 10 rogue", "@ MX 20 mx", "rogue A "+ipRogue, "mx A "+ipSTS,
		"mta-sts A "+fw.sts.IP(), `_mta-sts TXT "v=STSv1; id=learn1;"`)
	fw.site = fw.sts.Site("learn.example")
	fw.site.SetPolicy(stsbed.Policy("enforce", 86400, "mx.learn.example"))

	zone("collector.example").Add(t, "reports A "+fleetCollectorIP)
	w.start()
	fw.col = startReportCollector(t, w.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"reports.collector.example"}}))
	fw.caPath = w.ca.WritePEM(t, t.TempDir())
	fw.redis = redisbed.Start(t, redisbed.Options{AOF: true})
	fw.rdb = redis.NewClient(&redis.Options{Addr: fw.redis.Addr()})
	t.Cleanup(func() { _ = fw.rdb.Close() })
	return fw
}

// fleetNode is one maddy of the fleet.
type fleetNode struct {
	*maddybed.Maddy
	clock   string // the test clock file
	metrics string // openmetrics URL
}

// node starts maddy number n (submission on 127.0.0.1:2525+n) with the
// shared store. sendingIP is its tlsrpt sending_ip, so that failure
// details show which node a failed session was on.
func (fw *fleetWorld) node(t *testing.T, n int, sendingIP string) *fleetNode {
	clock := filepath.Join(t.TempDir(), "clock")
	if err := os.WriteFile(clock, []byte("0s"), 0o600); err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", 9750+n)
	m := maddybed.Start(t, maddybed.Options{
		Binary:      maddybed.TestClockBinary(t),
		SubmitAddr:  fmt.Sprintf("127.0.0.1:%d", 2525+n),
		NoConnReuse: true,
		Env:         []string{"DANEGUARD_TEST_CLOCK_FILE=" + clock},
		Extra:       "openmetrics tcp://" + metrics + " { }",
		MXAuth: fmt.Sprintf(`dane {
        roots %s
        store %s {
            retry_down 200ms
            claim_ttl 3s
        }
        tlsrpt {
            organization "Daneguard Fleet"
            contact tlsrpt@sender.example
            https_roots %s
            poll_interval 100ms
            sending_ip %s
        }
    }`, fw.caPath, fw.redis.URL(0), fw.caPath, sendingIP),
	})
	return &fleetNode{Maddy: m, clock: clock, metrics: "http://" + metrics + "/metrics"}
}

// endDay moves the node's report clock past the end of today and the
// default send delay (send_hour 1).
func (n *fleetNode) endDay(t *testing.T) {
	if err := os.WriteFile(n.clock, []byte("26h"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// storeGauge reads one of the node's shared-store gauges.
func (fw *fleetWorld) storeGauge(t *testing.T, n *fleetNode, name string) float64 {
	s := scrape(t, n.metrics)
	key := fmt.Sprintf(`maddy_daneguard_store_%s{store="%s"}`, name, fw.redis.URL(0))
	v, ok := s[key]
	if !ok {
		t.Fatalf("%s not exported by %s", key, n.metrics)
	}
	return v
}

// sharedSessions is the number of sessions Redis holds for day and domain,
// every node's (the fleet-wide aggregates, docs/fleet.md's key layout).
func (fw *fleetWorld) sharedSessions(t *testing.T, day, domain string) uint64 {
	m, err := fw.rdb.HGetAll(context.Background(), "daneguard:rpt:{"+day+"/"+domain+"}:agg").Result()
	if err != nil {
		t.Fatalf("reading the shared counts: %v", err)
	}
	var n uint64
	for _, v := range m {
		c, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("shared count %q: %v", v, err)
		}
		n += c
	}
	return n
}

// waitFor polls cond until it holds or the test's deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	c := ctx(t)
	for !cond() {
		select {
		case <-c.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// sessions counts the node's reported verdicts for domain (one per
// session: connection reuse is off).
func sessions(m *maddybed.Maddy, domain string) int {
	n := 0
	for _, e := range verdictFor(m, domain) {
		switch field(e, "reason") {
		case "dane-match", "tlsa-mismatch":
			n++
		}
	}
	return n
}

func today(*testing.T) string {
	return tlsrpt.Day(time.Now())
}

func checkSameDay(t *testing.T, day string) {
	if d := tlsrpt.Day(time.Now()); d != day {
		t.Skipf("the test straddled UTC midnight (%s, %s); its per-day counts assume one day", day, d)
	}
}

func summary(t *testing.T, r map[string]any) (succ, fail int, details []map[string]any) {
	t.Helper()
	pols, _ := r["policies"].([]any)
	for _, p := range pols {
		pm := p.(map[string]any)
		s := pm["summary"].(map[string]any)
		succ += num(s["total-successful-session-count"])
		fail += num(s["total-failure-session-count"])
		fds, _ := pm["failure-details"].([]any)
		for _, fd := range fds {
			details = append(details, fd.(map[string]any))
		}
	}
	return succ, fail, details
}

// TestFleetPolicyLearnedByOtherNode: node A fetches learn.example's
// enforce-mode MTA-STS policy; the policy host then goes down; a fresh
// node B, with an empty mtasts_dir, applies A's policy at once: it refuses
// the rogue MX the policy does not list and delivers to the listed one.
// Without the shared store B could not fetch the policy, would go without
// MTA-STS (RFC 8461 §5) and hand the message to the rogue MX, which is
// preferred.
func TestFleetPolicyLearnedByOtherNode(t *testing.T) {
	fw := newFleetWorld(t)
	a := fw.node(t, 0, "127.0.1.1")
	expectDelivered(t, a.Maddy, fw.stsMX, "learn.example")
	if n := len(fw.rogue.Messages()); n != 0 || fw.site.Fetches() != 1 {
		t.Fatalf("node A: rogue MX got %d messages, %d policy fetches, want 0 and 1", n, fw.site.Fetches())
	}
	waitFor(t, "the policy in Redis", func() bool {
		// The MTA-STS manager's key for the domain, under the store's
		// "sts:" keys (docs/fleet.md).
		n, err := fw.rdb.Exists(context.Background(), "daneguard:sts:mta-sts/learn.example").Result()
		return err == nil && n == 1
	})

	fw.site.SetDown(true)
	fetches := fw.site.Fetches()
	b := fw.node(t, 1, "127.0.1.2")
	res := b.Send("alice@sender.test", []string{"bob@learn.example"}, "hello from B")
	if res.Err != nil {
		t.Fatalf("node B: %v\n%s", res.Err, b.Log())
	}
	if _, err := fw.stsMX.WaitMessages(ctx(t), 2); err != nil {
		t.Fatalf("node B's message did not reach the policy's MX: %v\n%s", err, b.Log())
	}
	if n := len(fw.rogue.Messages()); n != 0 {
		t.Fatalf("the rogue MX received %d messages: node B went without the policy\n%s", n, b.Log())
	}
	var rogueSeen bool
	for _, e := range verdictFor(b.Maddy, "learn.example") {
		if field(e, "mx") == "rogue.learn.example" {
			rogueSeen = true
			wantVerdict(t, e, "deferred", "mtasts-mx-mismatch")
			if field(e, "sts_id") != "learn1" || field(e, "sts_mode") != "enforce" {
				t.Fatalf("node B refused the rogue MX without A's policy: %v", e.Fields)
			}
		}
	}
	if !rogueSeen {
		t.Fatalf("node B logged no verdict for the rogue MX:\n%s", b.Log())
	}
	wantVerdict(t, lastVerdict(t, b.Maddy, "learn.example"), "authenticated", "mtasts-valid")
	t.Logf("policy host requests while down: %d (node B could not fetch; it used the shared policy)", fw.site.Fetches()-fetches)
}

// deliverMix sends good messages to dane.example and bad ones to
// bad.example (deferred by the DANE mismatch) through node n.
func deliverMix(t *testing.T, fw *fleetWorld, n *fleetNode, good, bad int) {
	t.Helper()
	for range good {
		if res := n.Send("alice@sender.test", []string{"bob@dane.example"}, "hello"); res.Err != nil {
			t.Fatalf("delivery to dane.example: %v\n%s", res.Err, n.Log())
		}
	}
	for range bad {
		if res := n.Send("alice@sender.test", []string{"bob@bad.example"}, "hello"); res.Err == nil || res.Code/100 != 4 {
			t.Fatalf("delivery to bad.example: %+v, want a 4xx deferral", res)
		}
	}
}

// TestFleetOneReport: both nodes deliver to the same domains; when the day
// is over, both nodes' senders look at it, and exactly one report per
// domain reaches the collector, counting the sessions of both, each
// failure detail with its own node's sending-mta-ip.
func TestFleetOneReport(t *testing.T) {
	fw := newFleetWorld(t)
	a := fw.node(t, 0, "127.0.1.1")
	b := fw.node(t, 1, "127.0.1.2")
	day := today(t)
	deliverMix(t, fw, a, 3, 1)
	deliverMix(t, fw, b, 2, 2)
	checkSameDay(t, day)
	good := sessions(a.Maddy, "dane.example") + sessions(b.Maddy, "dane.example")
	badA, badB := sessions(a.Maddy, "bad.example"), sessions(b.Maddy, "bad.example")
	if good < 5 || badA < 1 || badB < 2 {
		t.Fatalf("sessions: %d good, %d+%d bad", good, badA, badB)
	}
	waitFor(t, "both nodes' sessions in Redis", func() bool {
		return fw.sharedSessions(t, day, "dane.example") == uint64(good) && fw.sharedSessions(t, day, "bad.example") == uint64(badA+badB)
	})

	a.endDay(t)
	b.endDay(t)
	waitFor(t, "the reports", func() bool {
		return len(fw.col.Reports("dane.example")) > 0 && len(fw.col.Reports("bad.example")) > 0
	})
	// Both senders keep polling (every 100 ms); give them twenty rounds
	// to send a second report if they were going to.
	time.Sleep(2 * time.Second)
	for _, d := range []string{"dane.example", "bad.example"} {
		if n := len(fw.col.Reports(d)); n != 1 {
			t.Fatalf("%d reports for %s, want exactly one for the fleet", n, d)
		}
	}
	if s, f, _ := summary(t, fw.col.Reports("dane.example")[0]); s != good || f != 0 {
		t.Fatalf("dane.example report: %d successes, %d failures; want %d, 0 (both nodes)", s, f, good)
	}
	s, f, fds := summary(t, fw.col.Reports("bad.example")[0])
	if s != 0 || f != badA+badB || len(fds) != 2 {
		t.Fatalf("bad.example report: %d successes, %d failures, %d details; want 0, %d, 2", s, f, len(fds), badA+badB)
	}
	sort.Slice(fds, func(i, j int) bool { return fds[i]["sending-mta-ip"].(string) < fds[j]["sending-mta-ip"].(string) })
	if fds[0]["sending-mta-ip"] != "127.0.1.1" || num(fds[0]["failed-session-count"]) != badA ||
		fds[1]["sending-mta-ip"] != "127.0.1.2" || num(fds[1]["failed-session-count"]) != badB ||
		fds[0]["result-type"] != "certificate-host-mismatch" {
		t.Fatalf("bad.example failure details %v, want A's %d and B's %d sessions apart", fds, badA, badB)
	}
}

// TestFleetRedisOutage: Redis is killed in the middle of a load; every
// delivery still goes through (nothing deferred, nothing bounced), the
// sessions wait in each node's journal, and once Redis is back the day's
// one report counts every session exactly once.
func TestFleetRedisOutage(t *testing.T) {
	fw := newFleetWorld(t)
	a := fw.node(t, 0, "127.0.1.1")
	b := fw.node(t, 1, "127.0.1.2")
	day := today(t)
	const before, during = 5, 10
	var lat []time.Duration
	send := func(n *fleetNode) {
		start := time.Now()
		if res := n.Send("alice@sender.test", []string{"bob@dane.example"}, "load"); res.Err != nil {
			t.Fatalf("delivery failed: %+v\n%s", res, n.Log())
		}
		lat = append(lat, time.Since(start))
	}
	for range before {
		send(a)
		send(b)
	}
	fw.redis.Stop()
	for range during {
		send(a)
		send(b)
	}
	outage := append([]time.Duration(nil), lat[2*before:]...)
	waitFor(t, "the journal to fill while Redis is down", func() bool {
		return fw.storeGauge(t, a, "journal_depth") > 0 && fw.storeGauge(t, b, "journal_depth") > 0
	})
	// The push that found Redis gone marks the store down (up 0).
	waitFor(t, "both nodes to see the store down", func() bool {
		return fw.storeGauge(t, a, "up") == 0 && fw.storeGauge(t, b, "up") == 0
	})
	fw.redis.Restart()
	checkSameDay(t, day)

	total := sessions(a.Maddy, "dane.example") + sessions(b.Maddy, "dane.example")
	if total != 2*(before+during) {
		t.Fatalf("%d sessions for %d messages", total, 2*(before+during))
	}
	if n := len(fw.good.Messages()); n != 2*(before+during) {
		t.Fatalf("the MX received %d of %d messages", n, 2*(before+during))
	}
	waitFor(t, "the journals replayed", func() bool {
		return fw.sharedSessions(t, day, "dane.example") == uint64(total) &&
			fw.storeGauge(t, a, "journal_depth") == 0 && fw.storeGauge(t, b, "journal_depth") == 0
	})
	a.endDay(t)
	b.endDay(t)
	waitFor(t, "the report", func() bool { return len(fw.col.Reports("dane.example")) > 0 })
	time.Sleep(time.Second) // ten more polling rounds of both senders
	reps := fw.col.Reports("dane.example")
	if len(reps) != 1 {
		t.Fatalf("%d reports, want one", len(reps))
	}
	if s, f, _ := summary(t, reps[0]); s != total || f != 0 {
		t.Fatalf("report counts %d successes, %d failures; want every session once: %d", s, f, total)
	}
	normal := append([]time.Duration(nil), lat[:2*before]...)
	for _, l := range [][]time.Duration{normal, outage} {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	}
	t.Logf("delivery latency, submission to 250 (figures, not asserted): Redis up: median %v, max %v (%d); Redis down: median %v, max %v (%d)",
		normal[len(normal)/2], normal[len(normal)-1], len(normal), outage[len(outage)/2], outage[len(outage)-1], len(outage))
}

// TestFleetSenderKilled: the node holding a report's claim dies while
// sending it (the collector holds its POST); the other node takes the
// report over once the claim expires (claim_ttl 3s) and sends it, with
// both nodes' sessions.
func TestFleetSenderKilled(t *testing.T) {
	fw := newFleetWorld(t)
	a := fw.node(t, 0, "127.0.1.1")
	b := fw.node(t, 1, "127.0.1.2")
	day := today(t)
	deliverMix(t, fw, a, 2, 0)
	deliverMix(t, fw, b, 3, 0)
	checkSameDay(t, day)
	total := sessions(a.Maddy, "dane.example") + sessions(b.Maddy, "dane.example")
	waitFor(t, "both nodes' sessions in Redis", func() bool { return fw.sharedSessions(t, day, "dane.example") == uint64(total) })

	fw.col.Hold()
	a.endDay(t) // only A sees the day over: A claims and sends
	waitFor(t, "node A's POST", func() bool { return fw.col.Arrived() > 0 })
	lock, err := fw.rdb.Exists(context.Background(), "daneguard:rpt:{"+day+"/dane.example}:lock").Result()
	if err != nil || lock != 1 {
		t.Fatalf("no claim held while node A sends: %d %v", lock, err)
	}
	a.Kill()
	fw.col.Release()
	if n := len(fw.col.Reports("dane.example")); n != 0 {
		t.Fatalf("the collector accepted %d reports from the killed node", n)
	}

	b.endDay(t)
	waitFor(t, "node B's report", func() bool { return len(fw.col.Reports("dane.example")) > 0 })
	time.Sleep(time.Second) // ten more polling rounds of B
	reps := fw.col.Reports("dane.example")
	if len(reps) != 1 {
		t.Fatalf("%d reports, want one", len(reps))
	}
	if s, _, _ := summary(t, reps[0]); s != total {
		t.Fatalf("node B's report counts %d sessions, want %d (both nodes')", s, total)
	}
	// B logs the report once the collector's answer is in.
	waitFor(t, "node B's log line of the sent report", func() bool {
		for _, e := range b.Entries("daneguard", "tlsrpt report") {
			if field(e, "domain") == "dane.example" && field(e, "result") == "sent" {
				return true
			}
		}
		return false
	})
}
