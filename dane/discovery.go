package dane

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// MXSet is the outcome of MX resolution for a next-hop domain
// (RFC 7672 §2.2.1).
type MXSet struct {
	// Domain is the original next-hop domain, fully qualified, lower case.
	Domain string
	// Expanded is Domain with any CNAME at the MX lookup expanded.
	Expanded string
	// Secure is true when the MX RRset, and every CNAME leading to it, or
	// the denial that MX records exist, was DNSSEC-validated.
	Secure bool
	// Hosts are the MX host names sorted by preference (best first). When
	// the domain has no MX records, Implicit is set and Hosts holds just
	// the domain itself, as given, not CNAME-expanded (RFC 5321 §5.1,
	// RFC 7672 §2.2.2).
	Hosts    []MXHost
	Implicit bool
	// NullMX is set for a "0 ." MX record (RFC 7505): no mail accepted.
	NullMX bool
	// TTL is how long this result stays valid.
	TTL time.Duration
}

// MXHost is one MX record.
type MXHost struct {
	Host string // fully qualified, lower case
	Pref uint16
}

// Discoverer finds the TLSA records that apply to SMTP servers, following
// RFC 7672 §2.2.
type Discoverer struct {
	Q Querier
	// Port is the SMTP port, used in the "_<port>._tcp" TLSA prefix
	// (RFC 7672 §2.2.3). Default 25.
	Port int
	// SpeculativeTLSA makes LookupHost ask the TLSA RRset of the server
	// name at the same time as its address records, instead of after
	// them, saving one resolver round trip per server. RFC 7672 §2.2.2
	// wants the address lookups first, because some nameservers of
	// unsigned zones fail TLSA queries; so the speculative answer, and any
	// error, is used only where the address answer leads the sequential
	// procedure to ask that very question, and ignored otherwise. The
	// result of LookupHost is the same either way. When Q implements
	// Forgetter, an ignored failure is forgotten, so that it can never
	// answer a later lookup.
	SpeculativeTLSA bool
	// CNAMEProbe, with SpeculativeTLSA, makes LookupHost also ask the
	// server name's CNAME record, through CNAMEProbe, beside its address
	// records. A CNAME record comes from the server name's own zone and
	// usually arrives well before the address answer, which must follow
	// the alias into the target's zone and validate it; the TLSA RRset
	// at the CNAME's target is then asked at once, in flight with the
	// target's address records, instead of after them (RFC 7672 §2.2.3).
	// That early answer is used only when the address answer's expanded
	// name is that very target and the sequential procedure asks its
	// TLSA RRset; otherwise it is dropped (a failure forgotten, as for
	// SpeculativeTLSA) and the question asked in its turn. Only one alias
	// is looked ahead: a longer chain ends elsewhere and falls back to the
	// sequential order. The probe's answer itself decides nothing; a
	// caller that caches Q passes a querier here that does not fill that
	// cache. The result of LookupHost is the same with or without it.
	CNAMEProbe Querier
}

// Forgetter is implemented by caching Queriers: Forget drops the cached
// answer or failure to one question.
type Forgetter interface {
	Forget(name string, qtype uint16)
}

// LookupMX resolves the MX RRset of domain and its DNSSEC status.
// A lookup error means delivery to the domain must be delayed
// (RFC 7672 §2.1.2).
func (d *Discoverer) LookupMX(ctx context.Context, domain string) (*MXSet, error) {
	ans, err := d.Q.Query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	set := &MXSet{Domain: ans.Name, Expanded: ans.Target, Secure: ans.Secure, TTL: ans.TTL}
	if ans.Rcode == dns.RcodeNameError {
		// No such domain. The caller (the MTA) bounces that; we only
		// report it with its security status.
		return set, nil
	}
	for _, rr := range ans.Records {
		mx, ok := rr.(*dns.MX)
		if !ok {
			continue
		}
		host := strings.ToLower(mx.Mx)
		if host == "." {
			set.NullMX = true
			continue
		}
		set.Hosts = append(set.Hosts, MXHost{Host: host, Pref: mx.Preference})
	}
	// RFC 7672 §2.2.1: MX records are used in preference order.
	sort.SliceStable(set.Hosts, func(i, j int) bool { return set.Hosts[i].Pref < set.Hosts[j].Pref })
	if len(set.Hosts) == 0 && !set.NullMX {
		// RFC 7672 §2.2.2: without MX records the next-hop domain itself
		// is the sole server name. Keep the original name, the one the MTA
		// connects to; the address lookup of that name expands any CNAME
		// and yields both TLSA base candidates (expanded, then original).
		set.Implicit = true
		set.Hosts = []MXHost{{Host: set.Domain}}
	}
	return set, nil
}

