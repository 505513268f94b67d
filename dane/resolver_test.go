package dane_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/miekg/dns"
)

func TestMain(m *testing.M) { netns.Main(m) }

// bed is a signed tree behind a real validating unbound, on random
// loopback ports (no namespace needed).
type bed struct {
	srv *dnsbed.Server
	ub  *dnsbed.Unbound
	res *dane.Resolver
}

func newBed(t *testing.T, setup func(*dnsbed.Server)) *bed {
	t.Helper()
	b := &bed{srv: dnsbed.NewServer()}
	setup(b.srv)
	b.srv.Start(t, "127.0.0.1:0")
	b.ub = dnsbed.StartUnbound(t, b.srv, dnsbed.UnboundOptions{Addr: "127.0.0.1:0"})
	var err error
	b.res, err = dane.NewResolver(dane.ResolverConfig{Servers: []string{b.ub.Addr()}, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const tlsaHex = "8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d"

func world(s *dnsbed.Server, t *testing.T) {
	ex := s.Zone(t, "example.", dnsbed.TTL(300), dnsbed.NegativeTTL(120))
	ex.Add(t,
		"@ MX 10 mx1", "@ MX 20 mx2", "@ MX 5 alias",
		"mx1 A 127.0.0.10", "_25._tcp.mx1 TLSA 3 1 1 "+tlsaHex,
		"mx2 A 127.0.0.11",
		"alias CNAME host.other.example.",
		"toins CNAME host.ins.example.",
		"_25._tcp.toins TLSA 3 1 1 "+tlsaHex,
		"tobogus CNAME host.bad.example.",
	)
	s.Zone(t, "other.example.", dnsbed.TTL(600)).Add(t, "host A 127.0.0.12", "_25._tcp.host TLSA 2 0 1 "+tlsaHex)
	s.Zone(t, "ins.example.", dnsbed.Unsigned()).Add(t, "host A 127.0.0.13", "mx A 127.0.0.14", "@ MX 10 mx")
	s.Zone(t, "bad.example.", dnsbed.BadSignatures()).Add(t, "host A 127.0.0.15")
}

func TestResolverSecurityStatus(t *testing.T) {
	b := newBed(t, func(s *dnsbed.Server) { world(s, t) })
	ctx := context.Background()
	q := func(name string, qt uint16) *dane.Answer {
		t.Helper()
		a, err := b.res.Query(ctx, name, qt)
		if err != nil {
			t.Fatalf("%s %s: %v", name, dns.TypeToString[qt], err)
		}
		return a
	}
	if a := q("mx1.example", dns.TypeA); !a.Secure || !a.Exists() || a.TTL != 300*time.Second {
		t.Fatalf("signed A: %+v", a)
	}
	if a := q("mx.ins.example", dns.TypeA); a.Secure || !a.Exists() {
		t.Fatalf("unsigned A: %+v", a)
	}
	// RFC 2308: the negative TTL is min(SOA TTL, MINIMUM).
	if a := q("mx2.example", dns.TypeTLSA); !a.Secure || a.Exists() || a.Rcode != dns.RcodeSuccess || a.TTL != 120*time.Second {
		t.Fatalf("NODATA: %+v", a)
	}
	if a := q("nope.example", dns.TypeA); !a.Secure || a.Rcode != dns.RcodeNameError {
		t.Fatalf("NXDOMAIN: %+v", a)
	}
	// A secure CNAME chain: expanded, secure, TTL the minimum of the chain.
	if a := q("alias.example", dns.TypeA); !a.Secure || a.Target != "host.other.example." || len(a.CNAMEs) != 1 || a.TTL != 300*time.Second {
		t.Fatalf("secure CNAME: %+v", a)
	}
	// Into an unsigned zone: insecure as a whole.
	if a := q("toins.example", dns.TypeA); a.Secure || a.Target != "host.ins.example." {
		t.Fatalf("CNAME into unsigned zone: %+v", a)
	}
	// Into a bogus zone: a lookup error, never an answer.
	_, err := b.res.Query(ctx, "tobogus.example", dns.TypeA)
	var le *dane.LookupError
	if !errors.As(err, &le) || !le.Temporary() {
		t.Fatalf("bogus: %v", err)
	}
}

func TestResolverFaults(t *testing.T) {
	srv := dnsbed.NewServer()
	world(srv, t)
	srv.Start(t, "127.0.0.1:0")
	// Straight to the authoritative server: this exercises the transport,
	// not validation.
	res, err := dane.NewResolver(dane.ResolverConfig{Servers: []string{srv.Addr()}, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	srv.SetFault(t, "mx1.example.", dns.TypeTLSA, dnsbed.Truncate)
	before := srv.TCPQueries()
	a, err := res.Query(ctx, "mx1.example", dns.TypeTLSA)
	if err != nil || srv.TCPQueries() != before+1 {
		t.Fatalf("truncated answer not retried over TCP: %v %+v", err, a)
	}

	srv.SetFault(t, "mx2.example.", dns.TypeA, dnsbed.ServFail)
	_, err = res.Query(ctx, "mx2.example", dns.TypeA)
	var le *dane.LookupError
	if !errors.As(err, &le) || le.Kind != dane.ErrServFail {
		t.Fatalf("SERVFAIL: %v", err)
	}

	srv.SetFault(t, "mx2.example.", dns.TypeAAAA, dnsbed.Drop)
	_, err = res.Query(ctx, "mx2.example", dns.TypeAAAA)
	if !errors.As(err, &le) || le.Kind != dane.ErrTimeout {
		t.Fatalf("dropped query: %v", err)
	}

	// The AD bit is never trusted from an authoritative answer without a
	// validating resolver... nor from anything not on loopback.
	r2, err := dane.NewResolver(dane.ResolverConfig{Servers: []string{"192.0.2.1", "127.0.0.1:53", "[::1]:53"}})
	if err != nil {
		t.Fatal(err)
	}
	if u := r2.UntrustedServers(); len(u) != 1 || u[0] != "192.0.2.1:53" {
		t.Fatalf("untrusted servers: %v", u)
	}
	if _, err := dane.NewResolver(dane.ResolverConfig{Servers: []string{"resolver.example"}}); err == nil {
		t.Fatal("a host name as resolver address was accepted")
	}
	if _, err := res.Query(ctx, "bad..name", dns.TypeA); err == nil {
		t.Fatal("malformed name accepted")
	}
}

func TestDiscovery(t *testing.T) {
	b := newBed(t, func(s *dnsbed.Server) { world(s, t) })
	d := &dane.Discoverer{Q: b.res}
	ctx := context.Background()

	mx, err := d.LookupMX(ctx, "example")
	if err != nil {
		t.Fatal(err)
	}
	if !mx.Secure || len(mx.Hosts) != 3 || mx.Hosts[0].Host != "alias.example." || mx.Hosts[2].Host != "mx2.example." {
		t.Fatalf("MX set: %+v", mx)
	}
	if ins, err := d.LookupMX(ctx, "ins.example"); err != nil || ins.Secure {
		t.Fatalf("insecure MX set: %+v %v", ins, err)
	}
	if nomx, err := d.LookupMX(ctx, "other.example"); err != nil || !nomx.Implicit || nomx.Hosts[0].Host != "other.example." {
		t.Fatalf("implicit MX: %+v %v", nomx, err)
	}
	// No MX behind a secure CNAME: the next-hop name itself is the server
	// name (RFC 7672 §2.2.2), the one the MTA connects to; it is a host of
	// the secure set, and so is its expansion. (Regression: the set held
	// only the expanded name, so the engine saw the MTA's host as outside
	// a secure MX set and treated the destination as insecure.)
	if nomx, err := d.LookupMX(ctx, "alias.example"); err != nil || !nomx.Implicit || !nomx.Secure ||
		len(nomx.Hosts) != 1 || nomx.Hosts[0].Host != "alias.example." || nomx.Expanded != "host.other.example." ||
		!nomx.Has("alias.example") || !nomx.Has("host.other.example.") || nomx.Has("other.example") {
		t.Fatalf("implicit MX behind a CNAME: %+v %v", nomx, err)
	}

	h, err := d.LookupHost(ctx, "mx1.example")
	if err != nil || h.Status != dane.HasTLSA || h.BaseDomain != "mx1.example." || len(h.TLSA) != 1 {
		t.Fatalf("mx1: %+v %v", h, err)
	}
	if got := dane.ReferenceNames(mx, h); len(got) != 2 || got[0] != "mx1.example" || got[1] != "example" {
		t.Fatalf("reference names: %v", got)
	}
	h, err = d.LookupHost(ctx, "mx2.example")
	if err != nil || h.Status != dane.NoTLSA || h.NoTLSAReason != "no-tlsa-records" {
		t.Fatalf("mx2: %+v %v", h, err)
	}
	// Secure CNAME: the expanded name is the first candidate base domain.
	h, err = d.LookupHost(ctx, "alias.example")
	if err != nil || h.BaseDomain != "host.other.example." || h.Expanded != "host.other.example." {
		t.Fatalf("alias: %+v %v", h, err)
	}
	// Insecure target, secure initial CNAME: the original name is the base.
	h, err = d.LookupHost(ctx, "toins.example")
	if err != nil || h.Status != dane.HasTLSA || h.BaseDomain != "toins.example." || h.AddrSecure {
		t.Fatalf("toins: %+v %v", h, err)
	}
	// Unsigned host: DANE does not apply, no TLSA query at all.
	h, err = d.LookupHost(ctx, "host.ins.example")
	if err != nil || h.Status != dane.NoTLSA || h.NoTLSAReason != "insecure-mx-host" {
		t.Fatalf("host.ins: %+v %v", h, err)
	}
	if _, err := d.LookupHost(ctx, "tobogus.example"); err == nil {
		t.Fatal("bogus address records did not fail the host")
	}
	if _, err := d.LookupHost(ctx, "nothing.example"); !errors.Is(err, dane.ErrNoAddress) {
		t.Fatalf("no address: %v", err)
	}
}
