package dnsbed

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// startWorld serves the shared world on a random loopback port.
func startWorld(t *testing.T) (*world, string) {
	t.Helper()
	w := newWorld(t)
	w.srv.Start(t, "127.0.0.1:0")
	return w, w.srv.Addr()
}

func TestSignedAnswerValidates(t *testing.T) {
	w, addr := startWorld(t)
	rootKey := zoneKey(t, addr, ".")
	exKey := zoneKey(t, addr, "example.")
	keys := map[string]*dns.DNSKEY{".": rootKey, "example.": exKey}

	// The trust anchor is the root key's DS.
	if want := oneLine(rootKey.ToDS(dns.SHA256).String()); w.srv.TrustAnchor() != want {
		t.Fatalf("TrustAnchor = %q, want %q", w.srv.TrustAnchor(), want)
	}
	if rootKey.Flags != 257 || rootKey.Algorithm != dns.ECDSAP256SHA256 {
		t.Fatalf("root key flags %d algorithm %d, want 257 and 13", rootKey.Flags, rootKey.Algorithm)
	}

	// The DS for example. comes from the root, signed by the root, and
	// matches example.'s key.
	resp := query(t, addr, "example.", dns.TypeDS)
	if !resp.Authoritative || len(resp.Answer) != 2 {
		t.Fatalf("DS example.: %v", resp)
	}
	verifySection(t, resp.Answer, keys, time.Now())
	ds := resp.Answer[0].(*dns.DS)
	if want := exKey.ToDS(dns.SHA256); ds.Digest != want.Digest || ds.KeyTag != want.KeyTag || ds.DigestType != dns.SHA256 {
		t.Fatalf("DS %v does not match the key of example. (%v)", ds, want)
	}

	resp = query(t, addr, "_25._tcp.mx1.example.", dns.TypeTLSA)
	if rcode(resp) != "NOERROR" || !resp.Authoritative || resp.RecursionAvailable {
		t.Fatalf("TLSA: %v", resp)
	}
	if n := verifySection(t, resp.Answer, keys, time.Now()); n != 1 {
		t.Fatalf("TLSA answer holds %d RRsets, want 1: %v", n, resp.Answer)
	}
	tlsa := resp.Answer[0].(*dns.TLSA)
	if tlsa.Usage != 3 || tlsa.Selector != 1 || tlsa.MatchingType != 1 || tlsa.Certificate != tlsaData || tlsa.Hdr.Ttl != 300 {
		t.Fatalf("TLSA record %v", tlsa)
	}

	// Per-zone default TTLs.
	resp = query(t, addr, "host.other.", dns.TypeA)
	if len(resp.Answer) == 0 || resp.Answer[0].Header().Ttl != 600 {
		t.Fatalf("host.other. A: %v", resp)
	}

	// Without DO there are no signatures.
	resp = query(t, addr, "mx1.example.", dns.TypeA, noDO)
	if len(resp.Answer) != 1 || resp.Answer[0].Header().Rrtype != dns.TypeA {
		t.Fatalf("answer without DO: %v", resp.Answer)
	}
	if opt := resp.IsEdns0(); opt == nil || opt.Do() {
		t.Fatalf("OPT in response without DO: %v", opt)
	}
	resp = query(t, addr, "nosuch.example.", dns.TypeA, plain)
	if resp.IsEdns0() != nil || rcode(resp) != "NXDOMAIN" || len(resp.Ns) != 1 {
		t.Fatalf("plain NXDOMAIN: %v", resp)
	}
}

// TestSignatureTimes checks the validity window against an injected clock.
func TestSignatureTimes(t *testing.T) {
	srv := NewServer()
	now := time.Date(2030, 5, 17, 12, 0, 0, 0, time.UTC)
	srv.now = func() time.Time { return now }
	srv.Zone(t, "example.").Add(t, "a A 127.0.0.1")
	srv.Start(t, "127.0.0.1:0")
	resp := query(t, srv.Addr(), "a.example.", dns.TypeA)
	sig := resp.Answer[1].(*dns.RRSIG)
	if got, want := int64(sig.Inception), now.Add(-time.Hour).Unix(); got != want {
		t.Errorf("inception %d, want %d", got, want)
	}
	if got, want := int64(sig.Expiration), now.Add(21*24*time.Hour).Unix(); got != want {
		t.Errorf("expiration %d, want %d", got, want)
	}
	if sig.SignerName != "example." || sig.Algorithm != dns.ECDSAP256SHA256 || sig.Labels != 2 || sig.OrigTtl != 3600 {
		t.Errorf("RRSIG fields: %v", sig)
	}
}

