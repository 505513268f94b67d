package policycache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Defaults and hard limits of [Config].
const (
	// DefaultMaxEntries is the default bound on the number of entries.
	DefaultMaxEntries = 100_000
	// DefaultMaxTTL is the default cap on how long a value is kept,
	// whatever TTL its fetcher reports.
	DefaultMaxTTL = 24 * time.Hour
	// DefaultMinFailureTTL is the default, and the smallest allowed,
	// time a failure is cached (RFC 9520 §3.2: at least 1 second).
	DefaultMinFailureTTL = time.Second
	// DefaultMaxFailureTTL is the default, and the largest allowed, time a
	// failure is cached (RFC 9520 §3.2: not longer than 5 minutes).
	DefaultMaxFailureTTL = 5 * time.Minute
	// DefaultFetchTimeout bounds each fetch unless configured otherwise.
	DefaultFetchTimeout = 30 * time.Second
	// DefaultRefreshWindow is the default fraction of an entry's lifetime,
	// at its end, during which a hit starts a background refresh.
	DefaultRefreshWindow = 0.1
	// DefaultMinRefreshLifetime is the default shortest lifetime for which
	// refresh-ahead is used; shorter-lived entries simply expire.
	DefaultMinRefreshLifetime = 10 * time.Second

	maxRefreshWindow = 0.5
	sweepBatch       = 1024
)

// ErrFetchPanicked is wrapped by the error a [Cache] reports when a
// [FetchFunc] panics. The panic is recovered, because the fetch runs in a
// goroutine of its own where it would otherwise end the process, and is
// treated as a failure of that fetch.
var ErrFetchPanicked = errors.New("policycache: fetch function panicked")

// errNilFetch is returned for a miss when no FetchFunc was given.
var errNilFetch = errors.New("policycache: Get called with a nil FetchFunc")

// FetchFunc produces a value for a missing or expired key, and the time
// it may be cached. For data derived from DNS the TTL is the smallest TTL
// of the records it was derived from; for a negative answer it is the
// negative-caching TTL from the SOA record (RFC 2308 §5, see
// [NegativeTTL]). A TTL of zero or less means the value is handed to the
// callers waiting for this fetch but not cached.
//
// A returned error is cached as a resolution failure (RFC 9520 §3.2),
// unless it opts out; see [Cache.Get].
//
// ctx is not the caller's context: it carries the caller's values but not
// its cancellation, and is bounded by [Config.FetchTimeout]. The function
// must honour it.
type FetchFunc[V any] func(ctx context.Context) (value V, ttl time.Duration, err error)

// Config configures a [Cache]. The zero value gives the defaults.
type Config struct {
	// MaxEntries bounds the number of entries (values and cached
	// failures). When full, the least recently used entry is evicted.
	// Zero or less means DefaultMaxEntries.
	MaxEntries int

	// MaxTTL caps the lifetime of a cached value. Zero or less means
	// DefaultMaxTTL.
	MaxTTL time.Duration

	// MinFailureTTL is how long a first failure is cached. Zero means
	// DefaultMinFailureTTL; it is kept between one second and five
	// minutes (RFC 9520 §3.2).
	MinFailureTTL time.Duration

	// MaxFailureTTL caps the failure TTL as it doubles for a key that
	// keeps failing. Zero means DefaultMaxFailureTTL; values above five
	// minutes are lowered to five minutes (RFC 9520 §3.2), values below
	// MinFailureTTL raised to it.
	MaxFailureTTL time.Duration

	// FetchTimeout bounds every fetch, through the deadline of the
	// context the fetch function receives (measured by the real clock,
	// not Now). Zero or less means DefaultFetchTimeout.
	FetchTimeout time.Duration

	// RefreshWindow is the fraction of an entry's lifetime, at its end,
	// during which a hit starts a background refresh. Zero means
	// DefaultRefreshWindow; a negative value disables refresh-ahead;
	// values above 0.5 are lowered to 0.5.
	RefreshWindow float64

	// MinRefreshLifetime is the shortest entry lifetime for which
	// refresh-ahead is used. Zero or less means
	// DefaultMinRefreshLifetime.
	MinRefreshLifetime time.Duration

	// Now returns the current time. Defaults to time.Now, whose monotonic
	// reading makes expiry immune to wall-clock steps.
	Now func() time.Time
}

