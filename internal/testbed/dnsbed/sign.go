package dnsbed

import (
	"encoding/base64"
	"fmt"
	"slices"
	"time"

	"github.com/miekg/dns"
)

// Signature validity window. Inception lies in the past so that resolvers
// whose clocks lag a little still accept the signatures.
const (
	sigBackdate = time.Hour
	sigValidity = 21 * 24 * time.Hour
)

// rrset is one RRset as served, with its signatures (empty when the zone is
// unsigned or the RRset is not authoritative).
type rrset struct {
	rrs  []dns.RR
	sigs []dns.RR
}

// zoneView is an immutable, fully signed snapshot of one zone, ready for
// answering.
type zoneView struct {
	origin string
	signed bool
	// sets holds every RRset: user data, apex SOA/NS/DNSKEY, delegation
	// NS/DS of served children and, when signed, the NSEC chain.
	sets map[string]map[uint16]*rrset
	// cuts are the delegation points: non-apex names with NS records.
	cuts map[string]bool
	// chain lists, in canonical order (RFC 4034 §6.1), the names that own
	// authoritative data or are delegation points: the NSEC owners.
	chain []string
	// nonterm marks names that have descendants in chain. A nonterm name
	// without records of its own is an empty non-terminal.
	nonterm map[string]bool
	// negSOA is the SOA as placed in negative answers: TTL lowered to
	// min(SOA TTL, MINIMUM) (RFC 2308 §3).
	negSOA *rrset
}

// view is the set of zone snapshots queries are answered from.
type view struct {
	zones map[string]*zoneView
}

// build signs the zone. children are the served zones it delegates to.
// Caller holds srv.mu.
func (z *Zone) build(children []*Zone, now time.Time) (*zoneView, error) {
	zv := &zoneView{
		origin:  z.origin,
		signed:  z.key != nil,
		sets:    map[string]map[uint16]*rrset{},
		cuts:    map[string]bool{},
		nonterm: map[string]bool{},
	}
	add := func(rr dns.RR) {
		h := rr.Header()
		types := zv.sets[h.Name]
		if types == nil {
			types = map[uint16]*rrset{}
			zv.sets[h.Name] = types
		}
		if types[h.Rrtype] == nil {
			types[h.Rrtype] = &rrset{}
		}
		types[h.Rrtype].rrs = append(types[h.Rrtype].rrs, rr)
	}
	for _, types := range z.data {
		for _, rrs := range types {
			for _, rr := range rrs {
				add(dns.Copy(rr))
			}
		}
	}
	soaSet := zv.sets[z.origin][dns.TypeSOA]
	if soaSet == nil || len(soaSet.rrs) != 1 {
		return nil, fmt.Errorf("the apex has no SOA record")
	}
	soa := soaSet.rrs[0].(*dns.SOA)
	soa.Serial = z.serial

	// Delegations to served child zones: NS copied from the child's apex,
	// plus a SHA-256 DS for signed children (RFC 4034 §5, RFC 4509).
	for _, c := range children {
		for _, ns := range c.data[c.origin][dns.TypeNS] {
			rr := dns.Copy(ns)
			rr.Header().Ttl = z.cfg.ttl
			add(rr)
		}
		if c.key != nil {
			ds := c.key.ToDS(dns.SHA256)
			if ds == nil {
				return nil, fmt.Errorf("cannot compute the DS record of %s", c.origin)
			}
			ds.Hdr.Ttl = z.cfg.ttl
			add(ds)
		}
	}
	if zv.signed {
		key := dns.Copy(z.key).(*dns.DNSKEY)
		key.Hdr.Ttl = z.cfg.ttl
		add(key)
	}

	for name, types := range zv.sets {
		if name != z.origin && types[dns.TypeNS] != nil {
			zv.cuts[name] = true
		}
	}
	for name := range zv.sets {
		if !zv.occluded(name) {
			zv.chain = append(zv.chain, name)
		}
	}
	slices.SortFunc(zv.chain, canonicalCompare)
	for _, name := range zv.chain {
		for _, a := range ancestors(name, z.origin)[1:] {
			zv.nonterm[a] = true
		}
	}

	// RFC 2308 §3 and RFC 9077: negative answers and NSEC records live no
	// longer than both the SOA TTL and its MINIMUM field.
	negTTL := min(soa.Hdr.Ttl, soa.Minttl)

	if zv.signed {
		// RFC 4034 §4 and RFC 4035 §2.3: one NSEC per owner name, linking
		// to the next name in canonical order; the last points back to the
		// apex. At a delegation point only NS and DS belong to this zone.
		for i, name := range zv.chain {
			var types []uint16
			if zv.cuts[name] {
				types = append(types, dns.TypeNS)
				if zv.sets[name][dns.TypeDS] != nil {
					types = append(types, dns.TypeDS)
				}
			} else {
				for t := range zv.sets[name] {
					types = append(types, t)
				}
			}
			types = append(types, dns.TypeRRSIG, dns.TypeNSEC)
			slices.Sort(types)
			add(&dns.NSEC{
				Hdr:        dns.RR_Header{Name: name, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: negTTL},
				NextDomain: zv.chain[(i+1)%len(zv.chain)],
				TypeBitMap: types,
			})
		}
		// RFC 4035 §2.2: sign every authoritative RRset; delegation NS
		// RRsets and glue are not authoritative and stay unsigned.
		for name, types := range zv.sets {
			if zv.occluded(name) {
				continue
			}
			for t, set := range types {
				if zv.cuts[name] && t != dns.TypeDS && t != dns.TypeNSEC {
					continue
				}
				sig, err := z.sign(set.rrs, now)
				if err != nil {
					return nil, fmt.Errorf("signing %s %s: %v", name, dns.Type(t), err)
				}
				set.sigs = []dns.RR{sig}
			}
		}
	}

	neg := &rrset{}
	for _, rr := range soaSet.rrs {
		c := dns.Copy(rr)
		c.Header().Ttl = negTTL
		neg.rrs = append(neg.rrs, c)
	}
	for _, rr := range soaSet.sigs {
		c := dns.Copy(rr)
		c.Header().Ttl = negTTL
		neg.sigs = append(neg.sigs, c)
	}
	zv.negSOA = neg
	return zv, nil
}