// TestNSECChain walks the NSEC chain of example. from the apex around back
// to it and checks order, TTLs, signatures and type bitmaps. The walk reads
// the signed zone directly: over the wire, NSEC queries for a delegation
// point are answered by the child zone this server also serves.
func TestNSECChain(t *testing.T) {
	w, addr := startWorld(t)
	keys := map[string]*dns.DNSKEY{"example.": zoneKey(t, addr, "example.")}
	v, err := w.srv.currentView()
	if err != nil {
		t.Fatal(err)
	}
	zv := v.zones["example."]
	wantTypes := map[string][]uint16{
		"example.":              {dns.TypeNS, dns.TypeSOA, dns.TypeMX, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeDNSKEY},
		"mx1.example.":          {dns.TypeA, dns.TypeRRSIG, dns.TypeNSEC},
		"_25._tcp.mx1.example.": {dns.TypeRRSIG, dns.TypeNSEC, dns.TypeTLSA},
		"alias.example.":        {dns.TypeCNAME, dns.TypeRRSIG, dns.TypeNSEC},
		// Delegation points: insecure (no DS), secure (DS), unserved.
		"insecure.example.": {dns.TypeNS, dns.TypeRRSIG, dns.TypeNSEC},
		"bogus.example.":    {dns.TypeNS, dns.TypeDS, dns.TypeRRSIG, dns.TypeNSEC},
		"sub.example.":      {dns.TypeNS, dns.TypeRRSIG, dns.TypeNSEC},
	}
	var chain []string
	name := "example."
	for {
		set := zv.sets[name][dns.TypeNSEC]
		if set == nil {
			t.Fatalf("no NSEC at %s", name)
		}
		verifySection(t, append(slices.Clone(set.rrs), set.sigs...), keys, time.Now())
		n := set.rrs[0].(*dns.NSEC)
		if n.Hdr.Ttl != 120 {
			t.Errorf("NSEC TTL %d at %s, want 120 = min(SOA TTL 300, MINIMUM 120)", n.Hdr.Ttl, name)
		}
		if want, ok := wantTypes[name]; ok && !slices.Equal(n.TypeBitMap, want) {
			t.Errorf("NSEC bitmap at %s = %v, want %v", name, typeNames(n.TypeBitMap), typeNames(want))
		}
		chain = append(chain, name)
		if n.NextDomain == "example." {
			break
		}
		if canonicalCompare(name, n.NextDomain) >= 0 {
			t.Fatalf("chain goes backwards: %s -> %s", name, n.NextDomain)
		}
		if len(chain) > 100 {
			t.Fatal("chain does not close")
		}
		name = n.NextDomain
	}
	for owner := range wantTypes {
		if !slices.Contains(chain, owner) {
			t.Errorf("%s missing from the NSEC chain %q", owner, chain)
		}
	}
	for _, absent := range []string{"_tcp.mx1.example.", "ns.sub.example.", "host.insecure.example."} {
		if slices.Contains(chain, absent) {
			t.Errorf("%s must not own an NSEC in example. (chain %q)", absent, chain)
		}
	}
	if len(chain) != len(zv.chain) {
		t.Errorf("walk found %d names, the zone has %d", len(chain), len(zv.chain))
	}
	// Over the wire, an ordinary name's NSEC is served with its signature.
	resp := query(t, addr, "mx1.example.", dns.TypeNSEC)
	if n := verifySection(t, resp.Answer, keys, time.Now()); n != 1 {
		t.Fatalf("NSEC query: %v", resp.Answer)
	}
}

func typeNames(ts []uint16) []string {
	var out []string
	for _, t := range ts {
		out = append(out, dns.Type(t).String())
	}
	return out
}

