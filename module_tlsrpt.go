package daneguard

// TLS reporting (RFC 8460) glue: the `tlsrpt { }` block inside `dane { }`,
// recording of every verdict, and the background sender. The reporting
// itself lives in package tlsrpt; docs/tlsrpt.md is the admin's reference.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
	"github.com/foxcpp/maddy/framework/buffer"
	"github.com/foxcpp/maddy/framework/config"
	modconfig "github.com/foxcpp/maddy/framework/config/module"
	"github.com/foxcpp/maddy/framework/hooks"
	"github.com/foxcpp/maddy/framework/log"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/miekg/dns"
)

// ReportMsgIDPrefix starts the maddy message ID of every report email this
// module submits. The policy recognizes report deliveries by it: RFC 8460
// §3 wants no reports about them, and §5.3 wants them delivered despite
// DANE or MTA-STS failures. maddy generates the IDs of all other messages
// itself, so a remote sender cannot forge it.
const ReportMsgIDPrefix = "daneguard-tlsrpt-"

// TLSRPTConfig is the parsed `tlsrpt { }` block.
type TLSRPTConfig struct {
	Off          bool
	Organization string
	Contact      string
	From         string
	DeliverTo    module.DeliveryTarget
	Dir          string
	SendHour     int
	HTTPTimeout  time.Duration
	HTTPRoots    string
	RetryFor     time.Duration
	KeepDays     int
	PollInterval time.Duration
	// SendingIP is the "sending-mta-ip" of failure details; empty means
	// the source address the system routes to the receiving IP from.
	SendingIP string
}

// reporter is the per-policy TLS reporting state.
type reporter struct {
	cfg    TLSRPTConfig
	store  *tlsrpt.Store
	sender *tlsrpt.Sender
	log    log.Logger
	cancel context.CancelFunc
}

// parseTLSRPT parses `tlsrpt [off] { ... }`. Every directive is
// documented in docs/tlsrpt.md.
func (p *Policy) parseTLSRPT(m *config.Map, n config.Node) error {
	if p.rptCfg != nil {
		return config.NodeErr(n, "duplicate tlsrpt block")
	}
	c := &TLSRPTConfig{}
	switch {
	case len(n.Args) == 1 && n.Args[0] == "off":
		c.Off = true
		if len(n.Children) != 0 {
			return config.NodeErr(n, "tlsrpt off takes no block")
		}
		p.rptCfg = c
		return nil
	case len(n.Args) != 0:
		return config.NodeErr(n, "usage: tlsrpt [off] { ... }")
	}
	hostname, _ := m.Globals["hostname"].(string)
	cm := config.NewMap(m.Globals, n)
	cm.String("organization", false, false, hostname, &c.Organization)
	cm.String("contact", false, false, "", &c.Contact)
	cm.String("from", false, false, "", &c.From)
	cm.Custom("deliver_to", false, false, nil, func(m *config.Map, n config.Node) (interface{}, error) {
		tgt, err := modconfig.DeliveryDirective(m, n)
		if err != nil {
			return nil, config.NodeErr(n, "deliver_to: %v", err)
		}
		return tgt, nil
	}, &c.DeliverTo)
	cm.String("dir", false, false, "", &c.Dir)
	cm.Int("send_hour", false, false, 1, &c.SendHour)
	cm.Duration("https_timeout", false, false, 30*time.Second, &c.HTTPTimeout)
	cm.String("https_roots", false, false, "", &c.HTTPRoots)
	cm.Duration("retry_for", false, false, 24*time.Hour, &c.RetryFor)
	cm.Int("keep_days", false, false, 7, &c.KeepDays)
	cm.Duration("poll_interval", false, false, time.Minute, &c.PollInterval)
	cm.String("sending_ip", false, false, "", &c.SendingIP)
	if _, err := cm.Process(); err != nil {
		return err
	}
	if c.SendHour < 0 || c.SendHour > 23 {
		return config.NodeErr(n, "send_hour must be between 0 and 23")
	}
	if c.KeepDays < 1 {
		return config.NodeErr(n, "keep_days must be at least 1")
	}
	if c.PollInterval < 10*time.Millisecond {
		return config.NodeErr(n, "poll_interval is too small")
	}
	if c.HTTPRoots != "" {
		// Checked here too, so that verify-config (which starts no
		// sender) reports it with the file and line.
		if _, err := readRootsPEM(c.HTTPRoots); err != nil {
			return config.NodeErr(n, "https_roots: %v", err)
		}
	}
	if c.HTTPTimeout <= 0 {
		// 0 would make the HTTP client wait forever for a stalled
		// collector, and the one sender goroutine with it.
		return config.NodeErr(n, "https_timeout must be more than 0s")
	}
	if c.SendingIP != "" && net.ParseIP(c.SendingIP) == nil {
		return config.NodeErr(n, "sending_ip %q is not an IP address", c.SendingIP)
	}
	if c.Contact == "" {
		if hostname == "" {
			return config.NodeErr(n, "contact is required (no global hostname to default to postmaster@hostname)")
		}
		c.Contact = "postmaster@" + hostname
	}
	if a, err := mail.ParseAddress(c.Contact); err != nil || a.Name != "" || !strings.Contains(a.Address, "@") {
		return config.NodeErr(n, "contact %q is not an email address", c.Contact)
	}
	if c.From == "" {
		c.From = c.Contact
	}
	if a, err := mail.ParseAddress(c.From); err != nil || a.Name != "" {
		return config.NodeErr(n, "from %q is not an email address", c.From)
	}
	if c.Organization == "" {
		return config.NodeErr(n, "organization is required (no global hostname to default to)")
	}
	if c.Dir == "" {
		c.Dir = filepath.Join(config.StateDirectory, "daneguard", "tlsrpt")
	}
	p.rptCfg = c
	return nil
}

