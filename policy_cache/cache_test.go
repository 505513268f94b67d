package policycache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fetcher is a FetchFunc source that counts calls and returns scripted
// results.
type fetcher struct {
	calls atomic.Int64
	mu    sync.Mutex
	val   string
	ttl   time.Duration
	err   error
}

func (f *fetcher) set(val string, ttl time.Duration, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.val, f.ttl, f.err = val, ttl, err
}

func (f *fetcher) fetch(context.Context) (string, time.Duration, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.val, f.ttl, f.err
}

func newTestCache(cfg Config) (*Cache[string, string], *fakeClock) {
	clk := newFakeClock()
	cfg.Now = clk.Now
	return New[string, string](cfg), clk
}

// waitUntil yields until cond holds. It waits for goroutines to make
// progress, not for time to pass; the test deadline bounds it.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i%1_000_000 == 999_999 {
			t.Logf("still waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// waitIdle waits until no fetch is in progress.
func waitIdle(t *testing.T, c *Cache[string, string]) {
	t.Helper()
	waitUntil(t, "fetches to finish", func() bool { return c.Stats().InFlight == 0 })
}

func mustGet(t *testing.T, c *Cache[string, string], key string, f FetchFunc[string], want string) {
	t.Helper()
	got, err := c.Get(context.Background(), key, f)
	if err != nil || got != want {
		t.Fatalf("Get(%q) = %q, %v; want %q, nil", key, got, err, want)
	}
}

func TestTTLExact(t *testing.T) {
	c, clk := newTestCache(Config{RefreshWindow: -1})
	f := &fetcher{}
	f.set("v1", 10*time.Second, nil)
	mustGet(t, c, "k", f.fetch, "v1")
	f.set("v2", 10*time.Second, nil)

	clk.Advance(10*time.Second - time.Nanosecond)
	mustGet(t, c, "k", f.fetch, "v1")
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("fetches before expiry = %d, want 1", n)
	}
	clk.Advance(time.Nanosecond) // now == fetchedAt + TTL: must not be served
	mustGet(t, c, "k", f.fetch, "v2")
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("fetches at expiry = %d, want 2", n)
	}
	s := c.Stats()
	if s.Hits != 1 || s.Misses != 2 || s.Fetches != 2 || s.Expired != 1 || s.Entries != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestMaxTTL(t *testing.T) {
	c, clk := newTestCache(Config{MaxTTL: time.Minute})
	f := &fetcher{}
	f.set("v", 24*time.Hour, nil)
	mustGet(t, c, "k", f.fetch, "v")
	clk.Advance(time.Minute - time.Nanosecond)
	mustGet(t, c, "k", f.fetch, "v")
	clk.Advance(time.Nanosecond)
	mustGet(t, c, "k", f.fetch, "v")
	if n := f.calls.Load(); n != 2 {
		t.Errorf("fetches = %d, want 2 (capped at MaxTTL)", n)
	}
	// Set is capped too.
	c.Set("s", "x", time.Hour)
	clk.Advance(time.Minute)
	mustGet(t, c, "s", f.fetch, "v")
}

func TestZeroTTLNotCached(t *testing.T) {
	for _, ttl := range []time.Duration{0, -time.Second} {
		c, _ := newTestCache(Config{})
		f := &fetcher{}
		f.set("v", ttl, nil)
		mustGet(t, c, "k", f.fetch, "v")
		mustGet(t, c, "k", f.fetch, "v")
		if n := f.calls.Load(); n != 2 {
			t.Errorf("ttl %v: fetches = %d, want 2", ttl, n)
		}
		if c.Len() != 0 {
			t.Errorf("ttl %v: Len = %d, want 0", ttl, c.Len())
		}
	}
}

