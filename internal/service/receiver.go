package service

// The receiver of TLS reports about the operator's own domains (RFC 8460
// §5.3 by email, §5.4 by HTTPS): what a `target.tlsrpt_receiver` block
// runs. The glue hands it each report email; it parses, stores, counts and
// logs it and says which SMTP reply to give. The life cycle is the
// service's: NewReceiver opens the store (and takes a reference on the
// shared store's client with shared_store), Start opens the HTTPS
// listener, the pruning loop and the shared store's push loop, Close
// stops them and drops the reference (also after a failed Start).

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-msgauth/authres"
	"github.com/maddy-dane/daneguard/fleet"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/prometheus/client_golang/prometheus"
)

// ReceiverDeps is what the MTA supplies to a receiver.
type ReceiverDeps struct {
	Log Logger
	// NoRun: configuration check only; nothing is opened or started.
	NoRun bool
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Receiver runs one receiver block.
type Receiver struct {
	set   ReceiverSettings
	log   Logger
	now   func() time.Time
	store *tlsrpt.ReceivedStore
	// reports is store, or with shared_store the shared one (store
	// as its journal).
	reports tlsrpt.ReceivedReports
	shared  *fleet.SharedReceived
	release func() // drops the shared-store client; nil without one
	noRun   bool

	srv       *http.Server
	cancel    context.CancelFunc
	done      sync.WaitGroup
	closeOnce sync.Once
}

// Reply is the SMTP reply for a refused report email; it is the error
// DeliverEmail returns.
type Reply struct {
	Code     int
	Enhanced [3]int
	Message  string
	// Reason is the bounded refusal reason (metrics, log).
	Reason string
}

func (r *Reply) Error() string {
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Message)
}

// RefusedDKIM is the refusal reason of a report email without a passing
// DKIM result under require_dkim.
const RefusedDKIM = "dkim-required"

// DKIM results recorded besides authres values.
const dkimNone = "none"

// pruneInterval: retention is by day; pruning more often than hourly
// gains nothing.
const pruneInterval = time.Hour

var (
	receivedMetricsOnce sync.Once
	receivedMetrics     *tlsrpt.ReceivedMetrics
)

// registerReceivedMetrics registers the received-report counters once per
// process; the first block's domains and organization cap bound them.
func registerReceivedMetrics(s ReceiverSettings) *tlsrpt.ReceivedMetrics {
	receivedMetricsOnce.Do(func() {
		receivedMetrics = tlsrpt.NewReceivedMetrics("maddy", "daneguard", tlsrpt.MetricsOptions{
			PolicyDomains: s.Domains, MaxOrganizations: s.MaxOrganizations,
		})
		prometheus.MustRegister(receivedMetrics)
	})
	return receivedMetrics
}

// NewReceiver provisions a receiver from validated settings: it registers
// the metrics and opens (creates) the store. With NoRun it opens nothing.
func NewReceiver(s ReceiverSettings, d ReceiverDeps) (*Receiver, error) {
	if d.Log == nil {
		return nil, errors.New("receiver: no logger")
	}
	r := &Receiver{set: s, log: d.Log, now: d.Now, noRun: d.NoRun}
	if r.now == nil {
		r.now = time.Now
	}
	registerReceivedMetrics(s)
	if d.NoRun {
		return r, nil
	}
	st, err := tlsrpt.OpenReceivedStore(s.StorePath, tlsrpt.StoreOptions{OnCorrupt: func(moved string, err error) {
		r.log.Error("tlsrpt received-report store was corrupt: moved aside, starting an empty one", err, "store", s.StorePath, "moved_to", moved)
	}})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.StorePath, err)
	}
	r.store, r.reports = st, st
	if c := s.SharedStore; c != nil {
		e, release, err := acquireFleetClient(c)
		if err != nil {
			return nil, fmt.Errorf("shared_store %s: %w", c.URL, err)
		}
		sh, err := fleet.NewSharedReceived(e.c, fleet.ReceivedConfig{Local: st, KeepDays: s.KeepDays, Metrics: e.m,
			Log: slog.New(&slogHandler{l: r.log}), Now: r.now})
		if err != nil {
			release()
			return nil, fmt.Errorf("shared_store %s: %w", c.URL, err)
		}
		r.shared, r.reports, r.release = sh, sh, release
		r.log.Msg("tlsrpt received reports: shared store configured", "store", c.URL)
	}
	return r, nil
}

// receivedPushInterval bounds how often received reports Redis did not
// take are pushed again.
const receivedPushInterval = 5 * time.Second

