package dane

import (
	"context"
	"errors"
	"fmt"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Querier answers one DNS question with its DNSSEC status. Resolver is the
// network implementation; callers may wrap it with a cache.
type Querier interface {
	Query(ctx context.Context, name string, qtype uint16) (*Answer, error)
}

// LookupTXT is the one TXT lookup of daneguard, for both the MTA-STS
// discovery record (RFC 8461 §3.1) and the TLS-RPT record (RFC 8460 §3).
// Both RFCs join the strings of one record without separator. CNAMEs are
// followed by the resolver. A missing record (NXDOMAIN or NODATA) is an
// empty result with a nil error, which mtastsfallback reads as "no MTA-STS
// record" and tlsrpt as "no reporting policy"; a failed lookup is an
// error, and both retry later.
func LookupTXT(ctx context.Context, q Querier, name string) ([]string, error) {
	a, err := q.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range a.Records {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}

// Answer is the result of one DNSSEC-aware query that the resolver answered
// with NOERROR or NXDOMAIN. Every other outcome is a *LookupError.
type Answer struct {
	// Name and Type are the question, Name fully qualified and lower case.
	Name string
	Type uint16
	// Rcode is dns.RcodeSuccess or dns.RcodeNameError.
	Rcode int
	// Secure is true when a trusted validating resolver set the AD bit: every
	// RRset in the answer, CNAMEs included, or the denial of existence, was
	// validated (RFC 4035 §3.2.3). A false value means "insecure".
	Secure bool
	// CNAMEs is the alias chain the resolver followed, in order.
	CNAMEs []*dns.CNAME
	// Target is the name the records were found at: Name with every CNAME in
	// the chain expanded.
	Target string
	// Records holds the answer records of the asked type owned by Target.
	Records []dns.RR
	// TTL is how long the answer may be cached: the smallest TTL of the
	// records it contains or, for a negative answer, the SOA-derived negative
	// TTL of RFC 2308 §5. Zero means "do not cache".
	TTL time.Duration
}

// Exists reports whether the answer holds records of the asked type.
func (a *Answer) Exists() bool { return len(a.Records) != 0 }

// ErrorKind classifies a lookup failure.
type ErrorKind string

// Lookup failure kinds. RFC 7672 §2.1.1 treats all of them alike: the data
// could not be obtained, so the MTA must not proceed as if it did not exist.
const (
	ErrServFail  ErrorKind = "servfail"  // SERVFAIL: usually a bogus (failed DNSSEC validation) answer
	ErrBogus     ErrorKind = "bogus"     // SERVFAIL with an Extended DNS Error saying DNSSEC validation failed
	ErrRefused   ErrorKind = "refused"   // REFUSED, NOTIMP, FORMERR or another unexpected rcode
	ErrTimeout   ErrorKind = "timeout"   // no answer in time
	ErrNetwork   ErrorKind = "network"   // the resolver could not be reached
	ErrMalformed ErrorKind = "malformed" // an answer that cannot be used (wrong question, CNAME loop, ...)
)

// LookupError is a DNS failure. It is always temporary: the answer may be
// obtainable later, and until then delivery to what depends on it is
// deferred (RFC 7672 §2.1.2).
type LookupError struct {
	Name  string
	Type  uint16
	Kind  ErrorKind
	Rcode int
	// EDE is the Extended DNS Error info-code (RFC 8914) the resolver gave,
	// or -1.
	EDE    int
	Server string
	Err    error
}

func (e *LookupError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dns: %s lookup for %s failed: %s", dns.TypeToString[e.Type], e.Name, e.Kind)
	if e.Kind == ErrServFail || e.Kind == ErrBogus || e.Kind == ErrRefused {
		fmt.Fprintf(&b, " (rcode %s", dns.RcodeToString[e.Rcode])
		if e.EDE >= 0 {
			fmt.Fprintf(&b, ", extended error %d %s", e.EDE, dns.ExtendedErrorCodeToString[uint16(e.EDE)])
		}
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *LookupError) Unwrap() error { return e.Err }

// Temporary is always true: see the type comment.
func (e *LookupError) Temporary() bool { return true }

// DNSSECFailure reports whether the failure is a validation failure (a bogus
// answer), as far as the resolver told us.
func (e *LookupError) DNSSECFailure() bool { return e.Kind == ErrBogus }

// Resolver sends DNSSEC-aware queries (DO bit set, AD requested) to
// validating recursive resolvers and reports the validation status they
// signal. It trusts that status only from resolvers on a trusted path
// (RFC 7672 §2.1.1, RFC 4035 §4.9.3): by default only loopback addresses.
type Resolver struct {
	servers []string
	trusted []bool
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client
}

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	// Servers are "host:port" or "host" (port 53) addresses of validating
	// resolvers, tried in order. Empty means those of /etc/resolv.conf.
	Servers []string
	// Timeout bounds one exchange with one server. Default 5s.
	Timeout time.Duration
	// TrustRemote makes the resolver trust the AD bit from non-loopback
	// servers too. Only safe when the path to them is protected (for
	// example an IPsec or WireGuard tunnel to a resolver you run).
	TrustRemote bool
}

// NewResolver builds a Resolver.
func NewResolver(cfg ResolverConfig) (*Resolver, error) {
	servers := cfg.Servers
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("dane: reading /etc/resolv.conf: %w", err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			return nil, errors.New("dane: /etc/resolv.conf lists no name servers")
		}
	}
	r := &Resolver{timeout: cfg.Timeout}
	if r.timeout <= 0 {
		r.timeout = 5 * time.Second
	}
	for _, s := range servers {
		addr, err := normalizeServer(s)
		if err != nil {
			return nil, err
		}
		r.servers = append(r.servers, addr)
		r.trusted = append(r.trusted, cfg.TrustRemote || isLoopback(addr))
	}
	r.udp = &dns.Client{Net: "udp", Timeout: r.timeout, UDPSize: 1232}
	r.tcp = &dns.Client{Net: "tcp", Timeout: r.timeout}
	return r, nil
}

func normalizeServer(s string) (string, error) {
	if _, _, err := net.SplitHostPort(s); err != nil {
		s = net.JoinHostPort(s, "53")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("dane: bad resolver address %q: %w", s, err)
	}
	if net.ParseIP(host) == nil {
		return "", fmt.Errorf("dane: resolver address %q is not an IP address", s)
	}
	return net.JoinHostPort(host, port), nil
}

func isLoopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Servers returns the resolver addresses in use.
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

// UntrustedServers returns the servers whose AD bit is ignored. With any of
// them in use, answers from them are never "secure" and DANE cannot apply.
func (r *Resolver) UntrustedServers() []string {
	var out []string
	for i, s := range r.servers {
		if !r.trusted[i] {
			out = append(out, s)
		}
	}
	return out
}

// maxCNAMEChain bounds alias expansion (RFC 7672 §2.1.3 asks for a limit).
const maxCNAMEChain = 8

// Query asks the configured resolvers for name/qtype. It follows CNAMEs the
// resolver did not chase, up to a fixed depth; the answer is secure only if
// every step was (RFC 7672 §2.1.3).
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	name = strings.ToLower(dns.Fqdn(name))
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, &LookupError{Name: name, Type: qtype, Kind: ErrMalformed, EDE: -1, Err: errors.New("not a valid domain name")}
	}
	ans := &Answer{Name: name, Type: qtype, Target: name, Secure: true}
	seen := map[string]bool{}
	cur := name
	first := true
	for {
		resp, secure, server, err := r.exchange(ctx, cur, qtype)
		if err != nil {
			return nil, err
		}
		step, err := parseStep(resp, cur, qtype)
		if err != nil {
			return nil, &LookupError{Name: name, Type: qtype, Kind: ErrMalformed, EDE: -1, Server: server, Err: err}
		}
		if !secure {
			ans.Secure = false
		}
		if first || step.ttl < ans.TTL {
			ans.TTL = step.ttl
		}
		first = false
		ans.CNAMEs = append(ans.CNAMEs, step.cnames...)
		ans.Rcode = resp.Rcode
		ans.Target = step.target
		ans.Records = step.records
		if !step.dangling {
			break
		}
		// The resolver returned a CNAME without chasing it: restart at the
		// target ourselves.
		if seen[step.target] || len(ans.CNAMEs) > maxCNAMEChain {
			return nil, &LookupError{Name: name, Type: qtype, Kind: ErrMalformed, EDE: -1, Server: server, Err: errors.New("CNAME chain too long or looping")}
		}
		seen[step.target] = true
		cur = step.target
	}
	return ans, nil
}