// normalize applies defaults and the RFC 9520 limits.
func (cfg Config) normalize() Config {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.MaxFailureTTL <= 0 || cfg.MaxFailureTTL > DefaultMaxFailureTTL {
		cfg.MaxFailureTTL = DefaultMaxFailureTTL // RFC 9520 §3.2: at most 5 min
	}
	// RFC 9520 §3.2: at least 1 s, at most 5 min.
	cfg.MinFailureTTL = min(max(cfg.MinFailureTTL, DefaultMinFailureTTL), DefaultMaxFailureTTL)
	if cfg.MaxFailureTTL < cfg.MinFailureTTL {
		cfg.MaxFailureTTL = cfg.MinFailureTTL
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	switch {
	case cfg.RefreshWindow == 0:
		cfg.RefreshWindow = DefaultRefreshWindow
	case cfg.RefreshWindow < 0:
		cfg.RefreshWindow = 0
	case cfg.RefreshWindow > maxRefreshWindow:
		cfg.RefreshWindow = maxRefreshWindow
	}
	if cfg.MinRefreshLifetime <= 0 {
		cfg.MinRefreshLifetime = DefaultMinRefreshLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg
}

// entry is one cached result. Entries are replaced, never changed, except
// for the refreshing flag, which is guarded by Cache.mu.
type entry[V any] struct {
	val V
	err error
	// The entry is served while now < expires.
	expires time.Time
	// A hit at or after refreshAt starts a refresh; zero means never.
	refreshAt time.Time
	// failTTL is the failure TTL this entry was cached with; zero for
	// values.
	failTTL time.Duration
	// refreshing is set once a refresh has been started for this entry,
	// so that a failing refresh is not retried on every hit.
	refreshing bool
}

// call is one fetch in progress, shared by every caller that wants it.
type call[V any] struct {
	done chan struct{}
	val  V // written before done is closed
	err  error
	// prevFailTTL is the failure TTL of the key's last failure if it is
	// still remembered; the backoff continues from it.
	prevFailTTL time.Duration
	// forgotten is set (under Cache.mu) by Invalidate, Purge and Set: the
	// result is still delivered to its waiters but not cached.
	forgotten bool
}

// Stats is a snapshot of a cache's counters. Counters only grow; Entries
// and InFlight are current values.
type Stats struct {
	// Hits counts Get calls answered from the cache, cached failures
	// included.
	Hits uint64
	// FailureHits counts the Hits that returned a cached failure.
	FailureHits uint64
	// Misses counts Get calls that had to wait for a fetch.
	Misses uint64
	// Collapsed counts the Misses that joined a fetch already in progress
	// instead of starting one.
	Collapsed uint64
	// Fetches counts fetches started, refreshes included.
	Fetches uint64
	// FetchErrors counts fetches that returned an error.
	FetchErrors uint64
	// FailuresCached counts errors stored as cached failures.
	FailuresCached uint64
	// Refreshes counts background refreshes started by refresh-ahead.
	Refreshes uint64
	// Evictions counts entries evicted to respect MaxEntries.
	Evictions uint64
	// Expired counts expired entries removed, on access or by Sweep.
	Expired uint64
	// Entries is the number of entries held, including expired ones not
	// yet removed.
	Entries int
	// InFlight is the number of fetches in progress.
	InFlight int
}

type counters struct {
	hits, failureHits, misses, collapsed, fetches, fetchErrors,
	failuresCached, refreshes, evictions, expired atomic.Uint64
}

// Cache is a bounded, concurrency-safe cache with exact TTLs, failure
// caching, collapsing of concurrent fetches and refresh-ahead. See the
// package documentation for the rules it follows.
type Cache[K comparable, V any] struct {
	cfg   Config
	stats counters

	mu       sync.Mutex
	lru      *simplelru.LRU[K, *entry[V]]
	inflight map[K]*call[V]
}

// New returns an empty cache configured by cfg.
func New[K comparable, V any](cfg Config) *Cache[K, V] {
	cfg = cfg.normalize()
	l, err := simplelru.NewLRU[K, *entry[V]](cfg.MaxEntries, nil)
	if err != nil {
		// Only possible for a non-positive size, which normalize rules out.
		panic("policycache: " + err.Error())
	}
	return &Cache[K, V]{cfg: cfg, lru: l, inflight: make(map[K]*call[V])}
}

// Get returns the value cached for key, or fetches it.
//
// A cached value is returned until the instant fetch time + min(TTL,
// MaxTTL) and never at or after it. A cached failure is returned, error
// and all, for its failure TTL (RFC 9520 §3.2). Otherwise fetch is called,
// once for all concurrent callers of the same key, in a goroutine of its
// own with a context that keeps ctx's values but not its cancellation, and
// times out after FetchTimeout. Get returns as soon as the fetch finishes
// or ctx is done, whichever comes first; in the latter case it returns
// ctx.Err() and the fetch continues for the others. A miss with a ctx
// that is already done returns ctx.Err() without starting a fetch.
//
// An error returned by fetch is cached, except:
//   - an error whose chain holds a value with a method NoCache() bool
//     returning true (see [NoCache]);
//   - context.Canceled, and context.DeadlineExceeded unless it came from
//     FetchTimeout expiring (a timeout of the lookup is a resolution
//     failure, RFC 9520 §2.3; a deadline from elsewhere, such as a
//     caller's context captured by the fetch function, is not);
//   - a failed refresh-ahead while the previous value is still valid: the
//     value continues to be served until it expires.
//
// Values and errors are shared between callers and must not be modified.
// A hit does not allocate, provided fetch is not a closure allocated for
// the call (the function may escape to a goroutine on a miss).
func (c *Cache[K, V]) Get(ctx context.Context, key K, fetch FetchFunc[V]) (V, error) {
	now := c.cfg.Now()
	c.mu.Lock()
	e, ok := c.lru.Get(key)
	if ok && now.Before(e.expires) {
		if !e.refreshAt.IsZero() && !e.refreshing && !now.Before(e.refreshAt) && fetch != nil {
			if _, busy := c.inflight[key]; !busy {
				e.refreshing = true
				c.stats.refreshes.Add(1)
				c.startLocked(ctx, key, fetch, 0)
			}
		}
		val, err := e.val, e.err
		c.mu.Unlock()
		c.stats.hits.Add(1)
		if err != nil {
			c.stats.failureHits.Add(1)
		}
		return val, err
	}

	c.stats.misses.Add(1)
	cl, busy := c.inflight[key]
	if busy {
		c.stats.collapsed.Add(1)
	} else {
		if fetch == nil || ctx.Err() != nil {
			// Nothing to fetch with, or nobody to fetch for.
			c.mu.Unlock()
			var zero V
			if fetch == nil {
				return zero, errNilFetch
			}
			return zero, ctx.Err()
		}
		var prevFail time.Duration
		if ok {
			if e.failTTL > 0 && now.Before(c.retainUntil(e)) {
				prevFail = e.failTTL
			} else if e.failTTL == 0 {
				// An expired value carries nothing worth keeping.
				c.lru.Remove(key)
				c.stats.expired.Add(1)
			}
		}
		cl = c.startLocked(ctx, key, fetch, prevFail)
	}
	c.mu.Unlock()
	return c.wait(ctx, cl)
}

// wait blocks until cl finishes or ctx is done.
func (c *Cache[K, V]) wait(ctx context.Context, cl *call[V]) (V, error) {
	done := ctx.Done()
	if done == nil {
		<-cl.done
		return cl.val, cl.err
	}
	select {
	case <-cl.done:
		return cl.val, cl.err
	case <-done:
		select {
		case <-cl.done: // finished at the same moment: use the result
			return cl.val, cl.err
		default:
			var zero V
			return zero, ctx.Err()
		}
	}
}

// startLocked registers and launches a fetch for key. c.mu must be held.
func (c *Cache[K, V]) startLocked(ctx context.Context, key K, fetch FetchFunc[V], prevFail time.Duration) *call[V] {
	cl := &call[V]{done: make(chan struct{}), prevFailTTL: prevFail}
	c.inflight[key] = cl
	c.stats.fetches.Add(1)
	go c.run(context.WithoutCancel(ctx), key, cl, fetch)
	return cl
}

// run performs one fetch, records its result and wakes the waiters.
func (c *Cache[K, V]) run(parent context.Context, key K, cl *call[V], fetch FetchFunc[V]) {
	start := c.cfg.Now()
	fctx, cancel := context.WithTimeout(parent, c.cfg.FetchTimeout)
	val, ttl, err := callFetch(fctx, fetch)
	timedOut := fctx.Err() != nil
	cancel()
	end := c.cfg.Now()

	c.mu.Lock()
	if c.inflight[key] == cl {
		delete(c.inflight, key)
	}
	if !cl.forgotten {
		c.recordLocked(key, cl, start, end, val, ttl, err, timedOut)
	}
	c.mu.Unlock()

	cl.val, cl.err = val, err
	close(cl.done)
}

// callFetch calls fetch, turning a panic into an error.
func callFetch[V any](ctx context.Context, fetch FetchFunc[V]) (val V, ttl time.Duration, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero V
			val, ttl, err = zero, 0, fmt.Errorf("%w: %v", ErrFetchPanicked, r)
		}
	}()
	return fetch(ctx)
}

