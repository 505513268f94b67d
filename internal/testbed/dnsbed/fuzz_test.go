package dnsbed

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzZoneRecords feeds arbitrary zone-file text to Zone.Add. Whatever is
// accepted must sign, and every name must then get an answer that packs;
// NXDOMAIN answers must carry an NSEC covering the query name.
func FuzzZoneRecords(f *testing.F) {
	for _, seed := range []string{
		"mx1 A 127.0.0.10\n_25._tcp.mx1 TLSA 3 1 1 " + tlsaData,
		"@ MX 10 mx1\nalias CNAME mx1\nsub NS ns.sub\nns.sub A 127.0.0.9",
		"a.b.c.d TXT \"x\"\n\\000.x AAAA ::1\nZ.A A 1.2.3.4",
		"$TTL 5\nx A 127.0.0.1\n$ORIGIN other.\ny A 127.0.0.2",
		"x 0 CAA 0 issue \"ca.test\"\nx SRV 0 0 25 mx1",
		"x NS a.\nx DS 1 13 2 00ff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		// Long inputs and $GENERATE, which can make thousands of records
		// from one line, are handled correctly but slowly; they would stall
		// the fuzzer.
		if len(text) > 2048 {
			return
		}
		zp := dns.NewZoneParser(strings.NewReader(text), "example.", "")
		n := 0
		for _, ok := zp.Next(); ok && n <= 64; _, ok = zp.Next() {
			n++
		}
		if n > 64 {
			return
		}
		srv := NewServer()
		ex, err := srv.zone("example.", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ex.add([]string{text}); err != nil {
			return
		}
		v, err := srv.currentView()
		if err != nil {
			t.Fatalf("accepted records cannot be signed: %v", err)
		}
		names := []string{"example.", "zz-nothing.example.", "a.zz-nothing.example."}
		for name := range ex.data {
			names = append(names, name, "x."+name)
		}
		for _, name := range names {
			for _, qt := range []uint16{dns.TypeA, dns.TypeTLSA, dns.TypeDS, dns.TypeNSEC, dns.TypeANY} {
				q := new(dns.Msg)
				q.SetQuestion(name, qt)
				q.SetEdns0(1232, true)
				resp := v.answer(q)
				if _, err := resp.Pack(); err != nil && resp.Len() <= dns.MaxMsgSize {
					t.Fatalf("answer to %s %s does not pack: %v\n%v", name, dns.Type(qt), err, resp)
				}
				if resp.Rcode == dns.RcodeNameError && resp.Authoritative {
					found := false
					for _, n := range nsecs(resp.Ns) {
						found = found || covers(n, name)
					}
					if !found {
						t.Fatalf("NXDOMAIN for %s without a covering NSEC: %v", name, resp.Ns)
					}
				}
			}
		}
	})
}

// FuzzServeDNS sends arbitrary wire-format messages to the server's query
// path: it must never panic, and every response must pack.
func FuzzServeDNS(f *testing.F) {
	w := newWorld(f)
	for _, q := range []struct {
		name string
		t    uint16
	}{
		{"_25._tcp.mx1.example.", dns.TypeTLSA},
		{"nosuch.example.", dns.TypeA},
		{"example.", dns.TypeDS},
		{"www.sub.example.", dns.TypeA},
		{"alias.example.", dns.TypeA},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.t)
		m.SetEdns0(1232, true)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	f.Fuzz(func(t *testing.T, wire []byte, tcp bool) {
		req := new(dns.Msg)
		if err := req.Unpack(wire); err != nil {
			return
		}
		resp := w.srv.handle(req, tcp)
		if resp == nil {
			return
		}
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("response does not pack: %v\nrequest %v\nresponse %v", err, req, resp)
		}
	})
}
