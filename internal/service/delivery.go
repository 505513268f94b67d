package service

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/maddy-dane/daneguard/internal/engine"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// ReportMsgIDPrefix starts the message ID of every report email the glue
// submits (Deps.SubmitReport). The service recognizes report deliveries by
// it: RFC 8460 §3 wants no reports about them, and §5.3 wants them
// delivered despite DANE or MTA-STS failures. maddy generates the IDs of
// all other messages itself, so a remote sender cannot forge it.
const ReportMsgIDPrefix = "daneguard-tlsrpt-"

// Delivery is the per-message state: one engine.Destination per next-hop
// domain the message goes to, and the message's logger.
type Delivery struct {
	s     *Service
	mu    sync.Mutex
	msgID string
	log   Logger
	dests map[string]*dest
}

// dest is one next-hop domain of the delivery: the engine's Destination,
// whose lookups run in the background from PrepareDomain on, and whether
// their outcome was logged and counted yet.
type dest struct {
	*engine.Destination
	reported bool
}

// Delivery starts the policy's work for one message.
func (s *Service) Delivery(msgID string) *Delivery {
	d := &Delivery{s: s}
	d.Reset(msgID)
	return d
}

// Reset forgets what was learned, for the next message (maddy reuses
// delivery objects).
//
// The background lookups of the previous message's destinations are
// released (a lookup another delivery shares goes on for it).
func (d *Delivery) Reset(msgID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dst := range d.dests {
		dst.Release()
	}
	d.dests = map[string]*dest{}
	d.msgID = msgID
	d.log = d.s.log
	if msgID != "" {
		d.log = d.s.log.With("msg_id", msgID)
	}
}

func (d *Delivery) logger() Logger {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log
}

// IsReport tells whether the message is a TLS report.
func (d *Delivery) IsReport() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.HasPrefix(d.msgID, ReportMsgIDPrefix)
}

// dest returns the destination of domain, starting its lookups if this
// is the first the delivery hears of it.
func (d *Delivery) dest(ctx context.Context, domain string) *dest {
	key := engine.CanonicalDomain(domain)
	d.mu.Lock()
	defer d.mu.Unlock()
	dst, ok := d.dests[key]
	if !ok {
		dst = &dest{Destination: d.s.eng.Prepare(ctx, key)}
		d.dests[key] = dst
	}
	return dst
}

// report observes, counts and logs (debug) the destination's policy, MX
// and MTA-STS lookups once they are all done; it never waits for them.
func (d *Delivery) report(dst *dest) {
	took, ok := dst.Took()
	d.mu.Lock()
	if !ok || dst.reported {
		d.mu.Unlock()
		return
	}
	dst.reported = true
	d.mu.Unlock()
	observeDuration(stageDestination, took)
	countSTS(dst.Destination)
	d.debugDestination(dst.Destination)
}

// PrepareDomain starts the lookups for the domain (its policy, MX RRset
// and MTA-STS policy, then the records of its MX hosts) and returns at
// once: maddy calls it synchronously before its own MX lookup, and CheckMX
// waits for what each verdict needs.
func (d *Delivery) PrepareDomain(ctx context.Context, domain string) { d.dest(ctx, domain) }

// CheckMX vets an MX host before connecting. proceed is false when the
// host must not be used; it is true for a refused host only when the
// message is a TLS report (RFC 8460 §5.3), the verdict then says why it
// would have been refused.
func (d *Delivery) CheckMX(ctx context.Context, domain, mx string) (v *engine.Verdict, proceed bool) {
	dst := d.dest(ctx, domain)
	start := time.Now()
	v = d.s.eng.CheckMX(ctx, dst.Destination, mx)
	observeLookup(stageMX, start)
	d.report(dst)
	if !v.OK() {
		d.logVerdict(v, "mx")
		return v, d.reportBypass(v)
	}
	d.debugMX(v)
	return v, true
}

// CheckConn decides whether the established connection may carry the
// message; proceed as for CheckMX.
func (d *Delivery) CheckConn(ctx context.Context, domain, mx string, st tls.ConnectionState) (v *engine.Verdict, proceed bool) {
	dst := d.dest(ctx, domain)
	start := time.Now()
	v = d.s.eng.CheckConn(ctx, dst.Destination, mx, st)
	observeLookup(stageConn, start)
	d.report(dst)
	d.logVerdict(v, "conn")
	if !v.OK() {
		return v, d.reportBypass(v)
	}
	return v, true
}

