package daneguard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/log"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/engine"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
)

// MTA-STS glue: the `mtasts` and `mtasts_dir` directives of the dane block,
// the policy manager's life cycle, and the replacement of maddy's own
// `mtasts` policy. docs/mtasts.md is the admin's reference.

// stsSettings holds the MTA-STS directives of one dane block.
type stsSettings struct {
	enabled bool
	dir     string
}

// stsState is what a running Policy keeps for MTA-STS.
type stsState struct {
	mgr      *mtastsfallback.Manager
	dir      string
	release  func()
	stopOnce sync.Once
}

// declareMTASTS registers the MTA-STS directives; call before Process.
func declareMTASTS(cfg *config.Map, s *stsSettings) {
	cfg.Bool("mtasts", false, true, &s.enabled)
	cfg.String("mtasts_dir", false, false, "", &s.dir)
}

// defaultSTSDir is <maddy state_dir>/daneguard/mtasts.
func defaultSTSDir() (string, error) {
	if config.StateDirectory == "" {
		return "", errors.New("maddy's state directory is not known; set mtasts_dir")
	}
	return filepath.Join(config.StateDirectory, "daneguard", "mtasts"), nil
}

// startMTASTS builds the MTA-STS manager for p (after p.eng exists), hands
// it to the engine and starts its background refresh. roots are the
// configured WebPKI roots (nil: the system's), used both for the policy
// host (RFC 8461 §3.3) and for MX certificates (§4.2, in the engine).
func (p *Policy) startMTASTS(s stsSettings, roots *x509.CertPool) error {
	if !s.enabled {
		p.log.DebugMsg("MTA-STS disabled (mtasts off)")
		return nil
	}
	dir := s.dir
	var store mtastsfallback.Store
	release := func() {}
	if dir == "" {
		var err error
		if dir, err = defaultSTSDir(); err != nil {
			// Only outside `maddy run` (maddy always sets its state
			// directory): keep policies in memory.
			p.log.Msg("MTA-STS policies are kept in memory only", "reason", err.Error())
			dir = ""
		}
	}
	if dir != "" && module.NoRun {
		// verify-config and the checker: check the directory but write
		// nothing (run as root, a directory created here would lock the
		// server out of it).
		if err := checkStoreDir(dir); err != nil {
			return fmt.Errorf("%s: mtasts_dir: %w", ModuleName, err)
		}
		dir = ""
	}
	if dir != "" {
		st, rel, err := sharedStore(dir, p.log)
		if err != nil {
			return fmt.Errorf("%s: mtasts_dir: %w", ModuleName, err)
		}
		store, release = st, rel
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second}
	mgr, err := mtastsfallback.NewManager(mtastsfallback.Config{
		LookupTXT: p.eng.LookupTXT, // shares the engine's TTL-exact DNS cache
		Fetcher: &mtastsfallback.Fetcher{
			RootCAs: roots,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				stsFetchAttempts.Inc()
				return dialer.DialContext(ctx, network, addr)
			},
		},
		Store:      store,
		IsNotFound: func(err error) bool { return errors.Is(err, policycache.ErrNotFound) },
		Logger:     slog.New(&maddySlog{l: p.log}),
	})
	if err != nil {
		release()
		return fmt.Errorf("%s: %w", ModuleName, err)
	}
	p.sts = &stsState{mgr: mgr, dir: dir, release: release}
	p.eng.SetSTS(mgr)
	if module.NoRun {
		// verify-config and maddy's ctl commands: no background work.
		return nil
	}
	go mgr.Run(context.Background())
	p.log.DebugMsg("MTA-STS enabled", "mtasts_dir", dir)
	return nil
}

// stopMTASTS stops the background refresh and releases the store.
func (p *Policy) stopMTASTS() {
	if p.sts == nil {
		return
	}
	p.sts.stopOnce.Do(func() {
		_ = p.sts.mgr.Close()
		p.sts.release()
	})
}

// mxLevelSTS is maddy's MX level for a verdict that passed CheckMX: a
// DNSSEC-signed MX RRset is the stronger assurance (MX_DNSSEC >
// MX_MTASTS in maddy's order), else an enforce-mode MTA-STS policy that
// lists the host gives MX_MTASTS.
func mxLevelSTS(v *engine.Verdict) module.MXLevel {
	switch {
	case v.MXSecure:
		return module.MX_DNSSEC
	case v.STSMXMatched:
		return module.MX_MTASTS
	}
	return module.MXNone
}

// countSTS records the MTA-STS policy lookup a delivery made.
func countSTS(d *engine.Destination) {
	if d.STS == nil {
		return
	}
	stsPolicies.WithLabelValues(string(d.STS.Source), string(mtastsfallback.ReasonOf(d.STS.Err))).Inc()
}

// Stores are shared by the dane blocks of one process that use the same
// directory: a policycache.Store directory must have a single owner.
var (
	storesMu sync.Mutex
	stores   = map[string]*sharedEntry{}
)