func TestNegativeAnswers(t *testing.T) {
	_, addr := startWorld(t)
	keys := map[string]*dns.DNSKEY{"example.": zoneKey(t, addr, "example.")}

	checkSOA := func(t *testing.T, resp *dns.Msg) {
		t.Helper()
		for _, rr := range resp.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				if soa.Hdr.Ttl != 120 || soa.Minttl != 120 {
					t.Errorf("SOA in negative answer: %v, want TTL 120 (RFC 2308 §3)", soa)
				}
				return
			}
		}
		t.Errorf("no SOA in the authority section: %v", resp.Ns)
	}

	t.Run("nxdomain", func(t *testing.T) {
		qname := "nosuch.mx1.example."
		resp := query(t, addr, qname, dns.TypeA)
		if rcode(resp) != "NXDOMAIN" || !resp.Authoritative || len(resp.Answer) != 0 {
			t.Fatalf("%v", resp)
		}
		checkSOA(t, resp)
		verifySection(t, resp.Ns, keys, time.Now())
		var nameCovered, wildcardCovered bool
		for _, n := range nsecs(resp.Ns) {
			nameCovered = nameCovered || covers(n, qname)
			// The closest encloser is mx1.example.
			wildcardCovered = wildcardCovered || covers(n, "*.mx1.example.")
		}
		if !nameCovered || !wildcardCovered {
			t.Fatalf("NSECs %v do not prove %s and *.mx1.example. absent", nsecs(resp.Ns), qname)
		}
	})
	t.Run("nodata", func(t *testing.T) {
		resp := query(t, addr, "mx1.example.", dns.TypeTLSA)
		if rcode(resp) != "NOERROR" || len(resp.Answer) != 0 {
			t.Fatalf("%v", resp)
		}
		checkSOA(t, resp)
		verifySection(t, resp.Ns, keys, time.Now())
		n := findNSEC(resp.Ns, "mx1.example.")
		if n == nil || hasType(n, dns.TypeTLSA) || hasType(n, dns.TypeCNAME) || !hasType(n, dns.TypeA) {
			t.Fatalf("NODATA proof: %v", resp.Ns)
		}
	})
	t.Run("empty non-terminal", func(t *testing.T) {
		for _, qt := range []uint16{dns.TypeTLSA, dns.TypeA} {
			resp := query(t, addr, "_tcp.mx1.example.", qt)
			if rcode(resp) != "NOERROR" || len(resp.Answer) != 0 {
				t.Fatalf("%v", resp)
			}
			checkSOA(t, resp)
			verifySection(t, resp.Ns, keys, time.Now())
			ns := nsecs(resp.Ns)
			// RFC 7129 §3.2: the NSEC covering the empty non-terminal has
			// the non-terminal's descendant as next name.
			if len(ns) != 1 || !covers(ns[0], "_tcp.mx1.example.") || !dns.IsSubDomain("_tcp.mx1.example.", ns[0].NextDomain) {
				t.Fatalf("ENT proof: %v", ns)
			}
		}
	})
	t.Run("nodata at the apex of the root for DS", func(t *testing.T) {
		resp := query(t, addr, ".", dns.TypeDS)
		if rcode(resp) != "NOERROR" || len(resp.Answer) != 0 || findNSEC(resp.Ns, ".") == nil {
			t.Fatalf("%v", resp)
		}
	})
	t.Run("insecure delegation", func(t *testing.T) {
		// The DS query at the apex of the unsigned child is answered by the
		// parent with the NSEC that proves there is no DS.
		resp := query(t, addr, "insecure.example.", dns.TypeDS)
		n := findNSEC(resp.Ns, "insecure.example.")
		if rcode(resp) != "NOERROR" || !resp.Authoritative || n == nil || hasType(n, dns.TypeDS) || !hasType(n, dns.TypeNS) || hasType(n, dns.TypeSOA) {
			t.Fatalf("%v", resp)
		}
		verifySection(t, resp.Ns, keys, time.Now())
		// Data in the unsigned child has no signatures.
		resp = query(t, addr, "host.insecure.example.", dns.TypeA)
		if len(resp.Answer) != 1 || !resp.Authoritative {
			t.Fatalf("%v", resp)
		}
		resp = query(t, addr, "nosuch.insecure.example.", dns.TypeA)
		if rcode(resp) != "NXDOMAIN" || len(nsecs(resp.Ns)) != 0 || len(resp.Ns) != 1 {
			t.Fatalf("%v", resp)
		}
	})
}