// Start opens the HTTPS listener (if configured) and starts the pruning
// loop. On error nothing it started is left running; Close may still be
// called.
func (r *Receiver) Start() error {
	if r.noRun {
		return nil
	}
	if r.cancel != nil {
		return errors.New("receiver: started twice")
	}
	ctx, cancel := context.WithCancel(context.Background())
	if r.set.HTTPSListen != "" {
		if err := r.startHTTPS(); err != nil {
			cancel()
			return err
		}
	}
	r.cancel = cancel
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		r.pruneLoop(ctx)
	}()
	if r.shared != nil {
		r.done.Add(1)
		go func() {
			defer r.done.Done()
			r.shared.Run(ctx, receivedPushInterval)
		}()
	}
	return nil
}

// Close stops the HTTPS endpoint and the pruning loop.
func (r *Receiver) Close() error {
	r.closeOnce.Do(func() {
		if r.srv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = r.srv.Shutdown(sctx)
			cancel()
		}
		if r.cancel != nil {
			r.cancel()
		}
		r.done.Wait()
		if r.shared != nil && r.cancel != nil {
			// One last push; what does not make it stays in the local
			// store and is pushed at the next start.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = r.shared.Flush(ctx)
			cancel()
		}
		if r.release != nil {
			r.release()
		}
	})
	return nil
}

// Shared is the shared store of received reports; nil without
// shared_store (or with NoRun).
func (r *Receiver) Shared() *fleet.SharedReceived { return r.shared }

// Settings returns the settings the receiver runs with.
func (r *Receiver) Settings() ReceiverSettings { return r.set }

