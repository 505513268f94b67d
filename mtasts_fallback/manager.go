package mtastsfallback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Store persists policies across restarts. Its methods must be safe for
// concurrent use. Keys are the Manager's KeyPrefix followed by the Policy
// Domain; values are MarshalPolicy output; expires is the policy's expiry,
// after which the store may drop the entry by itself.
//
// Get returns an error for a missing or unreadable key; the Manager treats
// any Get error as "nothing usable stored". Put and Delete errors are
// logged and otherwise ignored: the Manager keeps working from memory.
type Store interface {
	Get(key string) (value []byte, expires time.Time, err error)
	Put(key string, value []byte, expires time.Time) error
	Delete(key string) error
	Keys() ([]string, error)
}

// LookupTXTFunc returns the TXT records at name, each record's strings
// already concatenated (as net.Resolver.LookupTXT does), following CNAMEs
// (RFC 8461 §3.1). "No such record" (NXDOMAIN or NODATA) is reported either
// as an empty result with a nil error, as an error wrapping ErrNoRecord, or
// as a *net.DNSError with IsNotFound set. Any other error is a lookup
// failure.
type LookupTXTFunc func(ctx context.Context, name string) ([]string, error)

// Source tells where the policy in a Result came from.
type Source string

// Sources of a Result's policy.
const (
	// SourceNone: there is no policy; deliver as without MTA-STS
	// (RFC 8461 §3.3).
	SourceNone Source = "none"
	// SourceCache: a cached policy whose id the TXT record confirmed.
	SourceCache Source = "cache"
	// SourceFetched: a policy fetched during this call.
	SourceFetched Source = "fetched"
	// SourceStale: an unexpired cached policy that could not be
	// confirmed: the TXT record is absent, unusable or could not be
	// looked up, or the new policy could not be fetched. RFC 8461 §3.3
	// and §5.1 require applying it anyway. Result.Err says what failed
	// (nil when the TXT record is simply absent).
	SourceStale Source = "stale"
)

// Result is the answer of Manager.Policy.
type Result struct {
	// Domain is the normalized Policy Domain.
	Domain string
	// Policy is the policy to apply; nil means none. A policy in mode
	// none is returned as such: it applies no restriction (CheckMX and
	// CheckConn accept everything) but tells that the domain has opted
	// out.
	Policy *Policy
	// Source tells where Policy came from.
	Source Source
	// Err, if not nil, is the failure met while discovering or refreshing
	// the policy (an *Error with an RFC 8460 Reason). It is informational:
	// delivery decisions depend on Policy only. RFC 8461 §6 makes such
	// failures reportable when a TXT record exists, or when a cached
	// policy exists and is not in mode none.
	Err error
}