// TLSRPTStorePath is the database file in a tlsrpt dir.
func TLSRPTStorePath(dir string) string { return filepath.Join(dir, "tlsrpt.db") }

// Stores and senders are shared per directory: several dane blocks (one
// per target.remote) may point at the same one.
var (
	rptMu      sync.Mutex
	rptStores  = map[string]*tlsrpt.Store{}
	rptSenders = map[string]bool{}
)

func openSharedStore(dir string, lg log.Logger) (*tlsrpt.Store, error) {
	rptMu.Lock()
	defer rptMu.Unlock()
	path := TLSRPTStorePath(dir)
	if st, ok := rptStores[path]; ok {
		return st, nil
	}
	st, err := tlsrpt.OpenStore(path, tlsrpt.StoreOptions{OnCorrupt: func(moved string, err error) {
		tlsrptStoreErrors.Inc()
		lg.Error("tlsrpt store was corrupt: moved aside, starting an empty one", err, "moved_to", moved)
	}})
	if err != nil {
		return nil, err
	}
	rptStores[path] = st
	return st, nil
}

// NewTLSRPTSender builds the sender for a parsed configuration. q answers
// the TXT lookups.
func NewTLSRPTSender(c *TLSRPTConfig, st *tlsrpt.Store, q dane.Querier, lg log.Logger) (*tlsrpt.Sender, error) {
	client := &http.Client{Timeout: c.HTTPTimeout}
	if c.HTTPRoots != "" {
		pool, err := readRootsPEM(c.HTTPRoots)
		if err != nil {
			return nil, fmt.Errorf("tlsrpt: https_roots: %w", err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		client.Transport = tr
	}
	s := &tlsrpt.Sender{
		Store:        st,
		Meta:         tlsrpt.ReportMeta{OrganizationName: c.Organization, ContactInfo: c.Contact},
		From:         c.From,
		LookupTXT:    lookupTXTVia(q),
		HTTPClient:   client,
		HTTPTimeout:  c.HTTPTimeout,
		SendAfter:    time.Duration(c.SendHour) * time.Hour,
		RetryFor:     c.RetryFor,
		KeepDays:     c.KeepDays,
		PollInterval: c.PollInterval,
		Log: func(msg string, kv ...any) {
			lg.Msg("tlsrpt "+msg, kv...)
		},
		Count: func(result string) { tlsrptReports.WithLabelValues(result).Inc() },
	}
	if c.DeliverTo != nil {
		s.Submit = submitVia(c.DeliverTo)
	}
	return s, nil
}

// readRootsPEM reads a PEM file of root certificates.
func readRootsPEM(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificates in %s", path)
	}
	return pool, nil
}

// startTLSRPT opens the store and starts the sender, after the engine
// exists. Without a tlsrpt block nothing is recorded.
func (p *Policy) startTLSRPT() error {
	c := p.rptCfg
	if c == nil || c.Off {
		return nil
	}
	registerTLSRPTMetrics()
	if module.NoRun {
		// verify-config and the checker: the configuration was checked
		// while parsing; opening (creating) the store would write to disk.
		return nil
	}
	st, err := openSharedStore(c.Dir, p.log)
	if err != nil {
		// Reporting never stops mail: log, and run without it.
		tlsrptStoreErrors.Inc()
		p.log.Error("tlsrpt store cannot be opened; TLS reports are disabled", err, "dir", c.Dir)
		return nil
	}
	r := &reporter{cfg: *c, store: st, log: p.log}
	r.sender, err = NewTLSRPTSender(c, st, p.eng.Querier(), p.log)
	if err != nil {
		return fmt.Errorf("%s: %w", ModuleName, err)
	}
	p.rpt = r
	rptMu.Lock()
	first := !rptSenders[st.Path()]
	rptSenders[st.Path()] = true
	rptMu.Unlock()
	if !first {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	hooks.AddHook(hooks.EventShutdown, cancel)
	go func() {
		// The first tick waits one interval: the delivery target may be
		// initialized after this module.
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.PollInterval):
		}
		r.sender.Run(ctx)
	}()
	return nil
}

