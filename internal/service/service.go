// Package service builds and runs what one `dane { }` block configures:
// the validating resolver, the TTL-exact DNS cache, the decision engine,
// the MTA-STS policy manager and its store, and the TLS-RPT store and
// sender; and it carries each message's deliveries through the engine,
// writing the verdict log line, the metrics and the TLS report records.
//
// It imports nothing of the MTA. An MTA glue (the repository root for
// maddy 0.8) parses the block with Directives into Settings, supplies
// Deps (a Logger, the policy table, report submission, the state
// directory), and translates verdicts into its own MX/TLS levels and SMTP
// errors. The life cycle is explicit, in the Caddy manner: New provisions
// everything and undoes what it opened when a step fails; Start starts the
// background work; Close stops it and releases the stores, and may be
// called after a failed Start or more than once.
package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/fleet"
	"github.com/maddy-dane/daneguard/internal/engine"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// Logger is what the service needs of the MTA's log. Msg writes a line
// with key/value fields; DebugMsg writes it only when debug logging is on
// (Debug reports whether); With returns a logger adding fields to every
// line (the per-delivery msg_id).
type Logger interface {
	Msg(msg string, kv ...any)
	Error(msg string, err error, kv ...any)
	DebugMsg(msg string, kv ...any)
	Debug() bool
	With(kv ...any) Logger
}

// TableLookup looks a key up in the MTA's policy table.
type TableLookup func(ctx context.Context, key string) (value string, ok bool, err error)

// Deps is what the MTA supplies.
type Deps struct {
	Log Logger
	// Instance names the block for metrics ("" for an unnamed one).
	Instance string
	// PolicyTable is the policy_table; nil when there is none.
	PolicyTable TableLookup
	// Policy, when set, replaces the inline policies and the table for
	// every destination (the checker's --level).
	Policy engine.PolicyLookup
	// SubmitReport sends report emails (the tlsrpt block's deliver_to);
	// nil when reports go by HTTPS only.
	SubmitReport tlsrpt.SubmitFunc
	// StateDir is the MTA's state directory, the home of the default
	// MTA-STS and TLS-RPT directories; "" when not known.
	StateDir string
	// NoRun: configuration check only (verify-config, the checker):
	// nothing is written to disk and no background work starts. MTA-STS
	// policies are then looked up on demand and kept in memory.
	NoRun bool
}

// Service is what one dane block runs.
type Service struct {
	settings Settings
	deps     Deps
	log      Logger

	resolver *dane.Resolver
	dns      *engine.CachedQuerier
	eng      *engine.Engine
	sts      *mtastsfallback.Manager // nil: MTA-STS off
	stsDir   string                  // "" : policies in memory
	stsStore mtastsfallback.Store    // the manager's store; nil in memory
	rpt      *reporter               // nil: no TLS reporting
	fleet    *fleetState             // nil: no shared store

	releases  []func() // undo of what New opened, last first
	cancel    context.CancelFunc
	closeOnce sync.Once
}

// sweepInterval is how often expired cache entries are removed. Expired
// entries are never served; sweeping only returns their memory and keeps
// the entries gauge close to the live count.
const sweepInterval = time.Minute