func TestZeroTTLStillCollapses(t *testing.T) {
	c, _ := newTestCache(Config{})
	release := make(chan struct{})
	var calls atomic.Int64
	fetch := func(context.Context) (string, time.Duration, error) {
		calls.Add(1)
		<-release
		return "once", 0, nil
	}
	const n = 10
	results := make(chan string, n)
	for range n {
		go func() {
			v, err := c.Get(context.Background(), "k", fetch)
			if err != nil {
				v = err.Error()
			}
			results <- v
		}()
	}
	waitUntil(t, "callers to join", func() bool { return c.Stats().Collapsed == n-1 })
	close(release)
	for range n {
		if v := <-results; v != "once" {
			t.Errorf("got %q", v)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("fetches = %d, want 1", calls.Load())
	}
	if c.Len() != 0 {
		t.Errorf("zero-TTL value was cached")
	}
}

func TestThousandConcurrentGetsOneFetch(t *testing.T) {
	c, _ := newTestCache(Config{})
	release := make(chan struct{})
	var calls atomic.Int64
	fetch := func(context.Context) (string, time.Duration, error) {
		calls.Add(1)
		<-release
		return "value", time.Minute, nil
	}
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			v, err := c.Get(context.Background(), "_25._tcp.mx.example.com", fetch)
			if err == nil && v != "value" {
				err = fmt.Errorf("got %q", v)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	// Hold the fetch until every caller has joined it.
	waitUntil(t, "1000 callers", func() bool { return c.Stats().Misses == n })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("%d concurrent Gets caused %d fetches, want 1", n, got)
	}
	if s := c.Stats(); s.Collapsed != n-1 || s.Fetches != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestFailureBackoff(t *testing.T) {
	c, clk := newTestCache(Config{})
	f := &fetcher{}
	errServfail := errors.New("SERVFAIL")
	f.set("", time.Hour, errServfail)

	// Failure TTLs: 1s, 2s, 4s, ... doubling, capped at 5 minutes.
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300}
	for i, ttl := range want {
		ttl *= time.Second
		calls := f.calls.Load()
		if _, err := c.Get(context.Background(), "k", f.fetch); !errors.Is(err, errServfail) {
			t.Fatalf("round %d: err = %v", i, err)
		}
		if f.calls.Load() != calls+1 {
			t.Fatalf("round %d: no fetch", i)
		}
		clk.Advance(ttl - time.Nanosecond)
		if _, err := c.Get(context.Background(), "k", f.fetch); !errors.Is(err, errServfail) {
			t.Fatalf("round %d: cached err = %v", i, err)
		}
		// RFC 9520 §3.2: no new query until the cached failure expires.
		if f.calls.Load() != calls+1 {
			t.Fatalf("round %d: failure cached for less than %v", i, ttl)
		}
		clk.Advance(time.Nanosecond)
	}

	// A success resets the backoff.
	f.set("ok", 0, nil)
	mustGet(t, c, "k", f.fetch, "ok")
	f.set("", time.Hour, errServfail)
	if _, err := c.Get(context.Background(), "k", f.fetch); !errors.Is(err, errServfail) {
		t.Fatal(err)
	}
	calls := f.calls.Load()
	clk.Advance(time.Second)
	c.Get(context.Background(), "k", f.fetch)
	if f.calls.Load() != calls+1 {
		t.Errorf("after a success the failure TTL did not restart at 1s")
	}

	s := c.Stats()
	if s.FailuresCached != uint64(len(want))+2 || s.FailureHits != uint64(len(want)) {
		t.Errorf("stats = %+v", s)
	}
}

func TestFailureBackoffForgotten(t *testing.T) {
	c, clk := newTestCache(Config{})
	f := &fetcher{}
	f.set("", 0, errors.New("timeout"))
	c.Get(context.Background(), "k", f.fetch) // cached 1s
	clk.Advance(time.Second)
	c.Get(context.Background(), "k", f.fetch) // cached 2s, remembered until +2s+4s
	clk.Advance(6*time.Second - time.Nanosecond)
	if n := c.Sweep(); n != 0 {
		t.Fatalf("Sweep removed %d entries inside the backoff memory", n)
	}
	clk.Advance(time.Nanosecond)
	if n := c.Sweep(); n != 1 {
		t.Fatalf("Sweep removed %d entries, want 1", n)
	}
	c.Get(context.Background(), "k", f.fetch) // streak forgotten: 1s again
	calls := f.calls.Load()
	clk.Advance(time.Second)
	c.Get(context.Background(), "k", f.fetch)
	if f.calls.Load() != calls+1 {
		t.Errorf("backoff not reset after the failure was forgotten")
	}

	// Without a sweep, the same applies lazily.
	c2, clk2 := newTestCache(Config{})
	c2.Get(context.Background(), "k", f.fetch) // 1s, remembered until +1s+2s
	clk2.Advance(3 * time.Second)
	c2.Get(context.Background(), "k", f.fetch)
	calls = f.calls.Load()
	clk2.Advance(time.Second)
	c2.Get(context.Background(), "k", f.fetch)
	if f.calls.Load() != calls+1 {
		t.Errorf("lazy: backoff continued after the memory window")
	}
}

func TestFailureTTLLimits(t *testing.T) {
	cases := []struct {
		name     string
		min, max time.Duration
		wantMin  time.Duration
		wantMax  time.Duration
	}{
		{"defaults", 0, 0, time.Second, 5 * time.Minute},
		{"min below 1s", 100 * time.Millisecond, 0, time.Second, 5 * time.Minute},
		{"max above 5m", 0, time.Hour, time.Second, 5 * time.Minute},
		{"min above max", 10 * time.Minute, time.Minute, 5 * time.Minute, 5 * time.Minute},
		{"custom", 5 * time.Second, time.Minute, 5 * time.Second, time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, clk := newTestCache(Config{MinFailureTTL: tc.min, MaxFailureTTL: tc.max})
			f := &fetcher{}
			f.set("", 0, errors.New("fail"))
			c.Get(context.Background(), "k", f.fetch)
			clk.Advance(tc.wantMin - time.Nanosecond)
			c.Get(context.Background(), "k", f.fetch)
			if f.calls.Load() != 1 {
				t.Fatalf("first failure cached for less than %v", tc.wantMin)
			}
			clk.Advance(time.Nanosecond)
			// Ask every MinFailureTTL (every failure TTL is a multiple of
			// it) until the TTL has certainly reached the cap, noting the
			// time of the last fetch.
			start := clk.Now()
			var lastFetch time.Time
			for clk.Now().Before(start.Add(12 * tc.wantMax)) {
				calls := f.calls.Load()
				c.Get(context.Background(), "k", f.fetch)
				if f.calls.Load() != calls {
					lastFetch = clk.Now()
				}
				clk.Advance(tc.wantMin)
			}
			calls := f.calls.Load()
			clk.Advance(lastFetch.Add(tc.wantMax - time.Nanosecond).Sub(clk.Now()))
			c.Get(context.Background(), "k", f.fetch)
			if f.calls.Load() != calls {
				t.Fatalf("capped failure cached for less than %v", tc.wantMax)
			}
			clk.Advance(time.Nanosecond)
			c.Get(context.Background(), "k", f.fetch)
			if f.calls.Load() != calls+1 {
				t.Fatalf("capped failure cached for more than %v", tc.wantMax)
			}
		})
	}
}

