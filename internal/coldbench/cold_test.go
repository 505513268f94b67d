package coldbench

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
	"github.com/maddy-dane/daneguard/internal/testbed/stsbed"
	"github.com/miekg/dns"
)

func TestMain(m *testing.M) { netns.Main(m) }

// Settings, from the environment (see the Makefile's bench-cold target).
const (
	envOn    = "DANEGUARD_COLD"       // "1" runs the measurement
	envN     = "DANEGUARD_COLD_N"     // messages per destination and set-up; default 7
	envDelay = "DANEGUARD_COLD_DELAY" // authoritative round-trip time; default 50ms
	envOut   = "DANEGUARD_COLD_OUT"   // file the report is also written to
	envSetup = "DANEGUARD_COLD_SETUPS"
	// envOnly limits the run to these destinations (comma-separated row
	// labels, e.g. "CNAME'd MX"), for iterating on one of them.
	envOnly = "DANEGUARD_COLD_ONLY"
)

// setup is one way of running maddy.
type setup struct {
	name  string
	stock bool
	// mxAuth is the body of target.remote's mx_auth block; %s is replaced
	// by the path of the test CA's certificate.
	mxAuth string
}

var setups = []setup{
	{name: "none", mxAuth: ""},
	// resolver_check_interval off: the health probe would add queries
	// to the ones measured.
	{name: "daneguard", mxAuth: "dane {\n roots %s\n resolver_check_interval off\n }"},
	{name: "stock-dane", stock: true, mxAuth: "dane { }"},
}

// destination is one recipient domain of the test world.
type destination struct {
	name   string // row label
	domain string
	srv    *smtpbed.Server
	// first records connections to a first MX host that closes every
	// connection at once (the two-MX destination); nil otherwise.
	first *closer
	// verdict and mechanism daneguard must log for a delivery.
	verdict, mechanism string
}

// closer is a TCP listener on port 25 that accepts a connection and closes
// it: an MX host whose server is down.
type closer struct {
	ln       net.Listener
	mu       sync.Mutex
	accepted []time.Time
}

func startCloser(t *testing.T, addr string) *closer {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &closer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.accepted = append(c.accepted, time.Now())
			c.mu.Unlock()
			conn.Close()
		}
	}()
	return c
}

func (c *closer) since(t0 time.Time) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Time
	for _, a := range c.accepted {
		if !a.Before(t0) {
			out = append(out, a)
		}
	}
	return out
}

// sample is the measurement of one message.
type sample struct {
	latency time.Duration // RCPT TO sent to maddy .. message accepted by the destination
	toConn  time.Duration // RCPT TO sent .. first TCP connection to an MX host accepted
	rounds  int           // sequential authoritative round trips before toConn
	queries []dnsbed.QueryRecord
	t0      time.Time
	dgLines []maddybed.Entry // daneguard "dns query" debug lines
	err     error
}

// world is the stand-in Internet: signed zones, unbound, receivers.
type world struct {
	dns   *dnsbed.Server
	ub    *dnsbed.Unbound
	ca    *pki.CA
	roots string
	dests []*destination
}