// Config configures a Manager. Only LookupTXT is required.
type Config struct {
	// LookupTXT resolves "_mta-sts.<domain>". Required.
	LookupTXT LookupTXTFunc
	// Fetcher fetches policies; nil means a zero Fetcher (defaults).
	Fetcher *Fetcher
	// Store persists policies; nil means memory only. A store whose
	// methods fail is tolerated: the Manager logs and goes on in memory.
	Store Store
	// IsNotFound, if set, tells which Store.Get errors mean "no such key",
	// so that only other errors (e.g. corruption) are logged as warnings.
	// For policy_cache: func(err error) bool { return errors.Is(err,
	// policycache.ErrNotFound) }.
	IsNotFound func(error) bool
	// KeyPrefix is prepended to the domain to form store keys; empty means
	// "mta-sts/". Keys without the prefix are never touched.
	KeyPrefix string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives operational messages; nil discards them. Refresh
	// failures of a cached policy not in mode none are logged at Warn
	// (RFC 8461 §3.3 and §10.2 ask to alert administrators), other
	// failures at Info, routine events at Debug.
	Logger *slog.Logger

	// MinBackoff is the delay before retrying a domain after its first
	// failure of the TXT record set (unusable) or of the HTTPS fetch; it
	// doubles with each further consecutive failure up to MaxBackoff.
	// Defaults: 1 minute and 1 hour.
	MinBackoff, MaxBackoff time.Duration
	// DNSMinBackoff and DNSMaxBackoff are the same schedule for a TXT
	// lookup that failed (timeout, SERVFAIL, ...): RFC 9520 §3.2 caches a
	// resolution failure for at least 1 second, backing off up to 5
	// minutes, the defaults, as policy_cache does for every other lookup.
	// A longer first delay would leave an enforce-mode domain contacted
	// for the first time after a short DNS fault without MTA-STS for that
	// long.
	DNSMinBackoff, DNSMaxBackoff time.Duration
	// FetchRetryMin is the shortest delay before fetching the same policy
	// id again after an HTTPS failure; RFC 8461 §3.3 says five minutes or
	// longer, which is the default. A new id in the TXT record is fetched
	// at once.
	FetchRetryMin time.Duration
	// RefreshInterval: RefreshNow re-fetches a cached policy once it is
	// this old, or half its max_age old if that is sooner, whatever the
	// TXT record says (RFC 8461 §3.3, §10.2). Default 24 hours.
	RefreshInterval time.Duration
	// TickInterval is how often Run calls RefreshNow. Default 1 hour.
	TickInterval time.Duration
	// IdleTimeout: RefreshNow forgets, from memory, domains that have no
	// valid policy and were not asked about for this long. Default 24
	// hours.
	IdleTimeout time.Duration
	// MaxDomains bounds the domains kept in memory. Domains come from
	// recipient addresses, so anyone who can make this server send mail
	// chooses them; when a new one would exceed the bound, domains
	// without a valid policy and not in use are forgotten first (their
	// failure backoff is lost; valid policies are always kept).
	// Default 100000.
	MaxDomains int
	// RefreshConcurrency bounds parallel fetches in RefreshNow. Default 4.
	RefreshConcurrency int
	// StoreShared tells that other processes (the other servers of a
	// fleet) write to Store too: before fetching a policy, the Manager
	// reads the Store again and uses a fresher policy with the TXT
	// record's id that another server fetched, instead of fetching it
	// again; a background refresh first adopts a fresher stored policy.
	StoreShared bool
	// RefreshLocker, if set, is asked before each background refresh of
	// a domain, so that the servers sharing a Store do not all fetch the
	// same policy. See RefreshLocker.
	RefreshLocker RefreshLocker
	// LookupTimeout bounds the TXT lookup of one resolution; the whole
	// resolution is bounded by LookupTimeout + the Fetcher's timeout.
	// Default 30 seconds.
	LookupTimeout time.Duration
}

// RefreshLocker is a lock per domain shared by the servers of a fleet,
// held while one of them refreshes the domain's policy in the background
// (RefreshNow).
type RefreshLocker interface {
	// LockRefresh tries to take the lock on domain for at most ttl. It
	// returns ok false when another server holds it: the domain is
	// skipped this round (that server's policy reaches the shared Store,
	// and the next round adopts it). unlock releases the lock early. A
	// locker that cannot tell (its service is down) must return ok true:
	// a refresh done twice costs one fetch, a refresh not done weakens the
	// protection RFC 8461 §10.2 wants from it.
	LockRefresh(ctx context.Context, domain string, ttl time.Duration) (unlock func(), ok bool)
}

// Defaults of Config.
const (
	DefaultMinBackoff         = time.Minute
	DefaultMaxBackoff         = time.Hour
	DefaultDNSMinBackoff      = time.Second     // RFC 9520 §3.2
	DefaultDNSMaxBackoff      = 5 * time.Minute // RFC 9520 §3.2
	DefaultFetchRetryMin      = 5 * time.Minute
	DefaultRefreshInterval    = 24 * time.Hour
	DefaultTickInterval       = time.Hour
	DefaultIdleTimeout        = 24 * time.Hour
	DefaultRefreshConcurrency = 4
	DefaultLookupTimeout      = 30 * time.Second
	DefaultMaxDomains         = 100_000
	DefaultKeyPrefix          = "mta-sts/"
)

// Manager discovers, caches and refreshes MTA-STS policies (RFC 8461 §3,
// §5.1, §10.2). It is safe for concurrent use; concurrent requests for one
// domain share a single DNS lookup and fetch.
type Manager struct {
	cfg     Config
	fetcher *Fetcher
	store   Store
	now     func() time.Time
	log     *slog.Logger
	timeout time.Duration

	sf      singleflight.Group
	waiters atomic.Int64 // callers waiting in do
	mu      sync.Mutex
	entries map[string]*entry

	baseCtx context.Context
	cancel  context.CancelFunc
	runMu   sync.Mutex // guards closed and runWG.Add
	closed  bool
	done    chan struct{}
	runWG   sync.WaitGroup
}