func (p *Policy) stopTLSRPT() {
	if p.rpt != nil && p.rpt.cancel != nil {
		p.rpt.cancel()
	}
}

// isReportDelivery tells whether msgID belongs to a report email.
func isReportDelivery(msgID string) bool {
	return strings.HasPrefix(msgID, ReportMsgIDPrefix)
}

// reportBypass says whether a deferral must be ignored because the message
// is a TLS report: RFC 8460 §3 and §5.3 want reports delivered despite
// TLS failures (and never honouring DANE or MTA-STS failures for them).
//
// Every dane block honours it, with or without a tlsrpt block of its own,
// so that reports can go out through a target.remote of their own (see
// docs/tlsrpt.md: maddy would otherwise hand the report's connection to
// ordinary mail without asking any policy).
func (p *Policy) reportBypass(msgID string, v *engine.Verdict) bool {
	if v.OK() || !isReportDelivery(msgID) {
		return false
	}
	p.log.Msg("tlsrpt report delivered despite policy failure (RFC 8460 §5.3)", "domain", v.Domain, "mx", v.MX, "reason", string(v.Reason), "msg_id", msgID)
	return true
}

// recordTLSRPT stores the verdict's outcome for the daily report. It never
// affects the delivery: errors are logged and counted.
func (p *Policy) recordTLSRPT(msgID string, v *engine.Verdict) {
	r := p.rpt
	if r == nil || isReportDelivery(msgID) {
		// RFC 8460 §3: no reports about the delivery of reports.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, ok := p.tlsrptRecord(ctx, v)
	if !ok {
		return
	}
	if err := r.store.Add(time.Now(), rec); err != nil {
		tlsrptStoreErrors.Inc()
		p.log.Error("tlsrpt: recording failed", err, "domain", v.Domain, "mx", v.MX)
		return
	}
	result := "success"
	if !rec.Success {
		result = rec.ResultType
	}
	tlsrptRecords.WithLabelValues(string(rec.PolicyType), result).Inc()
}

var daneResultTypes = map[string]bool{
	tlsrpt.ResultTLSAInvalid: true, tlsrpt.ResultDNSSECInvalid: true, tlsrpt.ResultDANERequired: true,
}

var stsResultTypes = map[string]bool{
	tlsrpt.ResultSTSPolicyFetchError: true, tlsrpt.ResultSTSPolicyInvalid: true, tlsrpt.ResultSTSWebPKIInvalid: true,
}

// tlsrptRecord maps a verdict to a report record. ok=false means the
// verdict is not reported: transient DNS trouble and local problems
// (RFC 8460 §4.3.4).
func (p *Policy) tlsrptRecord(ctx context.Context, v *engine.Verdict) (tlsrpt.Record, bool) {
	rec := tlsrpt.Record{Domain: v.Domain, PolicyDomain: v.Domain, MXHost: v.MX, PolicyType: tlsrpt.PolicyNotFound}
	switch {
	case !v.OK():
		if v.ReportType == "" {
			return rec, false
		}
		rec.ResultType = v.ReportType
		rec.FailureReason = failureReason(v)
	case v.Reason == engine.ReasonSTSTestingFailure:
		// RFC 8461 §5: a testing-mode policy failed; the message went out,
		// the failure is reported.
		rec.ResultType = v.ReportType
		if rec.ResultType == "" {
			rec.ResultType = tlsrpt.ResultValidationFailure
		}
		rec.FailureReason = failureReason(v)
	case v.Result == engine.Plaintext:
		// Delivered, but without TLS: the receiving domain wants to know.
		rec.ResultType = tlsrpt.ResultSTARTTLSNotSupported
		rec.FailureReason = string(v.Reason)
	case v.Reason == engine.ReasonDANEUnusable:
		// RFC 8460 §4.3.2.1: none of the TLSA records was usable. The
		// message went out encrypted, but the DANE policy is broken.
		rec.ResultType = tlsrpt.ResultTLSAInvalid
		rec.FailureReason = string(v.Reason)
	default:
		rec.Success = true
	}

	// The MTA-STS policy of the domain, when MTA-STS is on and DANE does
	// not govern this host.
	// The one the decision was made with, not a fresh lookup: the report
	// must describe the policy that was applied.
	var sts *mtastsfallback.Result
	if v.Mechanism != engine.MechDANE {
		sts = v.STS
	}
	if sts != nil && sts.Policy == nil && sts.Err != nil && rec.Success {
		// RFC 8461 §6 / RFC 8460 §4.3.2.2: the domain announces MTA-STS
		// but its policy could not be obtained or is invalid. Delivery
		// went on without it; the domain is told.
		if rt := string(mtastsfallback.ReasonOf(sts.Err)); stsResultTypes[rt] {
			rec.Success = false
			rec.ResultType = rt
			rec.FailureReason = sts.Err.Error()
		}
	}

	switch {
	case v.Mechanism == engine.MechDANE || daneResultTypes[rec.ResultType]:
		rec.PolicyType = tlsrpt.PolicyTLSA
		// RFC 8460 §1.1: for DANE the policy domain is the TLSA base
		// domain.
		rec.PolicyDomain = firstNonEmpty(v.TLSABase, v.MX, v.Domain)
		rec.PolicyStrings = tlsaStrings(v)
	case v.Mechanism == engine.MechMTASTS || v.STSPolicyID != "" || stsResultTypes[rec.ResultType]:
		rec.PolicyType = tlsrpt.PolicySTS
		rec.PolicyDomain = v.Domain
		rec.PolicyStrings = stsPolicyStrings(v)
		if sts != nil && sts.Policy != nil {
			// RFC 8460 §4.5: the policy as published, one line per
			// string; its mx patterns are the "mx-host".
			rec.PolicyStrings = sts.Policy.Lines()
			rec.MXPatterns = append([]string(nil), sts.Policy.MX...)
		}
	}
	if !rec.Success {
		rec.ReceivingIP = p.receivingIP(ctx, v.MX)
		rec.SendingIP = p.sendingIP(rec.ReceivingIP)
	}
	return rec, true
}

func failureReason(v *engine.Verdict) string {
	if v.Detail != "" {
		return stableReason(v.Detail)
	}
	return string(v.Reason)
}

// x509Clock matches the verification time crypto/x509 writes into its
// validity errors ("current time 2026-05-01T10:00:00Z is after ...").
var x509Clock = regexp.MustCompile(`current time \S+ is (after|before) `)

// stableReason drops the verification time from a failure text. The
// failure-reason-code is part of what the store aggregates on (RFC 8460
// §4.4 failure details): with the time in it, every session with an
// expired certificate became an aggregate of its own, growing the store
// and the report by one entry per second of failures. The certificate's
// own date, the cause, is kept.
func stableReason(s string) string {
	s = x509Clock.ReplaceAllString(s, "not valid $1 ")
	// Likewise the local port of a failed connection ("read tcp
	// 192.0.2.1:54321->198.51.100.7:443: connection reset by peer" in a
	// policy fetch error), new for every attempt.
	return localPort.ReplaceAllString(s, "$1->")
}

var localPort = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]):\d+->`)

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// tlsaStrings returns the TLSA RRset the verdict was reached with, in the
// RFC 8460 §4.5 form ("3 1 1 <HEX>").
func tlsaStrings(v *engine.Verdict) []string {
	if len(v.TLSARRset) == 0 {
		return nil
	}
	out := make([]string, 0, len(v.TLSARRset))
	for _, rr := range v.TLSARRset {
		out = append(out, fmt.Sprintf("%d %d %d %s", rr.Usage, rr.Selector, rr.MatchingType, strings.ToUpper(rr.Certificate)))
	}
	return out
}

// stsPolicyStrings renders what the verdict says about the MTA-STS policy
// applied, for when the policy itself is not at hand.
func stsPolicyStrings(v *engine.Verdict) []string {
	var out []string
	if v.STSPolicyID != "" || v.STSMode != "" {
		out = append(out, "version: STSv1")
	}
	if v.STSMode != "" {
		out = append(out, "mode: "+v.STSMode)
	}
	return out
}

// receivingIP returns the MX host's address when it has exactly one, so
// that it is the one the session used.
func (p *Policy) receivingIP(ctx context.Context, mx string) string {
	if mx == "" || p.eng == nil {
		return ""
	}
	var addrs []string
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		ans, err := p.eng.Querier().Query(ctx, mx, qt)
		if err != nil {
			return ""
		}
		for _, rr := range ans.Records {
			switch a := rr.(type) {
			case *dns.A:
				addrs = append(addrs, a.A.String())
			case *dns.AAAA:
				addrs = append(addrs, a.AAAA.String())
			}
		}
	}
	if len(addrs) != 1 || net.ParseIP(addrs[0]) == nil {
		return ""
	}
	return addrs[0]
}

// sendingIP is the RFC 8460 §4.4 "sending-mta-ip": the configured
// sending_ip (maddy's target.remote local_ip, which this policy cannot
// see), else the source address the system would use towards receiving,
// found without sending a packet. Empty when neither is known.
func (p *Policy) sendingIP(receiving string) string {
	if p.rpt != nil && p.rpt.cfg.SendingIP != "" {
		return p.rpt.cfg.SendingIP
	}
	if receiving == "" {
		return ""
	}
	c, err := net.Dial("udp", net.JoinHostPort(receiving, "25"))
	if err != nil {
		return ""
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return a.IP.String()
	}
	return ""
}

// lookupTXTVia answers TXT lookups with the policy's (validating, cached)
// resolver.
func lookupTXTVia(q dane.Querier) tlsrpt.LookupTXTFunc {
	return func(ctx context.Context, name string) ([]string, error) {
		ans, err := q.Query(ctx, name, dns.TypeTXT)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, rr := range ans.Records {
			if t, ok := rr.(*dns.TXT); ok {
				// RFC 8460 §3: the strings are concatenated without spaces.
				out = append(out, strings.Join(t.Txt, ""))
			}
		}
		return out, nil
	}
}

// submitVia submits report emails through a maddy delivery target, so
// that the admin's pipeline (DKIM signing, queue) applies.
func submitVia(tgt module.DeliveryTarget) tlsrpt.SubmitFunc {
	return func(ctx context.Context, from string, to []string, msg []byte) error {
		br := bufio.NewReader(bytes.NewReader(msg))
		hdr, err := textproto.ReadHeader(br)
		if err != nil {
			return fmt.Errorf("parsing the report email: %w", err)
		}
		var body bytes.Buffer
		if _, err := body.ReadFrom(br); err != nil {
			return err
		}
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		meta := &module.MsgMetadata{
			ID:              ReportMsgIDPrefix + hex.EncodeToString(rnd[:]),
			OriginalFrom:    from,
			DontTraceSender: true,
			SMTPOpts:        smtp.MailOptions{Size: int64(len(msg))},
		}
		d, err := tgt.Start(ctx, meta, from)
		if err != nil {
			return err
		}
		for _, rcpt := range to {
			if err := d.AddRcpt(ctx, rcpt, smtp.RcptOptions{}); err != nil {
				_ = d.Abort(ctx)
				return err
			}
		}
		if err := d.Body(ctx, hdr, buffer.MemoryBuffer{Slice: body.Bytes()}); err != nil {
			_ = d.Abort(ctx)
			return err
		}
		return d.Commit(ctx)
	}
}
