package dnsbed

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// tlsaData is the certificate association data of the test TLSA record.
const tlsaData = "8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d"

// world is the zone layout most tests share.
type world struct {
	srv                         *Server
	root, ex, other, ins, bogus *Zone
}

func newWorld(t testing.TB) *world {
	t.Helper()
	srv := NewServer()
	w := &world{srv: srv}
	w.root = srv.Zone(t, ".")
	w.ex = srv.Zone(t, "example.", TTL(300), NegativeTTL(120))
	w.ex.Add(t, `
@            MX    10 mx1
mx1          A     127.0.0.10
_25._tcp.mx1 TLSA  3 1 1 `+tlsaData+`
alias        CNAME mx1
cross        CNAME host.other.
toinsecure   CNAME host.insecure.example.
tobogus      CNAME host.bogus.example.
dangling     CNAME nowhere.other.
change       A     127.0.0.50
count        A     127.0.0.60
tc           A     127.0.0.70
sf           A     127.0.0.80
sub          NS    ns.sub
ns.sub       A     127.0.0.99
`)
	var big []string
	for i := range 40 {
		big = append(big, fmt.Sprintf("big TXT \"record %02d %s\"", i, strings.Repeat("x", 50)))
	}
	w.ex.Add(t, big...)
	w.other = srv.Zone(t, "other.", TTL(600))
	w.other.Add(t, "host A 127.0.0.20")
	w.ins = srv.Zone(t, "insecure.example.", Unsigned())
	w.ins.Add(t, "host 300 A 127.0.0.30")
	w.bogus = srv.Zone(t, "bogus.example.", BadSignatures())
	w.bogus.Add(t, "host 300 A 127.0.0.40")
	return w
}

type queryOpt func(*dns.Msg, *dns.Client)

// noDO leaves out the DO bit (EDNS is still used).
func noDO(m *dns.Msg, _ *dns.Client) { m.SetEdns0(1232, false) }

// overTCP sends the query over TCP.
func overTCP(_ *dns.Msg, c *dns.Client) { c.Net = "tcp" }

// plain sends the query without EDNS.
func plain(m *dns.Msg, _ *dns.Client) { m.Extra = nil }

// query asks addr directly, by default over UDP with EDNS and the DO bit.
func query(t testing.TB, addr, name string, qtype uint16, opts ...queryOpt) *dns.Msg {
	t.Helper()
	resp, err := exchange(addr, name, qtype, opts...)
	if err != nil {
		t.Fatalf("query %s %s: %v", name, dns.Type(qtype), err)
	}
	return resp
}

func exchange(addr, name string, qtype uint16, opts ...queryOpt) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	m.SetEdns0(1232, true)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second, UDPSize: 1232}
	for _, o := range opts {
		o(m, c)
	}
	resp, _, err := c.Exchange(m, addr)
	return resp, err
}

// rrsetsOf groups records by owner and type; RRSIGs go by covered type.
func rrsetsOf(rrs []dns.RR) (sets map[[2]string][]dns.RR, sigs map[[2]string][]*dns.RRSIG) {
	sets = map[[2]string][]dns.RR{}
	sigs = map[[2]string][]*dns.RRSIG{}
	for _, rr := range rrs {
		if s, ok := rr.(*dns.RRSIG); ok {
			k := [2]string{strings.ToLower(s.Hdr.Name), dns.Type(s.TypeCovered).String()}
			sigs[k] = append(sigs[k], s)
			continue
		}
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		k := [2]string{strings.ToLower(rr.Header().Name), dns.Type(rr.Header().Rrtype).String()}
		sets[k] = append(sets[k], rr)
	}
	return sets, sigs
}

// verifySection checks that every RRset in rrs carries an RRSIG that
// validates with one of keys at time now, and returns how many RRsets it
// verified.
func verifySection(t testing.TB, rrs []dns.RR, keys map[string]*dns.DNSKEY, now time.Time) int {
	t.Helper()
	sets, sigs := rrsetsOf(rrs)
	for k, set := range sets {
		if len(sigs[k]) == 0 {
			t.Errorf("RRset %v has no RRSIG", k)
			continue
		}
		for _, sig := range sigs[k] {
			key := keys[strings.ToLower(sig.SignerName)]
			if key == nil {
				t.Errorf("RRSIG over %v by unknown signer %s", k, sig.SignerName)
				continue
			}
			if err := sig.Verify(key, set); err != nil {
				t.Errorf("RRSIG over %v does not verify: %v", k, err)
			}
			if !sig.ValidityPeriod(now) {
				t.Errorf("RRSIG over %v is not valid now", k)
			}
		}
	}
	return len(sets)
}

// zoneKey fetches and self-verifies a zone's DNSKEY.
func zoneKey(t testing.TB, addr, zone string) *dns.DNSKEY {
	t.Helper()
	resp := query(t, addr, zone, dns.TypeDNSKEY)
	var key *dns.DNSKEY
	for _, rr := range resp.Answer {
		if k, ok := rr.(*dns.DNSKEY); ok {
			key = k
		}
	}
	if key == nil {
		t.Fatalf("no DNSKEY for %s: %v", zone, resp)
	}
	verifySection(t, resp.Answer, map[string]*dns.DNSKEY{zone: key}, time.Now())
	return key
}

func findNSEC(rrs []dns.RR, owner string) *dns.NSEC {
	for _, rr := range rrs {
		if n, ok := rr.(*dns.NSEC); ok && strings.EqualFold(n.Hdr.Name, owner) {
			return n
		}
	}
	return nil
}

func nsecs(rrs []dns.RR) []*dns.NSEC {
	var out []*dns.NSEC
	for _, rr := range rrs {
		if n, ok := rr.(*dns.NSEC); ok {
			out = append(out, n)
		}
	}
	return out
}

// covers reports whether the NSEC proves that name does not exist: name
// sorts strictly between owner and next (RFC 4034 §4.1.1, with wrap-around
// at the end of the chain).
func covers(n *dns.NSEC, name string) bool {
	owner, next := n.Hdr.Name, n.NextDomain
	if canonicalCompare(owner, next) < 0 {
		return canonicalCompare(owner, name) < 0 && canonicalCompare(name, next) < 0
	}
	return canonicalCompare(owner, name) < 0 || canonicalCompare(name, next) < 0
}

func hasType(n *dns.NSEC, t uint16) bool {
	for _, x := range n.TypeBitMap {
		if x == t {
			return true
		}
	}
	return false
}

func rcode(m *dns.Msg) string { return dns.RcodeToString[m.Rcode] }
