package fleet

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/redisbed"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

var day = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)

type rptNode struct {
	local  *tlsrpt.Store
	shared *SharedReports
	dir    string
}

func newRptNode(t *testing.T, c *Client, dir string, clk func() time.Time) *rptNode {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	local, err := tlsrpt.OpenStore(filepath.Join(dir, "tlsrpt.db"), tlsrpt.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sr, err := NewSharedReports(c, ReportsConfig{Local: local, NodeIDFile: filepath.Join(dir, "node-id"),
		ClaimTTL: 300 * time.Millisecond, Now: clk})
	if err != nil {
		t.Fatal(err)
	}
	return &rptNode{local: local, shared: sr, dir: dir}
}

func success(domain string) tlsrpt.Record {
	return tlsrpt.Record{Domain: domain, PolicyType: tlsrpt.PolicyTLSA, PolicyStrings: []string{"3 1 1 AB"},
		MXHost: "mx." + domain, Success: true}
}

func failure(domain, sendingIP string) tlsrpt.Record {
	return tlsrpt.Record{Domain: domain, PolicyType: tlsrpt.PolicyTLSA, PolicyStrings: []string{"3 1 1 AB"},
		MXHost: "mx." + domain, ResultType: tlsrpt.ResultValidationFailure, SendingIP: sendingIP,
		ReceivingIP: "192.0.2.1", FailureReason: "no TLSA record matched"}
}

// totals sums shared aggregates: successes, and failures by sending IP.
func totals(aggs []tlsrpt.Aggregate) (ok uint64, failed map[string]uint64) {
	failed = map[string]uint64{}
	for _, a := range aggs {
		if a.Key.Success {
			ok += a.Count
		} else {
			failed[a.Key.SendingIP] += a.Count
		}
	}
	return ok, failed
}

func flushAll(t *testing.T, nodes ...*rptNode) {
	t.Helper()
	for _, n := range nodes {
		var err error
		for range 100 { // the client may still have the store marked down
			if err = n.shared.Flush(context.Background()); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil || n.shared.Depth() != 0 {
			t.Fatalf("flush: %v, depth %d", err, n.shared.Depth())
		}
	}
}

// TestSharedCountsSurviveRedisOutage: two nodes record sessions while
// their push loops run; Redis is killed in the middle and started again
// (AOF, as a production Redis would persist); every Add is accepted
// meanwhile, and once the journals are replayed the shared counts are
// exact: every session counted once, failures under their own node's
// sending IP. Replaying again (a node restarted, its memory of what was
// acknowledged lost) changes nothing.
func TestSharedCountsSurviveRedisOutage(t *testing.T) {
	srv := redisbed.Start(t, redisbed.Options{AOF: true})
	clk := func() time.Time { return day }
	a := newRptNode(t, client(t, srv, nil), "", clk)
	b := newRptNode(t, client(t, srv, nil), "", clk)
	ctx, cancel := context.WithCancel(context.Background())
	var loops sync.WaitGroup
	for _, n := range []*rptNode{a, b} {
		loops.Add(1)
		go func() { defer loops.Done(); n.shared.Run(ctx, 10*time.Millisecond) }()
	}

	const perPhase = 60
	var added atomic.Int64
	load := func() {
		var wg sync.WaitGroup
		for i, n := range []*rptNode{a, b} {
			ip := fmt.Sprintf("192.0.2.%d", 10*(i+1))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range perPhase {
					rec := success("example.org")
					if j%3 == 0 {
						rec = failure("example.org", ip)
					}
					if err := n.shared.Add(day, rec); err != nil {
						t.Errorf("Add failed: %v", err)
						return
					}
					added.Add(1)
				}
			}()
		}
		wg.Wait()
	}
	load()
	srv.Stop()
	load() // Redis gone: recording goes on
	if err := a.shared.Flush(context.Background()); err == nil || a.shared.Depth() == 0 {
		t.Fatalf("flush with Redis down: %v, journal depth %d", err, a.shared.Depth())
	}
	srv.Restart()
	load()
	cancel()
	loops.Wait()
	flushAll(t, a, b)

	check := func(when string) {
		t.Helper()
		aggs, err := a.shared.Aggregates(context.Background(), tlsrpt.Day(day), "example.org")
		if err != nil {
			t.Fatal(err)
		}
		ok, failed := totals(aggs)
		perNodeFail := uint64(3 * perPhase / 3)
		if ok+failed["192.0.2.10"]+failed["192.0.2.20"] != uint64(added.Load()) ||
			failed["192.0.2.10"] != perNodeFail || failed["192.0.2.20"] != perNodeFail || len(failed) != 2 {
			t.Fatalf("%s: %d successes, failures %v; want %d sessions, %d failures per node", when, ok, failed, added.Load(), perNodeFail)
		}
	}
	check("after the outage")

	// A restarted node (same store and id file) replays everything.
	a2 := newRptNode(t, client(t, srv, nil), a.dir, clk)
	if a2.shared.NodeID() != a.shared.NodeID() {
		t.Fatal("node id not kept across restarts")
	}
	flushAll(t, a2)
	check("after a replay")
}

// reportOf decodes the JSON report attached to a report email.
func reportOf(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, params, _ := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no report attachment: %v", err)
		}
		if p.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
			continue
		}
		b64, _ := io.ReadAll(p)
		gz, _ := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(b64)))
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.NewDecoder(zr).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
}

