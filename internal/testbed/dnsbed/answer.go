package dnsbed

import (
	"slices"
	"sort"

	"github.com/miekg/dns"
)

// maxChase bounds how many CNAMEs the server follows inside its own zones.
const maxChase = 8

// answer builds the authoritative response to req.
func (v *view) answer(req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = false
	resp.Compress = true
	opt := req.IsEdns0()
	do := opt != nil && opt.Do()
	if opt != nil {
		defer func() { resp.SetEdns0(udpPayload, do) }()
		if opt.Version() != 0 {
			// RFC 6891 §6.1.3: unknown EDNS version.
			resp.Rcode = dns.RcodeBadVers
			resp.Question = req.Question
			return resp
		}
	}
	if req.Opcode != dns.OpcodeQuery {
		resp.Rcode = dns.RcodeNotImplemented
		return resp
	}
	if len(req.Question) != 1 {
		resp.Rcode = dns.RcodeFormatError
		return resp
	}
	q := req.Question[0]
	qname, err := canonicalName(q.Name)
	if err != nil {
		resp.Rcode = dns.RcodeFormatError
		return resp
	}
	switch {
	case q.Qclass != dns.ClassINET:
		resp.Rcode = dns.RcodeRefused
		return resp
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR:
		resp.Rcode = dns.RcodeRefused
		return resp
	case q.Qtype == dns.TypeOPT || q.Qtype == dns.TypeTSIG || q.Qtype == dns.TypeTKEY:
		resp.Rcode = dns.RcodeFormatError
		return resp
	}
	zv := v.zoneFor(qname, q.Qtype)
	if zv == nil {
		resp.Rcode = dns.RcodeRefused
		return resp
	}
	resp.Authoritative = true
	v.resolve(resp, zv, qname, q.Qtype, do)
	return resp
}

// zoneFor picks the zone that answers qname: the deepest served zone
// containing it, except that a DS query for a zone's apex is answered by
// the parent, which holds the DS RRset (RFC 4035 §3.1.4.1).
func (v *view) zoneFor(qname string, qtype uint16) *zoneView {
	var found *zoneView
	for _, a := range ancestors(qname, ".") {
		zv := v.zones[a]
		if zv == nil {
			continue
		}
		if found != nil {
			return zv // the parent of the apex found before
		}
		if qtype != dns.TypeDS || a != qname {
			return zv
		}
		found = zv
	}
	return found
}

// resolve fills resp for qname/qtype from zone zv (RFC 1034 §4.3.2 with the
// DNSSEC additions of RFC 4035 §3.1).
func (v *view) resolve(resp *dns.Msg, zv *zoneView, qname string, qtype uint16, do bool) {
	if cut := zv.cutAbove(qname, qtype); cut != "" {
		zv.referral(resp, cut, do)
		return
	}
	types := zv.sets[qname]
	if len(types) > 0 {
		switch {
		case qtype == dns.TypeANY:
			for _, t := range sortedTypes(types) {
				zv.appendSet(&resp.Answer, types[t], do)
			}
		case qtype == dns.TypeRRSIG:
			for _, t := range sortedTypes(types) {
				resp.Answer = append(resp.Answer, types[t].sigs...)
			}
			if len(resp.Answer) == 0 {
				zv.noData(resp, qname, do)
			}
		case types[qtype] != nil:
			zv.appendSet(&resp.Answer, types[qtype], do)
		case types[dns.TypeCNAME] != nil:
			zv.appendSet(&resp.Answer, types[dns.TypeCNAME], do)
			v.chase(resp, qname, types[dns.TypeCNAME].rrs[0].(*dns.CNAME).Target, qtype, do)
		default:
			zv.noData(resp, qname, do)
		}
		return
	}
	if zv.nonterm[qname] {
		// An empty non-terminal exists but owns nothing: NODATA, proved by
		// the NSEC that covers it (RFC 4035 §3.1.3.2, RFC 7129 §3.2).
		zv.noData(resp, qname, do)
		return
	}
	if wild := "*." + zv.closestEncloser(qname); len(zv.sets[wild]) > 0 {
		v.wildcard(resp, zv, qname, wild, qtype, do)
		return
	}
	zv.nxDomain(resp, qname, do)
}