type failKind int

const (
	failDNS   failKind = iota + 1 // the TXT lookup failed
	failTXT                       // the TXT record set is unusable
	failFetch                     // the HTTPS fetch failed
)

type failure struct {
	kind    failKind
	id      string // for failFetch: the TXT id whose policy failed
	count   int    // consecutive failures
	retryAt time.Time
	err     *Error
}

type entry struct {
	loaded   bool    // the store was consulted
	policy   *Policy // last good policy; may have expired
	fail     *failure
	lastUsed time.Time
	busy     int // resolutions in progress; prune skips busy entries
}

// NewManager builds a Manager. It does not start background refreshing;
// call Run for that.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.LookupTXT == nil {
		return nil, errors.New("mtastsfallback: Config.LookupTXT is required")
	}
	m := &Manager{cfg: cfg, fetcher: cfg.Fetcher, store: cfg.Store, now: cfg.Now, log: cfg.Logger,
		entries: map[string]*entry{}, done: make(chan struct{})}
	if m.fetcher == nil {
		m.fetcher = &Fetcher{}
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.store != nil && isNilValue(m.store) {
		// An interface holding a nil pointer (typically the result of a
		// failed open) would panic on first use. Run memory-only instead.
		m.log.Warn("mta-sts: policy store is a nil value; policies are kept in memory only")
		m.store = nil
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&m.cfg.MinBackoff, DefaultMinBackoff)
	def(&m.cfg.MaxBackoff, DefaultMaxBackoff)
	def(&m.cfg.DNSMinBackoff, DefaultDNSMinBackoff)
	def(&m.cfg.DNSMaxBackoff, DefaultDNSMaxBackoff)
	def(&m.cfg.FetchRetryMin, DefaultFetchRetryMin)
	def(&m.cfg.RefreshInterval, DefaultRefreshInterval)
	def(&m.cfg.TickInterval, DefaultTickInterval)
	def(&m.cfg.IdleTimeout, DefaultIdleTimeout)
	def(&m.cfg.LookupTimeout, DefaultLookupTimeout)
	if m.cfg.RefreshConcurrency <= 0 {
		m.cfg.RefreshConcurrency = DefaultRefreshConcurrency
	}
	if m.cfg.MaxDomains <= 0 {
		m.cfg.MaxDomains = DefaultMaxDomains
	}
	if m.cfg.KeyPrefix == "" {
		m.cfg.KeyPrefix = DefaultKeyPrefix
	}
	ft := m.fetcher.Timeout
	if ft <= 0 {
		ft = DefaultFetchTimeout
	}
	m.timeout = m.cfg.LookupTimeout + ft
	m.baseCtx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

var errClosed = errors.New("the MTA-STS manager is closed; answering from the cache only")

func isNilValue(v any) bool {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// Policy returns the MTA-STS policy to apply to mail for domain, following
// RFC 8461 §3 and §5.1:
//
//   - the TXT record "_mta-sts.<domain>" is looked up (unless the domain is
//     in backoff after a DNS failure);
//   - a cached unexpired policy with the same id is used as is;
//   - otherwise the policy is fetched, cached in memory and in the Store,
//     and used;
//   - when the TXT record is absent or unusable, or the lookup or the fetch
//     fails, an unexpired cached policy stays in force (SourceStale);
//     without one there is no policy (SourceNone);
//   - failures are remembered: after a DNS failure the domain is not
//     looked up again before the backoff delay (DNSMinBackoff, doubling up
//     to DNSMaxBackoff; MinBackoff to MaxBackoff for an unusable TXT
//     record); after a fetch failure the same id is not fetched again
//     before that delay or FetchRetryMin, whichever is longer.
//
// The returned error is non-nil only if domain is not a valid ASCII domain
// (ErrInvalidDomain) or ctx ends first; discovery failures are in
// Result.Err. domain is the Policy Domain: the recipient domain, or the
// smart host's domain when relaying through one (RFC 8461 §3.4).
func (m *Manager) Policy(ctx context.Context, domain string) (*Result, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return nil, err
	}
	return m.do(ctx, d, false)
}

// do runs one resolution for d, shared with concurrent callers. The
// resolution itself runs under the Manager's context, so that one caller
// giving up does not fail the others; Close cancels it.
func (m *Manager) do(ctx context.Context, d string, force bool) (*Result, error) {
	ch := m.sf.DoChan(d, func() (any, error) {
		fctx, cancel := context.WithTimeout(m.baseCtx, m.timeout)
		defer cancel()
		return m.resolve(fctx, d, force), nil
	})
	m.waiters.Add(1) // lets tests see that a caller has joined the flight
	defer m.waiters.Add(-1)
	select {
	case r := <-ch:
		res := *r.Val.(*Result)
		return &res, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (m *Manager) key(d string) string { return m.cfg.KeyPrefix + d }

// acquire returns d's entry, consulting the store the first time, and
// marks it busy until release.
func (m *Manager) acquire(d string, now time.Time) *entry {
	m.mu.Lock()
	e := m.entries[d]
	if e == nil {
		if len(m.entries) >= m.cfg.MaxDomains {
			m.shedLocked(now)
		}
		e = &entry{}
		m.entries[d] = e
	}
	e.busy++
	loaded := e.loaded
	m.mu.Unlock()
	if loaded {
		return e
	}
	p := m.loadStored(d, now) // store I/O outside the lock
	m.mu.Lock()
	if !e.loaded {
		e.loaded = true
		if e.lastUsed.IsZero() {
			e.lastUsed = now
		}
		if p != nil && (e.policy == nil || p.FetchedAt.After(e.policy.FetchedAt)) {
			e.policy = p
		}
	}
	m.mu.Unlock()
	return e
}

func (m *Manager) release(e *entry) {
	m.mu.Lock()
	e.busy--
	m.mu.Unlock()
}

// loadStored reads d's policy from the store. Anything unusable is logged
// and reported as nil, never as a failure.
func (m *Manager) loadStored(d string, now time.Time) *Policy {
	if m.store == nil {
		return nil
	}
	k := m.key(d)
	v, _, err := m.store.Get(k)
	if err != nil {
		if m.cfg.IsNotFound != nil && m.cfg.IsNotFound(err) {
			return nil
		}
		lvl := slog.LevelDebug
		if m.cfg.IsNotFound != nil {
			lvl = slog.LevelWarn
		}
		m.log.Log(context.Background(), lvl, "mta-sts: no usable stored policy", "domain", d, "error", err)
		return nil
	}
	p, err := UnmarshalPolicy(v)
	if err == nil && p.Domain != d {
		err = fmt.Errorf("stored policy is for domain %q", p.Domain)
	}
	if err != nil {
		m.log.Warn("mta-sts: ignoring damaged stored policy", "domain", d, "error", err)
		m.storeDelete(k)
		return nil
	}
	if !p.ValidAt(now) {
		m.storeDelete(k)
		return nil
	}
	return p
}

func (m *Manager) storeDelete(k string) {
	if m.store == nil {
		return
	}
	if err := m.store.Delete(k); err != nil {
		m.log.Warn("mta-sts: policy store delete failed", "key", k, "error", err)
	}
}

func (m *Manager) persist(d string, p *Policy, now time.Time) {
	if m.store == nil {
		return
	}
	k := m.key(d)
	if !p.ValidAt(now) { // max_age 0: nothing worth keeping
		m.storeDelete(k)
		return
	}
	v, err := MarshalPolicy(p)
	if err == nil {
		err = m.store.Put(k, v, p.Expires)
	}
	if err != nil {
		m.log.Warn("mta-sts: policy store write failed; keeping the policy in memory only", "domain", d, "error", err)
	}
}

// lookupID returns the id of the domain's MTA-STS TXT record, or an error
// wrapping ErrNoRecord, ErrMultipleRecords or ErrInvalidTXT, or a lookup
// error.
func (m *Manager) lookupID(ctx context.Context, d string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.LookupTimeout)
	defer cancel()
	recs, err := m.cfg.LookupTXT(ctx, "_mta-sts."+d)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.Is(err, ErrNoRecord) || (errors.As(err, &dnsErr) && dnsErr.IsNotFound) {
			return "", ErrNoRecord
		}
		return "", err
	}
	return ParseTXT(recs)
}

// resolve does the work of Policy. force (background refresh) fetches the
// policy even when the TXT id is unchanged or the TXT record is missing
// (RFC 8461 §10.2), but still honours fetch backoff.
func (m *Manager) resolve(ctx context.Context, d string, force bool) *Result {
	now := m.now()
	e := m.acquire(d, now)
	defer m.release(e)

	m.mu.Lock()
	if !force {
		e.lastUsed = now
	}
	if e.policy != nil && !e.policy.ValidAt(now) {
		e.policy = nil // expired at max_age (RFC 8461 §3.2)
	}
	cached := e.policy
	var fail failure
	if e.fail != nil {
		fail = *e.fail
	}
	m.mu.Unlock()
	inBackoff := fail.kind != 0 && now.Before(fail.retryAt)

	if m.baseCtx.Err() != nil {
		return stale(d, cached, &Error{Reason: ReasonPolicyFetchError, Code: CodeManagerClosing, Err: errClosed})
	}
	if inBackoff && fail.kind != failFetch {
		return stale(d, cached, fail.err)
	}
	id, err := m.lookupID(ctx, d)
	// The lookup may have taken a while (LookupTimeout): a policy that
	// reached its max_age meanwhile must not be applied (RFC 8461 §3.2).
	cached = m.live(cached)
	if err != nil {
		if force && cached != nil {
			// RFC 8461 §10.2: refresh regardless of the TXT record.
			m.log.Debug("mta-sts: refreshing despite TXT problem", "domain", d, "error", err)
			id = cached.ID
		} else if errors.Is(err, ErrNoRecord) {
			// RFC 8461 §3.1, §5.1: no TXT record means no new policy
			// can be discovered; a cached one stays in force.
			m.clearFailure(e)
			return stale(d, cached, nil)
		} else {
			kind, ferr := failDNS, &Error{Reason: ReasonPolicyFetchError, Code: CodeDNS, Err: err}
			if errors.Is(err, ErrMultipleRecords) || errors.Is(err, ErrInvalidTXT) {
				kind, ferr = failTXT, &Error{Reason: ReasonPolicyInvalid, Code: CodeTXTInvalid, Err: err}
			}
			return stale(d, cached, m.recordFailure(e, d, kind, "", ferr, cached, now))
		}
	}

	if cached != nil && cached.ID == id && !force {
		m.clearFailure(e)
		return &Result{Domain: d, Policy: cached, Source: SourceCache}
	}
	if m.cfg.StoreShared && !force {
		// Another server may have fetched this id already.
		if sp := m.reload(e, d); sp != nil && sp.ID == id {
			m.clearFailure(e)
			return &Result{Domain: d, Policy: sp, Source: SourceCache}
		}
	}
	if inBackoff && fail.id == id {
		// RFC 8461 §3.3: do not hammer a Policy Host that failed for
		// this id.
		return stale(d, cached, fail.err)
	}
	p, err := m.fetcher.Fetch(ctx, d)
	if err != nil {
		var ferr *Error
		if !errors.As(err, &ferr) {
			ferr = &Error{Reason: ReasonPolicyFetchError, Code: CodeConnect, Err: err}
		}
		// Likewise after a fetch that failed, possibly by timing out.
		return stale(d, m.live(cached), m.recordFailure(e, d, failFetch, id, ferr, cached, now))
	}
	t := m.now()
	p.ID, p.FetchedAt, p.Expires = id, t, t.Add(p.Lifetime())
	m.mu.Lock()
	e.policy, e.fail = p, nil
	m.mu.Unlock()
	m.persist(d, p, t)
	attrs := []any{"domain", d, "id", id, "mode", p.Mode, "max_age", p.MaxAge, "mx", p.MX}
	if cached != nil && (cached.Mode != p.Mode || !sameStrings(cached.MX, p.MX)) {
		m.log.Info("mta-sts: policy changed", append(attrs, "old_mode", cached.Mode, "old_mx", cached.MX)...)
	} else {
		m.log.Debug("mta-sts: policy fetched", attrs...)
	}
	return &Result{Domain: d, Policy: p, Source: SourceFetched}
}

// reload reads d's policy from the store again and keeps it when it was
// fetched later than the one in memory (by another server sharing the
// store). It returns the policy in memory afterwards, nil if none is
// valid.
func (m *Manager) reload(e *entry, d string) *Policy {
	now := m.now()
	p := m.loadStored(d, now)
	m.mu.Lock()
	defer m.mu.Unlock()
	if p != nil && (e.policy == nil || p.FetchedAt.After(e.policy.FetchedAt)) {
		e.policy = p
	}
	if !e.policy.ValidAt(now) {
		return nil
	}
	return e.policy
}

// live returns p if it is still valid now, else nil.
func (m *Manager) live(p *Policy) *Policy {
	if p.ValidAt(m.now()) {
		return p
	}
	return nil
}

// stale builds the Result for "no new policy": the cached one if any.
func stale(d string, cached *Policy, err *Error) *Result {
	r := &Result{Domain: d, Source: SourceNone}
	if err != nil {
		r.Err = err
	}
	if cached != nil {
		r.Policy, r.Source = cached, SourceStale
	}
	return r
}

func (m *Manager) clearFailure(e *entry) {
	m.mu.Lock()
	e.fail = nil
	m.mu.Unlock()
}

// recordFailure remembers a failure and schedules the next attempt.
func (m *Manager) recordFailure(e *entry, d string, kind failKind, id string, err *Error, cached *Policy, now time.Time) *Error {
	m.mu.Lock()
	n := 1
	if prev := e.fail; prev != nil && !(prev.kind == failFetch && kind == failFetch && prev.id != id) {
		n = prev.count + 1
	}
	delay := m.backoff(n, kind)
	e.fail = &failure{kind: kind, id: id, count: n, retryAt: now.Add(delay), err: err}
	m.mu.Unlock()

	// RFC 8461 §3.3, §10.2: alert when a cached policy cannot be
	// refreshed, unless its mode is none.
	lvl := slog.LevelInfo
	if cached != nil && cached.Mode != ModeNone {
		lvl = slog.LevelWarn
	}
	attrs := []any{"domain", d, "reason", string(err.Reason), "code", err.Code, "error", err.Err,
		"consecutive_failures", n, "retry_after", delay}
	if cached != nil {
		attrs = append(attrs, "cached_mode", cached.Mode, "cached_expires", cached.Expires)
	}
	m.log.Log(context.Background(), lvl, "mta-sts: policy discovery failed", attrs...)
	return err
}

// backoff returns the delay after the n-th consecutive failure:
// MinBackoff·2^(n-1), at most MaxBackoff, and for fetch failures at least
// FetchRetryMin; for failed TXT lookups DNSMinBackoff·2^(n-1), at most
// DNSMaxBackoff (RFC 9520 §3.2).
func (m *Manager) backoff(n int, kind failKind) time.Duration {
	lo, hi := m.cfg.MinBackoff, m.cfg.MaxBackoff
	if kind == failDNS {
		lo, hi = m.cfg.DNSMinBackoff, m.cfg.DNSMaxBackoff
	}
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if kind == failFetch {
		d = max(d, m.cfg.FetchRetryMin)
	}
	return d
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// RefreshNow does one round of background maintenance, synchronously:
//
//   - every known domain (in memory or in the Store) whose unexpired policy
//     was fetched at least RefreshInterval ago, or half its max_age ago if
//     that is sooner, is re-fetched whatever its TXT record says
//     (RFC 8461 §3.3 and §10.2 recommend refreshing before expiry, e.g.
//     daily, so that an attacker must block every refresh over the
//     policy's lifetime); domains in backoff are skipped;
//   - expired policies are removed from memory and from the Store, and
//     domains without a policy that were not asked about for IdleTimeout
//     are forgotten.
//
// Run calls it periodically; tests call it directly with a fake clock.
func (m *Manager) RefreshNow(ctx context.Context) {
	now := m.now()
	sem := make(chan struct{}, m.cfg.RefreshConcurrency)
	var wg sync.WaitGroup
	for _, d := range m.knownDomains() {
		if ctx.Err() != nil {
			break
		}
		if !m.due(d, now) {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			unlock, ok := m.claimRefresh(ctx, d)
			if !ok {
				return
			}
			defer unlock()
			if _, err := m.do(ctx, d, true); err != nil {
				m.log.Debug("mta-sts: refresh abandoned", "domain", d, "error", err)
			}
		}()
	}
	wg.Wait()
	m.prune(m.now())
}

// claimRefresh prepares the background refresh of d for a fleet: a
// fresher policy another server stored is adopted (d may then not be due
// any more), and the RefreshLocker, if any, must grant its lock. Without
// either it always says yes.
func (m *Manager) claimRefresh(ctx context.Context, d string) (unlock func(), ok bool) {
	nop := func() {}
	if m.cfg.StoreShared {
		e := m.acquire(d, m.now())
		m.reload(e, d)
		m.release(e)
		if !m.due(d, m.now()) {
			m.log.Debug("mta-sts: refreshed by another server", "domain", d)
			return nop, false
		}
	}
	if m.cfg.RefreshLocker == nil {
		return nop, true
	}
	unlock, ok = m.cfg.RefreshLocker.LockRefresh(ctx, d, m.timeout)
	if !ok {
		m.log.Debug("mta-sts: another server is refreshing", "domain", d)
		return nop, false
	}
	if unlock == nil {
		unlock = nop
	}
	return unlock, true
}

// knownDomains lists the domains in memory and in the Store.
func (m *Manager) knownDomains() []string {
	seen := map[string]bool{}
	var out []string
	m.mu.Lock()
	for d := range m.entries {
		seen[d] = true
		out = append(out, d)
	}
	m.mu.Unlock()
	if m.store == nil {
		return out
	}
	keys, err := m.store.Keys()
	if err != nil {
		m.log.Warn("mta-sts: cannot list the policy store", "error", err)
		return out
	}
	for _, k := range keys {
		d, ok := strings.CutPrefix(k, m.cfg.KeyPrefix)
		if !ok || seen[d] {
			continue
		}
		if nd, err := NormalizeDomain(d); err != nil || nd != d {
			continue
		}
		seen[d] = true
		out = append(out, d)
	}
	return out
}

// due reports whether d has a policy to refresh now.
func (m *Manager) due(d string, now time.Time) bool {
	e := m.acquire(d, now)
	defer m.release(e)
	m.mu.Lock()
	defer m.mu.Unlock()
	p := e.policy
	if !p.ValidAt(now) {
		return false
	}
	if e.fail != nil && now.Before(e.fail.retryAt) {
		return false
	}
	age := min(m.cfg.RefreshInterval, p.Lifetime()/2)
	return !now.Before(p.FetchedAt.Add(age))
}

// shedLocked makes room in a full entries map: it forgets domains that
// are not in use and hold no valid policy, down to 9/10 of MaxDomains so
// that the scan is not repeated for every new domain. m.mu must be held.
func (m *Manager) shedLocked(now time.Time) {
	target := m.cfg.MaxDomains - m.cfg.MaxDomains/10 - 1
	for d, e := range m.entries {
		if len(m.entries) <= target {
			return
		}
		if e.busy > 0 || e.policy.ValidAt(now) {
			continue
		}
		delete(m.entries, d)
	}
}

// prune drops expired policies and idle entries.
func (m *Manager) prune(now time.Time) {
	var expired []string
	m.mu.Lock()
	for d, e := range m.entries {
		if e.busy > 0 {
			continue
		}
		if e.policy != nil && !e.policy.ValidAt(now) {
			e.policy = nil
			expired = append(expired, d)
		}
		if e.policy == nil && (e.fail == nil || !now.Before(e.fail.retryAt)) && now.Sub(e.lastUsed) >= m.cfg.IdleTimeout {
			delete(m.entries, d)
		}
	}
	m.mu.Unlock()
	for _, d := range expired {
		m.log.Debug("mta-sts: policy expired", "domain", d)
		m.storeDelete(m.key(d))
	}
}

// Run refreshes policies in the background: it calls RefreshNow at once and
// then every TickInterval, until ctx ends or Close is called. It blocks; run
// it in its own goroutine.
func (m *Manager) Run(ctx context.Context) {
	m.runMu.Lock()
	if m.closed {
		m.runMu.Unlock()
		return
	}
	m.runWG.Add(1)
	m.runMu.Unlock()
	defer m.runWG.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-m.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(m.cfg.TickInterval)
	defer t.Stop()
	for {
		m.RefreshNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close stops Run, aborts resolutions in progress and waits for Run to
// return. Afterwards Policy still answers from the cache (any fetch fails
// at once). Close is idempotent and always returns nil.
func (m *Manager) Close() error {
	m.runMu.Lock()
	if !m.closed {
		m.closed = true
		close(m.done)
		m.cancel()
	}
	m.runMu.Unlock()
	m.runWG.Wait()
	return nil
}
