package engine

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/miekg/dns"
)

// The cold path. A delivery to a destination whose answers are not cached
// needs, in RFC 7672 §2.2 and RFC 8461 §3 order: the policy entry; the MX
// RRset; the _mta-sts TXT record (and the policy fetch when its id is new);
// for each MX host its address records and then its TLSA RRset. Asked one
// after the other, every question costs a resolver round trip before the
// MTA may connect. Prepare asks each one as soon as what it depends on is
// known, all in the background:
//
//	policy entry ─┬─ MX RRset ─┬─ host 1: A ‖ TLSA ‖ CNAME ─(alias)─ TLSA of its target
//	              │            └─ host 2: A ‖ TLSA ─ ...
//	              └─ MTA-STS: _mta-sts TXT ─ policy fetch
//
// The CNAME probe of a cold host is only a hint: it goes to the resolver
// outside the cache and decides nothing; it lets the TLSA question at an
// alias's target leave while the target's address records are still being
// resolved and validated. CheckMX then waits only for what its verdict
// needs. Every other question goes through the engine's one CachedQuerier,
// which collapses identical questions in flight: the lookups CheckMX would have made itself are the
// very ones under way, so a warm destination asks nothing more than before
// and the verdicts are those of the sequential procedure (docs/cache.md).

// prefetch is the background work of one Destination.
type prefetch struct {
	ctx     context.Context // the lookups' context; cancel ends it
	cancel  context.CancelFunc
	start   time.Time
	ready   chan struct{} // closed once Policy, PolicyErr, MX, MXErr and hosts are set
	stsDone chan struct{} // closed once STS and STSErr are set
	hosts   map[string]*hostLookup
	end     time.Time // when the last of policy, MX and MTA-STS was known; set before stsDone or ready closes, whichever is later
	endMu   sync.Mutex
	pending int // of ready and stsDone, under endMu
	// hostsAhead: look the MX hosts up as soon as the MX RRset is known
	// (Prepare), rather than when CheckMX asks (Destination).
	hostsAhead bool
}

// hostLookup is the background RFC 7672 §2.2.2-§2.2.3 lookup of one MX
// host.
type hostLookup struct {
	done chan struct{}
	host *dane.Host
	err  error
}

// Prepare starts the evaluation of a next-hop domain and returns at once:
// the policy entry, the MX RRset (where DANE may apply), the MTA-STS policy
// (where it may apply) and, as soon as the MX RRset is known, the address
// and TLSA records of every MX host, all looked up in the background under
// a context that keeps ctx's values but not its cancellation or deadline
// (each lookup is bounded by the cache's fetch timeout, the MTA-STS
// manager's timeout or the policy table's timeout, exactly as when the
// caller made them one by one). Release stops it early.
func (e *Engine) Prepare(ctx context.Context, domain string) *Destination {
	ctx = context.WithoutCancel(ctx)
	d := e.newDestination(ctx, domain)
	d.bg.hostsAhead = true
	go e.prefetch(d)
	return d
}

func (e *Engine) newDestination(ctx context.Context, domain string) *Destination {
	ctx, cancel := context.WithCancel(ctx)
	d := &Destination{Domain: CanonicalDomain(domain), hosts: map[string]*hostState{}}
	d.bg = &prefetch{ctx: ctx, cancel: cancel, start: time.Now(), ready: make(chan struct{}), stsDone: make(chan struct{}),
		hosts: map[string]*hostLookup{}, pending: 2}
	return d
}

func (e *Engine) prefetch(d *Destination) {
	bg := d.bg
	ctx := bg.ctx
	// The policy entry first: the level decides which lookups are made at
	// all (none for a destination whose policy cannot be read). It is an
	// in-memory lookup unless policy_table is backed by a server.
	d.Policy = DomainPolicy{Level: e.cfg.DefaultLevel, Source: "default"}
	if e.cfg.Policies != nil {
		p, ok, err := e.cfg.Policies(ctx, d.Domain)
		switch {
		case err != nil:
			d.PolicyErr = err
		case ok:
			d.Policy = p
		}
	}
	lvl := d.Policy.Level
	if e.cfg.STS != nil && d.PolicyErr == nil && lvl.usesSTS() {
		// RFC 8461 §3: the MTA-STS policy, cached or fetched, beside the
		// MX RRset (the TXT record does not depend on it).
		go func() {
			d.STS, d.STSErr = e.cfg.STS.Policy(ctx, d.Domain)
			bg.finish(bg.stsDone)
		}()
	} else {
		bg.finish(bg.stsDone)
	}
	if d.PolicyErr == nil && lvl.usesDANE() {
		// RFC 7672 §2.2.1: the MX RRset and its DNSSEC status.
		d.MX, d.MXErr = e.disc.LookupMX(ctx, d.Domain)
		// CheckMX looks the hosts up only where the level, the MX RRset
		// and its security let it; so does the prefetch.
		if bg.hostsAhead && d.MXErr == nil && (lvl != LevelDANEOnly || d.MX.Secure) {
			for _, h := range d.MX.Hosts {
				bg.hosts[h.Host] = e.lookupHostAsync(ctx, h.Host)
			}
		}
	}
	bg.finish(bg.ready)
}