func buildWorld(t *testing.T) *world {
	w := &world{dns: dnsbed.NewServer(), ca: pki.NewCA(t, "coldbench root")}
	w.roots = w.ca.WritePEM(t, t.TempDir())
	ip := 10
	nextIP := func() string { ip++; return fmt.Sprintf("127.0.0.%d", ip) }
	zone := func(name string) *dnsbed.Zone { return w.dns.Zone(t, name+".", dnsbed.TTL(300)) }
	serve := func(host string, cfg *tls.Config) (string, *smtpbed.Server) {
		addr := nextIP()
		return addr, smtpbed.Start(t, smtpbed.Options{Addr: addr + ":25", Hostname: host, TLS: cfg})
	}
	certCfg := func(l *pki.Leaf) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{l.TLSCertificate()}}
	}
	ee := func(host string) (*pki.Leaf, string) {
		l := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{host}})
		return l, pki.TLSA(t, pki.TLSAOwner(host, 25), pki.UsageDANEEE, pki.SelectorSPKI, pki.MatchSHA256, l.Cert)
	}

	// DANE-EE(3) SPKI SHA-256 on a self-signed certificate.
	l, rr := ee("mx.ee.example")
	a, s := serve("mx.ee.example", certCfg(l))
	zone("ee.example").Add(t, "@ MX 10 mx", "mx A "+a, rr)
	w.dests = append(w.dests, &destination{name: "DANE-EE", domain: "ee.example", srv: s, verdict: "authenticated", mechanism: "dane"})

	// DANE-TA(2) Cert SHA-256 on the CA, which the server sends with its chain.
	l = w.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.ta.example"}})
	a, s = serve("mx.ta.example", &tls.Config{Certificates: []tls.Certificate{l.TLSCertificateWithRoot()}})
	zone("ta.example").Add(t, "@ MX 10 mx", "mx A "+a,
		pki.TLSA(t, pki.TLSAOwner("mx.ta.example", 25), pki.UsageDANETA, pki.SelectorCert, pki.MatchSHA256, w.ca.Cert))
	w.dests = append(w.dests, &destination{name: "DANE-TA", domain: "ta.example", srv: s, verdict: "authenticated", mechanism: "dane"})

	// MX host that is a CNAME into another signed zone; the TLSA record
	// is at the expanded name (RFC 7672 §2.2.3).
	l, rr = ee("mail.hoster.example")
	a, s = serve("mail.hoster.example", certCfg(l))
	zone("hoster.example").Add(t, "mail A "+a, rr)
	zone("cname.example").Add(t, "@ MX 10 mx", "mx CNAME mail.hoster.example.")
	w.dests = append(w.dests, &destination{name: "CNAME'd MX", domain: "cname.example", srv: s, verdict: "authenticated", mechanism: "dane"})

	// Two MX hosts, both with TLSA records; the first closes every
	// connection, so maddy moves on to the second.
	_, rr1 := ee("mx1.two.example")
	down := nextIP()
	first := startCloser(t, down+":25")
	l, rr2 := ee("mx2.two.example")
	a, s = serve("mx2.two.example", certCfg(l))
	zone("two.example").Add(t, "@ MX 10 mx1", "@ MX 20 mx2", "mx1 A "+down, "mx2 A "+a, rr1, rr2)
	w.dests = append(w.dests, &destination{name: "two MX (1st down)", domain: "two.example", srv: s, first: first, verdict: "authenticated", mechanism: "dane"})

	// MTA-STS (enforce, listing the MX) and DANE-EE: DANE governs.
	sts := stsbed.Start(t, "127.0.0.3:443", w.ca)
	l, rr = ee("mx.sts.example")
	a, s = serve("mx.sts.example", certCfg(l))
	zone("sts.example").Add(t, "@ MX 10 mx", "mx A "+a, rr, "mta-sts A "+sts.IP(), `_mta-sts TXT "v=STSv1; id=c1;"`)
	sts.Site("sts.example").SetPolicy(stsbed.Policy("enforce", 86400, "mx.sts.example"))
	w.dests = append(w.dests, &destination{name: "MTA-STS + DANE", domain: "sts.example", srv: s, verdict: "authenticated", mechanism: "dane"})

	// Signed MX, no TLSA record (secure denial): opportunistic TLS.
	l = pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.notlsa.example"}})
	a, s = serve("mx.notlsa.example", certCfg(l))
	zone("notlsa.example").Add(t, "@ MX 10 mx", "mx A "+a)
	w.dests = append(w.dests, &destination{name: "no TLSA", domain: "notlsa.example", srv: s, verdict: "encrypted", mechanism: "none"})

	w.dns.Start(t, "127.0.0.2:53")
	w.ub = dnsbed.StartUnbound(t, w.dns, dnsbed.UnboundOptions{})
	return w
}

// TestColdDelivery prints, per destination, the median cold delivery time
// of each set-up and daneguard's ratio to no policy. It asserts that every
// message was delivered (with daneguard's expected verdict), never how fast.
func TestColdDelivery(t *testing.T) {
	if os.Getenv(envOn) != "1" {
		t.Skipf("the cold-path measurement runs only with %s=1 (make bench-cold)", envOn)
	}
	netns.Required(t)
	n := 7
	if v := os.Getenv(envN); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", envN, v)
		}
	}
	delay := 50 * time.Millisecond
	if v := os.Getenv(envDelay); v != "" {
		var err error
		if delay, err = time.ParseDuration(v); err != nil {
			t.Fatalf("%s=%q: %v", envDelay, v, err)
		}
	}
	use := setups
	if v := os.Getenv(envSetup); v != "" {
		use = nil
		for _, name := range strings.Split(v, ",") {
			i := slices.IndexFunc(setups, func(s setup) bool { return s.name == name })
			if i < 0 {
				t.Fatalf("%s: unknown set-up %q", envSetup, name)
			}
			use = append(use, setups[i])
		}
	}

	w := buildWorld(t)
	if v := os.Getenv(envOnly); v != "" {
		var only []*destination
		for _, name := range strings.Split(v, ",") {
			i := slices.IndexFunc(w.dests, func(d *destination) bool { return d.name == name })
			if i < 0 {
				t.Fatalf("%s: unknown destination %q", envOnly, name)
			}
			only = append(only, w.dests[i])
		}
		w.dests = only
	}
	// Build the binaries before anything is timed.
	maddybed.Binary(t)
	if slices.ContainsFunc(use, func(s setup) bool { return s.stock }) {
		maddybed.StockBinary(t)
	}
	w.dns.SetDelay(delay)
	w.dns.SetQueryLog(true)

	results := map[string]map[string][]sample{} // dest -> setup -> samples
	for _, d := range w.dests {
		results[d.name] = map[string][]sample{}
	}
	// Interleaved: every round sends one message per destination and
	// set-up, so that drift of the machine's load affects all alike.
	for round := 0; round < n; round++ {
		for _, d := range w.dests {
			for _, su := range use {
				s := w.measure(t, su, d)
				if s.err != nil {
					if su.stock {
						// maddy's own policy is a reference column, not
						// the subject: report its failures, do not stop.
						t.Logf("%s / %s: %v", d.name, su.name, s.err)
					} else {
						t.Fatalf("%s / %s: %v", d.name, su.name, s.err)
					}
				}
				results[d.name][su.name] = append(results[d.name][su.name], s)
			}
		}
	}

	report := w.report(use, results, n, delay)
	fmt.Print(report)
	if out := os.Getenv(envOut); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// measure sends one message to d through a fresh maddy with a flushed
