package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/maddy-dane/daneguard/fleet"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/prometheus/client_golang/prometheus"
)

// The `store redis://... { ... }` directive: a shared store for a fleet
// of nodes (docs/fleet.md). Without it nothing here runs and the service
// behaves as on a single node.

// StoreSettings is the store block.
type StoreSettings struct {
	// URL is the store URL as written, without a password: the value of
	// the metrics' store label and of log lines.
	URL string
	// Redis are the connection settings.
	Redis fleet.Settings
	// ClaimTTL is the lifetime of a report's claim (claim_ttl): how long
	// a report can be delayed by a node that died while sending it.
	ClaimTTL time.Duration

	tlsOff      bool // `tls off` was written
	urlPassword bool // the URL carried a password
}

// Bounds of claim_ttl: renewed every third of its lifetime, the claim must
// outlive a slow round trip; a dead sender must not hold a report for
// long.
const (
	minClaimTTL     = 3 * time.Second
	maxClaimTTL     = 10 * time.Minute
	defaultClaimTTL = time.Minute
)

// storeDirective is `store URL { ... }` in the dane block.
var storeDirective = StoreDirective("store", func(s *Settings) **StoreSettings { return &s.Store })

func init() { Directives = append(Directives, storeDirective) }

// StoreDirective is the directive `name URL { ... }` of a block whose
// settings T keep a *StoreSettings at field: the dane block's `store`,
// the receiver's `shared_store`. One syntax, one settings type, one
// parser for both.
func StoreDirective[T any](name string, field func(*T) **StoreSettings) Directive[T] {
	block := make([]Directive[T], len(storeBlock))
	for i, d := range storeBlock {
		set := d.Set
		block[i] = Directive[T]{Name: d.Name, Set: func(s *T, a []string) error { return set(*field(s), a) }}
	}
	return Directive[T]{
		Name: name,
		Set: func(s *T, a []string) error {
			if len(a) != 1 {
				return fmt.Errorf("usage: %s redis://[user[:password]@]host[:port][/db] { ... }", name)
			}
			rs, err := fleet.Parse(a[0])
			if err != nil {
				return err
			}
			*field(s) = &StoreSettings{Redis: rs, URL: redactURL(a[0]), ClaimTTL: defaultClaimTTL, urlPassword: rs.Password != ""}
			return nil
		},
		Block: block,
		Done:  func(s *T) error { return (*field(s)).check() },
	}
}

// check validates the block as a whole.
func (st *StoreSettings) check() error {
	if st.tlsOff && st.Redis.TLS != nil {
		return errors.New("tls off contradicts a rediss:// URL, tls_ca or tls_client_cert")
	}
	return st.Redis.Validate()
}

// storeBlock are the directives of the store block.
var storeBlock = []Directive[StoreSettings]{
	{Name: "password", Set: func(s *StoreSettings, a []string) error {
		if s.urlPassword {
			return errors.New("password is already in the store URL")
		}
		return setString(&s.Redis.Password, a)
	}},
	{Name: "tls", Set: func(s *StoreSettings, a []string) error {
		on := false
		if err := setBool(&on, a); err != nil {
			return err
		}
		if on {
			s.Redis.EnableTLS()
		}
		s.tlsOff = !on
		return nil
	}},
	{Name: "tls_ca", Set: func(s *StoreSettings, a []string) error {
		if len(a) != 1 {
			return errors.New("usage: tls_ca FILE")
		}
		return s.Redis.LoadCA(a[0])
	}},
	{Name: "tls_client_cert", Set: func(s *StoreSettings, a []string) error {
		if len(a) != 2 {
			return errors.New("usage: tls_client_cert CERT_FILE KEY_FILE")
		}
		return s.Redis.LoadClientCert(a[0], a[1])
	}},
	{Name: "dial_timeout", Set: storeDuration("dial_timeout", fleet.MaxTimeout, func(s *StoreSettings) *time.Duration { return &s.Redis.DialTimeout })},
	{Name: "read_timeout", Set: storeDuration("read_timeout", fleet.MaxTimeout, func(s *StoreSettings) *time.Duration { return &s.Redis.ReadTimeout })},
	{Name: "write_timeout", Set: storeDuration("write_timeout", fleet.MaxTimeout, func(s *StoreSettings) *time.Duration { return &s.Redis.WriteTimeout })},
	{Name: "retry_down", Set: storeDuration("retry_down", time.Minute, func(s *StoreSettings) *time.Duration { return &s.Redis.RetryDown })},
	{Name: "claim_ttl", Set: func(s *StoreSettings, a []string) error {
		if err := setDuration(&s.ClaimTTL, a); err != nil {
			return err
		}
		if s.ClaimTTL < minClaimTTL || s.ClaimTTL > maxClaimTTL {
			return fmt.Errorf("claim_ttl must be between %v and %v", minClaimTTL, maxClaimTTL)
		}
		return nil
	}},
	{Name: "key_prefix", Set: func(s *StoreSettings, a []string) error { return setString(&s.Redis.KeyPrefix, a) }},
}