type optOutErr struct{ noCache bool }

func (e optOutErr) Error() string { return "opt-out error" }
func (e optOutErr) NoCache() bool { return e.noCache }

func TestUncacheableErrors(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		cached bool
	}{
		{"plain", errors.New("SERVFAIL"), true},
		{"NoCache wrapper", NoCache(errors.New("local resolver restarting")), false},
		{"wrapped NoCache", fmt.Errorf("lookup: %w", NoCache(errors.New("x"))), false},
		{"NoCache() true", optOutErr{true}, false},
		{"NoCache() false", optOutErr{false}, true},
		{"canceled", fmt.Errorf("lookup: %w", context.Canceled), false},
		{"foreign deadline", fmt.Errorf("lookup: %w", context.DeadlineExceeded), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestCache(Config{})
			f := &fetcher{}
			f.set("", time.Hour, tc.err)
			_, err1 := c.Get(context.Background(), "k", f.fetch)
			_, err2 := c.Get(context.Background(), "k", f.fetch)
			if err1 != tc.err || err2 != tc.err {
				t.Errorf("errors = %v, %v; want %v", err1, err2, tc.err)
			}
			wantCalls := int64(2)
			if tc.cached {
				wantCalls = 1
			}
			if got := f.calls.Load(); got != wantCalls {
				t.Errorf("fetches = %d, want %d", got, wantCalls)
			}
		})
	}
	if NoCache(nil) != nil {
		t.Error("NoCache(nil) != nil")
	}
	base := errors.New("base")
	if w := NoCache(base); !errors.Is(w, base) || w.Error() != "base" {
		t.Errorf("NoCache wrapper hides its error: %v", w)
	}
}

