package tlsrpt

import (
	"context"
	"errors"
	"time"
)

// A fleet of sending servers reports as one: RFC 8460 §4.1 asks for one
// report per reporting organization, policy domain and day, so each
// node's sessions are counted in a shared store and one node builds and
// sends the report from those counts. Shared is that store, as the Sender
// sees it; package fleet implements it on Redis.
//
// Each node keeps its own Store as the journal of its sessions and the
// source of truth for them; Flush brings the shared counts up to date
// with it. The state of a report (attempts, backoff, done) lives in the
// shared store, changed only by the node holding the report's claim, a
// lock with an expiry: a node that dies while sending loses its claim
// when the lock expires, and another node sends (the report may then go
// out twice, never zero times).
type Shared interface {
	// Flush pushes this node's sessions recorded so far to the shared
	// counts.
	Flush(ctx context.Context) error
	// List returns every day and domain with sessions of any node, with
	// the shared delivery state of its report.
	List(ctx context.Context) ([]Pending, error)
	// Aggregates returns the aggregates of every node for domain on day.
	Aggregates(ctx context.Context, day, domain string) ([]Aggregate, error)
	// Claim takes the right to send the report of day for domain. It
	// returns ErrClaimed when another node holds it.
	Claim(ctx context.Context, day, domain string) (Claim, error)
}

// Claim is the right to send one report, held until Release.
type Claim interface {
	// State is the shared delivery state when the claim was taken.
	State() DeliveryState
	// Context ends when the claim is lost (its lock expired and another
	// node took it) or released.
	Context() context.Context
	// SetState stores the new delivery state, if the claim still holds
	// (else ErrClaimLost).
	SetState(st DeliveryState) error
	// Release gives the claim up.
	Release()
}

// Errors of Shared.
var (
	ErrClaimed   = errors.New("tlsrpt: another node is sending this report")
	ErrClaimLost = errors.New("tlsrpt: the claim on this report was lost")
)

type claimKey struct{}

// saveState stores the delivery state: through the claim the context
// carries (a fleet), also copied to the local store for "maddy tlsrpt
// list"; else in the local store.
func (s *Sender) saveState(ctx context.Context, day, domain string, st DeliveryState) error {
	if c, ok := ctx.Value(claimKey{}).(Claim); ok {
		if err := c.SetState(st); err != nil {
			return err
		}
		_ = s.Store.SetState(day, domain, st)
		return nil
	}
	return s.Store.SetState(day, domain, st)
}

// aggregatesFor returns the aggregates the report is built from: every
// node's in a fleet, else the local store's.
func (s *Sender) aggregatesFor(ctx context.Context, day, domain string) ([]Aggregate, error) {
	if _, ok := ctx.Value(claimKey{}).(Claim); ok {
		return s.Shared.Aggregates(ctx, day, domain)
	}
	return s.Store.Aggregates(day, domain)
}

// tickShared is Tick for a fleet: the same schedule as tick, over the
// shared list, each report under a claim. While the shared store is
// unreachable nothing is sent (each node's sessions stay in its journal);
// reports go out when it is back.
func (s *Sender) tickShared(ctx context.Context) ([]Outcome, error) {
	now := s.now()
	if err := s.Shared.Flush(ctx); err != nil {
		return nil, err
	}
	reqs, err := s.Store.takeRequests()
	if err != nil {
		return nil, err
	}
	restore := func() { // requests must survive a failed tick
		for d := range reqs {
			_ = s.Store.RequestSend(d, now)
		}
	}
	list, err := s.Shared.List(ctx)
	if err != nil {
		restore()
		return nil, err
	}
	today, _ := ParseDay(Day(now))
	oldest := Day(today.AddDate(0, 0, -s.KeepDays))
	var outs []Outcome
	for _, p := range list {
		if ctx.Err() != nil {
			return outs, ctx.Err()
		}
		if p.Day < oldest || !s.wanted(p, reqs[p.Day], now) {
			continue
		}
		c, err := s.Shared.Claim(ctx, p.Day, p.Domain)
		if errors.Is(err, ErrClaimed) {
			continue
		}
		if err != nil {
			restore()
			return outs, err
		}
		st := c.State()
		if reqs[p.Day] {
			// As RequestSend does for the local store.
			st.Done, st.Outcome, st.NextAttempt, st.Attempts, st.FirstAttempt = false, "", time.Time{}, 0, time.Time{}
		}
		p.State = st
		if s.wanted(p, reqs[p.Day], now) { // the state may have changed since List
			cctx := context.WithValue(c.Context(), claimKey{}, c)
			outs = append(outs, s.sendOne(cctx, p.Day, p.Domain, st, now))
		}
		c.Release()
	}
	if err := s.Store.Prune(oldest); err != nil {
		return outs, err
	}
	return outs, nil
}

// wanted tells whether the report p is to be tried now.
func (s *Sender) wanted(p Pending, requested bool, now time.Time) bool {
	if requested {
		return true
	}
	if p.State.Done {
		return false
	}
	start, err := ParseDay(p.Day)
	if err != nil || now.Before(start.Add(24*time.Hour+s.SendAfter)) {
		return false
	}
	return p.State.NextAttempt.IsZero() || !now.Before(p.State.NextAttempt)
}