// storeDuration is a duration directive of the store block in (0, max].
func storeDuration(name string, max time.Duration, field func(*StoreSettings) *time.Duration) func(*StoreSettings, []string) error {
	return func(s *StoreSettings, a []string) error {
		d := field(s)
		if err := setDuration(d, a); err != nil {
			return err
		}
		if *d <= 0 || *d > max {
			return fmt.Errorf("%s must be more than 0s and at most %v", name, max)
		}
		return nil
	}
}

// redactURL drops the password of a store URL.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		user, _, _ := strings.Cut(rest[:at], ":")
		if user != "" {
			user += "@"
		}
		rest = user + rest[at+1:]
	}
	return scheme + "://" + rest
}

// What the dane blocks of one process share. A block's store is
// identified by its connection settings (storeKey): blocks that name the
// same store share one client, one set of metrics (labelled
// store="<URL>"), and, per local directory, one layered MTA-STS store and
// one TLS-RPT push loop. Each user holds a reference; the last release
// stops the loops and closes the client. Metrics stay registered for the
// life of the process.
var (
	fleetMu      sync.Mutex
	fleetClients = map[string]*fleetClient{}
	fleetMetrics = map[string]*fleet.Metrics{}
	fleetSTS     = map[string]*fleetLayer{}   // by mtasts dir
	fleetRpt     = map[string]*fleetReports{} // by tlsrpt store path
	dirStores    = map[string]*dirBinding{}   // "sts:"/"rpt:" + dir
)

type fleetClient struct {
	key  string
	c    *fleet.Client
	m    *fleet.Metrics
	refs int
}

type fleetLayer struct {
	l      *fleet.LayeredPolicies
	shared *fleet.SharedPolicies
	refs   int
	cancel context.CancelFunc // nil until started
}

type fleetReports struct {
	sr     *fleet.SharedReports
	refs   int
	cancel context.CancelFunc
}

type dirBinding struct {
	store string // storeKey, "" for none
	refs  int
}

// storeKey identifies a store's connection settings.
func storeKey(st *StoreSettings) string {
	if st == nil {
		return ""
	}
	r := st.Redis
	return fmt.Sprintf("%s|%d|%s|%s|%s|%v|%v|%v|%v|%v", r.Addr, r.DB, r.Username, r.Password, r.KeyPrefix,
		r.TLS != nil, r.DialTimeout, r.ReadTimeout, r.WriteTimeout, r.RetryDown)
}

// fleetState is one service's part in the shared store.
type fleetState struct {
	client *fleetClient
	layer  *fleetLayer   // nil: MTA-STS not shared
	rpt    *fleetReports // nil: reports not shared
}

// bindDir records that a block uses dir with the store key; blocks that
// share a directory must share the store too (the directory is one
// node's journal of that store).
func bindDir(kind, dir, key string) (func(), error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	id := kind + ":" + abs
	fleetMu.Lock()
	defer fleetMu.Unlock()
	b := dirStores[id]
	if b == nil {
		b = &dirBinding{store: key}
		dirStores[id] = b
	} else if b.store != key {
		return nil, fmt.Errorf("%s is used by another dane block with different store settings; blocks that share a directory must use the same store (or none)", abs)
	}
	b.refs++
	var once sync.Once
	return func() {
		once.Do(func() {
			fleetMu.Lock()
			defer fleetMu.Unlock()
			if b.refs--; b.refs == 0 {
				delete(dirStores, id)
			}
		})
	}, nil
}

// openFleet opens (or shares) the store client. With Deps.NoRun nothing
// is opened: verify-config and the checker touch no shared state.
func (s *Service) openFleet() error {
	st := s.settings.Store
	if st == nil || s.deps.NoRun {
		return nil
	}
	e, release, err := acquireFleetClient(st)
	if err != nil {
		return err
	}
	s.fleet = &fleetState{client: e}
	s.releases = append(s.releases, release)
	s.log.Msg("shared store configured", "store", st.URL)
	return nil
}

// acquireFleetClient returns the client of the store st, shared by every
// block (dane blocks, receivers) naming the same store, and registers the
// store's metrics on first use; release drops the reference and closes
// the client with the last one.
func acquireFleetClient(st *StoreSettings) (*fleetClient, func(), error) {
	key := storeKey(st)
	fleetMu.Lock()
	defer fleetMu.Unlock()
	e := fleetClients[key]
	if e == nil {
		m := fleetMetrics[st.URL]
		if m == nil {
			m = fleet.NewMetrics("maddy")
			reg := prometheus.WrapRegistererWith(prometheus.Labels{"store": st.URL}, prometheus.DefaultRegisterer)
			for _, c := range m.Collectors() {
				if err := reg.Register(c); err != nil {
					return nil, nil, fmt.Errorf("registering the store metrics: %w", err)
				}
			}
			fleetMetrics[st.URL] = m
		}
		c, err := fleet.Open(st.Redis, m)
		if err != nil {
			return nil, nil, err
		}
		e = &fleetClient{key: key, c: c, m: m}
		fleetClients[key] = e
	}
	e.refs++
	var once sync.Once
	return e, func() {
		once.Do(func() {
			fleetMu.Lock()
			defer fleetMu.Unlock()
			if e.refs--; e.refs == 0 {
				delete(fleetClients, key)
				_ = e.c.Close()
			}
		})
	}, nil
}