// recordLocked stores the outcome of a fetch. c.mu must be held.
func (c *Cache[K, V]) recordLocked(key K, cl *call[V], start, end time.Time, val V, ttl time.Duration, err error, timedOut bool) {
	if err != nil {
		c.stats.fetchErrors.Add(1)
		if !cacheable(err, timedOut) {
			return
		}
		if cur, ok := c.lru.Peek(key); ok && cur.failTTL == 0 && end.Before(cur.expires) {
			// A refresh-ahead failed but the value it was refreshing is
			// still valid: keep serving it until it expires.
			return
		}
		// RFC 9520 §3.2: cache the failure, backing off exponentially
		// while the key keeps failing. The failure TTL counts from the
		// end of the fetch so that a slow failure (a timeout) is still
		// cached for the full TTL.
		ft := c.nextFailTTL(cl.prevFailTTL)
		c.addLocked(key, &entry[V]{err: err, expires: end.Add(ft), failTTL: ft})
		c.stats.failuresCached.Add(1)
		return
	}
	// A value's lifetime counts from the start of the fetch: the data was
	// at least that fresh, so the entry never outlives the records it was
	// derived from, however long the fetch took.
	ttl = min(ttl, c.cfg.MaxTTL)
	expires := start.Add(ttl)
	if ttl <= 0 || !end.Before(expires) {
		// Use once, do not cache. A success also ends any failure streak.
		c.lru.Remove(key)
		return
	}
	e := &entry[V]{val: val, expires: expires}
	if c.cfg.RefreshWindow > 0 && ttl >= c.cfg.MinRefreshLifetime {
		e.refreshAt = expires.Add(-time.Duration(float64(ttl) * c.cfg.RefreshWindow))
	}
	c.addLocked(key, e)
}

