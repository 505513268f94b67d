package dnsbed

import (
	"context"
	"crypto"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A Fault makes the server misbehave for chosen queries; see
// Server.SetFault.
type Fault int

const (
	// NoFault answers normally; setting it removes a fault.
	NoFault Fault = iota
	// ServFail answers with RCODE SERVFAIL.
	ServFail
	// Drop sends no answer at all, so the client times out.
	Drop
	// Truncate answers over UDP with an empty response and the TC bit set,
	// forcing a retry over TCP (RFC 7766), where the full answer is given.
	Truncate
)

// String returns the constant's name.
func (f Fault) String() string {
	switch f {
	case NoFault:
		return "NoFault"
	case ServFail:
		return "ServFail"
	case Drop:
		return "Drop"
	case Truncate:
		return "Truncate"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// udpPayload is the EDNS(0) UDP payload size the server advertises (the
// value of DNS flag day 2020).
const udpPayload = 1232

// Server is an authoritative DNS server for any number of zones, all
// answered from one UDP and TCP address. Create it with NewServer, add
// zones with Zone, then Start it. Changes may be made while it runs.
type Server struct {
	now func() time.Time // clock for signature validity; time.Now

	mu    sync.Mutex // guards zones and all zone contents
	zones map[string]*Zone
	view  atomic.Pointer[view] // what queries are answered from
	dirty atomic.Bool          // some zone changed since view was built

	faultMu sync.RWMutex
	faults  map[faultKey]Fault

	countMu    sync.Mutex
	counts     map[faultKey]int64
	total, tcp atomic.Int64

	// Latency and the query log (latency.go).
	delay  atomic.Int64 // time.Duration before each answer; 0: none
	qlogOn atomic.Bool
	qlogMu sync.Mutex
	qlog   []QueryRecord

	runMu   sync.Mutex
	servers []*dns.Server
	addr    string
}

type faultKey struct {
	name  string
	qtype uint16
}

// NewServer returns a server without listeners. The signed root zone is
// created on first need with default options; call Zone(t, ".", opts...)
// before anything else to create it with options.
func NewServer() *Server {
	return &Server{
		now:    time.Now,
		zones:  map[string]*Zone{},
		faults: map[faultKey]Fault{},
		counts: map[faultKey]int64{},
	}
}

// Zone returns the zone with the given origin, creating it with opts when
// it does not exist yet. A zone is signed unless Unsigned is given. When a
// served zone encloses it, that parent gets the delegation (NS copied from
// the new zone's apex, and the DS record if the new zone is signed).
// Options given for an existing zone, invalid names or a parent that
// already holds records at or below name fail t.
func (s *Server) Zone(t testing.TB, name string, opts ...ZoneOption) *Zone {
	t.Helper()
	z, err := s.zone(name, opts)
	if err != nil {
		t.Fatalf("dnsbed: Zone(%q): %v", name, err)
	}
	return z
}

func (s *Server) zone(name string, opts []ZoneOption) (*Zone, error) {
	origin, err := canonicalName(name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if z := s.zones[origin]; z != nil {
		if len(opts) > 0 {
			return nil, fmt.Errorf("zone %s exists already; options apply only when it is created", origin)
		}
		return z, nil
	}
	if origin != "." {
		if _, err := s.createZone(".", nil); err != nil {
			return nil, err
		}
	}
	return s.createZone(origin, opts)
}

// createZone makes a zone unless it exists. Caller holds s.mu.
func (s *Server) createZone(origin string, opts []ZoneOption) (*Zone, error) {
	if z := s.zones[origin]; z != nil {
		return z, nil
	}
	cfg := zoneConfig{ttl: DefaultTTL, negTTL: DefaultNegativeTTL}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("nil ZoneOption")
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if origin == "." && cfg.unsigned {
		return nil, fmt.Errorf("the root zone must be signed: its key is the trust anchor")
	}
	if parent := s.deepestZone(origin); parent != nil {
		for owner := range parent.data {
			if dns.IsSubDomain(origin, owner) {
				return nil, fmt.Errorf("parent zone %s already has records at %s; remove them first", parent.origin, owner)
			}
		}
		for _, a := range ancestors(origin, parent.origin)[1:] {
			if a != parent.origin && len(parent.data[a][dns.TypeNS]) > 0 {
				return nil, fmt.Errorf("%s lies below the delegation point %s of zone %s", origin, a, parent.origin)
			}
		}
	}
	z := &Zone{srv: s, origin: origin, cfg: cfg, serial: 1}
	if !cfg.unsigned {
		key := &dns.DNSKEY{
			Hdr:       dns.RR_Header{Name: origin, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: cfg.ttl},
			Flags:     dns.ZONE | dns.SEP, // 257: a key-signing key (RFC 4034 §2.1.1)
			Protocol:  3,
			Algorithm: dns.ECDSAP256SHA256,
		}
		priv, err := key.Generate(256)
		if err != nil {
			return nil, fmt.Errorf("generating the zone key: %v", err)
		}
		signer, ok := priv.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("generated key of type %T cannot sign", priv)
		}
		z.key, z.signer = key, signer
	}
	ns := "ns1." + origin
	if origin == "." {
		ns = "ns1.root-servers.test."
	}
	hostmaster := "hostmaster." + origin
	if origin == "." {
		hostmaster = "hostmaster.root-servers.test."
	}
	z.data = map[string]map[uint16][]dns.RR{origin: {
		dns.TypeSOA: {&dns.SOA{
			Hdr: dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: cfg.ttl},
			Ns:  ns, Mbox: hostmaster, Serial: 1,
			Refresh: 7200, Retry: 3600, Expire: 1209600, Minttl: cfg.negTTL,
		}},
		dns.TypeNS: {&dns.NS{
			Hdr: dns.RR_Header{Name: origin, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: cfg.ttl},
			Ns:  ns,
		}},
	}}
	s.zones[origin] = z
	// A new zone can change which zone is whose parent: rebuild everything.
	for _, other := range s.zones {
		other.dirty = true
	}
	s.dirty.Store(true)
	return z, nil
}

// deepestZone returns the served zone closest to name that contains it, or
// nil. Caller holds s.mu.
func (s *Server) deepestZone(name string) *Zone {
	for _, a := range ancestors(name, ".") {
		if z := s.zones[a]; z != nil {
			return z
		}
	}
	return nil
}

// parentZone returns the served zone that delegates to z, or nil. Caller
// holds s.mu.
func (s *Server) parentZone(z *Zone) *Zone {
	if z.origin == "." {
		return nil
	}
	return s.deepestZone(parentName(z.origin))
}

// markDirty schedules z and its parent (which copies z's apex NS) for
// re-signing. Caller holds s.mu.
func (s *Server) markDirty(z *Zone) {
	z.dirty = true
	if p := s.parentZone(z); p != nil {
		p.dirty = true
	}
	s.dirty.Store(true)
}

// TrustAnchor returns the SHA-256 DS record of the root zone's key on one
// line, e.g. ". 3600 IN DS 12345 13 2 ab12...", ready for unbound's
// trust-anchor option.
func (s *Server) TrustAnchor() string {
	s.mu.Lock()
	root, err := s.createZone(".", nil)
	s.mu.Unlock()
	if err != nil { // cannot happen: no options are given
		return ""
	}
	return root.DS()
}

// currentView returns the signed view of all zones, rebuilding the zones
// that changed.
func (s *Server) currentView() (*view, error) {
	if !s.dirty.Load() {
		if v := s.view.Load(); v != nil {
			return v, nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.createZone(".", nil); err != nil {
		return nil, err
	}
	if !s.dirty.Load() {
		if v := s.view.Load(); v != nil {
			return v, nil
		}
	}
	children := map[*Zone][]*Zone{}
	for _, z := range s.zones {
		if p := s.parentZone(z); p != nil {
			children[p] = append(children[p], z)
		}
	}
	now := s.now()
	v := &view{zones: make(map[string]*zoneView, len(s.zones))}
	for origin, z := range s.zones {
		if z.dirty || z.view == nil {
			zv, err := z.build(children[z], now)
			if err != nil {
				return nil, fmt.Errorf("zone %s: %v", origin, err)
			}
			z.view, z.dirty = zv, false
		}
		v.zones[origin] = z.view
	}
	s.view.Store(v)
	s.dirty.Store(false)
	return v, nil
}

// Start listens on addr ("127.0.0.2:53", or "127.0.0.1:0" for a free port)
// over UDP and TCP and serves until Close, which t.Cleanup calls. Errors,
// including zones that cannot be signed, fail t.
func (s *Server) Start(t testing.TB, addr string) {
	t.Helper()
	if err := s.start(addr); err != nil {
		t.Fatalf("dnsbed: Start(%q): %v", addr, err)
	}
	t.Cleanup(s.Close)
}

func (s *Server) start(addr string) error {
	if _, err := s.currentView(); err != nil {
		return err
	}
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.servers != nil {
		return fmt.Errorf("server already running at %s", s.addr)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	var pc net.PacketConn
	var l net.Listener
	// With port 0 the kernel picks the UDP port; TCP must get the same one,
	// which may be taken, so retry a few times.
	for attempt := 0; ; attempt++ {
		pc, err = net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if port != "0" || attempt == 20 {
			return err
		}
	}
	udp := &dns.Server{PacketConn: pc, Handler: s, UDPSize: 4096}
	tcp := &dns.Server{Listener: l, Handler: s, IdleTimeout: func() time.Duration { return 10 * time.Second }}
	var wg sync.WaitGroup
	for _, srv := range []*dns.Server{udp, tcp} {
		wg.Add(1)
		srv.NotifyStartedFunc = wg.Done
		go func() { _ = srv.ActivateAndServe() }()
	}
	wg.Wait()
	s.servers = []*dns.Server{udp, tcp}
	s.addr = pc.LocalAddr().String()
	return nil
}

// Addr returns the address the server listens on ("127.0.0.1:40053"), or
// "" before Start.
func (s *Server) Addr() string {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	return s.addr
}

// Close stops the listeners. It is safe to call more than once.
func (s *Server) Close() {
	s.runMu.Lock()
	servers := s.servers
	s.servers = nil
	s.runMu.Unlock()
	for _, srv := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.ShutdownContext(ctx)
		cancel()
	}
}

// SetFault makes queries for name (fully qualified) and qtype misbehave;
// qtype 0 matches every type, and a fault for the exact type wins. NoFault
// removes the fault. Bad names fail t.
func (s *Server) SetFault(t testing.TB, name string, qtype uint16, f Fault) {
	t.Helper()
	n, err := canonicalName(name)
	if err == nil && (f < NoFault || f > Truncate) {
		err = fmt.Errorf("unknown fault %v", f)
	}
	if err != nil {
		t.Fatalf("dnsbed: SetFault: %v", err)
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if f == NoFault {
		delete(s.faults, faultKey{n, qtype})
	} else {
		s.faults[faultKey{n, qtype}] = f
	}
}

// ClearFaults removes all faults.
func (s *Server) ClearFaults() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	clear(s.faults)
}

func (s *Server) fault(name string, qtype uint16) Fault {
	s.faultMu.RLock()
	defer s.faultMu.RUnlock()
	if len(s.faults) == 0 {
		return NoFault
	}
	if f, ok := s.faults[faultKey{name, qtype}]; ok {
		return f
	}
	return s.faults[faultKey{name, 0}]
}

// QueryCount returns how many queries for name and qtype the server
// received since it was created or since ResetCounts, over UDP and TCP,
// faulted ones included. qtype 0 counts every type.
func (s *Server) QueryCount(name string, qtype uint16) int64 {
	n, err := canonicalName(name)
	if err != nil {
		n = strings.ToLower(name)
	}
	s.countMu.Lock()
	defer s.countMu.Unlock()
	if qtype != 0 {
		return s.counts[faultKey{n, qtype}]
	}
	var sum int64
	for k, c := range s.counts {
		if k.name == n {
			sum += c
		}
	}
	return sum
}

// TotalQueries returns the number of queries received.
func (s *Server) TotalQueries() int64 { return s.total.Load() }

// TCPQueries returns the number of queries received over TCP.
func (s *Server) TCPQueries() int64 { return s.tcp.Load() }

// ResetCounts sets all query counters to zero.
func (s *Server) ResetCounts() {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	clear(s.counts)
	s.total.Store(0)
	s.tcp.Store(0)
	s.qlogMu.Lock()
	s.qlog = nil
	s.qlogMu.Unlock()
}

// ServeDNS answers one query; it makes Server a dns.Handler, so it can also
// be mounted on listeners of the caller's own.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	received := time.Now()
	isTCP := false
	if a := w.LocalAddr(); a != nil {
		isTCP = a.Network() == "tcp"
	}
	s.wait()
	resp := s.handle(req, isTCP)
	// Logged before the write, so that a query the client sends on
	// receiving this answer is always logged as arriving after it, and a
	// client that has its answer finds it in the log.
	s.record(req, resp, received, time.Now(), isTCP)
	if resp != nil {
		_ = w.WriteMsg(resp)
	}
}

// handle counts a query, applies faults and builds the response; nil means
// no answer.
func (s *Server) handle(req *dns.Msg, isTCP bool) *dns.Msg {
	var name string
	var qtype uint16
	if len(req.Question) == 1 {
		q := req.Question[0]
		qtype = q.Qtype
		var err error
		if name, err = canonicalName(q.Name); err != nil {
			name = strings.ToLower(q.Name)
		}
	}
	s.total.Add(1)
	if isTCP {
		s.tcp.Add(1)
	}
	s.countMu.Lock()
	s.counts[faultKey{name, qtype}]++
	s.countMu.Unlock()

	f := NoFault
	if len(req.Question) == 1 {
		f = s.fault(name, qtype)
	}
	switch {
	case f == Drop:
		return nil
	case f == ServFail:
		resp := new(dns.Msg)
		resp.SetRcode(req, dns.RcodeServerFailure)
		echoEDNS(req, resp)
		return resp
	case f == Truncate && !isTCP:
		resp := new(dns.Msg)
		resp.SetReply(req)
		resp.Authoritative = true
		resp.Truncated = true
		echoEDNS(req, resp)
		return resp
	}

	var resp *dns.Msg
	v, err := s.currentView()
	if err != nil {
		resp = new(dns.Msg)
		resp.SetRcode(req, dns.RcodeServerFailure)
		echoEDNS(req, resp)
	} else {
		resp = v.answer(req)
	}
	if !isTCP {
		limit := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > limit {
			limit = int(opt.UDPSize())
		}
		if resp.Len() > limit {
			// Too big for UDP: send the header only, with TC set; the
			// client repeats the query over TCP (RFC 1035 §4.2.1, RFC 7766).
			resp.Answer, resp.Ns = nil, nil
			var opt []dns.RR
			if o := resp.IsEdns0(); o != nil {
				opt = []dns.RR{o}
			}
			resp.Extra = opt
			resp.Truncated = true
		}
	}
	return resp
}

// echoEDNS adds an OPT record to resp when req had one (RFC 6891 §6.1.1),
// mirroring the DO bit (RFC 3225 §3).
func echoEDNS(req, resp *dns.Msg) {
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(udpPayload, opt.Do())
	}
}