// wildcard answers qname, which does not exist, from the wildcard at its
// closest encloser (RFC 4592 §3.3.1). Synthesized records take qname as
// owner and keep the wildcard's signatures, whose Labels field tells a
// validator that they were expanded (RFC 4035 §5.3.2). With DO the NSEC
// covering qname proves that no closer name exists (RFC 4035 §3.1.3.3);
// when the wildcard lacks the type, the wildcard's own NSEC proves that as
// well (RFC 4035 §3.1.3.4).
func (v *view) wildcard(resp *dns.Msg, zv *zoneView, qname, wild string, qtype uint16, do bool) {
	types := zv.sets[wild]
	synth := func(set *rrset) {
		for _, rr := range set.rrs {
			c := dns.Copy(rr)
			c.Header().Name = qname
			resp.Answer = append(resp.Answer, c)
		}
		if do {
			for _, rr := range set.sigs {
				c := dns.Copy(rr)
				c.Header().Name = qname
				resp.Answer = append(resp.Answer, c)
			}
		}
	}
	proveNoCloser := func() {
		if do && zv.signed {
			zv.appendSet(&resp.Ns, zv.covering(qname), do)
		}
	}
	switch {
	case qtype == dns.TypeANY:
		for _, t := range sortedTypes(types) {
			if t != dns.TypeNSEC {
				synth(types[t])
			}
		}
		proveNoCloser()
	case types[qtype] != nil && qtype != dns.TypeNSEC:
		synth(types[qtype])
		proveNoCloser()
	case types[dns.TypeCNAME] != nil:
		synth(types[dns.TypeCNAME])
		proveNoCloser()
		v.chase(resp, qname, types[dns.TypeCNAME].rrs[0].(*dns.CNAME).Target, qtype, do)
	default:
		zv.appendSet(&resp.Ns, zv.negSOA, do)
		if !do || !zv.signed {
			return
		}
		first := zv.covering(qname)
		zv.appendSet(&resp.Ns, first, do)
		if second := types[dns.TypeNSEC]; second != nil && second != first {
			zv.appendSet(&resp.Ns, second, do)
		}
	}
}

// chase follows a CNAME to target while the target has positive data in a
// served zone, as RFC 1034 §4.3.2 step 3a describes. Negative outcomes are
// left to the resolver, which asks for the target itself.
func (v *view) chase(resp *dns.Msg, qname, target string, qtype uint16, do bool) {
	if qtype == dns.TypeANY || qtype == dns.TypeRRSIG {
		return
	}
	seen := map[string]bool{qname: true}
	for range maxChase {
		name, err := canonicalName(target)
		if err != nil || seen[name] {
			return
		}
		seen[name] = true
		zv := v.zoneFor(name, qtype)
		if zv == nil || zv.cutAbove(name, qtype) != "" {
			return
		}
		types := zv.sets[name]
		if set := types[qtype]; set != nil {
			zv.appendSet(&resp.Answer, set, do)
			return
		}
		set := types[dns.TypeCNAME]
		if set == nil {
			return
		}
		zv.appendSet(&resp.Answer, set, do)
		target = set.rrs[0].(*dns.CNAME).Target
	}
}

// cutAbove returns the topmost delegation point at or above qname within
// the zone, or "". A DS query at the delegation point itself is answered by
// this zone, not referred (RFC 4035 §3.1.4.1).
func (zv *zoneView) cutAbove(qname string, qtype uint16) string {
	names := ancestors(qname, zv.origin)
	for i := len(names) - 2; i >= 0; i-- {
		n := names[i]
		if !zv.cuts[n] {
			continue
		}
		if n == qname && qtype == dns.TypeDS {
			return ""
		}
		return n
	}
	return ""
}

