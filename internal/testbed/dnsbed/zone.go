package dnsbed

import (
	"crypto"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// Defaults for zones created without TTL or NegativeTTL options.
const (
	DefaultTTL         = 3600
	DefaultNegativeTTL = 300
)

// maxTTL is the largest TTL DNS allows (RFC 2181 §8).
const maxTTL = 1<<31 - 1

// A ZoneOption changes how a zone is created; see Server.Zone.
type ZoneOption func(*zoneConfig) error

type zoneConfig struct {
	unsigned bool
	bad      bool
	expired  bool
	ttl      uint32
	negTTL   uint32
}

// Unsigned makes the zone unsigned: no DNSKEY, RRSIG or NSEC records, and no
// DS in the parent. Under a signed parent this is a provably insecure
// delegation (RFC 4035 §5.2): validators answer without the AD bit.
func Unsigned() ZoneOption {
	return func(c *zoneConfig) error {
		if c.bad || c.expired {
			return fmt.Errorf("Unsigned, BadSignatures and ExpiredSignatures exclude each other")
		}
		c.unsigned = true
		return nil
	}
}

// BadSignatures signs the zone and publishes its DS in the parent, but
// corrupts every RRSIG except the one over the DNSKEY RRset, so that the key
// is trusted yet no data validates: validators answer SERVFAIL (bogus,
// RFC 4035 §5.5).
func BadSignatures() ZoneOption {
	return func(c *zoneConfig) error {
		if c.unsigned || c.expired {
			return fmt.Errorf("Unsigned, BadSignatures and ExpiredSignatures exclude each other")
		}
		c.bad = true
		return nil
	}
}

// ExpiredSignatures signs the zone and publishes its DS in the parent, with
// a valid signature over the DNSKEY RRset but every other signature expired
// (inception 32 days ago, expiration two days ago): the key is trusted, yet
// every RRset is bogus (RFC 4035 §5.3.1), as when a zone's signer stopped
// re-signing it.
func ExpiredSignatures() ZoneOption {
	return func(c *zoneConfig) error {
		if c.unsigned || c.bad {
			return fmt.Errorf("Unsigned, BadSignatures and ExpiredSignatures exclude each other")
		}
		c.expired = true
		return nil
	}
}

// TTL sets the zone's default TTL in seconds: the TTL of records added
// without one and of the generated SOA, NS, DNSKEY and (in the parent) DS
// and delegation NS records. Default DefaultTTL.
func TTL(seconds uint32) ZoneOption {
	return func(c *zoneConfig) error {
		if seconds > maxTTL {
			return fmt.Errorf("TTL %d exceeds %d (RFC 2181 §8)", seconds, maxTTL)
		}
		c.ttl = seconds
		return nil
	}
}

// NegativeTTL sets the MINIMUM field of the zone's generated SOA record.
// Negative answers and NSEC records carry min(SOA TTL, MINIMUM) as their
// TTL (RFC 2308 §5, RFC 9077). Default DefaultNegativeTTL.
func NegativeTTL(seconds uint32) ZoneOption {
	return func(c *zoneConfig) error {
		if seconds > maxTTL {
			return fmt.Errorf("negative TTL %d exceeds %d (RFC 2181 §8)", seconds, maxTTL)
		}
		c.negTTL = seconds
		return nil
	}
}

// A Zone is one zone served by a Server. Its methods are safe for
// concurrent use with queries; every change re-signs the zone and bumps the
// SOA serial.
type Zone struct {
	srv    *Server
	origin string
	cfg    zoneConfig
	key    *dns.DNSKEY   // nil when unsigned
	signer crypto.Signer // private half of key
	serial uint32
	// data holds the records given by the user plus the apex SOA and NS:
	// owner name -> type -> RRset. Guarded by srv.mu.
	data  map[string]map[uint16][]dns.RR
	dirty bool      // view must be rebuilt; guarded by srv.mu
	view  *zoneView // last built view; guarded by srv.mu
}

// Name returns the zone's origin, e.g. "example.".
func (z *Zone) Name() string { return z.origin }

// Signed reports whether the zone is signed (BadSignatures zones are).
func (z *Zone) Signed() bool { return z.key != nil }

// Serial returns the zone's current SOA serial.
func (z *Zone) Serial() uint32 {
	z.srv.mu.Lock()
	defer z.srv.mu.Unlock()
	return z.serial
}

// DNSKEY returns the zone's key in presentation format, or "" for an
// unsigned zone.
func (z *Zone) DNSKEY() string {
	if z.key == nil {
		return ""
	}
	return oneLine(z.key.String())
}

// DS returns the SHA-256 DS record (RFC 4509) the parent publishes for this
// zone, or "" for an unsigned zone.
func (z *Zone) DS() string {
	if z.key == nil {
		return ""
	}
	return oneLine(z.key.ToDS(dns.SHA256).String())
}

// Add adds records to the zone. Each argument holds one or more records in
// zone-file syntax, one per line; owner names may be relative to the zone
// ("mx1", "@", "_25._tcp.mx1") and a missing TTL means the zone's default.
// A record joins the existing RRset of its name and type. All records are
// added or, on error, none; errors fail t.
func (z *Zone) Add(t testing.TB, records ...string) {
	t.Helper()
	if err := z.add(records); err != nil {
		t.Fatalf("dnsbed: zone %s: Add: %v", z.origin, err)
	}
}

// Replace sets RRsets: for every owner name and type present in records,
// the existing RRset is replaced by the given records. Replacing the SOA
// sets the serial to the one given. Syntax as for Add; errors fail t.
func (z *Zone) Replace(t testing.TB, records ...string) {
	t.Helper()
	if err := z.replace(records); err != nil {
		t.Fatalf("dnsbed: zone %s: Replace: %v", z.origin, err)
	}
}

// Remove deletes the RRset of the given type at name (relative to the zone
// or fully qualified); rrtype 0 deletes every RRset at name. The apex SOA
// and NS cannot be removed (use Replace). Removing something absent fails
// t.
func (z *Zone) Remove(t testing.TB, name string, rrtype uint16) {
	t.Helper()
	if err := z.remove(name, rrtype); err != nil {
		t.Fatalf("dnsbed: zone %s: Remove: %v", z.origin, err)
	}
}

func (z *Zone) add(records []string) error {
	s := z.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	rrs, err := z.parse(records)
	if err != nil {
		return err
	}
	data := cloneData(z.data)
	touched := map[string]bool{}
	for _, rr := range rrs {
		h := rr.Header()
		if h.Rrtype == dns.TypeSOA {
			return fmt.Errorf("the zone already has a SOA record; use Replace to change it")
		}
		touched[h.Name] = true
		types := data[h.Name]
		if types == nil {
			types = map[uint16][]dns.RR{}
			data[h.Name] = types
		}
		types[h.Rrtype] = appendUnique(types[h.Rrtype], rr)
	}
	if err := z.check(data, touched); err != nil {
		return err
	}
	z.commit(data, 0)
	return nil
}

func (z *Zone) replace(records []string) error {
	s := z.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	rrs, err := z.parse(records)
	if err != nil {
		return err
	}
	type key struct {
		name string
		t    uint16
	}
	groups := map[key][]dns.RR{}
	var order []key
	for _, rr := range rrs {
		k := key{rr.Header().Name, rr.Header().Rrtype}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = appendUnique(groups[k], rr)
	}
	data := cloneData(z.data)
	touched := map[string]bool{}
	var serial uint32
	for _, k := range order {
		touched[k.name] = true
		if data[k.name] == nil {
			data[k.name] = map[uint16][]dns.RR{}
		}
		data[k.name][k.t] = groups[k]
		if k.t == dns.TypeSOA {
			if len(groups[k]) != 1 {
				return fmt.Errorf("a zone has exactly one SOA record, got %d", len(groups[k]))
			}
			serial = groups[k][0].(*dns.SOA).Serial
		}
	}
	if err := z.check(data, touched); err != nil {
		return err
	}
	z.commit(data, serial)
	return nil
}

func (z *Zone) remove(name string, rrtype uint16) error {
	s := z.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	owner, err := absoluteName(name, z.origin)
	if err != nil {
		return err
	}
	if !dns.IsSubDomain(z.origin, owner) {
		return fmt.Errorf("%s is not in zone %s", owner, z.origin)
	}
	data := cloneData(z.data)
	types := data[owner]
	if rrtype == 0 {
		if len(types) == 0 {
			return fmt.Errorf("no records at %s", owner)
		}
		delete(data, owner)
	} else {
		if len(types[rrtype]) == 0 {
			return fmt.Errorf("no %s records at %s", dns.Type(rrtype).String(), owner)
		}
		delete(types, rrtype)
		if len(types) == 0 {
			delete(data, owner)
		}
	}
	if err := z.check(data, map[string]bool{owner: true}); err != nil {
		return err
	}
	z.commit(data, 0)
	return nil
}

// commit installs validated data, advances the serial (or sets it to an
// explicitly given SOA serial) and schedules re-signing. Caller holds
// srv.mu.
func (z *Zone) commit(data map[string]map[uint16][]dns.RR, serial uint32) {
	z.data = data
	if serial != 0 {
		z.serial = serial
	} else {
		z.serial++
	}
	z.srv.markDirty(z)
}

// parse reads zone-file text relative to the zone's origin and checks every
// record against the rules of this zone. Caller holds srv.mu.
func (z *Zone) parse(records []string) ([]dns.RR, error) {
	text := strings.Join(records, "\n")
	zp := dns.NewZoneParser(strings.NewReader(text), z.origin, "")
	zp.SetDefaultTTL(z.cfg.ttl)
	var out []dns.RR
	buf := make([]byte, dns.MaxMsgSize)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if err := z.checkRecord(rr, buf); err != nil {
			return nil, fmt.Errorf("%q: %v", oneLine(rr.String()), err)
		}
		out = append(out, rr)
	}
	if err := zp.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no records given")
	}
	return out, nil
}