type step struct {
	cnames   []*dns.CNAME
	target   string
	records  []dns.RR
	ttl      time.Duration
	dangling bool // ends in a CNAME whose target was not answered
}

// uncapped is a NegativeTTL limit above any TTL DNS can carry.
const uncapped = (1<<31 - 1) * time.Second

// parseStep extracts the CNAME chain and the records of qtype from one
// response to a question for qname.
func parseStep(resp *dns.Msg, qname string, qtype uint16) (step, error) {
	s := step{target: qname}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, qname) || resp.Question[0].Qtype != qtype {
		return s, errors.New("answer does not match the question")
	}
	minTTL := uint32(0)
	haveTTL := false
	note := func(ttl uint32) {
		if ttl > 1<<31-1 {
			ttl = 0 // RFC 2181 §8: a TTL with the top bit set counts as zero
		}
		if !haveTTL || ttl < minTTL {
			minTTL, haveTTL = ttl, true
		}
	}
	// Walk the alias chain in order, whatever order the records came in.
	cnames := map[string]*dns.CNAME{}
	for _, rr := range resp.Answer {
		if c, ok := rr.(*dns.CNAME); ok && qtype != dns.TypeCNAME {
			cnames[strings.ToLower(c.Hdr.Name)] = c
		}
	}
	for i := 0; i <= maxCNAMEChain; i++ {
		c, ok := cnames[s.target]
		if !ok {
			break
		}
		s.cnames = append(s.cnames, c)
		note(c.Hdr.Ttl)
		s.target = strings.ToLower(c.Target)
		delete(cnames, strings.ToLower(c.Hdr.Name))
	}
	if _, loop := cnames[s.target]; loop {
		return s, errors.New("CNAME chain too long or looping")
	}
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Rrtype == qtype && strings.EqualFold(h.Name, s.target) {
			s.records = append(s.records, rr)
			note(h.Ttl)
		}
	}
	if len(s.records) == 0 {
		if len(s.cnames) != 0 && resp.Rcode == dns.RcodeSuccess && !hasSOA(resp) {
			// A CNAME and nothing about its target: chase it.
			s.dangling = true
		}
		// RFC 2308 §5: a negative answer lives for min(SOA TTL, SOA MINIMUM);
		// without an SOA it is not cached at all. No cap here: the cache
		// applies cache_max_ttl to every answer.
		if soa := findSOA(resp); soa != nil {
			note(uint32(policycache.NegativeTTL(soa.Hdr.Ttl, soa.Minttl, uncapped) / time.Second))
		} else if !s.dangling {
			note(0)
		}
	}
	s.ttl = time.Duration(minTTL) * time.Second
	return s, nil
}

