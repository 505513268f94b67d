package fleet

import (
	"context"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/redisbed"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// rcvNow is the clock of the received-report tests. It is the real time
// (truncated to the second): Redis expires keys by its own clock.
var rcvNow = time.Now().UTC().Truncate(time.Second)

// dayAgo is the day n days before rcvNow's.
func dayAgo(n int) string { return tlsrpt.Day(rcvNow.AddDate(0, 0, -n)) }

// receivedReport builds a report received about example.org for day.
func receivedReport(id, org, day string, ok, failed uint64) tlsrpt.ReceivedEntry {
	start, _ := tlsrpt.ParseDay(day)
	pr := tlsrpt.PolicyResult{
		Policy:  tlsrpt.ReportPolicy{PolicyType: tlsrpt.PolicyTLSA, PolicyString: []string{"3 1 1 AB"}, PolicyDomain: "mx.example.org", MXHost: "mx.example.org"},
		Summary: tlsrpt.Summary{TotalSuccessful: ok, TotalFailure: failed},
	}
	if failed > 0 {
		pr.FailureDetails = []tlsrpt.FailureDetail{{ResultType: tlsrpt.ResultCertificateHostMismatch, ReceivingIP: "2001:db8::25",
			ReceivingMXHostname: "mx.example.org", FailedSessionCount: failed}}
	}
	return tlsrpt.ReceivedEntry{
		Report: tlsrpt.Report{OrganizationName: org, ContactInfo: "tlsrpt@" + org + ".example", ReportID: id,
			DateRange: tlsrpt.DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)},
			Policies:  []tlsrpt.PolicyResult{pr}},
		ReceivedAt: rcvNow, Transport: "email", MediaType: tlsrpt.ContentTypeGzip, DKIM: "pass", DKIMDomain: org + ".example",
	}
}

type rcvNode struct {
	local  *tlsrpt.ReceivedStore
	shared *SharedReceived
}

func newRcvNode(t *testing.T, c *Client, m *Metrics, keepDays int) *rcvNode {
	t.Helper()
	local, err := tlsrpt.OpenReceivedStore(filepath.Join(t.TempDir(), "received.db"), tlsrpt.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sr, err := NewSharedReceived(c, ReceivedConfig{Local: local, KeepDays: keepDays, Metrics: m, Now: func() time.Time { return rcvNow }})
	if err != nil {
		t.Fatal(err)
	}
	return &rcvNode{local: local, shared: sr}
}

func ids(es []tlsrpt.ReceivedEntry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.Report.ReportID)
	}
	return out
}

// redisIDs lists the report-ids Redis holds (SCAN of the report keys).
func redisIDs(t *testing.T, srv *redisbed.Server) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	s, err := Parse(srv.URL(0))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keys, err := c.rdb.Keys(context.Background(), c.key("rcv", "rep", "*")).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		out[k[len(c.key("rcv", "rep", "")):]] = true
	}
	return out
}