func (c *Cache[K, V]) addLocked(key K, e *entry[V]) {
	if c.lru.Add(key, e) {
		c.stats.evictions.Add(1)
	}
}

// nextFailTTL is the failure TTL following a failure cached for prev
// (zero: no remembered failure): MinFailureTTL, then doubling up to
// MaxFailureTTL.
func (c *Cache[K, V]) nextFailTTL(prev time.Duration) time.Duration {
	if prev <= 0 {
		return c.cfg.MinFailureTTL
	}
	if prev >= c.cfg.MaxFailureTTL/2 {
		return c.cfg.MaxFailureTTL
	}
	return max(2*prev, c.cfg.MinFailureTTL)
}

// retainUntil is when an entry stops being useful: its expiry for a
// value; for a failure, its expiry plus the next failure TTL, so that the
// backoff continues if the key fails again within that time.
func (c *Cache[K, V]) retainUntil(e *entry[V]) time.Time {
	if e.failTTL == 0 {
		return e.expires
	}
	return e.expires.Add(c.nextFailTTL(e.failTTL))
}

// cacheable reports whether a fetch error may be cached as a failure.
func cacheable(err error, timedOut bool) bool {
	var nc interface{ NoCache() bool }
	if errors.As(err, &nc) && nc.NoCache() {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) && !timedOut {
		return false
	}
	return true
}

// NoCache wraps err so that a [Cache] does not cache it as a failure; the
// error is still returned to every caller waiting for that fetch.
// errors.Is and errors.As see through the wrapper. NoCache(nil) is nil.
func NoCache(err error) error {
	if err == nil {
		return nil
	}
	return noCacheError{err}
}