func TestFetchTimeoutIsCachedFailure(t *testing.T) {
	c, _ := newTestCache(Config{FetchTimeout: time.Nanosecond})
	var calls atomic.Int64
	fetch := func(ctx context.Context) (string, time.Duration, error) {
		calls.Add(1)
		<-ctx.Done() // an unresponsive server
		return "", 0, fmt.Errorf("query: %w", ctx.Err())
	}
	for range 2 {
		if _, err := c.Get(context.Background(), "k", fetch); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("fetches = %d: a fetch timeout was not cached (RFC 9520 §2.3)", calls.Load())
	}
}

func TestCallerCancellation(t *testing.T) {
	c, _ := newTestCache(Config{})
	release := make(chan struct{})
	started := make(chan struct{})
	var calls atomic.Int64
	fetch := func(ctx context.Context) (string, time.Duration, error) {
		calls.Add(1)
		close(started)
		<-release
		if ctx.Err() != nil {
			return "", 0, ctx.Err()
		}
		return "value", time.Minute, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, "k", fetch)
		firstErr <- err
	}()
	<-started
	secondVal := make(chan string, 1)
	go func() {
		v, err := c.Get(context.Background(), "k", fetch)
		if err != nil {
			v = err.Error()
		}
		secondVal <- v
	}()
	waitUntil(t, "second caller", func() bool { return c.Stats().Collapsed == 1 })

	// The first caller gives up: it returns at once, the fetch goes on.
	cancel()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled caller got %v", err)
	}
	close(release)
	if v := <-secondVal; v != "value" {
		t.Fatalf("second caller got %q", v)
	}
	mustGet(t, c, "k", fetch, "value")
	if calls.Load() != 1 {
		t.Errorf("fetches = %d, want 1", calls.Load())
	}

	// A caller whose context is already done gets its error, not a fetch
	// failure, and nothing is cached.
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	f := &fetcher{}
	f.set("late", time.Minute, nil)
	if _, err := c.Get(done, "other", f.fetch); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if f.calls.Load() != 0 || c.Stats().InFlight != 0 {
		t.Errorf("a fetch was started for a caller already gone")
	}
	mustGet(t, c, "other", f.fetch, "late")
	// A hit is served whatever the state of ctx.
	if v, err := c.Get(done, "other", f.fetch); err != nil || v != "late" {
		t.Errorf("hit with a done ctx = %q, %v", v, err)
	}
	if f.calls.Load() != 1 {
		t.Errorf("fetches for other = %d, want 1", f.calls.Load())
	}
}

func TestFetchSeesCallerValuesNotCancellation(t *testing.T) {
	c, _ := newTestCache(Config{})
	type ctxKey struct{}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "trace-42"))
	started := make(chan struct{})
	canceled := make(chan struct{})
	got := make(chan string, 1)
	fetch := func(fctx context.Context) (string, time.Duration, error) {
		close(started)
		<-canceled // the caller has given up by now
		v, _ := fctx.Value(ctxKey{}).(string)
		if fctx.Err() != nil {
			v += " canceled"
		}
		if _, ok := fctx.Deadline(); !ok {
			v += " no deadline"
		}
		got <- v
		return v, time.Minute, nil
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, "k", fetch)
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("caller err = %v", err)
	}
	close(canceled)
	if v := <-got; v != "trace-42" {
		t.Errorf("fetch context: %q", v)
	}
	waitIdle(t, c)
	// The fetch completed for nobody, and its value is cached.
	if v, err := c.Get(context.Background(), "k", nil); err != nil || v != "trace-42" {
		t.Errorf("Get after = %q, %v", v, err)
	}
}