// occluded reports whether name lies strictly below a delegation point, so
// that its records are glue (or occluded data) rather than zone data.
func (zv *zoneView) occluded(name string) bool {
	for _, a := range ancestors(name, zv.origin)[1:] {
		if zv.cuts[a] {
			return true
		}
	}
	return false
}

// sign makes the RRSIG for one RRset with the zone's key (RFC 4034 §3). For
// BadSignatures zones every signature except the DNSKEY RRset's is damaged;
// for ExpiredSignatures zones it lies in the past.
func (z *Zone) sign(rrs []dns.RR, now time.Time) (*dns.RRSIG, error) {
	sig := &dns.RRSIG{
		Hdr:        dns.RR_Header{Ttl: rrs[0].Header().Ttl},
		Algorithm:  z.key.Algorithm,
		KeyTag:     z.key.KeyTag(),
		SignerName: z.origin,
		Inception:  uint32(now.Add(-sigBackdate).Unix()),
		Expiration: uint32(now.Add(sigValidity).Unix()),
	}
	if z.cfg.expired && rrs[0].Header().Rrtype != dns.TypeDNSKEY {
		// Two days past: beyond the clock skew validators allow (unbound:
		// 10% of the validity period, at most val-sig-skew-max, 1 day).
		sig.Inception = uint32(now.Add(-32 * 24 * time.Hour).Unix())
		sig.Expiration = uint32(now.Add(-2 * 24 * time.Hour).Unix())
	}
	if err := sig.Sign(z.signer, rrs); err != nil {
		return nil, err
	}
	if z.cfg.bad && sig.TypeCovered != dns.TypeDNSKEY {
		raw, err := base64.StdEncoding.DecodeString(sig.Signature)
		if err != nil || len(raw) == 0 {
			return nil, fmt.Errorf("unexpected signature encoding")
		}
		raw[len(raw)/2] ^= 0x5a
		sig.Signature = base64.StdEncoding.EncodeToString(raw)
	}
	return sig, nil
}