// referral answers with the delegation at cut (RFC 1034 §4.3.2 step 3b).
// With DO the DS RRset or the NSEC proving its absence goes along
// (RFC 4035 §3.1.4).
func (zv *zoneView) referral(resp *dns.Msg, cut string, do bool) {
	resp.Authoritative = false
	types := zv.sets[cut]
	ns := types[dns.TypeNS]
	resp.Ns = append(resp.Ns, ns.rrs...)
	if ds := types[dns.TypeDS]; ds != nil {
		zv.appendSet(&resp.Ns, ds, do)
	} else if do && zv.signed {
		zv.appendSet(&resp.Ns, types[dns.TypeNSEC], do)
	}
	for _, rr := range ns.rrs {
		host, err := canonicalName(rr.(*dns.NS).Ns)
		if err != nil || !dns.IsSubDomain(zv.origin, host) {
			continue
		}
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
			if glue := zv.sets[host][t]; glue != nil {
				resp.Extra = append(resp.Extra, glue.rrs...)
			}
		}
	}
}

// noData answers "the name exists, the type does not" (RFC 2308 §2.2): SOA
// in the authority section and, with DO, the NSEC of the name or, for an
// empty non-terminal, the NSEC covering it (RFC 4035 §3.1.3.1).
func (zv *zoneView) noData(resp *dns.Msg, qname string, do bool) {
	zv.appendSet(&resp.Ns, zv.negSOA, do)
	if !do || !zv.signed {
		return
	}
	if nsec := zv.sets[qname][dns.TypeNSEC]; nsec != nil {
		zv.appendSet(&resp.Ns, nsec, do)
		return
	}
	zv.appendSet(&resp.Ns, zv.covering(qname), do)
}

// nxDomain answers "no such name" (RFC 2308 §2.1). With DO it proves the
// name absent and the wildcard at the closest encloser absent
// (RFC 4035 §3.1.3.2).
func (zv *zoneView) nxDomain(resp *dns.Msg, qname string, do bool) {
	resp.Rcode = dns.RcodeNameError
	zv.appendSet(&resp.Ns, zv.negSOA, do)
	if !do || !zv.signed {
		return
	}
	first := zv.covering(qname)
	zv.appendSet(&resp.Ns, first, do)
	wildcard := "*." + zv.closestEncloser(qname)
	if wildcard == "*.." {
		wildcard = "*."
	}
	if second := zv.covering(wildcard); second != first {
		zv.appendSet(&resp.Ns, second, do)
	}
}

// closestEncloser returns the longest existing ancestor of a name that does
// not exist (RFC 4592 §3.3.1); empty non-terminals exist.
func (zv *zoneView) closestEncloser(qname string) string {
	for _, a := range ancestors(qname, zv.origin)[1:] {
		if len(zv.sets[a]) > 0 || zv.nonterm[a] {
			return a
		}
	}
	return zv.origin
}

// covering returns the NSEC RRset whose owner is the last chain name
// sorting before name: its span covers name when name owns no NSEC.
func (zv *zoneView) covering(name string) *rrset {
	i := sort.Search(len(zv.chain), func(i int) bool {
		return canonicalCompare(zv.chain[i], name) >= 0
	}) - 1
	if i < 0 {
		i = len(zv.chain) - 1
	}
	return zv.sets[zv.chain[i]][dns.TypeNSEC]
}

// appendSet adds an RRset, and with DO its signatures, to a section.
func (zv *zoneView) appendSet(section *[]dns.RR, set *rrset, do bool) {
	if set == nil {
		return
	}
	*section = append(*section, set.rrs...)
	if do {
		*section = append(*section, set.sigs...)
	}
}

func sortedTypes(types map[uint16]*rrset) []uint16 {
	out := make([]uint16, 0, len(types))
	for t := range types {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}