// resolver cache.
func (w *world) measure(t *testing.T, su setup, d *destination) sample {
	t.Helper()
	mxAuth := su.mxAuth
	if strings.Contains(mxAuth, "%s") {
		mxAuth = fmt.Sprintf(mxAuth, w.roots)
	}
	// The maddy process lives for this one message only.
	var s sample
	t.Run(su.name+"/"+d.domain, func(t *testing.T) {
		m := maddybed.Start(t, maddybed.Options{MXAuth: mxAuth, Stock: su.stock, Debug: true, NoConnReuse: true})
		w.ub.Flush(t)
		w.dns.ResetCounts()
		before := len(d.srv.Messages())
		connsBefore := len(d.srv.Connections())

		s.t0, s.err = submit(m.Opts.SubmitAddr, "bob@"+d.domain)
		if s.err != nil {
			s.err = fmt.Errorf("submission: %v\n%s", s.err, m.Log())
			return
		}
		msgs := d.srv.Messages()
		if len(msgs) != before+1 {
			s.err = fmt.Errorf("the destination holds %d new messages, want 1", len(msgs)-before)
			return
		}
		if !msgs[len(msgs)-1].TLS.Used {
			s.err = fmt.Errorf("message delivered without TLS")
			return
		}
		s.latency = msgs[len(msgs)-1].Received.Sub(s.t0)
		first := time.Time{}
		if d.first != nil {
			if acc := d.first.since(s.t0); len(acc) > 0 {
				first = acc[0]
			}
		}
		if conns := d.srv.Connections(); first.IsZero() && len(conns) > connsBefore {
			first = conns[connsBefore].Accepted
		}
		s.toConn = first.Sub(s.t0)
		s.queries = w.dns.QueryLog()
		s.rounds = sequentialRounds(s.queries, s.t0, first)
		if su.name == "daneguard" {
			s.dgLines = m.Entries("daneguard", "dns query")
			var vs []maddybed.Entry
			for _, e := range m.Entries("daneguard", "verdict") {
				if e.Fields["domain"] == d.domain {
					vs = append(vs, e)
				}
			}
			if len(vs) == 0 {
				s.err = fmt.Errorf("no daneguard verdict logged:\n%s", m.Log())
				return
			}
			v := vs[len(vs)-1]
			if v.Fields["verdict"] != d.verdict || v.Fields["mechanism"] != d.mechanism {
				s.err = fmt.Errorf("verdict %v, want %s by %s", v.Fields, d.verdict, d.mechanism)
			}
		}
		m.Stop()
	})
	return s
}

// submit sends one message to maddy and returns when it was asked to take
// the recipient: maddy's target.remote starts its work for a recipient's
// domain (MX lookup, policy checks, connection) when it receives RCPT TO,
// and, without a queue, answers the end of DATA only after the destination
// accepted the message.
func submit(addr, rcpt string) (time.Time, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return time.Time{}, err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return time.Time{}, err
	}
	if err := c.Mail("alice@sender.test", nil); err != nil {
		return time.Time{}, err
	}
	t0 := time.Now()
	if err := c.Rcpt(rcpt, nil); err != nil {
		return t0, err
	}
	wc, err := c.Data()
	if err != nil {
		return t0, err
	}
	msg := "From: <alice@sender.test>\r\nTo: <" + rcpt + ">\r\nSubject: cold\r\nMessage-ID: <" +
		strconv.FormatInt(time.Now().UnixNano(), 10) + "@client.test>\r\n\r\ncold path\r\n"
	if _, err := wc.Write([]byte(msg)); err != nil {
		return t0, err
	}
	if err := wc.Close(); err != nil {
		return t0, err
	}
	return t0, c.Quit()
}

