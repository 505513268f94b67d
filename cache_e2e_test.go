package daneguard_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/miekg/dns"
)

// cacheE2EMessages is the number of warm deliveries measured per
// configuration, sent by cacheE2EClients concurrent clients.
const (
	cacheE2EMessages = 200
	cacheE2EClients  = 4
	// cacheE2ETTL is the TTL of every record of the destination.
	cacheE2ETTL = 3600
	// metricsAddr is where the daneguard run serves maddy's openmetrics
	// endpoint.
	metricsAddr = "127.0.0.1:9749"
)

// sendMany submits n messages to domain through maddy's submission
// listener from clients concurrent SMTP clients, and returns the first
// failure.
func sendMany(addr, domain string, n, clients int) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	go func() {
		for i := range n {
			next <- i
		}
		close(next)
	}()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := sendOne(addr, domain, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func sendOne(addr, domain string, i int) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	rcpt := "bob@" + domain
	msg := fmt.Sprintf("From: <alice@sender.test>\r\nTo: <%s>\r\nSubject: cache %d\r\nMessage-ID: <%d.%d@client.test>\r\n\r\nmessage %d\r\n", rcpt, i, time.Now().UnixNano(), i, i)
	if err := c.SendMail("alice@sender.test", []string{rcpt}, strings.NewReader(msg)); err != nil {
		return fmt.Errorf("message %d: %w", i, err)
	}
	return c.Quit()
}

// cacheRun is what one maddy configuration cost in resolver queries.
type cacheRun struct {
	name string
	// cold: queries for the first message; warm: for the next
	// cacheE2EMessages messages. total counts every query maddy's process
	// made; policy only those made by daneguard's own resolver.
	coldTotal, warmTotal, warmPolicy int64
	// warmTLSA: TLSA queries at maddy's own resolver.
	warmTLSA int64
	elapsed  time.Duration
}

func (r cacheRun) perMessage() float64 { return float64(r.warmTotal) / cacheE2EMessages }

// TestCacheEndToEnd delivers cacheE2EMessages messages to one DANE domain
// through the real maddy three times in one run: with daneguard's
// `dane { }`, with the stock maddy binary's built-in `dane`, and with no
// policy; it counts the queries the real unbound answered for each.
//
// daneguard gets a resolver of its own (a second unbound) so that its
// queries can be told apart from maddy's own MX and address lookups, which
// go to the namespace's resolv.conf unbound in every configuration.
func TestCacheEndToEnd(t *testing.T) {
	w := newWorld(t)
	leaf := selfSigned(t, "mx.cached.example")
	ip, srv := w.server("mx.cached.example", leaf)
	w.dns.Zone(t, "cached.example.", dnsbed.TTL(cacheE2ETTL)).Add(t,
		"@ MX 10 mx", "mx A "+ip, pki.TLSA(t, "_25._tcp.mx.cached.example.", 3, 1, 1, leaf.Cert))
	// w.start with a query log, to break the counts down by question.
	w.dns.Start(t, "127.0.0.2:53")
	w.ub = dnsbed.StartUnbound(t, w.dns, dnsbed.UnboundOptions{LogQueries: true})
	// daneguard's own resolver: a second real unbound on another loopback
	// address, validating the same tree.
	policyUB := dnsbed.StartUnbound(t, w.dns, dnsbed.UnboundOptions{Addr: "127.0.0.4:53"})

	questions := []struct {
		name  string
		qtype uint16
	}{
		{"cached.example.", dns.TypeMX}, {"mx.cached.example.", dns.TypeA}, {"mx.cached.example.", dns.TypeAAAA},
		{"mx.cached.example.", dns.TypeCNAME}, {"_25._tcp.mx.cached.example.", dns.TypeTLSA},
	}
	breakdown := func() []int64 {
		out := make([]int64, len(questions))
		for i, q := range questions {
			out[i] = w.ub.ClientQueries(t, q.name, q.qtype)
		}
		return out
	}
	delivered := 0
	run := func(name string, o maddybed.Options, check func(m *maddybed.Maddy)) cacheRun {
		t.Helper()
		// Every message on a connection of its own: maddy runs no
		// mx_auth check (and no lookup) for a pooled connection, so
		// reuse would hide what each configuration costs.
		o.NoConnReuse = true
		m := maddybed.Start(t, o)
		defer m.Stop()
		r := cacheRun{name: name}
		total := func() int64 { return w.ub.QueryCount(t) + policyUB.QueryCount(t) }

		before := total()
		if err := sendOne(m.Opts.SubmitAddr, "cached.example", -1); err != nil {
			t.Fatalf("%s: first delivery: %v\n%s", name, err, m.Log())
		}
		r.coldTotal = total() - before

		before, beforePolicy, beforeQ := total(), policyUB.QueryCount(t), breakdown()
		start := time.Now()
		if err := sendMany(m.Opts.SubmitAddr, "cached.example", cacheE2EMessages, cacheE2EClients); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, m.Log())
		}
		r.elapsed = time.Since(start)
		r.warmTotal = total() - before
		r.warmPolicy = policyUB.QueryCount(t) - beforePolicy
		var parts []string
		after := breakdown()
		r.warmTLSA = after[len(after)-1] - beforeQ[len(after)-1]
		for i, n := range after {
			parts = append(parts, fmt.Sprintf("%s/%s %d", questions[i].name, dns.TypeToString[questions[i].qtype], n-beforeQ[i]))
		}
		t.Logf("%s: warm queries at maddy's resolver by question: %s", name, strings.Join(parts, ", "))

		delivered += 1 + cacheE2EMessages
		if _, err := srv.WaitMessages(ctx(t), delivered); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if check != nil {
			check(m)
		}
		return r
	}

	dg := run("daneguard dane { }", maddybed.Options{
		// No resolver health probe: this run counts every query the
		// delivery path makes at the resolver.
		MXAuth: "dane {\n resolver 127.0.0.4:53\n resolver_check_interval off\n }",
		Extra:  "openmetrics tcp://" + metricsAddr + " { }",
	}, func(m *maddybed.Maddy) {
		vs := verdictFor(m, "cached.example")
		if len(vs) != 1+cacheE2EMessages {
			t.Fatalf("%d daneguard verdicts logged, want %d", len(vs), 1+cacheE2EMessages)
		}
		for _, v := range vs {
			wantVerdict(t, v, "authenticated", "dane-match")
		}
		checkMetrics(t, scrape(t, "http://"+metricsAddr+"/metrics"))
	})
	builtin := run("maddy built-in dane", maddybed.Options{MXAuth: "dane { }", Stock: true}, nil)
	none := run("no policy", maddybed.Options{MXAuth: "", Stock: true}, nil)

	for _, r := range []cacheRun{dg, builtin, none} {
		t.Logf("%-20s cold message: %d queries; warm: %d queries for %d messages = %.2f queries/message (daneguard's own: %d) in %v",
			r.name, r.coldTotal, r.warmTotal, cacheE2EMessages, r.perMessage(), r.warmPolicy, r.elapsed.Round(time.Millisecond))
	}
	if none.perMessage() > 0 {
		t.Logf("queries/message relative to no policy: daneguard %.2f, built-in dane %.2f",
			dg.perMessage()/none.perMessage(), builtin.perMessage()/none.perMessage())
	}

	// Once warm, daneguard asks nothing: at most one query per name (MX,
	// A, TLSA, _mta-sts TXT) per TTL window that ended during the run.
	allowed := int64(4) * int64(dg.elapsed/(cacheE2ETTL*time.Second))
	if dg.warmPolicy > allowed {
		t.Fatalf("daneguard made %d resolver queries for %d warm messages, want at most %d", dg.warmPolicy, cacheE2EMessages, allowed)
	}
	// The built-in policy looks the TLSA RRset up again for every message
	// (at maddy's resolver, which daneguard's runs never ask for TLSA).
	if builtin.warmTLSA != cacheE2EMessages || dg.warmTLSA != 0 || none.warmTLSA != 0 {
		t.Fatalf("TLSA queries at maddy's resolver: built-in dane %d (want %d), daneguard %d, no policy %d (want 0)",
			builtin.warmTLSA, cacheE2EMessages, dg.warmTLSA, none.warmTLSA)
	}
}