func TestRefreshAhead(t *testing.T) {
	c, clk := newTestCache(Config{})
	f := &fetcher{}
	f.set("v1", 100*time.Second, nil)
	mustGet(t, c, "k", f.fetch, "v1")
	f.set("v2", 100*time.Second, nil)

	clk.Advance(90*time.Second - time.Nanosecond)
	mustGet(t, c, "k", f.fetch, "v1")
	waitIdle(t, c)
	if f.calls.Load() != 1 {
		t.Fatalf("refresh started before the window")
	}
	clk.Advance(time.Nanosecond) // last 10% of the lifetime
	mustGet(t, c, "k", f.fetch, "v1")
	// More hits in the window do not start more refreshes.
	for range 10 {
		mustGetOneOf(t, c, "k", f.fetch, "v1", "v2")
	}
	waitIdle(t, c)
	if f.calls.Load() != 2 {
		t.Fatalf("fetches = %d, want 2", f.calls.Load())
	}
	mustGet(t, c, "k", f.fetch, "v2")
	// The refreshed entry lives from the refresh: t0+90s+100s.
	clk.Advance(100*time.Second - time.Nanosecond)
	if v, _ := c.Get(context.Background(), "k", nil); v != "v2" {
		t.Errorf("refreshed value expired early: %q", v)
	}
	clk.Advance(time.Nanosecond)
	f.set("v3", 0, nil)
	mustGet(t, c, "k", f.fetch, "v3")
	if s := c.Stats(); s.Refreshes != 1 {
		t.Errorf("Refreshes = %d, want 1", s.Refreshes)
	}
}

func mustGetOneOf(t *testing.T, c *Cache[string, string], key string, f FetchFunc[string], want ...string) {
	t.Helper()
	got, err := c.Get(context.Background(), key, f)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	for _, w := range want {
		if got == w {
			return
		}
	}
	t.Fatalf("Get(%q) = %q, want one of %q", key, got, want)
}

