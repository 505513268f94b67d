package engine

import (
	"context"
	"net"
	"strings"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// QueryObserver is told of every question that reached the resolver (cache
// misses only), for debug logging.
type QueryObserver func(name string, qtype uint16, a *dane.Answer, err error, took time.Duration)

// CachedQuerier puts the TTL-exact cache of package policycache in front of
// a dane.Querier (normally a *dane.Resolver). One is built per dane block,
// before anything else, and handed to every component that asks DNS: the
// engine (MX, address and TLSA records), the MTA-STS manager
// (_mta-sts TXT) and the TLS-RPT sender (_smtp._tls TXT). It is safe for
// concurrent use.
type CachedQuerier struct {
	q       dane.Querier
	cache   *policycache.Cache[QueryKey, *dane.Answer]
	onQuery QueryObserver
	// fetchTimeout is the cache's, for the questions of Uncached;
	// uncached collapses identical ones in flight.
	fetchTimeout time.Duration
	uncached     singleflight.Group
}

// QueryKey is the cache key of one DNS question.
type QueryKey struct {
	Name  string
	Qtype uint16
}

// NewCachedQuerier builds the cache in front of q. onQuery may be nil.
func NewCachedQuerier(q dane.Querier, cfg policycache.Config, onQuery QueryObserver) *CachedQuerier {
	timeout := cfg.FetchTimeout
	if timeout <= 0 {
		timeout = policycache.DefaultFetchTimeout
	}
	return &CachedQuerier{q: q, cache: policycache.New[QueryKey, *dane.Answer](cfg), onQuery: onQuery, fetchTimeout: timeout}
}

// Cache exposes the cache, for metrics and the sweeper.
func (c *CachedQuerier) Cache() *policycache.Cache[QueryKey, *dane.Answer] { return c.cache }

// Query implements dane.Querier: a cached answer while its TTL lasts, else
// a question to the resolver.
func (c *CachedQuerier) Query(ctx context.Context, name string, qtype uint16) (*dane.Answer, error) {
	key := QueryKey{strings.ToLower(dns.Fqdn(name)), qtype}
	return c.cache.Get(ctx, key, func(ctx context.Context) (*dane.Answer, time.Duration, error) {
		start := time.Now()
		a, err := c.q.Query(ctx, key.Name, key.Qtype)
		if c.onQuery != nil {
			c.onQuery(key.Name, key.Qtype, a, err, time.Since(start))
		}
		if err != nil {
			return nil, 0, err
		}
		return a, a.TTL, nil
	})
}

// Uncached returns a querier that asks the resolver behind c directly:
// its answers are neither taken from the cache nor stored in it, and it
// counts no cache lookup (the observer still sees each question). It
// serves the CNAME probe of a cold MX host (dane.Discoverer.CNAMEProbe),
// a hint whose answer decides nothing. Identical questions in flight are
// asked once (many deliveries to one cold destination probe it once);
// each is bounded by the cache's fetch timeout, as a cached fetch is.
func (c *CachedQuerier) Uncached() dane.Querier { return uncached{c} }

type uncached struct{ c *CachedQuerier }

func (u uncached) Query(ctx context.Context, name string, qtype uint16) (*dane.Answer, error) {
	name = strings.ToLower(dns.Fqdn(name))
	v, err, _ := u.c.uncached.Do(name+"/"+dns.TypeToString[qtype], func() (any, error) {
		ctx, cancel := context.WithTimeout(ctx, u.c.fetchTimeout)
		defer cancel()
		start := time.Now()
		a, err := u.c.q.Query(ctx, name, qtype)
		if u.c.onQuery != nil {
			u.c.onQuery(name, qtype, a, err, time.Since(start))
		}
		return a, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*dane.Answer), nil
}

// Forget implements dane.Forgetter: it drops the cached answer or failure
// to one question.
func (c *CachedQuerier) Forget(name string, qtype uint16) {
	c.cache.Invalidate(QueryKey{strings.ToLower(dns.Fqdn(name)), qtype})
}

// Fresh reports whether the cache holds an unexpired answer or failure to
// the question, without asking anything or counting a lookup.
func (c *CachedQuerier) Fresh(name string, qtype uint16) bool {
	return c.cache.Fresh(QueryKey{strings.ToLower(dns.Fqdn(name)), qtype})
}

// LookupTXT is dane.LookupTXT through the cache: the MTA-STS discovery
// record (_mta-sts.<domain>, RFC 8461 §3.1) and the TLS-RPT record
// (_smtp._tls.<domain>, RFC 8460 §3) share the TTL-exact cache with the
// DANE lookups.
func (c *CachedQuerier) LookupTXT(ctx context.Context, name string) ([]string, error) {
	return dane.LookupTXT(ctx, c, name)
}

// ReceivingIP returns the MX host's address when it has exactly one, so
// that it is certainly the one the session used (the "receiving-ip" of an
// RFC 8460 §4.4 failure detail); "" otherwise.
func (c *CachedQuerier) ReceivingIP(ctx context.Context, mx string) string {
	if mx == "" {
		return ""
	}
	var addrs []string
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		ans, err := c.Query(ctx, mx, qt)
		if err != nil {
			return ""
		}
		for _, rr := range ans.Records {
			switch a := rr.(type) {
			case *dns.A:
				addrs = append(addrs, a.A.String())
			case *dns.AAAA:
				addrs = append(addrs, a.AAAA.String())
			}
		}
	}
	if len(addrs) != 1 || net.ParseIP(addrs[0]) == nil {
		return ""
	}
	return addrs[0]
}

// SendingIP is the RFC 8460 §4.4 "sending-mta-ip": configured (maddy's
// target.remote local_ip, which the policy cannot see) when set, else the
// source address the system would use towards receiving, found without
// sending a packet. "" when neither is known.
func SendingIP(configured, receiving string) string {
	if configured != "" {
		return configured
	}
	if receiving == "" {
		return ""
	}
	c, err := net.Dial("udp", net.JoinHostPort(receiving, "25"))
	if err != nil {
		return ""
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return a.IP.String()
	}
	return ""
}