// TestSharedReceivedOncePerFleet: the same report (a sender mailing its
// rua and POSTing it, the copies landing on different nodes) delivered to
// two nodes concurrently is new on exactly one of them; the fleet-wide
// view from either node has every report once, field for field.
func TestSharedReceivedOncePerFleet(t *testing.T) {
	srv := redisbed.Start(t, redisbed.Options{})
	ctx := context.Background()
	a := newRcvNode(t, client(t, srv, nil), nil, 30)
	b := newRcvNode(t, client(t, srv, nil), nil, 30)

	const copies = 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	newCount := 0
	for i := range copies {
		n := []*rcvNode{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			added, err := n.shared.AddReceived(ctx, receivedReport("shared-1", "google", dayAgo(1), 100, 3))
			if err != nil {
				t.Errorf("AddReceived: %v", err)
			}
			if added {
				mu.Lock()
				newCount++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if newCount != 1 {
		t.Fatalf("the same report-id on two nodes was new %d times, want once fleet-wide", newCount)
	}
	if added, err := a.shared.AddReceived(ctx, receivedReport("only-a", "microsoft", dayAgo(1), 7, 0)); err != nil || !added {
		t.Fatalf("only-a: %v %v", added, err)
	}
	if added, err := b.shared.AddReceived(ctx, receivedReport("only-b", "mox", dayAgo(2), 1, 1)); err != nil || !added {
		t.Fatalf("only-b: %v %v", added, err)
	}
	for name, n := range map[string]*rcvNode{"a": a, "b": b} {
		got, err := n.shared.ReceivedSince(ctx, dayAgo(40))
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"only-b", "only-a", "shared-1"}; !reflect.DeepEqual(ids(got), want) {
			t.Fatalf("node %s fleet view %v, want %v (day order, then report-id)", name, ids(got), want)
		}
		if want := receivedReport("shared-1", "google", dayAgo(1), 100, 3); !reflect.DeepEqual(got[2], want) {
			t.Fatalf("node %s: shared report\n%+v\nwant\n%+v", name, got[2], want)
		}
	}
	// Each node's local store keeps what it received itself.
	la, _ := a.local.ReceivedSince(ctx, dayAgo(40))
	lb, _ := b.local.ReceivedSince(ctx, dayAgo(40))
	if !reflect.DeepEqual(ids(la), []string{"only-a", "shared-1"}) || !reflect.DeepEqual(ids(lb), []string{"only-b", "shared-1"}) {
		t.Fatalf("local stores: a %v, b %v", ids(la), ids(lb))
	}
	if got := redisIDs(t, srv); len(got) != 3 {
		t.Fatalf("Redis holds %v, want 3 reports", got)
	}
}

// TestSharedReceivedRedisOutage: with Redis stopped, reports are still
// accepted (committed locally, new on this node), counted as pending,
// and the fleet view fails rather than showing a partial one; after
// Redis returns, the push loop stores each once, and a report another
// node stored meanwhile is not stored twice.
func TestSharedReceivedRedisOutage(t *testing.T) {
	srv := redisbed.Start(t, redisbed.Options{AOF: true})
	ctx := context.Background()
	m := NewMetrics("test")
	a := newRcvNode(t, client(t, srv, m), m, 30)
	b := newRcvNode(t, client(t, srv, nil), nil, 30)
	if added, err := a.shared.AddReceived(ctx, receivedReport("before", "google", dayAgo(1), 5, 0)); err != nil || !added {
		t.Fatalf("before: %v %v", added, err)
	}

	srv.Stop()
	for _, id := range []string{"down-1", "down-2", "dup"} {
		if added, err := a.shared.AddReceived(ctx, receivedReport(id, "google", dayAgo(1), 5, 1)); err != nil || !added {
			t.Fatalf("%s with Redis down: %v %v (want accepted locally)", id, added, err)
		}
	}
	if n := a.shared.Pending(); n != 3 {
		t.Fatalf("pending %d, want 3", n)
	}
	if g := testutil.ToFloat64(m.ReceivedPending); g != 3 {
		t.Fatalf("received_pending gauge %v, want 3", g)
	}
	if _, err := a.shared.ReceivedSince(ctx, dayAgo(40)); err == nil {
		t.Fatal("fleet view with Redis down: no error")
	}
	if err := a.shared.Flush(ctx); err == nil {
		t.Fatal("flush with Redis down: no error")
	}
	local, _ := a.local.ReceivedSince(ctx, dayAgo(40))
	if !reflect.DeepEqual(ids(local), []string{"before", "down-1", "down-2", "dup"}) {
		t.Fatalf("local journal %v", ids(local))
	}

	srv.Restart()
	time.Sleep(60 * time.Millisecond) // past the clients' RetryDown
	// Node b got a copy of "dup" after Redis came back, before a pushed.
	if added, err := b.shared.AddReceived(ctx, receivedReport("dup", "google", dayAgo(1), 5, 1)); err != nil || !added {
		t.Fatalf("dup on b: %v %v", added, err)
	}
	loopCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.shared.Run(loopCtx, 10*time.Millisecond) }()
	deadline := time.Now().Add(10 * time.Second)
	for a.shared.Pending() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if n := a.shared.Pending(); n != 0 {
		t.Fatalf("still pending after Redis returned: %d", n)
	}
	if g := testutil.ToFloat64(m.ReceivedPending); g != 0 {
		t.Fatalf("received_pending gauge %v, want 0", g)
	}
	got, err := b.shared.ReceivedSince(ctx, dayAgo(40))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"before", "down-1", "down-2", "dup"}; !reflect.DeepEqual(ids(got), want) {
		t.Fatalf("fleet view %v, want %v", ids(got), want)
	}
	want := map[string]bool{"before": true, "dup": true, "down-1": true, "down-2": true}
	if r := redisIDs(t, srv); !reflect.DeepEqual(r, want) {
		t.Fatalf("Redis holds %v, want %v", r, want)
	}
	// "dup" is stored once: b's copy, not replaced by a's push.
	for _, e := range got {
		if e.Report.ReportID == "dup" && e.ReceivedAt != rcvNow {
			t.Fatalf("dup: %+v", e)
		}
	}
	if n, err := srv.Do(ctx, "SCARD", "daneguard:rcv:day:"+dayAgo(1)); err != nil || n != ":4" {
		t.Fatalf("day index has %s members (%v), want 4", n, err)
	}
}

