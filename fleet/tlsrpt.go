package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/redis/go-redis/v9"
)

// SharedReports is tlsrpt.Shared on Redis: the TLS-RPT session counts of
// every node, and the claim on each report.
//
// Each node's local tlsrpt.Store is its journal: every session is committed
// there first, on the delivery path, exactly as without a fleet; Add then
// only wakes the push loop, so Redis never delays a delivery. The push
// (Flush) sends, for each aggregate of a day and domain, this node's
// absolute local count; a Lua script adds to the shared count the
// difference from what this node pushed before (kept per node in Redis)
// and records the new value, atomically. Replaying a push, after a
// timeout that hid a success or after a restart that lost the memory of
// what was acknowledged, therefore adds nothing twice, and anything the
// node could not push while Redis was away is pushed when it is back:
// the journal is the local store itself, so it loses nothing and is bounded
// by the store's retention (KeepDays), not by memory.
//
// The aggregate key (tlsrpt's) includes the failure details, so the
// "sending-mta-ip" of a failure stays that of the node whose session it
// was, while sessions with identical details from several nodes add up.
//
// Keys, under the Client's prefix, for day D and domain N ({D/N} keeps a
// report's keys together):
//
//	rpt:{D/N}:agg        hash  aggregate key JSON -> fleet-wide count
//	rpt:{D/N}:node:<id>  hash  aggregate key JSON -> count this node pushed
//	rpt:{D/N}:state      JSON  tlsrpt.DeliveryState of the report
//	rpt:{D/N}:lock       token of the node holding the claim
//	rpt:index            zset  "D/N" scored by the expiry of its keys
//
// All expire KeepDays+1 days after the day ends.
type SharedReports struct {
	c        *Client
	local    *tlsrpt.Store
	idFile   string
	keepDays int
	claimTTL time.Duration
	m        *Metrics
	log      *slog.Logger
	now      func() time.Time

	nudge chan struct{}

	mu    sync.Mutex // serializes pushes; guards the fields below
	node  string
	acked map[string]map[string]uint64 // "D/N" -> field -> count acknowledged
	depth uint64
}

