package service

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/miekg/dns"
)

// Debug lines for lookups (docs/logging.md, "Debug lines"). They are
// written only with `debug yes`; none of this runs otherwise.

// debugQuery logs one question that reached the resolver (a cache miss).
func (s *Service) debugQuery(name string, qtype uint16, a *dane.Answer, err error, took time.Duration) {
	if !s.log.Debug() {
		return
	}
	fields := []any{"name", strings.TrimSuffix(name, "."), "type", dns.TypeToString[qtype], "took_ms", float64(took.Microseconds()) / 1000}
	if err != nil {
		fields = append(fields, "error", err.Error())
	} else {
		fields = append(fields, "secure", a.Secure, "records", len(a.Records), "ttl", int(a.TTL/time.Second))
		if len(a.CNAMEs) != 0 {
			fields = append(fields, "target", strings.TrimSuffix(a.Target, "."))
		}
	}
	s.log.DebugMsg("dns query", fields...)
}

// debugDestination logs what a delivery learned about a next-hop domain.
func (d *Delivery) debugDestination(dst *engine.Destination) {
	l := d.logger()
	if !l.Debug() {
		return
	}
	fields := []any{"domain", dst.Domain, "level", string(dst.Policy.Level), "policy_source", dst.Policy.Source}
	if dst.Policy.Key != "" {
		fields = append(fields, "policy_key", dst.Policy.Key)
	}
	if dst.PolicyErr != nil {
		fields = append(fields, "policy_error", dst.PolicyErr.Error())
	}
	switch {
	case dst.MXErr != nil:
		fields = append(fields, "mx_error", dst.MXErr.Error())
	case dst.MX != nil:
		hosts := make([]string, 0, len(dst.MX.Hosts))
		for _, h := range dst.MX.Hosts {
			hosts = append(hosts, strings.TrimSuffix(h.Host, "."))
		}
		fields = append(fields, "mx_secure", dst.MX.Secure, "mx_hosts", strings.Join(hosts, ","))
	}
	if dst.STS != nil {
		fields = append(fields, "sts_source", string(dst.STS.Source))
		if dst.STS.Policy != nil {
			fields = append(fields, "sts_mode", string(dst.STS.Policy.Mode))
		}
		if dst.STS.Err != nil {
			fields = append(fields, "sts_error", dst.STS.Err.Error())
		}
	}
	l.DebugMsg("destination", fields...)
}

// debugMX logs the DANE inputs found for an MX host that passed CheckMX.
func (d *Delivery) debugMX(v *engine.Verdict) {
	l := d.logger()
	if !l.Debug() {
		return
	}
	fields := []any{"domain", v.Domain, "mx", v.MX, "mx_secure", v.MXSecure, "mechanism", string(v.Mechanism), "tlsa_records", len(v.TLSARRset)}
	if v.TLSABase != "" {
		fields = append(fields, "tlsa_base", v.TLSABase)
	}
	l.DebugMsg("mx host", fields...)
}

// slogHandler sends the MTA-STS manager's slog records to the service's
// log: debug records only with debug on; warnings and errors (a cached
// policy that cannot be refreshed, RFC 8461 §10.2) are marked with a
// "level" field.
type slogHandler struct {
	l     Logger
	attrs []slog.Attr
	group string
}

func (h *slogHandler) Enabled(_ context.Context, lvl slog.Level) bool {
	return lvl > slog.LevelDebug || h.l.Debug()
}

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	fields := make([]any, 0, 2*(len(h.attrs)+r.NumAttrs()+1))
	add := func(a slog.Attr) bool {
		k := a.Key
		if h.group != "" {
			k = h.group + "." + k
		}
		v := a.Value.Resolve().Any()
		switch x := v.(type) {
		case error:
			v = x.Error()
		case time.Duration:
			v = x.String()
		case fmt.Stringer:
			v = x.String()
		case []string:
			v = strings.Join(x, ",")
		}
		fields = append(fields, k, v)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	switch {
	case r.Level >= slog.LevelWarn:
		h.l.Msg(r.Message, append(fields, "level", strings.ToLower(r.Level.String()))...)
	case r.Level >= slog.LevelInfo:
		h.l.Msg(r.Message, fields...)
	default:
		h.l.DebugMsg(r.Message, fields...)
	}
	return nil
}

func (h *slogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &n
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	n := *h
	if n.group != "" {
		name = n.group + "." + name
	}
	n.group = name
	return &n
}
