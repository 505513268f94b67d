package dnsbed

import (
	"net"
	"os"
	"os/exec"
	"slices"
	"testing"

	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/miekg/dns"
)

func needUnbound(t *testing.T) {
	t.Helper()
	for _, bin := range []string{UnboundBinary, UnboundControlBinary} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (apt-get install unbound)", bin)
		}
	}
}

// TestUnbound runs the resolver checks against a real validating unbound:
// with the fixed addresses of the network namespace (auth on
// 127.0.0.2:53, unbound on 127.0.0.1:53) when inside it, and with random
// loopback ports in either case.
func TestUnbound(t *testing.T) {
	needUnbound(t)
	if netns.Inside() {
		t.Run("fixed ports", func(t *testing.T) { unboundSuite(t, "127.0.0.2:53", "") })
	}
	t.Run("random ports", func(t *testing.T) { unboundSuite(t, "127.0.0.1:0", "127.0.0.1:0") })
}

func unboundSuite(t *testing.T, authAddr, unboundAddr string) {
	w := newWorld(t)
	w.srv.Start(t, authAddr)
	ub := StartUnbound(t, w.srv, UnboundOptions{Addr: unboundAddr})
	if unboundAddr == "" {
		if want := net.JoinHostPort(netns.ResolverAddr, "53"); ub.Addr() != want {
			t.Fatalf("default unbound address %s inside the namespace, want %s", ub.Addr(), want)
		}
		// The namespace's resolv.conf points at this unbound.
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || conf.Servers[0] != netns.ResolverAddr {
			t.Fatalf("resolv.conf: %v %v", conf, err)
		}
	}

	// expect queries unbound and checks RCODE, AD bit and answer types.
	expect := func(t *testing.T, name string, qtype uint16, wantRcode int, wantAD bool, wantTypes ...uint16) *dns.Msg {
		t.Helper()
		resp := ub.Query(t, name, qtype)
		var got []uint16
		for _, rr := range resp.Answer {
			if rr.Header().Rrtype != dns.TypeRRSIG {
				got = append(got, rr.Header().Rrtype)
			}
		}
		if resp.Rcode != wantRcode || resp.AuthenticatedData != wantAD || !slices.Equal(got, wantTypes) {
			t.Fatalf("%s %s: rcode %s AD %v types %v; want %s AD %v types %v\n%v\n--- unbound log ---\n%s",
				name, dns.Type(qtype), rcode(resp), resp.AuthenticatedData, typeNames(got),
				dns.RcodeToString[wantRcode], wantAD, typeNames(wantTypes), resp, ub.logTail(15))
		}
		return resp
	}
	const (
		ok   = dns.RcodeSuccess
		nx   = dns.RcodeNameError
		fail = dns.RcodeServerFailure
	)

	t.Run("secure data", func(t *testing.T) {
		resp := expect(t, "mx1.example.", dns.TypeA, ok, true, dns.TypeA)
		if a := resp.Answer[0].(*dns.A); a.A.String() != "127.0.0.10" || a.Hdr.Ttl != 300 {
			t.Fatalf("answer %v, want 127.0.0.10 with TTL 300", a)
		}
		expect(t, "example.", dns.TypeMX, ok, true, dns.TypeMX)
		resp = expect(t, "host.other.", dns.TypeA, ok, true, dns.TypeA)
		if ttl := resp.Answer[0].Header().Ttl; ttl != 600 {
			t.Fatalf("TTL %d, want 600 as served", ttl)
		}
	})
	t.Run("secure TLSA", func(t *testing.T) {
		resp := expect(t, "_25._tcp.mx1.example.", dns.TypeTLSA, ok, true, dns.TypeTLSA)
		if r := resp.Answer[0].(*dns.TLSA); r.Usage != 3 || r.Selector != 1 || r.MatchingType != 1 || r.Certificate != tlsaData {
			t.Fatalf("TLSA %v", r)
		}
	})
	t.Run("insecure zone", func(t *testing.T) {
		expect(t, "host.insecure.example.", dns.TypeA, ok, false, dns.TypeA)
		expect(t, "nosuch.insecure.example.", dns.TypeA, nx, false)
	})
	t.Run("bogus zone", func(t *testing.T) {
		expect(t, "host.bogus.example.", dns.TypeA, fail, false)
	})
	t.Run("nxdomain", func(t *testing.T) {
		resp := expect(t, "nosuch.example.", dns.TypeA, nx, true)
		var soa *dns.SOA
		for _, rr := range resp.Ns {
			if s, ok := rr.(*dns.SOA); ok {
				soa = s
			}
		}
		if soa == nil || soa.Hdr.Ttl != 120 {
			t.Fatalf("SOA in the NXDOMAIN answer: %v, want TTL 120", resp.Ns)
		}
		expect(t, "deeper.nosuch.mx1.example.", dns.TypeTLSA, nx, true)
	})
	t.Run("nodata", func(t *testing.T) {
		expect(t, "mx1.example.", dns.TypeTLSA, ok, true)
		expect(t, "mx1.example.", dns.TypeAAAA, ok, true)
	})
	t.Run("empty non-terminal", func(t *testing.T) {
		expect(t, "_tcp.mx1.example.", dns.TypeTLSA, ok, true)
		expect(t, "_tcp.mx1.example.", dns.TypeA, ok, true)
	})
	t.Run("cname", func(t *testing.T) {
		expect(t, "alias.example.", dns.TypeA, ok, true, dns.TypeCNAME, dns.TypeA)
		expect(t, "cross.example.", dns.TypeA, ok, true, dns.TypeCNAME, dns.TypeA)
		// The chain is only as secure as its weakest link.
		expect(t, "toinsecure.example.", dns.TypeA, ok, false, dns.TypeCNAME, dns.TypeA)
		expect(t, "tobogus.example.", dns.TypeA, fail, false)
		// A target that does not exist is chased by unbound.
		expect(t, "dangling.example.", dns.TypeA, nx, true, dns.TypeCNAME)
	})
	t.Run("delegation to an unserved zone", func(t *testing.T) {
		// sub.example. points at a server that does not exist; the answer
		// must be a failure, never a forged success.
		resp := ub.Query(t, "www.sub.example.", dns.TypeA)
		if resp.Rcode == dns.RcodeSuccess && len(resp.Answer) > 0 {
			t.Fatalf("%v", resp)
		}
	})
	t.Run("runtime change needs a flush", func(t *testing.T) {
		expect(t, "change.example.", dns.TypeA, ok, true, dns.TypeA)
		expect(t, "later.example.", dns.TypeA, nx, true)
		w.ex.Replace(t, "change 300 A 127.0.0.51")
		w.ex.Add(t, "later A 127.0.0.52")
		// Still cached, positively and negatively.
		resp := expect(t, "change.example.", dns.TypeA, ok, true, dns.TypeA)
		if got := resp.Answer[0].(*dns.A).A.String(); got != "127.0.0.50" {
			t.Fatalf("before the flush: %s, want the cached 127.0.0.50", got)
		}
		expect(t, "later.example.", dns.TypeA, nx, true)
		ub.Flush(t)
		resp = expect(t, "change.example.", dns.TypeA, ok, true, dns.TypeA)
		if got := resp.Answer[0].(*dns.A).A.String(); got != "127.0.0.51" {
			t.Fatalf("after the flush: %s, want 127.0.0.51", got)
		}
		expect(t, "later.example.", dns.TypeA, ok, true, dns.TypeA)

		w.ex.Replace(t, "change 300 A 127.0.0.53")
		ub.FlushZone(t, "change.example.")
		resp = expect(t, "change.example.", dns.TypeA, ok, true, dns.TypeA)
		if got := resp.Answer[0].(*dns.A).A.String(); got != "127.0.0.53" {
			t.Fatalf("after FlushZone: %s, want 127.0.0.53", got)
		}
	})
	t.Run("query counting", func(t *testing.T) {
		ub.Flush(t)
		w.srv.ResetCounts()
		before := ub.QueryCount(t)
		expect(t, "count.example.", dns.TypeA, ok, true, dns.TypeA)
		expect(t, "count.example.", dns.TypeA, ok, true, dns.TypeA) // from the cache
		if got := ub.QueryCount(t) - before; got != 2 {
			t.Errorf("unbound counted %d client queries, want 2", got)
		}
		if got := w.srv.QueryCount("count.example.", dns.TypeA); got != 1 {
			t.Errorf("the server saw %d queries for count.example. A, want 1", got)
		}
		// The flush emptied the key cache too: the keys were fetched again.
		if w.srv.QueryCount("example.", dns.TypeDNSKEY) != 1 || w.srv.QueryCount("example.", dns.TypeDS) != 1 {
			t.Errorf("DNSKEY/DS fetches after the flush: %d/%d, want 1/1",
				w.srv.QueryCount("example.", dns.TypeDNSKEY), w.srv.QueryCount("example.", dns.TypeDS))
		}
		if got := ub.Stats(t)["num.query.type.A"]; got < 2 {
			t.Errorf("num.query.type.A = %v", got)
		}
	})
	t.Run("truncation forces TCP", func(t *testing.T) {
		w.srv.ResetCounts()
		resp := expect(t, "big.example.", dns.TypeTXT, ok, true, slices.Repeat([]uint16{dns.TypeTXT}, 40)...)
		_ = resp
		if w.srv.TCPQueries() == 0 {
			t.Error("unbound did not retry over TCP")
		}
		w.srv.SetFault(t, "tc.example.", dns.TypeA, Truncate)
		defer w.srv.ClearFaults()
		w.srv.ResetCounts()
		expect(t, "tc.example.", dns.TypeA, ok, true, dns.TypeA)
		if w.srv.TCPQueries() == 0 || w.srv.QueryCount("tc.example.", dns.TypeA) < 2 {
			t.Errorf("truncated answer: %d TCP queries, %d for tc.example. A",
				w.srv.TCPQueries(), w.srv.QueryCount("tc.example.", dns.TypeA))
		}
	})
	t.Run("servfail from the server", func(t *testing.T) {
		w.srv.SetFault(t, "sf.example.", dns.TypeA, ServFail)
		expect(t, "sf.example.", dns.TypeA, fail, false)
		w.srv.ClearFaults()
		ub.Flush(t)
		expect(t, "sf.example.", dns.TypeA, ok, true, dns.TypeA)
	})
	t.Run("reload", func(t *testing.T) {
		ub.Reload(t)
		expect(t, "mx1.example.", dns.TypeA, ok, true, dns.TypeA)
	})
}

// TestUnboundFromCopy runs unbound from a copy of its binary, the way
// StartUnbound does where AppArmor confines /usr/sbin/unbound.
func TestUnboundFromCopy(t *testing.T) {
	needUnbound(t)
	orig, err := exec.LookPath(UnboundBinary)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin, err := copyExecutable(orig, dir)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := copyExecutable(orig, dir); err != nil || again != bin {
		t.Fatalf("second copy: %q %v, want the first one %q reused", again, err, bin)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("copy left %d files behind, want 1", len(entries))
	}
	saved := UnboundBinary
	UnboundBinary = bin
	t.Cleanup(func() { UnboundBinary = saved })

	srv := NewServer()
	srv.Zone(t, "example.").Add(t, "www A 127.0.0.1")
	srv.Start(t, "127.0.0.1:0")
	ub := StartUnbound(t, srv, UnboundOptions{Addr: "127.0.0.1:0"})
	if resp := ub.Query(t, "www.example.", dns.TypeA); resp.Rcode != dns.RcodeSuccess || !resp.AuthenticatedData {
		t.Fatalf("%v", resp)
	}
}