// TLSAStatus says what the TLSA search for one SMTP server found.
type TLSAStatus int

const (
	// NoTLSA: no secure TLSA RRset exists for the server (none published,
	// insecure zone, or insecure address records). DANE does not apply;
	// pre-DANE opportunistic TLS is used (RFC 7672 §2.2).
	NoTLSA TLSAStatus = iota
	// HasTLSA: a secure, non-empty TLSA RRset was found. Whether any of
	// its records are usable is decided by Classify.
	HasTLSA
)

func (s TLSAStatus) String() string {
	if s == HasTLSA {
		return "tlsa"
	}
	return "no-tlsa"
}

// Host is the DANE view of one SMTP server.
type Host struct {
	// Name is the server name as it came from the MX record (or the
	// next-hop domain for an implicit MX).
	Name string
	// Expanded is Name with its CNAME chain expanded (equal to Name when
	// there is none).
	Expanded string
	// AddrSecure says whether the address records, through the whole CNAME
	// chain, were validated.
	AddrSecure bool
	// Status tells whether a secure TLSA RRset was found.
	Status TLSAStatus
	// BaseDomain is the TLSA base domain (RFC 7672 §2.2.3): the candidate
	// at which the secure TLSA RRset was found. Empty with NoTLSA.
	BaseDomain string
	// TLSA is the secure TLSA RRset, TLSAOwner the name it was looked up at
	// ("_25._tcp." + BaseDomain).
	TLSA      []*dns.TLSA
	TLSAOwner string
	// NoTLSAReason explains NoTLSA for logs: "insecure-mx-host",
	// "insecure-tlsa", "no-tlsa-records".
	NoTLSAReason string
	// TTL is the smallest TTL of everything this result was derived from.
	TTL time.Duration
}

// ErrNoAddress is returned when a server name has no address records: the
// server is unreachable (RFC 7672 §2.2.2).
var ErrNoAddress = errors.New("dane: the server name has no address records")