// New provisions a service from validated settings. On error nothing is
// left open.
func New(s Settings, d Deps) (svc *Service, err error) {
	if d.Log == nil {
		return nil, errors.New("service: no logger")
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	svc = &Service{settings: s, deps: d, log: d.Log}
	// The returns below set svc to nil before this runs: keep the object
	// whose releases must run.
	built := svc
	defer func() {
		if err != nil {
			built.release()
			svc = nil
		}
	}()

	svc.resolver, err = dane.NewResolver(dane.ResolverConfig{Servers: s.Resolvers, Timeout: s.ResolverTimeout, TrustRemote: s.TrustRemoteResolver})
	if err != nil {
		return nil, err
	}
	if bad := svc.resolver.UntrustedServers(); len(bad) != 0 {
		svc.log.Msg("WARNING: resolvers not on loopback are not trusted for DNSSEC; DANE will never apply until a local validating resolver is used (or trust_remote_resolver is set)",
			"untrusted_resolvers", strings.Join(bad, ","))
	}
	// The one DNS cache of the block, shared by the engine, the MTA-STS
	// manager and the TLS-RPT sender.
	svc.dns = engine.NewCachedQuerier(svc.resolver, policycache.Config{
		MaxEntries:    s.CacheMaxEntries,
		MaxTTL:        s.CacheMaxTTL,
		MinFailureTTL: s.CacheFailureMin,
		MaxFailureTTL: s.CacheFailureMax,
	}, svc.debugQuery)
	if err := svc.openFleet(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := svc.newMTASTS(); err != nil {
		return nil, fmt.Errorf("mtasts_dir: %w", err)
	}
	cfg := engine.Config{DNS: svc.dns, DefaultLevel: s.DefaultLevel, Policies: svc.lookupPolicy, Roots: s.Roots}
	if d.Policy != nil {
		cfg.Policies = d.Policy
	}
	if svc.sts != nil {
		cfg.STS = svc.sts
	}
	if svc.eng, err = engine.New(cfg); err != nil {
		return nil, err
	}
	registerMetrics(d.Instance, svc.dns)
	if err := svc.newTLSRPT(); err != nil {
		return nil, err
	}
	svc.log.DebugMsg("initialized", "resolvers", strings.Join(svc.resolver.Servers(), ","), "default_level", string(s.DefaultLevel))
	return svc, nil
}

// Start starts the background work: the cache sweeper, the MTA-STS
// refresh and the TLS report sender. With Deps.NoRun it starts nothing.
func (s *Service) Start() error {
	if s.deps.NoRun {
		return nil
	}
	if s.cancel != nil {
		return errors.New("service: started twice")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.dns.Cache().RunSweeper(ctx, sweepInterval)
	s.startFleet()
	if s.sts != nil {
		go s.sts.Run(ctx)
		s.log.DebugMsg("MTA-STS enabled", "mtasts_dir", s.stsDir)
	}
	if s.rpt != nil && s.rpt.first {
		go func() {
			// The first tick waits one interval: the delivery target may
			// be initialized after this policy.
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.rpt.cfg.PollInterval):
			}
			s.rpt.sender.Run(ctx)
		}()
	}
	return nil
}

// Close stops the background work and releases the stores.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		s.release()
	})
	return nil
}

func (s *Service) release() {
	for i := len(s.releases) - 1; i >= 0; i-- {
		s.releases[i]()
	}
	s.releases = nil
}

// Engine returns the decision engine.
func (s *Service) Engine() *engine.Engine { return s.eng }

// Settings returns the settings the service runs with.
func (s *Service) Settings() Settings { return s.settings }

// Resolvers returns the DNS resolvers the service queries.
func (s *Service) Resolvers() []string { return s.resolver.Servers() }

// UntrustedResolvers lists the resolvers whose DNSSEC status is not
// trusted (not on loopback, without trust_remote_resolver).
func (s *Service) UntrustedResolvers() []string { return s.resolver.UntrustedServers() }