// checkRecord applies the per-record rules and canonicalizes the owner. buf
// is scratch space of dns.MaxMsgSize bytes.
func (z *Zone) checkRecord(rr dns.RR, buf []byte) error {
	h := rr.Header()
	owner, err := canonicalName(h.Name)
	if err != nil {
		return err
	}
	h.Name = owner
	if h.Class != dns.ClassINET {
		return fmt.Errorf("only class IN is served")
	}
	if h.Ttl > maxTTL {
		return fmt.Errorf("TTL %d exceeds %d (RFC 2181 §8)", h.Ttl, maxTTL)
	}
	if !dns.IsSubDomain(z.origin, owner) {
		return fmt.Errorf("owner %s is outside zone %s", owner, z.origin)
	}
	if deeper := z.srv.deepestZone(owner); deeper != z {
		if h.Rrtype == dns.TypeDS && deeper.origin == owner {
			return fmt.Errorf("the DS records of the served zone %s are generated from its key", owner)
		}
		return fmt.Errorf("owner %s belongs to the served zone %s; add it there", owner, deeper.origin)
	}
	if wild := owner == "*." || strings.HasPrefix(owner, "*."); wild {
		// Wildcards (RFC 4592) are served for ordinary data; a wildcard
		// delegation or one at the root is undefined or useless here.
		switch {
		case owner == "*.":
			return fmt.Errorf("a wildcard directly below the root is not supported")
		case h.Rrtype == dns.TypeNS || h.Rrtype == dns.TypeDS:
			return fmt.Errorf("wildcard %s records are not supported (RFC 4592 §4.2)", dns.Type(h.Rrtype).String())
		}
	}
	switch h.Rrtype {
	case dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3, dns.TypeNSEC3PARAM:
		return fmt.Errorf("%s records are generated by the server", dns.Type(h.Rrtype).String())
	case dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY, dns.TypeSIG, dns.TypeAXFR, dns.TypeIXFR,
		dns.TypeANY, dns.TypeNone, dns.TypeMAILA, dns.TypeMAILB:
		return fmt.Errorf("type %s cannot be stored in a zone", dns.Type(h.Rrtype))
	case dns.TypeDNSKEY, dns.TypeCDNSKEY, dns.TypeCDS:
		if owner == z.origin && z.key != nil {
			return fmt.Errorf("the apex %s of a signed zone is generated by the server", dns.Type(h.Rrtype).String())
		}
	case dns.TypeDS:
		if owner == z.origin {
			return fmt.Errorf("a DS record belongs in the parent zone, not at the child's apex")
		}
	case dns.TypeSOA:
		if owner != z.origin {
			return fmt.Errorf("SOA records exist only at the zone apex")
		}
	case dns.TypeCNAME:
		if owner == z.origin {
			return fmt.Errorf("a CNAME cannot be at the zone apex (RFC 1034 §3.6.2)")
		}
	}
	if _, err := dns.PackRR(rr, buf, 0, nil, false); err != nil {
		return fmt.Errorf("cannot be encoded: %v", err)
	}
	return nil
}