// LookupHost finds the TLSA records of the SMTP server host following
// RFC 7672 §2.2.2 and §2.2.3. A returned error means the server must be
// treated as unreachable (RFC 7672 §2.1.2); it is a *LookupError or
// ErrNoAddress.
func (d *Discoverer) LookupHost(ctx context.Context, host string) (*Host, error) {
	host = strings.ToLower(dns.Fqdn(host))
	h := &Host{Name: host, Expanded: host}
	ttl := newMinTTL()
	hostOwner := d.tlsaOwner(host)
	var spec *tlsaQuery
	if d.SpeculativeTLSA {
		// Asked now, used below only where the sequential procedure
		// asks it (see SpeculativeTLSA).
		spec = d.startTLSA(ctx, hostOwner)
		defer spec.discard(d.Q)
	}
	var probe *cnameProbe
	if spec != nil && d.CNAMEProbe != nil {
		probe = d.startProbe(ctx, host)
		defer probe.close(d.Q)
	}

	// RFC 7672 §2.2.2: address records first, both to learn whether the
	// server is reachable and to learn the security of the CNAME chain.
	addr, err := d.Q.Query(ctx, host, dns.TypeA)
	if err != nil {
		return nil, err
	}
	ttl.add(addr.TTL)
	if !addr.Exists() {
		addr6, err := d.Q.Query(ctx, host, dns.TypeAAAA)
		if err != nil {
			return nil, err
		}
		ttl.add(addr6.TTL)
		if !addr6.Exists() {
			return nil, ErrNoAddress
		}
		addr = addr6
	}
	h.Expanded = addr.Target
	h.AddrSecure = addr.Secure

	var candidates []string
	switch {
	case addr.Secure && len(addr.CNAMEs) == 0:
		// Non-CNAME, secure.
		candidates = []string{host}
	case addr.Secure:
		// Secure CNAME: expanded name first, then the original.
		candidates = []string{addr.Target, host}
	case len(addr.CNAMEs) != 0:
		// Insecure CNAME: the original name remains a candidate only if
		// the initial CNAME itself is secure; that needs its own query
		// (RFC 7672 §2.1.3).
		cn, err := d.Q.Query(ctx, host, dns.TypeCNAME)
		if err != nil {
			return nil, err
		}
		ttl.add(cn.TTL)
		if cn.Secure && cn.Exists() {
			candidates = []string{host}
		}
	}
	if len(candidates) == 0 {
		h.NoTLSAReason = "insecure-mx-host"
		h.TTL = ttl.get()
		return h, nil
	}

	h.NoTLSAReason = "no-tlsa-records"
	var expanded *tlsaQuery
	if spec != nil && len(candidates) > 1 {
		// RFC 7672 §2.2.3: the expanded name's TLSA RRset comes first;
		// the original's is already on its way, and so is the
		// expanded name's when the CNAME probe named it.
		expanded = probe.take(d.tlsaOwner(candidates[0]))
		if expanded == nil {
			expanded = d.startTLSA(ctx, d.tlsaOwner(candidates[0]))
		}
	}
	for _, base := range candidates {
		owner := d.tlsaOwner(base)
		var ans *Answer
		var err error
		switch {
		case expanded != nil && owner == expanded.owner:
			ans, err = expanded.wait(ctx)
		case spec != nil && owner == hostOwner:
			ans, err = spec.use(ctx)
		default:
			ans, err = d.Q.Query(ctx, owner, dns.TypeTLSA)
		}
		if err != nil {
			// RFC 7672 §2.1.2: a failed TLSA lookup makes the server
			// unreachable, whichever candidate it was for.
			return nil, err
		}
		ttl.add(ans.TTL)
		if !ans.Secure {
			h.NoTLSAReason = "insecure-tlsa"
			continue
		}
		if !ans.Exists() {
			continue
		}
		h.Status = HasTLSA
		h.BaseDomain = base
		h.TLSAOwner = owner
		for _, rr := range ans.Records {
			if t, ok := rr.(*dns.TLSA); ok {
				h.TLSA = append(h.TLSA, t)
			}
		}
		h.NoTLSAReason = ""
		break
	}
	h.TTL = ttl.get()
	return h, nil
}

func (d *Discoverer) tlsaOwner(base string) string {
	return "_" + strconv.Itoa(d.port()) + "._tcp." + base
}

// tlsaQuery is a TLSA question asked ahead of its turn.
type tlsaQuery struct {
	owner string
	done  chan struct{}
	ans   *Answer
	err   error
	used  bool
}

func (d *Discoverer) startTLSA(ctx context.Context, owner string) *tlsaQuery {
	q := &tlsaQuery{owner: owner, done: make(chan struct{})}
	go func() {
		defer close(q.done)
		q.ans, q.err = d.Q.Query(ctx, owner, dns.TypeTLSA)
	}()
	return q
}