func findSOA(m *dns.Msg) *dns.SOA {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa
		}
	}
	return nil
}

func hasSOA(m *dns.Msg) bool { return findSOA(m) != nil }

// exchange sends one question to the configured servers in turn until one
// gives a usable answer. Truncated UDP answers are retried over TCP.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (resp *dns.Msg, secure bool, server string, err error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	// RFC 6840 §5.7/§5.8: ask for validation status (AD) and DNSSEC records (DO).
	q.AuthenticatedData = true
	q.SetEdns0(1232, true)

	var lastErr *LookupError
	for i, srv := range r.servers {
		if ctx.Err() != nil {
			break
		}
		m, err := r.exchangeOne(ctx, q, srv)
		if err != nil {
			lastErr = classifyNetErr(name, qtype, srv, err)
			continue
		}
		switch m.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			return m, m.AuthenticatedData && r.trusted[i], srv, nil
		default:
			lastErr = rcodeError(name, qtype, srv, m)
		}
	}
	if lastErr == nil {
		lastErr = &LookupError{Name: name, Type: qtype, Kind: ErrTimeout, EDE: -1, Err: ctx.Err()}
	}
	return nil, false, lastErr.Server, lastErr
}

func (r *Resolver) exchangeOne(ctx context.Context, q *dns.Msg, srv string) (*dns.Msg, error) {
	m, _, err := r.udp.ExchangeContext(ctx, q, srv)
	if err == nil && m.Truncated {
		m, _, err = r.tcp.ExchangeContext(ctx, q, srv)
	}
	if err != nil {
		return nil, err
	}
	if m.Id != q.Id || !m.Response {
		return nil, errors.New("mismatched reply")
	}
	return m, nil
}

func classifyNetErr(name string, qtype uint16, srv string, err error) *LookupError {
	kind := ErrNetwork
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		kind = ErrTimeout
	}
	return &LookupError{Name: name, Type: qtype, Kind: kind, EDE: -1, Server: srv, Err: err}
}

func rcodeError(name string, qtype uint16, srv string, m *dns.Msg) *LookupError {
	e := &LookupError{Name: name, Type: qtype, Kind: ErrRefused, Rcode: m.Rcode, EDE: -1, Server: srv}
	if m.Rcode == dns.RcodeServerFailure {
		e.Kind = ErrServFail
	}
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if ede, ok := o.(*dns.EDNS0_EDE); ok {
				e.EDE = int(ede.InfoCode)
				if isDNSSECEDE(ede.InfoCode) {
					e.Kind = ErrBogus
				}
				break
			}
		}
	}
	return e
}

// isDNSSECEDE reports whether an Extended DNS Error code (RFC 8914 §4) says
// that DNSSEC validation failed.
func isDNSSECEDE(code uint16) bool {
	switch code {
	case dns.ExtendedErrorCodeUnsupportedDNSKEYAlgorithm, // treated as insecure by resolvers; listed for completeness
		dns.ExtendedErrorCodeDNSBogus,
		dns.ExtendedErrorCodeSignatureExpired,
		dns.ExtendedErrorCodeSignatureNotYetValid,
		dns.ExtendedErrorCodeDNSKEYMissing,
		dns.ExtendedErrorCodeRRSIGsMissing,
		dns.ExtendedErrorCodeNoZoneKeyBitSet,
		dns.ExtendedErrorCodeNSECMissing:
		return true
	}
	return false
}