// reportBypass says whether a refusal must be ignored because the message
// is a TLS report: RFC 8460 §3 and §5.3 want reports delivered despite
// TLS failures (and never honouring DANE or MTA-STS failures for them).
//
// Every dane block honours it, with or without a tlsrpt block of its own,
// so that reports can go out through a target.remote of their own (see
// docs/tlsrpt.md: maddy would otherwise hand the report's connection to
// ordinary mail without asking any policy).
func (d *Delivery) reportBypass(v *engine.Verdict) bool {
	if v.OK() || !d.IsReport() {
		return false
	}
	d.logger().Msg("tlsrpt report delivered despite policy failure (RFC 8460 §5.3)", "domain", v.Domain, "mx", v.MX, "reason", string(v.Reason))
	return true
}

// logVerdict writes the one log line per verdict described in
// docs/logging.md, counts it and records it for the TLS report. stage is
// "mx" (refused before connecting) or "conn".
func (d *Delivery) logVerdict(v *engine.Verdict, stage string) {
	verdictCount(v)
	if !d.IsReport() {
		deferralCount(v)
	}
	fields := []any{
		"domain", v.Domain,
		"mx", v.MX,
		"mx_secure", v.MXSecure,
		"level", string(v.Level),
		"verdict", string(v.Result),
		"reason", string(v.Reason),
		"mechanism", string(v.Mechanism),
		"stage", stage,
	}
	if v.TLSVersion != "" {
		fields = append(fields, "tls_version", v.TLSVersion)
	}
	if v.TLSA != "" {
		fields = append(fields, "tlsa", v.TLSA)
	}
	if v.TLSABase != "" {
		fields = append(fields, "tlsa_base", v.TLSABase)
	}
	if v.STSPolicyID != "" {
		fields = append(fields, "sts_id", v.STSPolicyID, "sts_mode", v.STSMode)
	}
	if v.Detail != "" {
		fields = append(fields, "detail", v.Detail)
	}
	if !v.OK() {
		fields = append(fields, "smtp_code", v.Code, "smtp_enchcode", fmt.Sprintf("%d.%d.%d", v.EnhancedCode[0], v.EnhancedCode[1], v.EnhancedCode[2]))
	}
	d.logger().Msg("verdict", fields...)
	d.recordTLSRPT(v)
}

// recordTLSRPT stores the verdict's outcome for the daily report. It never
// affects the delivery: errors are logged and counted.
func (d *Delivery) recordTLSRPT(v *engine.Verdict) {
	r := d.s.rpt
	if r == nil || d.IsReport() {
		// RFC 8460 §3: no reports about the delivery of reports.
		return
	}
	rec, ok := engine.ReportRecord(v)
	if !ok {
		return
	}
	if !rec.Success {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rec.ReceivingIP = d.s.dns.ReceivingIP(ctx, v.MX)
		cancel()
		rec.SendingIP = engine.SendingIP(r.cfg.SendingIP, rec.ReceivingIP)
	}
	now := time.Now()
	if !d.addRecord(now, rec) {
		return
	}
	// The same DANE result for the MX host's own domain (a hosting
	// provider's), if it differs from the recipient domain and asks for
	// reports (engine.ProviderDomain).
	if prec, ok := engine.ProviderRecord(rec); ok && d.s.publishesTLSRPT(prec.Domain) {
		d.addRecord(now, prec)
	}
}

// addRecord stores one record and counts it; false if the store failed.
func (d *Delivery) addRecord(now time.Time, rec tlsrpt.Record) bool {
	if err := d.s.rpt.add(now, rec); err != nil {
		tlsrptStoreErrors.Inc()
		d.logger().Error("tlsrpt: recording failed", err, "domain", rec.Domain, "mx", rec.MXHost)
		return false
	}
	result := "success"
	if !rec.Success {
		result = rec.ResultType
	}
	tlsrptRecords.WithLabelValues(string(rec.PolicyType), result).Inc()
	return true
}

// providerLookupTimeout bounds the TLSRPT lookup of an MX host's domain on
// the delivery path; the answer is cached with its TTL like every lookup.
const providerLookupTimeout = 2 * time.Second

// publishesTLSRPT tells whether domain has a valid TLSRPT record. A lookup
// that fails (timeout, SERVFAIL) counts as no: the copy for the provider
// is a courtesy and must not hold up the delivery.
func (s *Service) publishesTLSRPT(domain string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), providerLookupTimeout)
	defer cancel()
	_, err := tlsrpt.Discover(ctx, s.dns.LookupTXT, domain)
	return err == nil
}

// countSTS records the MTA-STS policy lookup a delivery made.
func countSTS(d *engine.Destination) {
	if d.STS == nil {
		return
	}
	stsPolicies.WithLabelValues(string(d.STS.Source), string(mtastsfallback.ReasonOf(d.STS.Err))).Inc()
}