func TestRefreshAheadFailureKeepsValue(t *testing.T) {
	c, clk := newTestCache(Config{})
	f := &fetcher{}
	f.set("v1", 100*time.Second, nil)
	mustGet(t, c, "k", f.fetch, "v1")
	f.set("", time.Hour, errors.New("SERVFAIL"))
	clk.Advance(95 * time.Second)
	mustGet(t, c, "k", f.fetch, "v1") // starts a refresh, which fails
	waitIdle(t, c)
	for range 5 {
		mustGet(t, c, "k", f.fetch, "v1") // still valid; no new refresh
	}
	waitIdle(t, c)
	if f.calls.Load() != 2 {
		t.Fatalf("fetches = %d, want 2 (one failed refresh)", f.calls.Load())
	}
	clk.Advance(5 * time.Second) // expired: never served beyond
	if _, err := c.Get(context.Background(), "k", f.fetch); err == nil {
		t.Fatal("expired value served after a failed refresh")
	}
	if s := c.Stats(); s.FetchErrors != 2 || s.FailuresCached != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestRefreshAheadLimits(t *testing.T) {
	t.Run("short lifetime", func(t *testing.T) {
		c, clk := newTestCache(Config{})
		f := &fetcher{}
		f.set("v", 9*time.Second, nil) // below MinRefreshLifetime
		mustGet(t, c, "k", f.fetch, "v")
		clk.Advance(9*time.Second - time.Nanosecond)
		mustGet(t, c, "k", f.fetch, "v")
		waitIdle(t, c)
		if f.calls.Load() != 1 {
			t.Error("short-lived entry was refreshed")
		}
	})
	t.Run("disabled", func(t *testing.T) {
		c, clk := newTestCache(Config{RefreshWindow: -1})
		f := &fetcher{}
		f.set("v", time.Hour, nil)
		mustGet(t, c, "k", f.fetch, "v")
		clk.Advance(time.Hour - time.Nanosecond)
		mustGet(t, c, "k", f.fetch, "v")
		waitIdle(t, c)
		if f.calls.Load() != 1 {
			t.Error("refresh with RefreshWindow < 0")
		}
	})
	t.Run("custom window", func(t *testing.T) {
		c, clk := newTestCache(Config{RefreshWindow: 0.9, MinRefreshLifetime: time.Second})
		f := &fetcher{}
		f.set("v", 10*time.Second, nil)
		mustGet(t, c, "k", f.fetch, "v")
		clk.Advance(5*time.Second - time.Nanosecond) // window capped at 50%
		mustGet(t, c, "k", f.fetch, "v")
		waitIdle(t, c)
		if f.calls.Load() != 1 {
			t.Fatal("refresh before the capped window")
		}
		clk.Advance(time.Nanosecond)
		mustGet(t, c, "k", f.fetch, "v")
		waitIdle(t, c)
		if f.calls.Load() != 2 {
			t.Error("no refresh in the window")
		}
	})
	t.Run("failures are not refreshed early", func(t *testing.T) {
		c, clk := newTestCache(Config{MinFailureTTL: 5 * time.Minute})
		f := &fetcher{}
		f.set("", 0, errors.New("SERVFAIL"))
		c.Get(context.Background(), "k", f.fetch)
		clk.Advance(5*time.Minute - time.Nanosecond)
		c.Get(context.Background(), "k", f.fetch)
		waitIdle(t, c)
		if f.calls.Load() != 1 {
			t.Error("cached failure re-queried before expiry (RFC 9520 §3.2)")
		}
	})
}

func TestLRUEviction(t *testing.T) {
	c, _ := newTestCache(Config{MaxEntries: 3})
	f := &fetcher{}
	f.set("v", time.Hour, nil)
	for _, k := range []string{"a", "b", "c"} {
		mustGet(t, c, k, f.fetch, "v")
	}
	mustGet(t, c, "a", f.fetch, "v") // a is now most recent
	mustGet(t, c, "d", f.fetch, "v") // evicts b
	if c.Len() != 3 {
		t.Fatalf("Len = %d, want 3", c.Len())
	}
	calls := f.calls.Load()
	for _, k := range []string{"a", "c", "d"} {
		mustGet(t, c, k, f.fetch, "v")
	}
	if f.calls.Load() != calls {
		t.Errorf("a recently used entry was evicted")
	}
	mustGet(t, c, "b", f.fetch, "v")
	if f.calls.Load() != calls+1 {
		t.Errorf("b was not evicted")
	}
	if s := c.Stats(); s.Evictions != 2 || s.Entries != 3 {
		t.Errorf("stats = %+v", s)
	}
}

func TestInvalidatePurgeSet(t *testing.T) {
	c, clk := newTestCache(Config{})
	f := &fetcher{}
	f.set("v", time.Hour, nil)
	mustGet(t, c, "a", f.fetch, "v")
	mustGet(t, c, "b", f.fetch, "v")
	c.Invalidate("a")
	c.Invalidate("missing")
	if c.Len() != 1 {
		t.Fatalf("Len after Invalidate = %d", c.Len())
	}
	mustGet(t, c, "a", f.fetch, "v")
	if f.calls.Load() != 3 {
		t.Errorf("Invalidate did not force a fetch")
	}
	c.Purge()
	if c.Len() != 0 {
		t.Fatalf("Len after Purge = %d", c.Len())
	}

	c.Set("s", "primed", time.Minute)
	mustGet(t, c, "s", f.fetch, "primed")
	clk.Advance(time.Minute)
	mustGet(t, c, "s", f.fetch, "v")
	c.Set("s", "ignored", 0)
	if c.Len() != 0 {
		t.Errorf("Set with TTL 0 left an entry")
	}

	// Invalidate, Purge and Set during a fetch: the waiters get the
	// result, the cache does not keep it.
	for _, op := range []func(){
		func() { c.Invalidate("k") },
		func() { c.Purge() },
		func() { c.Set("k", "set", time.Hour) },
	} {
		c.Purge()
		release := make(chan struct{})
		fetch := func(context.Context) (string, time.Duration, error) {
			<-release
			return "stale", time.Hour, nil
		}
		got := make(chan string, 1)
		go func() {
			v, _ := c.Get(context.Background(), "k", fetch)
			got <- v
		}()
		waitUntil(t, "fetch start", func() bool { return c.Stats().InFlight == 1 })
		op()
		close(release)
		if v := <-got; v != "stale" {
			t.Errorf("waiter got %q", v)
		}
		if v, _ := c.Get(context.Background(), "k", f.fetch); v == "stale" {
			t.Errorf("result of a forgotten fetch was cached")
		}
	}
}

func TestFetchPanicAndNilFetch(t *testing.T) {
	c, _ := newTestCache(Config{})
	_, err := c.Get(context.Background(), "k", func(context.Context) (string, time.Duration, error) {
		panic("boom")
	})
	if !errors.Is(err, ErrFetchPanicked) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("err = %v", err)
	}
	if _, err := c.Get(context.Background(), "nil", nil); err == nil {
		t.Error("nil FetchFunc: no error")
	}
	// A hit needs no fetch function.
	c.Set("x", "v", time.Minute)
	mustGet(t, c, "x", nil, "v")
}

