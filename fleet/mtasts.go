package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/redis/go-redis/v9"
)

// SharedPolicies is the Redis side of the MTA-STS policy store: an
// mtasts_fallback.Store whose entries all nodes see. Each entry is a hash
// (v: the MarshalPolicy value, f: its FetchedAt in Unix nanoseconds) that
// Redis deletes at the policy's expiry (PEXPIREAT), so an expired policy
// is never handed out (RFC 8461 §3.2). A write never replaces an entry
// fetched later than its own (two nodes refreshing at once: the last fetch
// wins, not the last write).
type SharedPolicies struct {
	c *Client
}

// NewSharedPolicies returns the shared policy store of c.
func NewSharedPolicies(c *Client) *SharedPolicies { return &SharedPolicies{c: c} }

func (p *SharedPolicies) redisKey(key string) string { return p.c.key("sts", key) }

// putIfFresher writes v unless the stored entry was fetched later.
var putIfFresher = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'f')
if cur and tonumber(cur) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'f', ARGV[2], 'e', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1`)

// Get returns the stored value and its expiry, or an error matching
// policycache.ErrNotFound.
func (p *SharedPolicies) Get(key string) ([]byte, time.Time, error) {
	var vals []any
	err := p.c.do(context.Background(), OpPolicyGet, func(ctx context.Context) error {
		var err error
		vals, err = p.c.rdb.HMGet(ctx, p.redisKey(key), "v", "e").Result()
		return err
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	v, _ := vals[0].(string)
	e, _ := vals[1].(string)
	ms, perr := strconv.ParseInt(e, 10, 64)
	if v == "" || perr != nil {
		return nil, time.Time{}, policycache.ErrNotFound
	}
	exp := time.UnixMilli(ms)
	if !exp.After(time.Now()) {
		return nil, time.Time{}, policycache.ErrNotFound
	}
	return []byte(v), exp, nil
}

// Put stores value until expires.
func (p *SharedPolicies) Put(key string, value []byte, expires time.Time) error {
	pol, err := mtastsfallback.UnmarshalPolicy(value)
	if err != nil {
		return err
	}
	if !expires.After(time.Now()) {
		return p.Delete(key)
	}
	return p.c.do(context.Background(), OpPolicyPut, func(ctx context.Context) error {
		return putIfFresher.Run(ctx, p.c.rdb, []string{p.redisKey(key)}, value,
			strconv.FormatInt(pol.FetchedAt.UnixNano(), 10), strconv.FormatInt(expires.UnixMilli(), 10)).Err()
	})
}

// Delete removes the entry.
func (p *SharedPolicies) Delete(key string) error {
	return p.c.do(context.Background(), OpPolicyPut, func(ctx context.Context) error {
		return p.c.rdb.Del(ctx, p.redisKey(key)).Err()
	})
}

// Keys lists the stored keys (SCAN, so Redis is never blocked).
func (p *SharedPolicies) Keys() ([]string, error) {
	var out []string
	prefix := p.redisKey("")
	err := p.c.do(context.Background(), OpPolicyKeys, func(ctx context.Context) error {
		it := p.c.rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for it.Next(ctx) {
			out = append(out, it.Val()[len(prefix):])
		}
		return it.Err()
	})
	return out, err
}

// LockRefresh implements mtasts_fallback.RefreshLocker with SET NX PX: one
// node refreshes a domain, the others skip it this round. A store that
// cannot be asked grants the lock (refreshing twice is harmless).
func (p *SharedPolicies) LockRefresh(ctx context.Context, domain string, ttl time.Duration) (func(), bool) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	k := p.c.key("stslock", domain)
	var ok bool
	err := p.c.do(ctx, OpLock, func(ctx context.Context) error {
		var err error
		ok, err = p.c.rdb.SetNX(ctx, k, token, ttl).Result()
		return err
	})
	if err != nil {
		return func() {}, true
	}
	if !ok {
		return nil, false
	}
	return func() { p.c.unlock(k, token) }, true
}

// unlockScript deletes a lock only if it is still ours.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

func (c *Client) unlock(k, token string) {
	_ = c.do(context.Background(), OpLock, func(ctx context.Context) error {
		return unlockScript.Run(ctx, c.rdb, []string{k}, token).Err()
	})
}

// LayeredPolicies is the MTA-STS store of a fleet node: the node's local
// store (policy_cache.Store on disk) under the shared one.
//
// Reads take the fresher of both (the later FetchedAt). RFC 8461 §10.2
// wants cached policies refreshed before they expire, "updating their
// cache's max age"; in a fleet, the newest fetch by any node is that
// update, and taking it extends this node's protection too, where
// preferring the local copy would keep an older policy with a sooner
// expiry (and a superseded mx list) until this node fetched again. When
// the shared copy wins it is written to the local store, so the node keeps
// it across a restart without Redis; when the local copy wins (Redis was
// down when it was fetched) it is queued for the shared store.
//
// Writes go to both; a failed shared write is queued and retried by Run.
// Deletes are local only: the Manager deletes what expired or was damaged
// in its own view, and the shared entry expires by itself at the policy's
// expiry, while another node may hold a fresher one under the same key.
type LayeredPolicies struct {
	Local  mtastsfallback.Store
	Shared *SharedPolicies
	Log    *slog.Logger
	m      *Metrics

	mu      sync.Mutex
	pending map[string]bool // keys to write to the shared store
}

// MaxPendingPolicies bounds the repair queue; beyond it, repairs wait for
// the next read of the domain.
const MaxPendingPolicies = 10000

// NewLayeredPolicies layers local under shared.
func NewLayeredPolicies(local mtastsfallback.Store, shared *SharedPolicies, m *Metrics, log *slog.Logger) *LayeredPolicies {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &LayeredPolicies{Local: local, Shared: shared, Log: log, m: m, pending: map[string]bool{}}
}

type candidate struct {
	v   []byte
	exp time.Time
	at  time.Time
}

func decode(v []byte, exp time.Time, err error) *candidate {
	if err != nil {
		return nil
	}
	p, perr := mtastsfallback.UnmarshalPolicy(v)
	if perr != nil {
		return nil
	}
	return &candidate{v: v, exp: exp, at: p.FetchedAt}
}

// Get returns the fresher of the local and the shared entry.
func (l *LayeredPolicies) Get(key string) ([]byte, time.Time, error) {
	lv, le, lerr := l.Local.Get(key)
	sv, se, serr := l.Shared.Get(key)
	loc, sh := decode(lv, le, lerr), decode(sv, se, serr)
	switch {
	case sh != nil && (loc == nil || sh.at.After(loc.at)):
		if err := l.Local.Put(key, sh.v, sh.exp); err != nil {
			l.Log.Warn("fleet: copying a shared MTA-STS policy to the local store failed", "key", key, "error", err)
		}
		return sh.v, sh.exp, nil
	case loc != nil:
		if sh == nil || loc.at.After(sh.at) {
			l.queue(key)
		}
		return loc.v, loc.exp, nil
	}
	if lerr != nil && !errors.Is(lerr, policycache.ErrNotFound) {
		return nil, time.Time{}, lerr
	}
	return nil, time.Time{}, policycache.ErrNotFound
}

// Put writes to both stores. It fails only if the local write fails.
func (l *LayeredPolicies) Put(key string, value []byte, expires time.Time) error {
	lerr := l.Local.Put(key, value, expires)
	if err := l.Shared.Put(key, value, expires); err != nil {
		l.queue(key)
	}
	return lerr
}

// Delete removes the local entry only (see LayeredPolicies).
func (l *LayeredPolicies) Delete(key string) error { return l.Local.Delete(key) }

// Keys lists the keys of both stores.
func (l *LayeredPolicies) Keys() ([]string, error) {
	lk, lerr := l.Local.Keys()
	sk, _ := l.Shared.Keys()
	seen := map[string]bool{}
	var out []string
	for _, k := range append(lk, sk...) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out, lerr
}

func (l *LayeredPolicies) queue(key string) {
	l.mu.Lock()
	if len(l.pending) < MaxPendingPolicies {
		l.pending[key] = true
	}
	n := len(l.pending)
	l.mu.Unlock()
	if l.m != nil {
		l.m.PolicyRepairs.Set(float64(n))
	}
}

// Pending is the number of policies waiting for the shared store.
func (l *LayeredPolicies) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}

// Repair writes the queued local policies to the shared store; it stops
// at the first failure (the store is down) and keeps the rest queued.
func (l *LayeredPolicies) Repair() error {
	l.mu.Lock()
	keys := make([]string, 0, len(l.pending))
	for k := range l.pending {
		keys = append(keys, k)
	}
	l.mu.Unlock()
	var err error
	for _, k := range keys {
		v, exp, gerr := l.Local.Get(k)
		if gerr == nil {
			if err = l.Shared.Put(k, v, exp); err != nil {
				break
			}
		}
		l.mu.Lock()
		delete(l.pending, k)
		l.mu.Unlock()
	}
	if l.m != nil {
		l.m.PolicyRepairs.Set(float64(l.Pending()))
	}
	return err
}

// Run calls Repair every interval until ctx ends.
func (l *LayeredPolicies) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if l.Pending() > 0 {
				_ = l.Repair()
			}
		}
	}
}