// ReportsConfig configures NewSharedReports.
type ReportsConfig struct {
	// Local is the node's own store (the journal). Required.
	Local *tlsrpt.Store
	// NodeIDFile keeps the node's random id (created on first use). It
	// belongs with the local store: a node that loses its store must get a
	// new id. Required.
	NodeIDFile string
	// KeepDays as in tlsrpt.Sender. Default 7.
	KeepDays int
	// ClaimTTL is the lifetime of a report's claim, renewed every third
	// of it while the report is sent; a node that dies holding it delays
	// the report by at most this. Default 1 minute.
	ClaimTTL time.Duration
	Metrics  *Metrics
	Log      *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewSharedReports builds the shared reports of a node.
func NewSharedReports(c *Client, cfg ReportsConfig) (*SharedReports, error) {
	if cfg.Local == nil || cfg.NodeIDFile == "" {
		return nil, errors.New("fleet: ReportsConfig needs Local and NodeIDFile")
	}
	r := &SharedReports{c: c, local: cfg.Local, idFile: cfg.NodeIDFile, keepDays: cfg.KeepDays,
		claimTTL: cfg.ClaimTTL, m: cfg.Metrics, log: cfg.Log, now: cfg.Now,
		nudge: make(chan struct{}, 1), acked: map[string]map[string]uint64{}}
	if r.keepDays <= 0 {
		r.keepDays = 7
	}
	if r.claimTTL <= 0 {
		r.claimTTL = time.Minute
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	id, err := loadNodeID(r.idFile)
	if err != nil {
		return nil, err
	}
	r.node = id
	return r, nil
}

func loadNodeID(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err == nil {
		if id := strings.TrimSpace(string(b)); len(id) == 32 {
			if _, err := hex.DecodeString(id); err == nil {
				return id, nil
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("fleet: node id: %w", err)
	}
	return newNodeID(file)
}

func newNodeID(file string) (string, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return "", fmt.Errorf("fleet: node id: %w", err)
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("fleet: node id: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return "", fmt.Errorf("fleet: node id: %w", err)
	}
	return id, nil
}

// NodeID is this node's id in the shared counts.
func (r *SharedReports) NodeID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.node
}

// Add records a session in the local store (committed when Add returns,
// as tlsrpt.Store.Add) and wakes the push loop; it never waits on Redis.
func (r *SharedReports) Add(t time.Time, rec tlsrpt.Record) error {
	if err := r.local.Add(t, rec); err != nil {
		return err
	}
	select {
	case r.nudge <- struct{}{}:
	default:
	}
	return nil
}

func member(day, domain string) string { return day + "/" + domain }

func (r *SharedReports) key(day, domain, what string) string {
	return r.c.key("rpt", "{"+member(day, domain)+"}", what)
}

// expireAt is when the keys of day stop being useful.
func (r *SharedReports) expireAt(day string) time.Time {
	start, _ := tlsrpt.ParseDay(day)
	return start.AddDate(0, 0, r.keepDays+2)
}

// pushScript adds this node's new sessions to the shared counts: for each
// (field, absolute local count) pair, the difference from the count this
// node pushed before. It returns {sessions added, fields whose local count
// went backwards}.
var pushScript = redis.NewScript(`
local added, back = 0, 0
for i = 3, #ARGV, 2 do
  local f, n = ARGV[i], tonumber(ARGV[i+1])
  local prev = tonumber(redis.call('HGET', KEYS[2], f) or '0')
  if n > prev then
    redis.call('HINCRBY', KEYS[1], f, n - prev)
    redis.call('HSET', KEYS[2], f, n)
    added = added + n - prev
  elseif n < prev then
    back = back + 1
  end
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
return {added, back}`)

// Flush pushes every session of the local store not yet counted in the
// shared store. It stops at the first failure; what is left stays in the
// journal (the local store) for the next Flush.
func (r *SharedReports) Flush(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	todo, depth, err := r.pendingLocked()
	if err != nil {
		return err
	}
	r.setDepth(depth)
	// A Redis that lost its data (restarted without persistence) must get
	// everything again: the marker key is gone then, and what this node
	// remembers as acknowledged no longer is.
	var fresh bool
	if err := r.c.do(ctx, OpCountsPush, func(ctx context.Context) error {
		var err error
		fresh, err = r.c.rdb.SetNX(ctx, r.c.key("rpt", "epoch"), "1", 0).Result()
		return err
	}); err != nil {
		return err
	}
	if fresh && len(r.acked) != 0 {
		r.acked = map[string]map[string]uint64{}
		if todo, depth, err = r.pendingLocked(); err != nil {
			return err
		}
	}
	r.setDepth(depth)
	for _, w := range todo {
		if err := r.pushLocked(ctx, w.day, w.domain, w.fields); err != nil {
			return err
		}
		acked := r.acked[member(w.day, w.domain)]
		if acked == nil {
			acked = map[string]uint64{}
			r.acked[member(w.day, w.domain)] = acked
		}
		for f, n := range w.fields {
			depth -= n - acked[f]
			acked[f] = n
		}
		r.setDepth(depth)
	}
	today, _ := tlsrpt.ParseDay(tlsrpt.Day(r.now()))
	oldest := tlsrpt.Day(today.AddDate(0, 0, -r.keepDays))
	for m := range r.acked { // forget pruned days
		if m < oldest {
			delete(r.acked, m)
		}
	}
	return nil
}

type work struct {
	day, domain string
	fields      map[string]uint64
}

// pendingLocked compares the local store with what was acknowledged: the
// pushes to do and the number of sessions they carry.
func (r *SharedReports) pendingLocked() ([]work, uint64, error) {
	list, err := r.local.List()
	if err != nil {
		return nil, 0, err
	}
	today, _ := tlsrpt.ParseDay(tlsrpt.Day(r.now()))
	oldest := tlsrpt.Day(today.AddDate(0, 0, -r.keepDays))
	var todo []work
	var depth uint64
	for _, p := range list {
		if p.Day < oldest {
			continue
		}
		aggs, err := r.local.Aggregates(p.Day, p.Domain)
		if err != nil {
			return nil, 0, err
		}
		acked := r.acked[member(p.Day, p.Domain)]
		w := work{day: p.Day, domain: p.Domain, fields: map[string]uint64{}}
		for _, a := range aggs {
			f, err := json.Marshal(a.Key)
			if err != nil {
				return nil, 0, err
			}
			if a.Count > acked[string(f)] {
				w.fields[string(f)] = a.Count
				depth += a.Count - acked[string(f)]
			}
		}
		if len(w.fields) != 0 {
			todo = append(todo, w)
		}
	}
	return todo, depth, nil
}

func (r *SharedReports) setDepth(d uint64) {
	r.depth = d
	if r.m != nil {
		r.m.JournalDepth.Set(float64(d))
	}
}

// Depth is the number of local sessions not yet counted in the shared
// store, as of the last Flush.
func (r *SharedReports) Depth() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.depth
}

func (r *SharedReports) pushLocked(ctx context.Context, day, domain string, fields map[string]uint64) error {
	names := make([]string, 0, len(fields))
	for f := range fields {
		names = append(names, f)
	}
	sort.Strings(names)
	args := []any{member(day, domain), strconv.FormatInt(r.expireAt(day).UnixMilli(), 10)}
	for _, f := range names {
		args = append(args, f, strconv.FormatUint(fields[f], 10))
	}
	var res []int64
	err := r.c.do(ctx, OpCountsPush, func(ctx context.Context) error {
		keys := []string{r.key(day, domain, "agg"), r.key(day, domain, "node:"+r.node), r.c.key("rpt", "index")}
		var err error
		res, err = pushScript.Run(ctx, r.c.rdb, keys, args...).Int64Slice()
		return err
	})
	if err != nil {
		return err
	}
	if len(res) == 2 && res[1] > 0 {
		// The local store lost sessions it had pushed (it was replaced
		// after corruption): count it from now on as a new node, so that
		// its new sessions are not hidden behind the old counts.
		id, err := newNodeID(r.idFile)
		if err != nil {
			return err
		}
		r.log.Warn("fleet: local TLS-RPT store is behind the shared counts; new node id", "old", r.node, "new", id)
		r.node = id
		r.acked = map[string]map[string]uint64{}
		return r.pushLocked(ctx, day, domain, fields)
	}
	return nil
}

// Run flushes after every Add (at most once per interval) and every
// interval, until ctx ends.
func (r *SharedReports) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.nudge:
		case <-t.C:
		}
		if err := r.Flush(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, ErrDown) {
			r.log.Info("fleet: TLS-RPT counts not pushed; kept in the local journal", "error", err)
		}
		select { // debounce: at most one push per interval
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// List returns the days and domains of every node with their shared
// report state.
func (r *SharedReports) List(ctx context.Context) ([]tlsrpt.Pending, error) {
	var out []tlsrpt.Pending
	err := r.c.do(ctx, OpReportState, func(ctx context.Context) error {
		idx := r.c.key("rpt", "index")
		now := strconv.FormatInt(r.now().UnixMilli(), 10)
		if err := r.c.rdb.ZRemRangeByScore(ctx, idx, "-inf", "("+now).Err(); err != nil {
			return err
		}
		ms, err := r.c.rdb.ZRange(ctx, idx, 0, -1).Result()
		if err != nil {
			return err
		}
		pipe := r.c.rdb.Pipeline()
		gets := make([]*redis.StringCmd, len(ms))
		for i, m := range ms {
			day, domain, _ := strings.Cut(m, "/")
			gets[i] = pipe.Get(ctx, r.key(day, domain, "state"))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for i, m := range ms {
			day, domain, _ := strings.Cut(m, "/")
			p := tlsrpt.Pending{Day: day, Domain: domain}
			if b, err := gets[i].Bytes(); err == nil {
				if err := json.Unmarshal(b, &p.State); err != nil {
					return fmt.Errorf("state of %s: %w", m, err)
				}
			}
			out = append(out, p)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Day != out[j].Day {
			return out[i].Day < out[j].Day
		}
		return out[i].Domain < out[j].Domain
	})
	return out, err
}

// Aggregates returns the fleet-wide aggregates, in key order.
func (r *SharedReports) Aggregates(ctx context.Context, day, domain string) ([]tlsrpt.Aggregate, error) {
	var m map[string]string
	err := r.c.do(ctx, OpCountsRead, func(ctx context.Context) error {
		var err error
		m, err = r.c.rdb.HGetAll(ctx, r.key(day, domain, "agg")).Result()
		return err
	})
	if err != nil {
		return nil, err
	}
	fields := make([]string, 0, len(m))
	for f := range m {
		fields = append(fields, f)
	}
	sort.Strings(fields)
	out := make([]tlsrpt.Aggregate, 0, len(fields))
	for _, f := range fields {
		var a tlsrpt.Aggregate
		if err := json.Unmarshal([]byte(f), &a.Key); err != nil {
			return nil, fmt.Errorf("fleet: shared aggregate %q: %w", f, err)
		}
		n, err := strconv.ParseUint(m[f], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("fleet: shared count of %q: %w", f, err)
		}
		a.Count = n
		out = append(out, a)
	}
	return out, nil
}

var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

var setStateScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PXAT', ARGV[3])
return 1`)

// Claim takes the report's lock (SET NX PX) and reads its state.
func (r *SharedReports) Claim(ctx context.Context, day, domain string) (tlsrpt.Claim, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	lock := r.key(day, domain, "lock")
	var ok bool
	var raw []byte
	err := r.c.do(ctx, OpLock, func(ctx context.Context) error {
		var err error
		if ok, err = r.c.rdb.SetNX(ctx, lock, token, r.claimTTL).Result(); err != nil || !ok {
			return err
		}
		raw, err = r.c.rdb.Get(ctx, r.key(day, domain, "state")).Bytes()
		if errors.Is(err, redis.Nil) {
			err = nil
		}
		return err
	})
	if err != nil {
		if ok {
			r.c.unlock(lock, token)
		}
		return nil, err
	}
	if !ok {
		return nil, tlsrpt.ErrClaimed
	}
	cl := &claim{r: r, day: day, domain: domain, lock: lock, token: token, done: make(chan struct{})}
	if len(raw) != 0 {
		if err := json.Unmarshal(raw, &cl.st); err != nil {
			r.c.unlock(lock, token)
			return nil, fmt.Errorf("fleet: report state of %s: %w", member(day, domain), err)
		}
	}
	cl.ctx, cl.cancel = context.WithCancel(ctx)
	go cl.renew()
	return cl, nil
}

type claim struct {
	r           *SharedReports
	day, domain string
	lock, token string
	st          tlsrpt.DeliveryState
	ctx         context.Context
	cancel      context.CancelFunc
	done        chan struct{}
	once        sync.Once
}

func (c *claim) State() tlsrpt.DeliveryState { return c.st }
func (c *claim) Context() context.Context    { return c.ctx }

// renew extends the lock every third of its lifetime; when the lock turns
// out to be someone else's, the claim's context ends.
func (c *claim) renew() {
	t := time.NewTicker(c.r.claimTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		var n int64
		err := c.r.c.do(c.ctx, OpLock, func(ctx context.Context) error {
			var err error
			n, err = renewScript.Run(ctx, c.r.c.rdb, []string{c.lock}, c.token, c.r.claimTTL.Milliseconds()).Int64()
			return err
		})
		if err == nil && n == 0 {
			c.r.log.Warn("fleet: lost the claim on a TLS report", "day", c.day, "domain", c.domain)
			c.cancel()
			return
		}
	}
}

func (c *claim) SetState(st tlsrpt.DeliveryState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var n int64
	// Not c.ctx: the state must be written even if sending ran out of time.
	err = c.r.c.do(context.Background(), OpReportState, func(ctx context.Context) error {
		var err error
		n, err = setStateScript.Run(ctx, c.r.c.rdb, []string{c.lock, c.r.key(c.day, c.domain, "state")},
			c.token, b, strconv.FormatInt(c.r.expireAt(c.day).UnixMilli(), 10)).Int64()
		return err
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return tlsrpt.ErrClaimLost
	}
	c.st = st
	return nil
}

func (c *claim) Release() {
	c.once.Do(func() {
		close(c.done)
		c.cancel()
		c.r.c.unlock(c.lock, c.token)
	})
}