type noCacheError struct{ err error }

func (e noCacheError) Error() string { return e.err.Error() }
func (e noCacheError) Unwrap() error { return e.err }
func (e noCacheError) NoCache() bool { return true }

// Set stores value for key with the given TTL (capped at MaxTTL), as if a
// fetch had returned it now; use it to prime the cache, for instance from
// a [Store] at startup. A TTL of zero or less removes the key. A fetch in
// progress for key still answers its waiters but its result is not
// cached.
func (c *Cache[K, V]) Set(key K, value V, ttl time.Duration) {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetLocked(key)
	ttl = min(ttl, c.cfg.MaxTTL)
	if ttl <= 0 {
		c.lru.Remove(key)
		return
	}
	e := &entry[V]{val: value, expires: now.Add(ttl)}
	if c.cfg.RefreshWindow > 0 && ttl >= c.cfg.MinRefreshLifetime {
		e.refreshAt = e.expires.Add(-time.Duration(float64(ttl) * c.cfg.RefreshWindow))
	}
	c.addLocked(key, e)
}

// Fresh reports whether key has an unexpired value or failure in the
// cache. It neither fetches, nor counts as a lookup, nor changes the
// entry's recency: it lets a caller tell a cold question from a warm one
// without touching the statistics.
func (c *Cache[K, V]) Fresh(key K) bool {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.lru.Peek(key)
	return ok && now.Before(e.expires)
}

// Invalidate removes key, value or failure, and forgets its backoff
// state. A fetch in progress for key still answers its waiters but its
// result is not cached; the next Get starts a new fetch.
func (c *Cache[K, V]) Invalidate(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(key)
	c.forgetLocked(key)
}

func (c *Cache[K, V]) forgetLocked(key K) {
	if cl, ok := c.inflight[key]; ok {
		cl.forgotten = true
		delete(c.inflight, key)
	}
}

// Purge removes every entry, as Invalidate does for one key.
func (c *Cache[K, V]) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Purge()
	for key, cl := range c.inflight {
		cl.forgotten = true
		delete(c.inflight, key)
	}
}

// Len returns the number of entries, including expired ones not yet
// removed.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Sweep removes the entries that can no longer be served and returns how
// many it removed. Expired failures are kept a while longer (one further
// backoff period) to remember their backoff. Sweep holds the lock only
// for small batches of entries, so hits proceed while it runs.
func (c *Cache[K, V]) Sweep() int {
	c.mu.Lock()
	keys := c.lru.Keys()
	c.mu.Unlock()
	removed := 0
	for len(keys) > 0 {
		batch := keys[:min(sweepBatch, len(keys))]
		keys = keys[len(batch):]
		now := c.cfg.Now()
		c.mu.Lock()
		for _, k := range batch {
			if e, ok := c.lru.Peek(k); ok && !now.Before(c.retainUntil(e)) {
				c.lru.Remove(k)
				removed++
			}
		}
		c.mu.Unlock()
	}
	c.stats.expired.Add(uint64(removed))
	return removed
}

// RunSweeper calls Sweep every interval until ctx is done. Expired entries
// are otherwise removed only when accessed or evicted; run it (in its own
// goroutine) to return their memory sooner.
func (c *Cache[K, V]) RunSweeper(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.Sweep()
		}
	}
}

// Stats returns a snapshot of the cache's counters.
func (c *Cache[K, V]) Stats() Stats {
	c.mu.Lock()
	entries, inflight := c.lru.Len(), len(c.inflight)
	c.mu.Unlock()
	return Stats{
		Hits:           c.stats.hits.Load(),
		FailureHits:    c.stats.failureHits.Load(),
		Misses:         c.stats.misses.Load(),
		Collapsed:      c.stats.collapsed.Load(),
		Fetches:        c.stats.fetches.Load(),
		FetchErrors:    c.stats.fetchErrors.Load(),
		FailuresCached: c.stats.failuresCached.Load(),
		Refreshes:      c.stats.refreshes.Load(),
		Evictions:      c.stats.evictions.Load(),
		Expired:        c.stats.expired.Load(),
		Entries:        entries,
		InFlight:       inflight,
	}
}