// sequentialRounds is the length of the longest chain of authoritative
// queries in [t0, until) each of which arrived after the previous one was
// answered: the number of round trips a client waited for in turn. Queries
// in flight at the same time count once.
func sequentialRounds(qs []dnsbed.QueryRecord, t0, until time.Time) int {
	var in []dnsbed.QueryRecord
	for _, q := range qs {
		if !q.Received.Before(t0) && (until.IsZero() || q.Received.Before(until)) {
			in = append(in, q)
		}
	}
	slices.SortFunc(in, func(a, b dnsbed.QueryRecord) int { return a.Received.Compare(b.Received) })
	depth := make([]int, len(in))
	best := 0
	for i, q := range in {
		depth[i] = 1
		for j := range i {
			if !in[j].Answered.After(q.Received) && depth[j]+1 > depth[i] {
				depth[i] = depth[j] + 1
			}
		}
		best = max(best, depth[i])
	}
	return best
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianInt(xs []int) int {
	ds := make([]time.Duration, len(xs))
	for i, x := range xs {
		ds[i] = time.Duration(x)
	}
	return int(median(ds))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d.Microseconds())/1000) }

// report renders the table and, for the last message of each cell, the
// authoritative query sequence and daneguard's debug lines.
func (w *world) report(use []setup, results map[string]map[string][]sample, n int, delay time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\ncold delivery: %d messages per cell, authoritative RTT %v; latency = RCPT TO to maddy .. destination accepted the message (ms, median)\n", n, delay)
	fmt.Fprintf(&b, "%-18s", "destination")
	for _, su := range use {
		fmt.Fprintf(&b, " | %10s", su.name)
	}
	fmt.Fprintf(&b, " | %9s", "dg/none")
	for _, su := range use {
		fmt.Fprintf(&b, " | %s conn@ms rounds", su.name)
	}
	b.WriteString("\n")
	ratio := func(cell map[string][]sample) string {
		a, okA := cell["daneguard"]
		z, okZ := cell["none"]
		if !okA || !okZ {
			return "-"
		}
		ma, mz := median(latencies(a)), median(latencies(z))
		if mz == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", float64(ma)/float64(mz))
	}
	for _, d := range w.dests {
		cell := results[d.name]
		fmt.Fprintf(&b, "%-18s", d.name)
		for _, su := range use {
			fmt.Fprintf(&b, " | %10s", cellText(cell[su.name]))
		}
		fmt.Fprintf(&b, " | %9s", ratio(cell))
		for _, su := range use {
			ok := okSamples(cell[su.name])
			var conn []time.Duration
			var rounds []int
			for _, s := range ok {
				conn = append(conn, s.toConn)
				rounds = append(rounds, s.rounds)
			}
			fmt.Fprintf(&b, " | %s %s %d", su.name, ms(median(conn)), medianInt(rounds))
		}
		b.WriteString("\n")
	}
	b.WriteString("\nquery sequences (last message of each cell; +received..+answered ms after RCPT TO; * = before the first SMTP connection)\n")
	for _, d := range w.dests {
		for _, su := range use {
			ss := results[d.name][su.name]
			if len(ss) == 0 {
				continue
			}
			s := ss[len(ss)-1]
			fmt.Fprintf(&b, "\n%s / %s: %s ms, first connection at %s ms, %d sequential rounds\n", d.name, su.name, ms(s.latency), ms(s.toConn), s.rounds)
			qs := slices.Clone(s.queries)
			slices.SortFunc(qs, func(a, b dnsbed.QueryRecord) int { return a.Received.Compare(b.Received) })
			for _, q := range qs {
				mark := " "
				if q.Received.Sub(s.t0) < s.toConn {
					mark = "*"
				}
				fmt.Fprintf(&b, "  %s %6s..%-6s %s %s\n", mark, ms(q.Received.Sub(s.t0)), ms(q.Answered.Sub(s.t0)), dns.TypeToString[q.Type], q.Name)
			}
			for _, e := range s.dgLines {
				fmt.Fprintf(&b, "    daneguard dns query %v %v took_ms=%v\n", e.Fields["type"], e.Fields["name"], e.Fields["took_ms"])
			}
		}
	}
	return b.String()
}

func okSamples(ss []sample) []sample {
	var out []sample
	for _, s := range ss {
		if s.err == nil {
			out = append(out, s)
		}
	}
	return out
}

func latencies(ss []sample) []time.Duration {
	var out []time.Duration
	for _, s := range okSamples(ss) {
		out = append(out, s.latency)
	}
	return out
}

func cellText(ss []sample) string {
	ok := okSamples(ss)
	if len(ok) == 0 {
		if len(ss) == 0 {
			return "-"
		}
		return "fail"
	}
	txt := ms(median(latencies(ok)))
	if len(ok) < len(ss) {
		txt += fmt.Sprintf(" (%d/%d)", len(ok), len(ss))
	}
	return txt
}