func TestSweep(t *testing.T) {
	c, clk := newTestCache(Config{})
	for i := range 3000 {
		c.Set(fmt.Sprint("short", i), "v", time.Minute)
	}
	c.Set("long", "v", time.Hour)
	clk.Advance(time.Minute - time.Nanosecond)
	if n := c.Sweep(); n != 0 {
		t.Fatalf("Sweep removed %d live entries", n)
	}
	clk.Advance(time.Nanosecond)
	if n := c.Sweep(); n != 3000 {
		t.Fatalf("Sweep removed %d, want 3000", n)
	}
	if c.Len() != 1 || c.Stats().Expired != 3000 {
		t.Errorf("after Sweep: Len %d, stats %+v", c.Len(), c.Stats())
	}
}

func TestRunSweeper(t *testing.T) {
	c, clk := newTestCache(Config{})
	c.Set("a", "v", time.Second)
	clk.Advance(time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c.RunSweeper(ctx, time.Millisecond)
		close(done)
	}()
	waitUntil(t, "sweeper", func() bool { return c.Len() == 0 })
	cancel()
	<-done
}

func TestNegativeTTL(t *testing.T) {
	cases := []struct {
		ttl, minimum uint32
		limit        time.Duration
		want         time.Duration
	}{
		{3600, 300, 0, 300 * time.Second},
		{60, 300, 0, 60 * time.Second},
		{86400, 86400, 0, 3 * time.Hour},
		{86400, 86400, time.Hour, time.Hour},
		{0, 300, 0, 0},
		{1 << 31, 300, 0, 0},
		{300, 0xffffffff, 0, 0},
		{1<<31 - 1, 1<<31 - 1, 100 * 365 * 24 * time.Hour, (1<<31 - 1) * time.Second},
	}
	for _, tc := range cases {
		if got := NegativeTTL(tc.ttl, tc.minimum, tc.limit); got != tc.want {
			t.Errorf("NegativeTTL(%d, %d, %v) = %v, want %v", tc.ttl, tc.minimum, tc.limit, got, tc.want)
		}
	}
}

func TestDefaultClock(t *testing.T) {
	c := New[string, []byte](Config{})
	calls := 0
	fetch := func(context.Context) ([]byte, time.Duration, error) {
		calls++
		return []byte("x"), time.Hour, nil
	}
	for range 3 {
		if v, err := c.Get(context.Background(), "k", fetch); err != nil || string(v) != "x" {
			t.Fatalf("Get = %q, %v", v, err)
		}
	}
	if calls != 1 {
		t.Errorf("fetches = %d, want 1", calls)
	}
}