func (r *Receiver) pruneLoop(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		r.Prune(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Prune deletes the reports older than keep_days (by the day of their
// date-range start) and returns how many.
func (r *Receiver) Prune(ctx context.Context) int {
	cutoff := tlsrpt.RetentionCutoff(r.now(), r.set.KeepDays)
	n, err := r.reports.PruneReceived(ctx, cutoff)
	switch {
	case err != nil:
		r.log.Error("tlsrpt received reports: pruning failed", err, "store", r.set.StorePath)
	case n > 0:
		r.log.Msg("tlsrpt received reports pruned", "reports", n, "before", cutoff)
	}
	return n
}

// DeliverEmail receives one report email, as the MTA's pipeline passes it
// on (header with the MTA's own Received and Authentication-Results
// fields on top). It returns nil when the report is stored or was stored
// already, else a *Reply.
func (r *Receiver) DeliverEmail(ctx context.Context, header textproto.Header, body io.Reader) error {
	dkim, dkimDomain := DKIMResult(header, r.set.AuthservID)
	if r.set.RequireDKIM && dkim != string(authres.ResultPass) {
		return r.refuse("email", RefusedDKIM, fmt.Errorf("DKIM result %s", dkim),
			&Reply{Code: 550, Enhanced: [3]int{5, 7, 20}, Message: "No passing DKIM signature: this receiver accepts signed TLS reports only (RFC 8460 section 3)"})
	}
	var hb bytes.Buffer
	if err := textproto.WriteHeader(&hb, header); err != nil {
		return r.refuse("email", tlsrpt.RefusedOther, err, &Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Message: "Internal error, try again later"})
	}
	rcv, err := tlsrpt.ParseEmail(io.MultiReader(&hb, body), r.set.Limits)
	if err != nil {
		reason := tlsrpt.RefusalReason(err)
		rep := &Reply{Code: 550, Enhanced: [3]int{5, 6, 0}, Message: "Not a valid TLS report: " + replyText(err)}
		if reason == tlsrpt.RefusedTooLarge || reason == tlsrpt.RefusedDecompress {
			rep = &Reply{Code: 552, Enhanced: [3]int{5, 3, 4}, Message: "TLS report too large: " + replyText(err)}
		}
		return r.refuse("email", reason, err, rep)
	}
	if _, err := r.accept(ctx, rcv, "email", dkim, dkimDomain, rcv.From); err != nil {
		return r.refuse("email", tlsrpt.RefusedStoreError, err,
			&Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Message: "Cannot store the TLS report now, try again later"})
	}
	return nil
}

// accept stores a parsed report, counts and logs it.
func (r *Receiver) accept(ctx context.Context, rcv *tlsrpt.Received, transport, dkim, dkimDomain, from string) (bool, error) {
	added, err := r.reports.AddReceived(ctx, tlsrpt.ReceivedEntry{
		Report: *rcv.Report, ReceivedAt: r.now(), Transport: transport, MediaType: rcv.MediaType,
		DKIM: dkim, DKIMDomain: dkimDomain, From: from, Warnings: rcv.Warnings,
	})
	if err != nil {
		return false, err
	}
	m := receivedMetrics
	if added {
		m.Accepted(transport, rcv.Report)
	} else {
		m.Duplicate(transport)
	}
	ok, failed := rcv.Totals()
	rep := rcv.Report
	var doms []string
	for _, p := range rep.Policies {
		if d := strings.ToLower(strings.TrimSuffix(p.Policy.PolicyDomain, ".")); !contains(doms, d) {
			doms = append(doms, d)
		}
	}
	fields := []any{"report_id", rep.ReportID, "organization", rep.OrganizationName, "policy_domains", strings.Join(doms, ","),
		"day", tlsrpt.Day(rep.DateRange.Start), "transport", transport, "successful", ok, "failed", failed,
		"duplicate", !added, "warnings", len(rcv.Warnings)}
	if transport == "email" {
		fields = append(fields, "dkim", dkim)
		if dkimDomain != "" {
			fields = append(fields, "dkim_domain", dkimDomain)
		}
	}
	if from != "" {
		fields = append(fields, "from", from)
	}
	r.log.Msg("tlsrpt report received", fields...)
	for _, w := range rcv.Warnings {
		r.log.DebugMsg("tlsrpt report warning", "report_id", rep.ReportID, "warning", w)
	}
	return added, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func (r *Receiver) refuse(transport, reason string, err error, rep *Reply) error {
	receivedMetrics.Refused(transport, reason)
	r.log.Msg("tlsrpt report refused", "transport", transport, "reason", reason, "error", err.Error())
	if rep != nil {
		rep.Reason = reason
	}
	return rep
}

// replyText makes an error text fit an SMTP reply line.
func replyText(err error) string {
	s := strings.Map(func(c rune) rune {
		if c < 0x20 || c > 0x7e {
			return ' '
		}
		return c
	}, err.Error())
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// DKIMResult returns the DKIM result this MTA recorded for a message: the
// dkim results of the Authentication-Results fields with authservID
// (RFC 8601 §2.5) that stand above the first Received field. maddy adds
// its own field on top, above its Received field; fields further down
// came with the message and may be forged (RFC 8601 §5), and maddy does
// not remove them. The result is "pass" (with the signing domain) if any
// signature passed, else the first dkim result's value, else "none".
func DKIMResult(h textproto.Header, authservID string) (result, domain string) {
	result = dkimNone
	first := true
	for f := h.Fields(); f.Next(); {
		switch strings.ToLower(f.Key()) {
		case "received":
			return result, domain
		case "authentication-results":
		default:
			continue
		}
		id, res, err := authres.Parse(f.Value())
		if err != nil || !strings.EqualFold(strings.TrimSuffix(id, "."), strings.TrimSuffix(authservID, ".")) {
			continue
		}
		for _, r := range res {
			d, ok := r.(*authres.DKIMResult)
			if !ok {
				continue
			}
			if d.Value == authres.ResultPass {
				return string(authres.ResultPass), strings.ToLower(d.Domain)
			}
			if first {
				result, first = string(d.Value), false
			}
		}
	}
	return result, domain
}

// remoteKey carries the HTTPS client's address to Accept.
type remoteKey struct{}

func (r *Receiver) startHTTPS() error {
	certs, err := newCertFiles(r.set.HTTPSCert, r.set.HTTPSKey)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", r.set.HTTPSListen)
	if err != nil {
		return fmt.Errorf("https_listen: %w", err)
	}
	h := &tlsrpt.Handler{
		Limits: r.set.Limits,
		Accept: func(ctx context.Context, rcv *tlsrpt.Received) (bool, error) {
			from, _ := ctx.Value(remoteKey{}).(string)
			return r.accept(ctx, rcv, "https", "", "", from)
		},
		Refused: func(reason string, err error) { _ = r.refuse("https", reason, err, nil) },
	}
	mux := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != r.set.HTTPSPath {
			http.NotFound(w, req)
			return
		}
		host, _, _ := net.SplitHostPort(req.RemoteAddr)
		h.ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), remoteKey{}, host)))
	})
	r.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          nil,
	}
	srv := r.srv
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("tlsrpt HTTPS endpoint stopped", err, "listen", r.set.HTTPSListen)
		}
	}()
	r.log.Msg("tlsrpt HTTPS endpoint listening", "listen", ln.Addr().String(), "path", r.set.HTTPSPath)
	return nil
}

// certFiles serves a certificate from files, reloading them when they
// change (a renewal by certbot or the like needs no restart).
type certFiles struct {
	cert, key string
	mu        sync.Mutex
	mtime     [2]time.Time
	cur       *tls.Certificate
}

func newCertFiles(cert, key string) (*certFiles, error) {
	c := &certFiles{cert: cert, key: key}
	if _, err := c.get(nil); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var mt [2]time.Time
	for i, p := range []string{c.cert, c.key} {
		fi, err := os.Stat(p)
		if err != nil {
			if c.cur != nil {
				return c.cur, nil // keep serving the loaded one
			}
			return nil, fmt.Errorf("https certificate: %w", err)
		}
		mt[i] = fi.ModTime()
	}
	if c.cur != nil && mt == c.mtime {
		return c.cur, nil
	}
	cert, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		if c.cur != nil {
			return c.cur, nil
		}
		return nil, fmt.Errorf("https certificate: %w", err)
	}
	c.cur, c.mtime = &cert, mt
	return c.cur, nil
}