// scrape fetches a Prometheus text exposition and returns its samples by
// "name{labels}" (labels as exposed, sorted by name).
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scraping %s: %s\n%s", url, resp.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkMetrics asserts that maddy's openmetrics endpoint exports
// daneguard's verdict, lookup-duration and cache series with values that
// fit 1+cacheE2EMessages authenticated deliveries to one domain.
func checkMetrics(t *testing.T, s map[string]float64) {
	t.Helper()
	n := float64(1 + cacheE2EMessages)
	get := func(key string) float64 {
		t.Helper()
		v, ok := s[key]
		if !ok {
			var have []string
			for k := range s {
				if strings.HasPrefix(k, "maddy_daneguard") {
					have = append(have, k)
				}
			}
			t.Fatalf("metric %s not exported; daneguard series: %v", key, have)
		}
		return v
	}
	if v := get(`maddy_daneguard_verdicts_total{mechanism="dane",reason="dane-match",result="authenticated"}`); v != n {
		t.Errorf("verdicts_total = %v, want %v", v, n)
	}
	for _, stage := range []string{"destination", "mx", "conn"} {
		if v := get(`maddy_daneguard_lookup_duration_seconds_count{stage="` + stage + `"}`); v != n {
			t.Errorf("lookup_duration_seconds_count{stage=%q} = %v, want %v", stage, v, n)
		}
		if v := get(`maddy_daneguard_lookup_duration_seconds_sum{stage="` + stage + `"}`); v <= 0 {
			t.Errorf("lookup_duration_seconds_sum{stage=%q} = %v, want > 0", stage, v)
		}
	}
	c := func(name string) float64 { return get(`maddy_daneguard_cache_` + name + `{cache="dns"}`) }
	// Four questions (MX, A, TLSA, and the _mta-sts TXT of the MTA-STS
	// fallback), each fetched once. MX, A and TLSA are asked for every
	// message; the MTA-STS manager may skip its TXT lookup while it
	// remembers that the domain has no policy.
	const questions = 4
	if v := c("fetches_total"); v != questions {
		t.Errorf("cache fetches_total = %v, want %d", v, questions)
	}
	if h, m := c("hits_total"), c("misses_total"); h+m > questions*n || h+m < 3*n || m < questions || h < 3*n-10 {
		t.Errorf("cache hits_total %v + misses_total %v, want between %v and %v lookups, nearly all hits", h, m, 3*n, questions*n)
	}
	if v := c("collapsed_total"); v != c("misses_total")-questions {
		t.Errorf("cache collapsed_total = %v, want misses_total-%d = %v", v, questions, c("misses_total")-questions)
	}
	if v := c("evictions_total"); v != 0 {
		t.Errorf("cache evictions_total = %v, want 0", v)
	}
	if v := c("entries"); v != questions {
		t.Errorf("cache entries = %v, want %d", v, questions)
	}
}