func TestReferralToUnservedZone(t *testing.T) {
	_, addr := startWorld(t)
	resp := query(t, addr, "www.sub.example.", dns.TypeA)
	if rcode(resp) != "NOERROR" || resp.Authoritative || len(resp.Answer) != 0 {
		t.Fatalf("%v", resp)
	}
	var ns *dns.NS
	for _, rr := range resp.Ns {
		if x, ok := rr.(*dns.NS); ok {
			ns = x
		}
	}
	if ns == nil || ns.Ns != "ns.sub.example." {
		t.Fatalf("referral NS: %v", resp.Ns)
	}
	if n := findNSEC(resp.Ns, "sub.example."); n == nil || hasType(n, dns.TypeDS) {
		t.Fatalf("referral lacks the NSEC proving no DS: %v", resp.Ns)
	}
	if len(resp.Extra) < 1 || resp.Extra[0].(*dns.A).A.String() != "127.0.0.99" {
		t.Fatalf("glue: %v", resp.Extra)
	}
}

func TestCNAMEFollowedInServedZones(t *testing.T) {
	_, addr := startWorld(t)
	for _, c := range []struct {
		name  string
		chain []uint16
	}{
		{"alias.example.", []uint16{dns.TypeCNAME, dns.TypeRRSIG, dns.TypeA, dns.TypeRRSIG}},
		{"cross.example.", []uint16{dns.TypeCNAME, dns.TypeRRSIG, dns.TypeA, dns.TypeRRSIG}},
		{"toinsecure.example.", []uint16{dns.TypeCNAME, dns.TypeRRSIG, dns.TypeA}},
		// A dangling target is left to the resolver.
		{"dangling.example.", []uint16{dns.TypeCNAME, dns.TypeRRSIG}},
	} {
		resp := query(t, addr, c.name, dns.TypeA)
		var got []uint16
		for _, rr := range resp.Answer {
			got = append(got, rr.Header().Rrtype)
		}
		if rcode(resp) != "NOERROR" || !slices.Equal(got, c.chain) {
			t.Errorf("%s: answer %v, want types %v", c.name, resp.Answer, typeNames(c.chain))
		}
	}
	// Asking for the CNAME itself gives just the CNAME.
	resp := query(t, addr, "alias.example.", dns.TypeCNAME)
	if len(resp.Answer) != 2 {
		t.Fatalf("CNAME query: %v", resp.Answer)
	}
}

func TestBadSignaturesDoNotVerify(t *testing.T) {
	_, addr := startWorld(t)
	key := zoneKey(t, addr, "bogus.example.") // the DNSKEY RRSIG itself is good
	resp := query(t, addr, "host.bogus.example.", dns.TypeA)
	sets, sigs := rrsetsOf(resp.Answer)
	k := [2]string{"host.bogus.example.", "A"}
	if len(sets[k]) != 1 || len(sigs[k]) != 1 {
		t.Fatalf("%v", resp.Answer)
	}
	if err := sigs[k][0].Verify(key, sets[k]); err == nil {
		t.Fatal("the RRSIG in a BadSignatures zone verifies")
	}
	// The parent publishes the DS of the real key.
	resp = query(t, addr, "bogus.example.", dns.TypeDS)
	if len(resp.Answer) == 0 || resp.Answer[0].(*dns.DS).Digest != key.ToDS(dns.SHA256).Digest {
		t.Fatalf("DS of bogus.example.: %v", resp.Answer)
	}
}

