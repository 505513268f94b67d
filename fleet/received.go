package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/redis/go-redis/v9"
)

// SharedReceived is tlsrpt.ReceivedReports on Redis: the TLS reports that
// other MTAs sent about the operator's domains, received by any node of
// the fleet (the `_smtp._tls` rua mailbox is served by whichever node the
// sender's MX lookup picks, and an HTTPS rua by whichever node the load
// balancer picks), readable as one fleet-wide set.
//
// Each node's own tlsrpt.ReceivedStore is its journal: AddReceived
// commits the report there first (so the sender gets its 250 only for a
// report on disk), then tries Redis once, bounded by the Client's
// timeouts. A report Redis did not take is kept locally and pushed by the
// push loop (Run, Flush) when Redis is back. Storing in Redis is SET NX on
// the report-id's key, in one script with the day index: RFC 8460 §5.3's
// "identify and ignore duplicate reports" by report-id holds across
// nodes, whichever node got the copy first, and a repeated push adds
// nothing.
//
// Keys, under the Client's prefix:
//
//	rcv:rep:<report-id>  string  the entry (tlsrpt.EncodeReceived)
//	rcv:day:<day>        set     report-ids of the day (the day of start-datetime)
//	rcv:days             zset    days, scored by their start (Unix seconds)
//	rcv:epoch            string  random value set once per Redis data set
//
// A report's keys expire KeepDays after the start of its day, which is
// when PruneReceived (by the same cutoff, tlsrpt.RetentionCutoff) would
// delete them; PruneReceived deletes them explicitly too.
//
// Which local reports are not yet in Redis is kept in memory only: at the
// first Flush of a process, and whenever rcv:epoch has changed (Redis lost
// its data), every local report within retention is pushed again (SET NX:
// those present are left alone). A crash therefore loses nothing: the
// next start pushes the journal.
type SharedReceived struct {
	c        *Client
	local    *tlsrpt.ReceivedStore
	keepDays int
	m        *Metrics
	log      *slog.Logger
	now      func() time.Time

	nudge chan struct{}

	flushMu sync.Mutex // serializes flushes
	mu      sync.Mutex // guards the fields below
	epoch   string     // rcv:epoch as last seen; "" before the first flush
	// pending: report-id -> day of the local reports Redis did not take;
	// inflight: those AddReceived is storing now (Flush leaves them to it,
	// so that its answer, new or duplicate, is Redis' first one).
	pending  map[string]string
	inflight map[string]bool
}

var _ tlsrpt.ReceivedReports = (*SharedReceived)(nil)