func TestCollector(t *testing.T) {
	c, _ := newTestCache(Config{})
	f := &fetcher{}
	f.set("v", time.Hour, nil)
	mustGet(t, c, "a", f.fetch, "v")
	mustGet(t, c, "a", f.fetch, "v")
	mustGet(t, c, "a", f.fetch, "v")
	f.set("", 0, errors.New("fail"))
	c.Get(context.Background(), "b", f.fetch)
	c.Get(context.Background(), "b", f.fetch)

	other := New[int, int](Config{})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector("maddy", "cache", "tlsa", c))
	reg.MustRegister(NewCollector("maddy", "cache", "mx", other))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			label := ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "cache" {
					label = lp.GetValue()
				}
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			got[mf.GetName()+"{"+label+"}"] = v
		}
	}
	want := map[string]float64{
		"maddy_cache_hits_total{tlsa}":            3,
		"maddy_cache_failure_hits_total{tlsa}":    1,
		"maddy_cache_misses_total{tlsa}":          2,
		"maddy_cache_collapsed_total{tlsa}":       0,
		"maddy_cache_fetches_total{tlsa}":         2,
		"maddy_cache_fetch_errors_total{tlsa}":    1,
		"maddy_cache_failures_cached_total{tlsa}": 1,
		"maddy_cache_refreshes_total{tlsa}":       0,
		"maddy_cache_evictions_total{tlsa}":       0,
		"maddy_cache_expired_total{tlsa}":         0,
		"maddy_cache_entries{tlsa}":               2,
		"maddy_cache_inflight_fetches{tlsa}":      0,
		"maddy_cache_hits_total{mx}":              0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if len(got) != 2*len(metricDefs) {
		t.Errorf("%d series, want %d", len(got), 2*len(metricDefs))
	}
}

// TestConcurrentNeverServesExpired hammers a cache from many goroutines
// in rounds, moving the clock between rounds (with no fetch in progress),
// and checks that no value is ever served at or after its expiry, that
// values never cross keys, and that the size bound holds.
func TestConcurrentNeverServesExpired(t *testing.T) {
	clk := newFakeClock()
	type val struct {
		key     string
		expires time.Time
	}
	c := New[string, val](Config{Now: clk.Now, MaxEntries: 16, MinRefreshLifetime: time.Second, RefreshWindow: 0.5})
	rng := rand.New(rand.NewPCG(1, 7))
	for round := range 200 {
		now := clk.Now()
		var wg sync.WaitGroup
		for g := range 8 {
			seed := rng.Uint64()
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(g)))
				for range 30 {
					key := fmt.Sprint("k", rng.IntN(24))
					ttl := time.Duration(1+rng.IntN(20)) * time.Second
					fail := rng.IntN(10) == 0
					fetch := func(context.Context) (val, time.Duration, error) {
						if fail {
							return val{}, 0, errors.New("fail")
						}
						return val{key, clk.Now().Add(ttl)}, ttl, nil
					}
					v, err := c.Get(context.Background(), key, fetch)
					if err == nil {
						if v.key != key {
							t.Errorf("Get(%q) returned the value of %q", key, v.key)
						}
						if !now.Before(v.expires) {
							t.Errorf("round %d: Get(%q) at %v served a value expired at %v", round, key, now, v.expires)
						}
					}
					switch rng.IntN(40) {
					case 0:
						c.Invalidate(key)
					case 1:
						c.Sweep()
					}
				}
			})
		}
		wg.Wait()
		waitUntil(t, "fetches to finish", func() bool { return c.Stats().InFlight == 0 })
		if c.Len() > 16 {
			t.Fatalf("Len %d exceeds MaxEntries", c.Len())
		}
		clk.Advance(time.Duration(rng.IntN(4000)) * time.Millisecond)
	}
	if s := c.Stats(); s.Hits == 0 || s.Refreshes == 0 || s.Evictions == 0 || s.FailuresCached == 0 {
		t.Errorf("stress test did not exercise every path: %+v", s)
	}
}

// TestFresh: Fresh tells a cached, unexpired key (value or failure) from a
// missing or expired one, and counts as no lookup.
func TestFresh(t *testing.T) {
	c, clk := newTestCache(Config{})
	f := &fetcher{}
	f.set("v", time.Minute, nil)
	if c.Fresh("a") {
		t.Fatal("Fresh on an empty cache")
	}
	mustGet(t, c, "a", f.fetch, "v")
	before := c.Stats()
	if !c.Fresh("a") || c.Fresh("b") {
		t.Fatalf("Fresh(a)=%v Fresh(b)=%v, want true, false", c.Fresh("a"), c.Fresh("b"))
	}
	if after := c.Stats(); after.Hits != before.Hits || after.Misses != before.Misses {
		t.Fatalf("Fresh counted as a lookup: %+v -> %+v", before, after)
	}
	clk.Advance(time.Minute)
	if c.Fresh("a") {
		t.Fatal("Fresh on an expired entry")
	}
}