func (q *tlsaQuery) wait(ctx context.Context) (*Answer, error) {
	select {
	case <-q.done:
		return q.ans, q.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// use marks the speculative answer as part of the result and returns it.
func (q *tlsaQuery) use(ctx context.Context) (*Answer, error) {
	q.used = true
	return q.wait(ctx)
}

// discard runs when LookupHost returns: an answer the procedure did not
// use is dropped; a failure is forgotten by a caching querier once the
// query ends (in the background: LookupHost does not wait for it), so that
// a TLSA failure the sequential procedure would never have seen is never
// served from the cache either (RFC 7672 §2.2.2).
func (q *tlsaQuery) discard(qr Querier) {
	if q.used {
		return
	}
	f, ok := qr.(Forgetter)
	if !ok {
		return
	}
	go func() {
		<-q.done
		if q.err != nil {
			f.Forget(q.owner, dns.TypeTLSA)
		}
	}()
}

// cnameProbe is the CNAME question of CNAMEProbe and the TLSA question at
// its target that its answer starts.
type cnameProbe struct {
	mu     sync.Mutex
	closed bool       // LookupHost took or dropped the result; start nothing more
	tlsa   *tlsaQuery // the TLSA question at the CNAME's target, once started
}

func (d *Discoverer) startProbe(ctx context.Context, host string) *cnameProbe {
	p := &cnameProbe{}
	go func() {
		ans, err := d.CNAMEProbe.Query(ctx, host, dns.TypeCNAME)
		if err != nil {
			return // the address lookup decides; nothing was started
		}
		var target string
		for _, rr := range ans.Records {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, host) {
				target = strings.ToLower(dns.Fqdn(c.Target))
				break
			}
		}
		if target == "" || target == host {
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.closed {
			p.tlsa = d.startTLSA(ctx, d.tlsaOwner(target))
		}
	}()
	return p
}

// take returns the TLSA question the probe started when it was asked at
// owner, marked used; nil otherwise (the probe had not answered yet, or
// named another target). Nothing is started after take.
func (p *cnameProbe) take(owner string) *tlsaQuery {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.tlsa == nil || p.tlsa.owner != owner {
		return nil
	}
	p.tlsa.used = true
	return p.tlsa
}

// close runs when LookupHost returns: a TLSA question the procedure did
// not take is discarded as a speculative one is.
func (p *cnameProbe) close(qr Querier) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.tlsa != nil {
		p.tlsa.discard(qr)
	}
}

func (d *Discoverer) port() int {
	if d.Port == 0 {
		return 25
	}
	return d.Port
}

// ReferenceNames returns the names a DANE-TA(2) certificate must match
// (RFC 7672 §3.2.2): the TLSA base domain first; then, when the server was
// found through a secure MX RRset (or is the domain's implicit MX), the
// original next-hop domain and its CNAME-expanded form (mx.SecureFor: a
// secure set that lists the host; callers pass the set as found, never
// decide this themselves). With an insecure MX RRset, or a host the set
// does not list, the next-hop domain is never a reference identifier; the MX host
// name is, and so is the TLSA base domain when CNAME expansion made it
// differ, since §3.2.2 makes the base domain the primary identifier "in
// all DANE-TA(2) cases".
func ReferenceNames(mx *MXSet, h *Host) []string {
	var names []string
	add := func(n string) {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		if n == "" {
			return
		}
		for _, have := range names {
			if have == n {
				return
			}
		}
		names = append(names, n)
	}
	if h.BaseDomain != "" {
		add(h.BaseDomain)
	} else {
		add(h.Name)
	}
	if mx.SecureFor(h.Name) {
		add(mx.Domain)
		add(mx.Expanded)
	} else {
		add(h.Name)
	}
	return names
}

type minTTL struct {
	v   time.Duration
	set bool
}

func newMinTTL() *minTTL { return &minTTL{} }

func (m *minTTL) add(d time.Duration) {
	if !m.set || d < m.v {
		m.v, m.set = d, true
	}
}

func (m *minTTL) get() time.Duration { return m.v }

// String renders a Host for debug logs.
func (h *Host) String() string {
	return fmt.Sprintf("%s (expanded %s, addr_secure=%v, %s, base=%s, %d TLSA)", h.Name, h.Expanded, h.AddrSecure, h.Status, h.BaseDomain, len(h.TLSA))
}

// SecureFor reports whether host was found through this DNSSEC-secure MX
// RRset: the set is secure and lists host (or host is the implicit MX).
// This is the "secure MX" of RFC 7672 §2.2.1 and §3.2.2 for one server;
// it is false for a nil set.
func (s *MXSet) SecureFor(host string) bool {
	return s != nil && s.Secure && s.Has(host)
}

// Has reports whether host is one of the MX hosts of the set (case and
// trailing dot ignored).
func (s *MXSet) Has(host string) bool {
	host = strings.ToLower(dns.Fqdn(host))
	for _, h := range s.Hosts {
		if h.Host == host {
			return true
		}
	}
	// An implicit MX may be named by its CNAME expansion as well.
	return s.Implicit && host == s.Expanded
}