// ReceivedConfig configures NewSharedReceived.
type ReceivedConfig struct {
	// Local is the node's own store of received reports (the journal).
	// Required.
	Local *tlsrpt.ReceivedStore
	// KeepDays is the retention (the receiver's keep_days); default 30.
	KeepDays int
	Metrics  *Metrics
	Log      *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewSharedReceived builds the shared received reports of a node.
func NewSharedReceived(c *Client, cfg ReceivedConfig) (*SharedReceived, error) {
	if c == nil || cfg.Local == nil {
		return nil, errors.New("fleet: NewSharedReceived needs a client and ReceivedConfig.Local")
	}
	r := &SharedReceived{c: c, local: cfg.Local, keepDays: cfg.KeepDays, m: cfg.Metrics, log: cfg.Log, now: cfg.Now,
		nudge: make(chan struct{}, 1), pending: map[string]string{}, inflight: map[string]bool{}}
	if r.keepDays <= 0 {
		r.keepDays = 30
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r, nil
}

// Local is the node's own store.
func (r *SharedReceived) Local() *tlsrpt.ReceivedStore { return r.local }

func (r *SharedReceived) repKey(id string) string  { return r.c.key("rcv", "rep", id) }
func (r *SharedReceived) dayKey(day string) string { return r.c.key("rcv", "day", day) }

// expireAt is when the keys of day are past retention: the start of day
// plus KeepDays days (from then on RetentionCutoff is after day).
func (r *SharedReceived) expireAt(day string) time.Time {
	start, _ := tlsrpt.ParseDay(day)
	return start.AddDate(0, 0, r.keepDays)
}

// addScript stores one report unless its report-id is there already:
// KEYS report, day set, days index; ARGV entry, expiry (ms), report-id,
// day, day score. It returns 1 if stored, 0 for a duplicate.
var addScript = redis.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PXAT', ARGV[2]) then return 0 end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
return 1`)

// push stores e in Redis; added reports whether it was new there.
// Reports already past retention are not pushed (they are about to be
// pruned everywhere) and count as done.
func (r *SharedReceived) push(ctx context.Context, e tlsrpt.ReceivedEntry) (bool, error) {
	day := e.Day()
	exp := r.expireAt(day)
	if !exp.After(r.now()) {
		return false, nil
	}
	v, err := tlsrpt.EncodeReceived(e)
	if err != nil {
		return false, err
	}
	start, _ := tlsrpt.ParseDay(day)
	var n int64
	err = r.c.do(ctx, OpReceivedAdd, func(ctx context.Context) error {
		var err error
		n, err = addScript.Run(ctx, r.c.rdb,
			[]string{r.repKey(e.Report.ReportID), r.dayKey(day), r.c.key("rcv", "days")},
			v, strconv.FormatInt(exp.UnixMilli(), 10), e.Report.ReportID, day, strconv.FormatInt(start.Unix(), 10)).Int64()
		return err
	})
	return n == 1, err
}

// AddReceived implements tlsrpt.ReceivedReports: the report is committed
// to the local store, then stored in Redis if it answers. added is
// whether the report is new fleet-wide; while Redis does not answer, it
// is whether it is new on this node (a copy another node took meanwhile
// is then counted as new by both; the stored set has it once).
func (r *SharedReceived) AddReceived(ctx context.Context, e tlsrpt.ReceivedEntry) (bool, error) {
	added, err := r.local.AddReceived(ctx, e)
	if err != nil || !added {
		// A local duplicate is in the journal already, pushed or to be.
		return added, err
	}
	id := e.Report.ReportID
	r.mu.Lock()
	r.inflight[id] = true
	r.mu.Unlock()
	shared, err := r.push(ctx, e)
	r.mu.Lock()
	delete(r.inflight, id)
	if err != nil {
		r.pending[id] = e.Day()
		r.setDepthLocked()
	}
	r.mu.Unlock()
	if err != nil {
		r.wake()
		if !errors.Is(err, ErrDown) {
			r.log.Info("fleet: received TLS report not stored in the shared store; kept in the local journal",
				"report_id", id, "error", err)
		}
		return true, nil
	}
	return shared, nil
}

func (r *SharedReceived) wake() {
	select {
	case r.nudge <- struct{}{}:
	default:
	}
}

func (r *SharedReceived) setDepthLocked() {
	if r.m != nil {
		r.m.ReceivedPending.Set(float64(len(r.pending)))
	}
}

// Pending is the number of local reports not known to be in Redis.
func (r *SharedReceived) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Flush pushes the local reports Redis does not have: the pending ones,
// or, at the first flush and after Redis lost its data, every local
// report within retention. It stops at the first failure; what is left
// stays pending.
func (r *SharedReceived) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	var b [16]byte
	_, _ = rand.Read(b[:])
	var epoch string
	if err := r.c.do(ctx, OpReceivedAdd, func(ctx context.Context) error {
		k := r.c.key("rcv", "epoch")
		if err := r.c.rdb.SetNX(ctx, k, hex.EncodeToString(b[:]), 0).Err(); err != nil {
			return err
		}
		var err error
		epoch, err = r.c.rdb.Get(ctx, k).Result()
		return err
	}); err != nil {
		return err
	}
	r.mu.Lock()
	all, n := epoch != r.epoch, len(r.pending)
	r.mu.Unlock()
	if !all && n == 0 {
		return nil
	}
	cutoff := tlsrpt.RetentionCutoff(r.now(), r.keepDays)
	es, err := r.local.ReceivedSince(ctx, cutoff)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if all {
		for _, e := range es {
			if id := e.Report.ReportID; !r.inflight[id] {
				r.pending[id] = e.Day()
			}
		}
	}
	for id, day := range r.pending { // pruned meanwhile
		if day < cutoff {
			delete(r.pending, id)
		}
	}
	r.setDepthLocked()
	r.mu.Unlock()
	for _, e := range es {
		id := e.Report.ReportID
		r.mu.Lock()
		_, todo := r.pending[id]
		r.mu.Unlock()
		if !todo {
			continue
		}
		if _, err := r.push(ctx, e); err != nil {
			return err
		}
		r.mu.Lock()
		delete(r.pending, id)
		r.setDepthLocked()
		r.mu.Unlock()
	}
	r.mu.Lock()
	r.epoch = epoch
	r.mu.Unlock()
	return nil
}

// Run flushes after an AddReceived that Redis did not take (at most once
// per interval) and every interval, until ctx ends.
func (r *SharedReceived) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := r.Flush(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, ErrDown) {
			r.log.Info("fleet: received TLS reports not pushed; kept in the local journal", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.nudge:
		case <-t.C:
		}
		select { // debounce: at most one flush per interval
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// ReceivedSince implements tlsrpt.ReceivedReports: the fleet-wide reports
// (ReadReceived) together with the local ones (those not pushed yet
// included), each report-id once, oldest day first, then by report-id.
// It fails if Redis does not answer: the caller asked for the fleet's
// view, and the local one alone would be partial without saying so.
func (r *SharedReceived) ReceivedSince(ctx context.Context, since string) ([]tlsrpt.ReceivedEntry, error) {
	shared, err := ReadReceived(ctx, r.c, since)
	if err != nil {
		return nil, err
	}
	local, err := r.local.ReceivedSince(ctx, since)
	if err != nil {
		return nil, err
	}
	return MergeReceived(shared, local), nil
}

// MergeReceived joins lists of received reports, each report-id once (the
// first list's copy wins), sorted as ReceivedSince sorts.
func MergeReceived(lists ...[]tlsrpt.ReceivedEntry) []tlsrpt.ReceivedEntry {
	seen := map[string]bool{}
	var out []tlsrpt.ReceivedEntry
	for _, l := range lists {
		for _, e := range l {
			if !seen[e.Report.ReportID] {
				seen[e.Report.ReportID] = true
				out = append(out, e)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if di, dj := out[i].Day(), out[j].Day(); di != dj {
			return di < dj
		}
		return out[i].Report.ReportID < out[j].Report.ReportID
	})
	return out
}

// ReadReceived returns the reports in the shared store whose day is since
// (YYYY-MM-DD) or later, unsorted: what every node pushed. It reads only
// (for "maddy tlsrpt received", which must not create a node's local
// store).
func ReadReceived(ctx context.Context, c *Client, since string) ([]tlsrpt.ReceivedEntry, error) {
	start, err := tlsrpt.ParseDay(since)
	if err != nil {
		return nil, fmt.Errorf("fleet: ReadReceived: %w", err)
	}
	var raw []string
	err = c.do(ctx, OpReceivedRead, func(ctx context.Context) error {
		days, err := c.rdb.ZRangeByScore(ctx, c.key("rcv", "days"), &redis.ZRangeBy{
			Min: strconv.FormatInt(start.Unix(), 10), Max: "+inf"}).Result()
		if err != nil {
			return err
		}
		pipe := c.rdb.Pipeline()
		ids := make([]*redis.StringSliceCmd, len(days))
		for i, d := range days {
			ids[i] = pipe.SMembers(ctx, c.key("rcv", "day", d))
		}
		if len(days) > 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
		var keys []string
		for _, cmd := range ids {
			for _, id := range cmd.Val() {
				keys = append(keys, c.key("rcv", "rep", id))
			}
		}
		for len(keys) > 0 { // MGET in bounded batches
			n := min(len(keys), 500)
			vs, err := c.rdb.MGet(ctx, keys[:n]...).Result()
			if err != nil {
				return err
			}
			for _, v := range vs {
				if s, ok := v.(string); ok { // nil: expired meanwhile
					raw = append(raw, s)
				}
			}
			keys = keys[n:]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]tlsrpt.ReceivedEntry, 0, len(raw))
	for _, v := range raw {
		e, err := tlsrpt.DecodeReceived([]byte(v))
		if err != nil {
			return nil, fmt.Errorf("fleet: a shared received report: %w", err)
		}
		if e.Day() >= since {
			out = append(out, e)
		}
	}
	return out, nil
}

// PruneReceived implements tlsrpt.ReceivedReports: it prunes the local
// store, then the days before the cutoff in Redis (whose keys expire by
// themselves too; a Redis that does not answer is left to that). It
// returns the number of local reports deleted.
func (r *SharedReceived) PruneReceived(ctx context.Context, before string) (int, error) {
	n, err := r.local.PruneReceived(ctx, before)
	if err != nil {
		return n, err
	}
	cut, err := tlsrpt.ParseDay(before)
	if err != nil {
		return n, fmt.Errorf("fleet: PruneReceived: %w", err)
	}
	err = r.c.do(ctx, OpReceivedPrune, func(ctx context.Context) error {
		idx := r.c.key("rcv", "days")
		days, err := r.c.rdb.ZRangeByScore(ctx, idx, &redis.ZRangeBy{
			Min: "-inf", Max: "(" + strconv.FormatInt(cut.Unix(), 10)}).Result()
		if err != nil {
			return err
		}
		for _, d := range days {
			ids, err := r.c.rdb.SMembers(ctx, r.dayKey(d)).Result()
			if err != nil {
				return err
			}
			keys := []string{r.dayKey(d)}
			for _, id := range ids {
				keys = append(keys, r.repKey(id))
			}
			if err := r.c.rdb.Del(ctx, keys...).Err(); err != nil {
				return err
			}
			if err := r.c.rdb.ZRem(ctx, idx, d).Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, ErrDown) {
		err = nil
	}
	return n, err
}