func TestRuntimeChanges(t *testing.T) {
	w, addr := startWorld(t)
	keys := map[string]*dns.DNSKEY{"example.": zoneKey(t, addr, "example.")}
	serial := w.ex.Serial()

	w.ex.Replace(t, "change 60 A 127.0.0.51", "change 60 A 127.0.0.52")
	resp := query(t, addr, "change.example.", dns.TypeA)
	if len(resp.Answer) != 3 || resp.Answer[0].Header().Ttl != 60 {
		t.Fatalf("after Replace: %v", resp.Answer)
	}
	verifySection(t, resp.Answer, keys, time.Now())
	if w.ex.Serial() != serial+1 {
		t.Fatalf("serial %d after one change from %d", w.ex.Serial(), serial)
	}
	resp = query(t, addr, "example.", dns.TypeSOA)
	if soa := resp.Answer[0].(*dns.SOA); soa.Serial != serial+1 {
		t.Fatalf("served serial %d, want %d", soa.Serial, serial+1)
	}

	w.ex.Add(t, "new AAAA ::1")
	resp = query(t, addr, "new.example.", dns.TypeAAAA)
	verifySection(t, resp.Answer, keys, time.Now())
	if len(resp.Answer) != 2 {
		t.Fatalf("after Add: %v", resp.Answer)
	}
	// The new name joined the NSEC chain.
	resp = query(t, addr, "new.example.", dns.TypeNSEC)
	if n := findNSEC(resp.Answer, "new.example."); n == nil || !hasType(n, dns.TypeAAAA) {
		t.Fatalf("NSEC of the new name: %v", resp.Answer)
	}

	w.ex.Remove(t, "new", 0)
	if resp = query(t, addr, "new.example.", dns.TypeAAAA); rcode(resp) != "NXDOMAIN" {
		t.Fatalf("after Remove: %v", resp)
	}

	w.ex.Replace(t, "@ 300 SOA ns1 hostmaster 2024010100 7200 3600 1209600 60")
	resp = query(t, addr, "example.", dns.TypeSOA)
	if soa := resp.Answer[0].(*dns.SOA); soa.Serial != 2024010100 || soa.Minttl != 60 {
		t.Fatalf("replaced SOA: %v", soa)
	}
	resp = query(t, addr, "nosuch.example.", dns.TypeA)
	if resp.Ns[0].Header().Ttl != 60 {
		t.Fatalf("negative TTL after SOA change: %v", resp.Ns[0])
	}

	// A child added while running gets its delegation in the parent.
	late := w.srv.Zone(t, "late.example.")
	late.Add(t, "www A 127.0.0.5")
	resp = query(t, addr, "late.example.", dns.TypeDS)
	if len(resp.Answer) != 2 || !strings.EqualFold(resp.Answer[0].(*dns.DS).Digest, strings.Fields(late.DS())[7]) {
		t.Fatalf("DS of the late zone: %v (want %s)", resp.Answer, late.DS())
	}
}

func TestFaultsAndTruncation(t *testing.T) {
	w, addr := startWorld(t)
	srv := w.srv

	t.Run("servfail", func(t *testing.T) {
		srv.SetFault(t, "sf.example.", dns.TypeA, ServFail)
		defer srv.SetFault(t, "sf.example.", dns.TypeA, NoFault)
		if resp := query(t, addr, "sf.example.", dns.TypeA); rcode(resp) != "SERVFAIL" {
			t.Fatalf("%v", resp)
		}
		// Other types at the name are not affected.
		if resp := query(t, addr, "sf.example.", dns.TypeAAAA); rcode(resp) != "NOERROR" {
			t.Fatalf("%v", resp)
		}
	})
	t.Run("drop", func(t *testing.T) {
		srv.SetFault(t, "sf.example.", 0, Drop)
		defer srv.ClearFaults()
		m := new(dns.Msg)
		m.SetQuestion("sf.example.", dns.TypeA)
		c := &dns.Client{Timeout: 300 * time.Millisecond}
		_, _, err := c.Exchange(m, addr)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("dropped query: err = %v, want a timeout", err)
		}
	})
	t.Run("truncate", func(t *testing.T) {
		srv.SetFault(t, "tc.example.", dns.TypeA, Truncate)
		defer srv.ClearFaults()
		resp := query(t, addr, "tc.example.", dns.TypeA)
		if !resp.Truncated || len(resp.Answer) != 0 {
			t.Fatalf("UDP: %v", resp)
		}
		resp = query(t, addr, "tc.example.", dns.TypeA, overTCP)
		if resp.Truncated || len(resp.Answer) != 2 {
			t.Fatalf("TCP: %v", resp)
		}
	})
	t.Run("too big for UDP", func(t *testing.T) {
		resp := query(t, addr, "big.example.", dns.TypeTXT)
		if !resp.Truncated || len(resp.Answer) != 0 {
			t.Fatalf("UDP: truncated=%v with %d answers", resp.Truncated, len(resp.Answer))
		}
		resp = query(t, addr, "big.example.", dns.TypeTXT, overTCP)
		if resp.Truncated || len(resp.Answer) != 41 {
			t.Fatalf("TCP: truncated=%v with %d answers", resp.Truncated, len(resp.Answer))
		}
	})
}

