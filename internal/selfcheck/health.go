package selfcheck

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/miekg/dns"
)

// Health is one health check of a validating resolver. A background loop
// keeps the last one per server; the metrics of docs/own-domain.md are
// derived from it.
type Health struct {
	Server string `json:"server"`
	// Up: the resolver answered (any rcode but SERVFAIL/REFUSED) within
	// the time limit.
	Up bool `json:"up"`
	// Validating: it set the AD bit on the probe, a name known to be
	// signed (RFC 4035 §3.2.3). A resolver that is up but not validating
	// makes every TLSA lookup insecure: DANE silently stops applying.
	Validating bool `json:"validating"`
	// RTT is the time the answer took; zero when down.
	RTT   time.Duration `json:"rtt_ns"`
	Probe string        `json:"probe"`
	Error string        `json:"error,omitempty"`
	// Problem says what to do when the resolver is not healthy.
	Problem *Problem `json:"problem,omitempty"`
}

// HealthOptions configure CheckResolver.
type HealthOptions struct {
	// Probe is a name whose DNSKEY RRset is signed under the resolver's
	// trust anchor. Default "." (the root's DNSKEY: signed wherever the
	// root's key is the trust anchor).
	Probe string
	// Timeout bounds the whole check. Default 2s: a resolver slower than
	// that makes senders' deliveries crawl.
	Timeout time.Duration
}

// ErrNotValidating is the Health.Error of a resolver that answers without
// the AD bit.
var ErrNotValidating = errors.New("the resolver answered without the AD bit: it does not validate DNSSEC, or does not trust the root key")

// CheckResolver asks server ("host:port" or "host") for the DNSKEY RRset of
// the probe name with the DO bit set and AD requested (RFC 6840 §5.7).
func CheckResolver(ctx context.Context, server string, opts HealthOptions) Health {
	if opts.Probe == "" {
		opts.Probe = "."
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "53")
	}
	h := Health{Server: server, Probe: dns.Fqdn(opts.Probe)}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(h.Probe, dns.TypeDNSKEY)
	m.SetEdns0(1232, true)
	m.AuthenticatedData = true
	m.RecursionDesired = true
	c := &dns.Client{Net: "udp", Timeout: opts.Timeout}
	resp, rtt, err := c.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, rtt, err = c.ExchangeContext(ctx, m, server)
	}
	switch {
	case err != nil:
		h.Error = err.Error()
		h.Problem = &Problem{Severity: SevError, Code: "resolver-down", Subject: server,
			Message: "the resolver does not answer: " + err.Error(),
			Fix: "start the validating resolver (e.g. systemctl restart unbound) and run it under a supervisor that restarts it; " +
				"while it is down, maddy v0.8.2 answers 554 5.4.4 to its own MX lookups and bounces outgoing mail (docs/resolver.md)"}
		return h
	case resp.Rcode != dns.RcodeSuccess:
		h.RTT = rtt
		h.Error = "rcode " + dns.RcodeToString[resp.Rcode]
		h.Problem = &Problem{Severity: SevError, Code: "resolver-failing", Subject: server,
			Message: "the resolver answers " + h.Error + " for the DNSKEY of " + h.Probe,
			Fix:     "check the resolver's log: a SERVFAIL here usually means its trust anchor is wrong or its clock is off"}
		return h
	}
	h.Up, h.RTT = true, rtt
	h.Validating = resp.AuthenticatedData
	if !h.Validating {
		h.Error = ErrNotValidating.Error()
		h.Problem = &Problem{Severity: SevError, Code: "resolver-not-validating", Subject: server,
			Message: ErrNotValidating.Error(),
			Fix: "enable DNSSEC validation in the resolver (unbound: module-config \"validator iterator\" and auto-trust-anchor-file); " +
				"without it no TLSA record is secure and DANE does not apply to any destination"}
	}
	return h
}