type sharedEntry struct {
	store *policycache.Store
	refs  int
}

func sharedStore(dir string, l log.Logger) (*policycache.Store, func(), error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, err
	}
	storesMu.Lock()
	defer storesMu.Unlock()
	e := stores[abs]
	if e == nil {
		st, err := policycache.OpenStore(abs, policycache.StoreOptions{
			OnCorrupt: func(key string, err error) {
				l.Msg("MTA-STS policy store: damaged entry removed", "key", key, "reason", err.Error())
			},
		})
		if err != nil {
			return nil, nil, err
		}
		if n, err := st.Prune(); err != nil {
			l.Error("MTA-STS policy store: pruning failed", err, "mtasts_dir", abs)
		} else if n > 0 {
			l.DebugMsg("MTA-STS policy store: expired entries removed", "count", n)
		}
		e = &sharedEntry{store: st}
		stores[abs] = e
	}
	e.refs++
	var once sync.Once
	return e.store, func() {
		once.Do(func() {
			storesMu.Lock()
			defer storesMu.Unlock()
			if e.refs--; e.refs == 0 {
				delete(stores, abs)
			}
		})
	}, nil
}

// maddySlog sends the MTA-STS manager's slog records to maddy's log under
// the daneguard logger: debug records only with debug on; warnings and
// errors (a cached policy that cannot be refreshed, RFC 8461 §10.2) are
// marked with a "level" field.
type maddySlog struct {
	l     log.Logger
	attrs []slog.Attr
	group string
}

func (h *maddySlog) Enabled(_ context.Context, lvl slog.Level) bool {
	return lvl > slog.LevelDebug || h.l.Debug
}

func (h *maddySlog) Handle(_ context.Context, r slog.Record) error {
	fields := make([]interface{}, 0, 2*(len(h.attrs)+r.NumAttrs()+1))
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

func (h *maddySlog) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &n
}

func (h *maddySlog) WithGroup(name string) slog.Handler {
	n := *h
	if n.group != "" {
		name = n.group + "." + name
	}
	n.group = name
	return &n
}

// maddy's own `mtasts` policy is replaced, in binaries that link daneguard,
// by a module that refuses to start: daneguard's dane block applies
// MTA-STS itself (mtasts on, the default), and maddy's policy would run
// first, answer an enforce-mode mismatch with a permanent 550 and fail
// DANE-authenticated connections that lack a WebPKI certificate.
// docs/mtasts.md ("Migrating from maddy's mtasts") explains the choice.
const stsModuleName = "mx_auth.mtasts"

func init() {
	// integration.go's import of the maddy root package guarantees that
	// maddy's own registration has run; replace it as for mx_auth.dane.
	maddyModulesLock.Lock()
	maddyModules[stsModuleName] = newSTSRefusal
	maddyModulesLock.Unlock()
}

type stsRefusal struct{ instName string }

func newSTSRefusal(_, instName string, _, _ []string) (module.Module, error) {
	return &stsRefusal{instName: instName}, nil
}

func (r *stsRefusal) Name() string         { return stsModuleName }
func (r *stsRefusal) InstanceName() string { return r.instName }

// Init always fails, with the error maddy prints at start-up next to the
// file and line of the block.
func (r *stsRefusal) Init(cfg *config.Map) error {
	cfg.AllowUnknown()
	_, _ = cfg.Process()
	return fmt.Errorf("mx_auth: the `mtasts { }` block is not supported in this maddy build: daneguard's `dane { }` block applies MTA-STS itself " +
		"(directive `mtasts`, on by default; policies are kept in `mtasts_dir`). Remove the `mtasts { }` block from mx_auth " +
		"(and its cache settings; see docs/mtasts.md, \"Migrating from maddy's mtasts\")")
}

// The remaining methods make the refusal a complete mx_auth policy, so that
// maddy's policy group accepts it before calling Init; they are never
// reached because Init fails.
func (r *stsRefusal) Start(*module.MsgMetadata) module.DeliveryMXAuthPolicy { return stsNoop{} }
func (r *stsRefusal) Close() error                                          { return nil }
func (r *stsRefusal) Weight() int                                           { return 10 }

type stsNoop struct{}

func (stsNoop) Reset(*module.MsgMetadata)             {}
func (stsNoop) PrepareDomain(context.Context, string) {}
func (stsNoop) PrepareConn(context.Context, string)   {}
func (stsNoop) CheckMX(_ context.Context, l module.MXLevel, _, _ string, _ bool) (module.MXLevel, error) {
	return l, nil
}
func (stsNoop) CheckConn(_ context.Context, _ module.MXLevel, l module.TLSLevel, _, _ string, _ tls.ConnectionState) (module.TLSLevel, error) {
	return l, nil
}

// checkStoreDir reports what would stop the server from using dir as its
// store directory, without creating it: a file in its place, or a
// directory that cannot be read.
func checkStoreDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // created at the server's first start
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	_, err = os.ReadDir(dir)
	return err
}
