package daneguard

import (
	"strings"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/miekg/dns"
)

// Debug lines for lookups (docs/logging.md, "Debug lines"). They are
// written only with `debug yes`; none of this runs otherwise.

// debugQuery logs one question that reached the resolver (a cache miss).
func (p *Policy) debugQuery(name string, qtype uint16, a *dane.Answer, err error, took time.Duration) {
	if !p.log.Debug {
		return
	}
	fields := []interface{}{"name", strings.TrimSuffix(name, "."), "type", dns.TypeToString[qtype], "took_ms", float64(took.Microseconds()) / 1000}
	if err != nil {
		fields = append(fields, "error", err.Error())
	} else {
		fields = append(fields, "secure", a.Secure, "records", len(a.Records), "ttl", int(a.TTL/time.Second))
		if len(a.CNAMEs) != 0 {
			fields = append(fields, "target", strings.TrimSuffix(a.Target, "."))
		}
	}
	p.log.DebugMsg("dns query", fields...)
}

// debugDestination logs what a delivery learned about a next-hop domain.
func (p *Policy) debugDestination(msgID string, d *engine.Destination) {
	if !p.log.Debug {
		return
	}
	fields := []interface{}{"domain", d.Domain, "level", string(d.Policy.Level), "policy_source", d.Policy.Source}
	if d.Policy.Key != "" {
		fields = append(fields, "policy_key", d.Policy.Key)
	}
	if msgID != "" {
		fields = append(fields, "msg_id", msgID)
	}
	if d.PolicyErr != nil {
		fields = append(fields, "policy_error", d.PolicyErr.Error())
	}
	switch {
	case d.MXErr != nil:
		fields = append(fields, "mx_error", d.MXErr.Error())
	case d.MX != nil:
		hosts := make([]string, 0, len(d.MX.Hosts))
		for _, h := range d.MX.Hosts {
			hosts = append(hosts, strings.TrimSuffix(h.Host, "."))
		}
		fields = append(fields, "mx_secure", d.MX.Secure, "mx_hosts", strings.Join(hosts, ","))
	}
	if d.STS != nil {
		fields = append(fields, "sts_source", string(d.STS.Source))
		if d.STS.Policy != nil {
			fields = append(fields, "sts_mode", string(d.STS.Policy.Mode))
		}
		if d.STS.Err != nil {
			fields = append(fields, "sts_error", d.STS.Err.Error())
		}
	}
	p.log.DebugMsg("destination", fields...)
}

// debugMX logs the DANE inputs found for an MX host that passed CheckMX.
func (p *Policy) debugMX(msgID string, v *engine.Verdict) {
	if !p.log.Debug {
		return
	}
	fields := []interface{}{"domain", v.Domain, "mx", v.MX, "mx_secure", v.MXSecure, "mechanism", string(v.Mechanism), "tlsa_records", len(v.TLSARRset)}
	if v.TLSABase != "" {
		fields = append(fields, "tlsa_base", v.TLSABase)
	}
	if msgID != "" {
		fields = append(fields, "msg_id", msgID)
	}
	p.log.DebugMsg("mx host", fields...)
}