// TestSharedReceivedRestartAndDataLoss: a node whose process restarted
// (its memory of what is pending lost) and a Redis that lost its data
// (restarted without persistence): the next flush pushes the local
// journal, and nothing is stored twice.
func TestSharedReceivedRestartAndDataLoss(t *testing.T) {
	srv := redisbed.Start(t, redisbed.Options{})
	ctx := context.Background()
	c := client(t, srv, nil)
	a := newRcvNode(t, c, nil, 30)
	// Written to the local store only, as by a process that died before
	// its push.
	for _, id := range []string{"x", "y"} {
		if _, err := a.local.AddReceived(ctx, receivedReport(id, "google", dayAgo(1), 1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	restarted, err := NewSharedReceived(c, ReceivedConfig{Local: a.local, Now: func() time.Time { return rcvNow }})
	if err != nil {
		t.Fatal(err)
	}
	if err := restarted.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if r := redisIDs(t, srv); !reflect.DeepEqual(r, map[string]bool{"x": true, "y": true}) {
		t.Fatalf("after the first flush Redis holds %v", r)
	}
	srv.Stop()
	srv.Restart() // no AOF: empty
	if r := redisIDs(t, srv); len(r) != 0 {
		t.Fatalf("Redis kept %v", r)
	}
	var ferr error
	for range 100 {
		if ferr = restarted.Flush(ctx); ferr == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	if r := redisIDs(t, srv); !reflect.DeepEqual(r, map[string]bool{"x": true, "y": true}) {
		t.Fatalf("after Redis lost its data the journal was not pushed again: %v", r)
	}
	if n, _ := srv.Do(ctx, "SCARD", "daneguard:rcv:day:"+dayAgo(1)); n != ":2" {
		t.Fatalf("day index has %s members, want 2", n)
	}
}

// TestSharedReceivedRetention: PruneReceived prunes the local store and
// Redis by the same cutoff; Redis' own expiry of a report's keys is the
// end of its retention; a report already past retention is kept locally
// until pruned but not pushed.
func TestSharedReceivedRetention(t *testing.T) {
	srv := redisbed.Start(t, redisbed.Options{})
	ctx := context.Background()
	a := newRcvNode(t, client(t, srv, nil), nil, 3)
	b := newRcvNode(t, client(t, srv, nil), nil, 3)
	// keep_days 3: today and the two days before are kept.
	for _, e := range []struct {
		n   *rcvNode
		id  string
		day string
	}{{a, "old-a", dayAgo(3)}, {b, "old-b", dayAgo(4)}, {a, "kept-a", dayAgo(2)}, {b, "kept-b", dayAgo(0)}} {
		if _, err := e.n.shared.AddReceived(ctx, receivedReport(e.id, "google", e.day, 1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	// Past retention already: not pushed.
	if r := redisIDs(t, srv); !reflect.DeepEqual(r, map[string]bool{"kept-a": true, "kept-b": true}) {
		t.Fatalf("Redis holds %v", r)
	}
	ttl, err := srv.Do(ctx, "PEXPIRETIME", "daneguard:rcv:rep:kept-a")
	if err != nil {
		t.Fatal(err)
	}
	start, _ := tlsrpt.ParseDay(dayAgo(2))
	if want := start.AddDate(0, 0, 3).UnixMilli(); ttl != ":"+strconv.FormatInt(want, 10) {
		t.Fatalf("kept-a expires at %s, want %d (the start of its day plus 3 days)", ttl, want)
	}
	// A report that Redis kept (a node with a longer keep_days pushed
	// it) is pruned too.
	long := newRcvNode(t, client(t, srv, nil), nil, 30)
	if _, err := long.shared.AddReceived(ctx, receivedReport("old-long", "google", dayAgo(3), 1, 0)); err != nil {
		t.Fatal(err)
	}
	cutoff := tlsrpt.RetentionCutoff(rcvNow, 3)
	n, err := a.shared.PruneReceived(ctx, cutoff)
	if err != nil || n != 1 {
		t.Fatalf("prune a: %d %v, want the 1 local old report", n, err)
	}
	if n, err := b.shared.PruneReceived(ctx, cutoff); err != nil || n != 1 {
		t.Fatalf("prune b: %d %v", n, err)
	}
	if r := redisIDs(t, srv); !reflect.DeepEqual(r, map[string]bool{"kept-a": true, "kept-b": true}) {
		t.Fatalf("after pruning Redis holds %v", r)
	}
	got, err := b.shared.ReceivedSince(ctx, dayAgo(40))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(got), []string{"kept-a", "kept-b"}) {
		t.Fatalf("fleet view after pruning: %v", ids(got))
	}
	if n, _ := srv.Do(ctx, "ZCARD", "daneguard:rcv:days"); n != ":2" {
		t.Fatalf("days index has %s days, want 2", n)
	}
}