// finish closes ch and, for the last of ready and stsDone, records the
// end time.
func (bg *prefetch) finish(ch chan struct{}) {
	bg.endMu.Lock()
	bg.pending--
	if bg.pending == 0 {
		bg.end = time.Now()
	}
	bg.endMu.Unlock()
	close(ch)
}

// lookupHostAsync starts the lookups of one MX host: its address records
// and, beside them, the TLSA RRset (dane.Discoverer.SpeculativeTLSA) and,
// when the address records are not cached, the CNAME record outside the
// cache (dane.Discoverer.CNAMEProbe).
func (e *Engine) lookupHostAsync(ctx context.Context, host string) *hostLookup {
	disc := e.aheadDisc
	if !e.cfg.DNS.Fresh(host, dns.TypeA) {
		// Cold: the dial's AAAA, and the CNAME probe (never for a
		// cached host: a warm delivery asks nothing).
		if e.cfg.WarmDial != nil {
			e.cfg.WarmDial(ctx, host)
		}
		disc = e.coldDisc
	}
	hl := &hostLookup{done: make(chan struct{})}
	go func() {
		defer close(hl.done)
		hl.host, hl.err = disc.LookupHost(ctx, host)
	}()
	return hl
}

// lookupHost returns the lookup of mx: the background one when the MX
// RRset named it, else one made now (a host the MTA found elsewhere).
func (d *Destination) lookupHost(ctx context.Context, e *Engine, mx string) (*dane.Host, error) {
	var hl *hostLookup
	if d.bg != nil {
		hl = d.bg.hosts[strings.ToLower(dns.Fqdn(mx))]
	}
	if hl == nil {
		return e.disc.LookupHost(ctx, mx)
	}
	select {
	case <-hl.done:
		return hl.host, hl.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// waitReady waits until the policy and the MX RRset are known.
func (d *Destination) waitReady(ctx context.Context) error {
	if d.bg == nil {
		return nil
	}
	select {
	case <-d.bg.ready:
		return nil
	case <-ctx.Done():
		select {
		case <-d.bg.ready:
			return nil
		default:
			return ctx.Err()
		}
	}
}

// stsReady reports whether the MTA-STS lookup is over.
func (d *Destination) stsReady() bool {
	if d.bg == nil {
		return true
	}
	select {
	case <-d.bg.stsDone:
		return true
	default:
		return false
	}
}

// waitSTS waits until the MTA-STS lookup is over.
func (d *Destination) waitSTS(ctx context.Context) error {
	if d.bg == nil {
		return nil
	}
	select {
	case <-d.bg.stsDone:
		return nil
	case <-ctx.Done():
		if d.stsReady() {
			return nil
		}
		return ctx.Err()
	}
}

// stsOutcome returns the MTA-STS lookup; call it after waitSTS.
func (d *Destination) stsOutcome() stsOutcome {
	return stsOutcome{res: d.STS, err: d.STSErr}
}

// Wait waits until the policy, the MX RRset and the MTA-STS policy of d
// are known (not the lookups of its MX hosts); then its exported fields
// may be read. It returns ctx's error if ctx ends first.
func (d *Destination) Wait(ctx context.Context) error {
	if err := d.waitReady(ctx); err != nil {
		return err
	}
	return d.waitSTS(ctx)
}

// Done reports whether Wait would return at once.
func (d *Destination) Done() bool {
	if d.bg == nil {
		return true
	}
	select {
	case <-d.bg.ready:
		return d.stsReady()
	default:
		return false
	}
}

// Took returns how long the policy, MX and MTA-STS lookups of d took, from
// Prepare to the last of them; ok is false while they are not all done or
// for a Destination the caller built.
func (d *Destination) Took() (took time.Duration, ok bool) {
	if d.bg == nil || !d.Done() {
		return 0, false
	}
	d.bg.endMu.Lock()
	defer d.bg.endMu.Unlock()
	return d.bg.end.Sub(d.bg.start), true
}

// Release stops the background lookups of d that are still running (a
// lookup shared with other deliveries goes on for them). CheckMX and
// CheckConn of a released Destination fail as if the lookups had failed.
// It may be called more than once.
func (d *Destination) Release() {
	if d.bg != nil {
		d.bg.cancel()
	}
}