func TestQueryCounting(t *testing.T) {
	w, addr := startWorld(t)
	srv := w.srv
	srv.ResetCounts()
	query(t, addr, "count.example.", dns.TypeA)
	query(t, addr, "COUNT.example.", dns.TypeA)
	query(t, addr, "count.example.", dns.TypeAAAA, overTCP)
	if got := srv.QueryCount("count.example.", dns.TypeA); got != 2 {
		t.Errorf("QueryCount(A) = %d, want 2", got)
	}
	if got := srv.QueryCount("Count.Example.", 0); got != 3 {
		t.Errorf("QueryCount(any type) = %d, want 3", got)
	}
	if srv.TotalQueries() != 3 || srv.TCPQueries() != 1 {
		t.Errorf("total %d, tcp %d; want 3 and 1", srv.TotalQueries(), srv.TCPQueries())
	}
	srv.ResetCounts()
	if srv.TotalQueries() != 0 || srv.QueryCount("count.example.", dns.TypeA) != 0 {
		t.Error("ResetCounts left counts behind")
	}
}

func TestProtocolEdges(t *testing.T) {
	_, addr := startWorld(t)
	// Names outside every served zone cannot happen with a root zone, so
	// check class and transfer refusals instead.
	m := new(dns.Msg)
	m.SetQuestion("example.", dns.TypeSOA)
	m.Question[0].Qclass = dns.ClassCHAOS
	resp, err := dns.Exchange(m, addr)
	if err != nil || resp.Rcode != dns.RcodeRefused {
		t.Fatalf("CH query: %v %v", resp, err)
	}
	if resp := query(t, addr, "example.", dns.TypeAXFR, overTCP); resp.Rcode != dns.RcodeRefused {
		t.Fatalf("AXFR: %v", resp)
	}
	m = new(dns.Msg)
	m.SetQuestion("example.", dns.TypeSOA)
	m.SetEdns0(1232, true)
	m.IsEdns0().SetVersion(1)
	resp, err = dns.Exchange(m, addr)
	if err != nil || resp.Rcode != dns.RcodeBadVers {
		t.Fatalf("EDNS version 1: %v %v", resp, err)
	}
	resp = query(t, addr, "mx1.example.", dns.TypeANY)
	if len(resp.Answer) < 4 { // A, NSEC and their RRSIGs
		t.Fatalf("ANY: %v", resp.Answer)
	}
}