type mailbox struct {
	mu    sync.Mutex
	msgs  [][]byte
	block chan struct{} // if set, Submit waits on it
}

func (m *mailbox) submit(ctx context.Context, _ string, _ []string, msg []byte) error {
	if m.block != nil {
		select {
		case <-m.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs = append(m.msgs, msg)
	return nil
}

func (m *mailbox) count() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.msgs) }

func sender(n *rptNode, mb *mailbox, now func() time.Time) *tlsrpt.Sender {
	return &tlsrpt.Sender{
		Store: n.local, Shared: n.shared, Meta: tlsrpt.ReportMeta{OrganizationName: "Fleet", ContactInfo: "tlsrpt@fleet.example"},
		From: "tlsrpt@fleet.example", Submit: mb.submit, Now: now,
		LookupTXT: func(context.Context, string) ([]string, error) {
			return []string{"v=TLSRPTv1;rua=mailto:reports@example.org"}, nil
		},
	}
}

// TestOneReportForTheFleet: two nodes' senders tick at the same time
// after the day; exactly one report goes out, with the sessions of both
// nodes. A node that died holding the claim (its lock left behind, never
// renewed) delays the next day's report only until the lock expires; the
// other node then sends it.
func TestOneReportForTheFleet(t *testing.T) {
	srv := redisbed.Start(t, redisbed.Options{})
	after := func() time.Time { return time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC) }
	a := newRptNode(t, client(t, srv, nil), "", after)
	b := newRptNode(t, client(t, srv, nil), "", after)
	for i := range 5 {
		_ = a.shared.Add(day, success("example.org"))
		_ = b.shared.Add(day, success("example.org"))
		if i < 2 {
			_ = b.shared.Add(day, failure("example.org", "192.0.2.20"))
		}
	}
	// Both nodes' push loops ran before the report was due (SendAfter
	// gives them an hour in production): the counts are in Redis.
	flushAll(t, a, b)
	mb := &mailbox{}
	sa, sb := sender(a, mb, after), sender(b, mb, after)
	var wg sync.WaitGroup
	for _, s := range []*tlsrpt.Sender{sa, sb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Tick(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, s := range []*tlsrpt.Sender{sa, sb} { // and later ticks send nothing more
		if err := s.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if mb.count() != 1 {
		t.Fatalf("%d reports for one domain and day, want 1", mb.count())
	}
	rep := reportOf(t, mb.msgs[0])
	sum := rep["policies"].([]any)[0].(map[string]any)["summary"].(map[string]any)
	if sum["total-successful-session-count"].(float64) != 10 || sum["total-failure-session-count"].(float64) != 2 {
		t.Fatalf("report summary %v, want 10 successes and 2 failures from both nodes", sum)
	}

	// Next day: node A "dies" holding the claim.
	day2 := day.AddDate(0, 0, 1)
	_ = a.shared.Add(day2, success("example.org"))
	_ = b.shared.Add(day2, success("example.org"))
	flushAll(t, a, b)
	lock := a.shared.key(tlsrpt.Day(day2), "example.org", "lock")
	if r, err := srv.Do(context.Background(), "SET", lock, "dead-node", "PX", "400", "NX"); err != nil || r != "+OK" {
		t.Fatalf("taking the dead node's lock: %q %v", r, err)
	}
	sb2 := sender(b, mb, func() time.Time { return day2.AddDate(0, 0, 1).Add(8 * time.Hour) })
	if err := sb2.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if mb.count() != 1 {
		t.Fatal("sent while another node held the claim")
	}
	time.Sleep(500 * time.Millisecond)
	if err := sb2.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if mb.count() != 2 {
		t.Fatalf("the surviving node did not send after the claim expired (%d reports)", mb.count())
	}
	sum = reportOf(t, mb.msgs[1])["policies"].([]any)[0].(map[string]any)["summary"].(map[string]any)
	if sum["total-successful-session-count"].(float64) != 2 {
		t.Fatalf("day 2 summary %v, want both nodes' 2 sessions", sum)
	}
	var st tlsrpt.DeliveryState
	list, _ := b.shared.List(context.Background())
	for _, p := range list {
		if p.Day == tlsrpt.Day(day2) {
			st = p.State
		}
	}
	if !st.Done || st.Outcome != "sent" {
		t.Fatalf("shared state of day 2: %+v", st)
	}
}

// TestCountsAfterRedisLostItsData: a Redis restarted without persistence
// comes back empty; the nodes push their journals again, so the counts are
// complete once more (and not doubled).
func TestCountsAfterRedisLostItsData(t *testing.T) {
	srv := redisbed.Start(t, redisbed.Options{})
	clk := func() time.Time { return day }
	a := newRptNode(t, client(t, srv, nil), "", clk)
	for range 7 {
		if err := a.shared.Add(day, success("example.org")); err != nil {
			t.Fatal(err)
		}
	}
	flushAll(t, a)
	srv.Stop()
	srv.Restart()
	flushAll(t, a)
	flushAll(t, a)
	aggs, err := a.shared.Aggregates(context.Background(), tlsrpt.Day(day), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := totals(aggs); ok != 7 {
		t.Fatalf("%d sessions after Redis lost its data, want 7", ok)
	}
}