// check applies the RRset-level rules to the names a change touched.
func (z *Zone) check(data map[string]map[uint16][]dns.RR, touched map[string]bool) error {
	for name := range touched {
		types := data[name]
		if name == z.origin && (len(types[dns.TypeSOA]) != 1 || len(types[dns.TypeNS]) == 0) {
			return fmt.Errorf("the zone apex needs one SOA record and at least one NS record")
		}
		for t, rrs := range types {
			// RFC 2181 §5.2: all records of an RRset share one TTL.
			for _, rr := range rrs[1:] {
				if rr.Header().Ttl != rrs[0].Header().Ttl {
					return fmt.Errorf("the %s RRset at %s would mix TTLs %d and %d (RFC 2181 §5.2)",
						dns.Type(t).String(), name, rrs[0].Header().Ttl, rr.Header().Ttl)
				}
			}
		}
		if name != z.origin && len(types[dns.TypeNS]) > 0 {
			for origin, child := range z.srv.zones {
				if child != z && dns.IsSubDomain(name, origin) && z.srv.parentZone(child) == z {
					return fmt.Errorf("NS records at %s would hide the served zone %s below them", name, origin)
				}
			}
		}
		if c := types[dns.TypeCNAME]; len(c) > 0 {
			// RFC 1034 §3.6.2, RFC 2181 §10.1: a CNAME stands alone.
			if len(c) > 1 {
				return fmt.Errorf("%s would have %d CNAME records; only one is allowed", name, len(c))
			}
			if len(types) > 1 {
				return fmt.Errorf("%s cannot have a CNAME and other data (RFC 1034 §3.6.2)", name)
			}
		}
	}
	return nil
}

func cloneData(in map[string]map[uint16][]dns.RR) map[string]map[uint16][]dns.RR {
	out := make(map[string]map[uint16][]dns.RR, len(in))
	for name, types := range in {
		m := make(map[uint16][]dns.RR, len(types))
		for t, rrs := range types {
			m[t] = append([]dns.RR(nil), rrs...)
		}
		out[name] = m
	}
	return out
}

// appendUnique adds rr unless an identical record is present: an RRset is a
// set (RFC 2181 §5).
func appendUnique(set []dns.RR, rr dns.RR) []dns.RR {
	for _, have := range set {
		// Same data with another TTL is kept so that the TTL check reports it.
		if dns.IsDuplicate(have, rr) && have.Header().Ttl == rr.Header().Ttl {
			return set
		}
	}
	return append(set, rr)
}

// oneLine turns miekg/dns presentation output (tab separated) into a single
// space-separated line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