// newMTASTS builds the MTA-STS manager on the shared DNS cache, with its
// store in the MTA-STS directory (in memory with Deps.NoRun or without a
// state directory).
func (s *Service) newMTASTS() error {
	if !s.settings.MTASTS {
		s.log.DebugMsg("MTA-STS disabled (mtasts off)")
		return nil
	}
	dir := s.settings.MTASTSDir
	if dir == "" && s.deps.StateDir != "" {
		dir = DefaultMTASTSDir(s.deps.StateDir)
	}
	var store mtastsfallback.Store
	var locker mtastsfallback.RefreshLocker
	switch {
	case s.deps.NoRun:
		// verify-config and the checker: check the directory but write
		// nothing (run as root, a directory created here would lock the
		// server out of it).
		if dir != "" {
			if err := checkStoreDir(dir); err != nil {
				return err
			}
		}
		dir = ""
	case dir == "":
		// Only outside `maddy run` (maddy always sets its state
		// directory): keep policies in memory.
		s.log.Msg("MTA-STS policies are kept in memory only", "reason", "the state directory is not known; set mtasts_dir")
	default:
		st, release, err := sharedSTSStore(dir, s.log)
		if err != nil {
			return err
		}
		s.releases = append(s.releases, release)
		layered, shared, err := s.fleetPolicies(dir, st)
		if err != nil {
			return err
		}
		store = layered
		if shared != nil {
			locker = shared
		}
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second}
	mgr, err := mtastsfallback.NewManager(mtastsfallback.Config{
		LookupTXT: s.dns.LookupTXT,
		Fetcher: &mtastsfallback.Fetcher{
			// The configured roots serve both the policy host (RFC 8461
			// §3.3) and MX certificates (§4.2, in the engine).
			RootCAs: s.settings.Roots,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				stsFetchAttempts.Inc()
				return dialer.DialContext(ctx, network, addr)
			},
		},
		Store: store,
		// With a shared store, other nodes write policies too, and one
		// node refreshes each domain (fleet.go).
		StoreShared:   locker != nil,
		RefreshLocker: locker,
		IsNotFound:    func(err error) bool { return errors.Is(err, policycache.ErrNotFound) },
		Logger:        slog.New(&slogHandler{l: s.log}),
	})
	if err != nil {
		return err
	}
	s.sts, s.stsDir, s.stsStore = mgr, dir, store
	s.releases = append(s.releases, func() { _ = mgr.Close() })
	return nil
}

// reporter is the TLS reporting state of a service.
type reporter struct {
	cfg    TLSRPTSettings
	store  *tlsrpt.Store
	shared *fleet.SharedReports // nil: no shared store
	sender *tlsrpt.Sender
	first  bool // this service runs the sender of its store
}

// add records a session: in the local store, which a shared store's push
// loop then reads (never waiting on the shared store).
func (r *reporter) add(t time.Time, rec tlsrpt.Record) error {
	if r.shared != nil {
		return r.shared.Add(t, rec)
	}
	return r.store.Add(t, rec)
}

// newTLSRPT opens the report store and builds the sender. Reporting never
// stops mail: a store that cannot be opened is logged and reporting is
// off.
func (s *Service) newTLSRPT() error {
	c := s.settings.TLSRPT
	if c == nil || c.Off {
		return nil
	}
	registerTLSRPTMetrics()
	if s.deps.NoRun {
		// The configuration was checked while parsing; opening (creating)
		// the store would write to disk.
		return nil
	}
	st, first, err := sharedReportStore(c.Dir, s.log)
	if err != nil {
		tlsrptStoreErrors.Inc()
		s.log.Error("tlsrpt store cannot be opened; TLS reports are disabled", err, "dir", c.Dir)
		return nil
	}
	sr, err := s.fleetReports(c, st)
	if err != nil {
		return fmt.Errorf("tlsrpt: %w", err)
	}
	client := &http.Client{Timeout: c.HTTPTimeout}
	if c.HTTPRoots != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: c.HTTPRoots, MinVersion: tls.VersionTLS12}
		client.Transport = tr
	}
	lg := s.log
	s.rpt = &reporter{cfg: *c, store: st, shared: sr, first: first, sender: &tlsrpt.Sender{
		Store:        st,
		Meta:         tlsrpt.ReportMeta{OrganizationName: c.Organization, ContactInfo: c.Contact},
		From:         c.From,
		LookupTXT:    s.dns.LookupTXT,
		HTTPClient:   client,
		HTTPTimeout:  c.HTTPTimeout,
		SendAfter:    time.Duration(c.SendHour) * time.Hour,
		RetryFor:     c.RetryFor,
		KeepDays:     c.KeepDays,
		PollInterval: c.PollInterval,
		Submit:       s.deps.SubmitReport,
		Log:          func(msg string, kv ...any) { lg.Msg("tlsrpt "+msg, kv...) },
		Count:        func(result string) { tlsrptReports.WithLabelValues(result).Inc() },
		Now:          reportNow,
	}}
	if sr != nil {
		s.rpt.sender.Shared = sr
	}
	return nil
}