func (s *Service) slog() *slog.Logger { return slog.New(&slogHandler{l: s.log}) }

// fleetPolicies layers the local MTA-STS store of dir under the shared
// one; it returns local unchanged without a store.
func (s *Service) fleetPolicies(dir string, local mtastsfallback.Store) (mtastsfallback.Store, *fleet.SharedPolicies, error) {
	release, err := bindDir("sts", dir, storeKey(s.settings.Store))
	if err != nil {
		return nil, nil, err
	}
	s.releases = append(s.releases, release)
	if s.fleet == nil {
		return local, nil, nil
	}
	abs, _ := filepath.Abs(dir)
	fleetMu.Lock()
	defer fleetMu.Unlock()
	e := fleetSTS[abs]
	if e == nil {
		sh := fleet.NewSharedPolicies(s.fleet.client.c)
		e = &fleetLayer{shared: sh, l: fleet.NewLayeredPolicies(local, sh, s.fleet.client.m, s.slog())}
		fleetSTS[abs] = e
	}
	e.refs++
	s.fleet.layer = e
	s.releases = append(s.releases, func() {
		fleetMu.Lock()
		defer fleetMu.Unlock()
		if e.refs--; e.refs == 0 {
			if e.cancel != nil {
				e.cancel()
			}
			delete(fleetSTS, abs)
		}
	})
	return e.l, e.shared, nil
}

// fleetReports returns the shared reports of the TLS-RPT store in dir, nil
// without a store.
func (s *Service) fleetReports(c *TLSRPTSettings, local *tlsrpt.Store) (*fleet.SharedReports, error) {
	release, err := bindDir("rpt", c.Dir, storeKey(s.settings.Store))
	if err != nil {
		return nil, err
	}
	s.releases = append(s.releases, release)
	if s.fleet == nil {
		return nil, nil
	}
	path := TLSRPTStorePath(c.Dir)
	fleetMu.Lock()
	defer fleetMu.Unlock()
	e := fleetRpt[path]
	if e == nil {
		sr, err := fleet.NewSharedReports(s.fleet.client.c, fleet.ReportsConfig{
			Local:      local,
			NodeIDFile: filepath.Join(c.Dir, "fleet-node-id"),
			KeepDays:   c.KeepDays,
			ClaimTTL:   s.settings.Store.ClaimTTL,
			Metrics:    s.fleet.client.m,
			Log:        s.slog(),
			Now:        reportNow,
		})
		if err != nil {
			return nil, err
		}
		e = &fleetReports{sr: sr}
		fleetRpt[path] = e
	}
	e.refs++
	s.fleet.rpt = e
	s.releases = append(s.releases, func() {
		fleetMu.Lock()
		e.refs--
		last := e.refs == 0
		if last {
			if e.cancel != nil {
				e.cancel()
			}
			delete(fleetRpt, path)
		}
		fleetMu.Unlock()
		if last {
			// One last push; what does not make it stays in the local
			// store (the journal) for the next start.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = e.sr.Flush(ctx)
			cancel()
		}
	})
	return e.sr, nil
}

// fleetPushInterval bounds how often sessions are pushed to the shared
// store; fleetRepairInterval is how often MTA-STS policies written while
// it was down are written back.
const (
	fleetPushInterval   = time.Second
	fleetRepairInterval = 30 * time.Second
)

// startFleet starts the loops of the shared store, once per shared entry
// (the first service to start runs them; the last release stops them).
func (s *Service) startFleet() {
	if s.fleet == nil {
		return
	}
	fleetMu.Lock()
	defer fleetMu.Unlock()
	if e := s.fleet.layer; e != nil && e.cancel == nil {
		ctx, cancel := context.WithCancel(context.Background())
		e.cancel = cancel
		go e.l.Run(ctx, fleetRepairInterval)
	}
	if e := s.fleet.rpt; e != nil && e.cancel == nil {
		ctx, cancel := context.WithCancel(context.Background())
		e.cancel = cancel
		go e.sr.Run(ctx, fleetPushInterval)
	}
}

// reportNow is the clock of the TLS report sender and of the shared
// reports; nil means time.Now. Only a test build (build tag
// daneguard_testclock, testclock.go) sets it.
var reportNow func() time.Time