func TestInvalidInput(t *testing.T) {
	srv := NewServer()
	ex := srv.Zone(t, "example.")
	ex.Add(t, "www A 127.0.0.1", "sub NS ns.elsewhere.")
	srv.Zone(t, "child.example.")
	srv.Zone(t, "deep.under.example.")
	for _, c := range []struct {
		records string
		want    string
	}{
		{"www.other. A 127.0.0.1", "outside zone"},
		{"x.child A 127.0.0.1", "belongs to the served zone child.example."},
		{"child DS 1 13 2 00", "generated from its key"},
		{"* NS ns.elsewhere.", "wildcard NS"},
		{"www RRSIG A 13 2 300 20300101000000 20200101000000 1 example. AAAA", "generated by the server"},
		{"www NSEC example. A", "generated by the server"},
		{"@ DNSKEY 257 3 13 AAAA", "generated by the server"},
		{"@ DS 1 13 2 00", "parent zone"},
		{"www CNAME other.", "CNAME and other data"},
		{"@ CNAME other.", "apex"},
		{"www 60 A 127.0.0.2", "mix TTLs"},
		{"www SOA ns hostmaster 1 2 3 4 5", "only at the zone apex"},
		{"under NS ns.elsewhere.", "hide the served zone deep.under.example."},
		{"@ SOA ns hostmaster 1 2 3 4 5", "already has a SOA"},
		{"www CH TXT x", "class IN"},
		{"www A 999.0.0.1", "bad A"},
		{"www A", "dns: "},
		{"$INCLUDE /etc/passwd", "include"},
		{"", "no records"},
		{"www 4294967295 A 127.0.0.9", "exceeds"},
	} {
		err := ex.add([]string{c.records})
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.want)) {
			t.Errorf("Add(%q) = %v, want an error containing %q", c.records, err, c.want)
		}
	}
	for _, c := range []struct {
		records string
		want    string
	}{
		{"@ 60 SOA ns hostmaster 1 2 3 4 5\n@ 60 SOA ns2 hostmaster 1 2 3 4 5", "exactly one SOA"},
		{"alias CNAME a.\nalias CNAME b.", "only one is allowed"},
	} {
		if err := ex.replace([]string{c.records}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Replace(%q) = %v, want an error containing %q", c.records, err, c.want)
		}
	}
	for _, c := range []struct {
		name  string
		rtype uint16
		want  string
	}{
		{"@", dns.TypeSOA, "apex needs"},
		{"@", dns.TypeNS, "apex needs"},
		{"@", 0, "apex needs"},
		{"nothere", 0, "no records"},
		{"www", dns.TypeTXT, "no TXT records"},
		{"www.other.", dns.TypeA, "not in zone"},
		{"bad..name", dns.TypeA, "domain name"},
	} {
		if err := ex.remove(c.name, c.rtype); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Remove(%q, %d) = %v, want an error containing %q", c.name, c.rtype, err, c.want)
		}
	}
	for _, c := range []struct {
		name string
		opts []ZoneOption
		want string
	}{
		{"example.", []ZoneOption{TTL(5)}, "exists already"},
		{"example", nil, "not fully qualified"},
		{"x.sub.example.", nil, "below the delegation point sub.example."},
		{"sub.example.", nil, "already has records"},
		{"u.example.", []ZoneOption{Unsigned(), BadSignatures()}, "exclude each other"},
		{"u.example.", []ZoneOption{BadSignatures(), Unsigned()}, "exclude each other"},
		{"u.example.", []ZoneOption{TTL(1 << 31)}, "exceeds"},
		{"u.example.", []ZoneOption{NegativeTTL(1 << 31)}, "exceeds"},
		{"u.example.", []ZoneOption{nil}, "nil ZoneOption"},
	} {
		if _, err := srv.zone(c.name, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Zone(%q) = %v, want an error containing %q", c.name, err, c.want)
		}
	}
	other := NewServer()
	if _, err := other.zone(".", []ZoneOption{Unsigned()}); err == nil || !strings.Contains(err.Error(), "must be signed") {
		t.Errorf("unsigned root: %v", err)
	}
	// Nothing of the failed calls changed the zone.
	if got := len(ex.data); got != 3 { // apex, www, sub
		t.Errorf("zone holds %d names after failed changes, want 3", got)
	}
	if ex.Serial() != 2 {
		t.Errorf("serial %d after one successful change, want 2", ex.Serial())
	}
}

// TestConcurrentChanges queries while the zone changes; every answer must
// be a consistent, validly signed snapshot. Run with -race.
func TestConcurrentChanges(t *testing.T) {
	w, addr := startWorld(t)
	keys := map[string]*dns.DNSKEY{"example.": zoneKey(t, addr, "example.")}
	done := make(chan struct{})
	const readers = 2
	errs := make(chan error, readers)
	for range readers {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				resp, err := exchange(addr, "change.example.", dns.TypeA)
				if err != nil {
					errs <- err
					return
				}
				if len(resp.Answer) != 2 {
					errs <- fmt.Errorf("answer %v", resp.Answer)
					return
				}
				sig := resp.Answer[1].(*dns.RRSIG)
				if err := sig.Verify(keys["example."], resp.Answer[:1]); err != nil {
					errs <- fmt.Errorf("signature over %v: %v", resp.Answer[0], err)
					return
				}
			}
		}()
	}
	for i := range 15 {
		w.ex.Replace(t, fmt.Sprintf("change A 127.0.1.%d", i))
		query(t, addr, "change.example.", dns.TypeA)
	}
	close(done)
	for range readers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	resp := query(t, addr, "change.example.", dns.TypeA)
	if got := resp.Answer[0].(*dns.A).A.String(); got != "127.0.1.14" {
		t.Fatalf("final answer %s", got)
	}
}
