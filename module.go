// Package daneguard is a security policy for maddy's target.remote that makes
// outbound SMTP downgrade-resistant: DANE (RFC 7672) first, MTA-STS
// (RFC 8461) where DANE does not apply, and per-destination requirements
// like Postfix's TLS policy table.
//
// Importing this package into a maddy binary replaces maddy's built-in
// "mx_auth.dane" module, so that this configuration runs it:
//
//	target.remote outbound_delivery {
//	    mx_auth {
//	        dane { ... }
//	        local_policy { min_tls_level encrypted }
//	    }
//	}
//
// This file is the maddy glue only: configuration, levels, errors and log
// lines. The decisions are made in internal/engine, dane, mtasts_fallback
// and policy_cache, none of which import maddy. See docs/ for the admin's
// reference and docs/integration.md for how the module reaches target.remote.
package daneguard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/foxcpp/maddy/framework/config"
	modconfig "github.com/foxcpp/maddy/framework/config/module"
	"github.com/foxcpp/maddy/framework/exterrors"
	"github.com/foxcpp/maddy/framework/log"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
)

// ModuleName is the name maddy knows the policy by. target.remote only runs
// the mx_auth children it knows by name; see integration.go.
const ModuleName = "mx_auth.dane"

// Policy is the module instance: one per `dane { }` block.
type Policy struct {
	instName string
	log      log.Logger
	probe    bool

	eng      *engine.Engine
	resolver *dane.Resolver
	inline   map[string]engine.DomainPolicy
	table    module.Table
	sts      *stsState // MTA-STS (module_mtasts.go); nil when off

	// TLS reporting (module_tlsrpt.go).
	rptCfg *TLSRPTConfig
	rpt    *reporter

	closeOnce sync.Once
	stopSweep context.CancelFunc // ends the cache sweeper (module_cache.go)
}

// New is the module factory registered under ModuleName.
func New(_, instName string, _, inlineArgs []string) (module.Module, error) {
	if len(inlineArgs) != 0 {
		return nil, fmt.Errorf("%s: inline arguments are not used", ModuleName)
	}
	return &Policy{
		instName: instName,
		log:      log.Logger{Name: "daneguard", Debug: log.DefaultLogger.Debug},
		probe:    probing.Load(),
	}, nil
}

func (p *Policy) Name() string         { return ModuleName }
func (p *Policy) InstanceName() string { return p.instName }

// Weight orders policies in maddy versions that sort them; dane runs after
// MTA-STS policies and before local_policy, like maddy's own.
func (p *Policy) Weight() int { return 10 }

// Init parses the `dane { }` block. Every directive is documented in
// docs/configuration.md.
func (p *Policy) Init(cfg *config.Map) error {
	if p.probe {
		// The start-up self-check (integration.go) only needs to see which
		// object target.remote keeps; it must not start anything.
		_, err := cfg.Process()
		return err
	}
	if err := integrationError(); err != nil {
		return err
	}

	var (
		servers      []string
		timeout      time.Duration
		trustRemote  bool
		defaultLevel engine.Level
		maxEntries   int
		maxTTL       time.Duration
		failMin      time.Duration
		failMax      time.Duration
		rootsPath    string
		stsCfg       stsSettings
	)
	p.inline = map[string]engine.DomainPolicy{}
	cfg.Bool("debug", true, log.DefaultLogger.Debug, &p.log.Debug)
	cfg.StringList("resolver", false, false, nil, &servers)
	cfg.Duration("resolver_timeout", false, false, 5*time.Second, &timeout)
	cfg.Bool("trust_remote_resolver", false, false, &trustRemote)
	cfg.Custom("default_level", false, false, func() (interface{}, error) {
		return engine.LevelDANE, nil
	}, func(_ *config.Map, n config.Node) (interface{}, error) {
		if len(n.Args) != 1 {
			return nil, config.NodeErr(n, "usage: default_level LEVEL")
		}
		lvl, err := engine.ParseLevel(n.Args[0])
		if err != nil {
			return nil, config.NodeErr(n, "%v", err)
		}
		if lvl == engine.LevelFingerprint {
			return nil, config.NodeErr(n, "fingerprint needs per-domain pins; use it in policy entries only")
		}
		return lvl, nil
	}, &defaultLevel)
	cfg.Callback("policy", func(_ *config.Map, n config.Node) error {
		return p.addInlinePolicy(n)
	})
	modconfig.Table(cfg, "policy_table", false, false, nil, &p.table)
	cfg.Int("cache_max_entries", false, false, 100000, &maxEntries)
	boundedDuration(cfg, "cache_max_ttl", time.Hour, time.Second, 24*time.Hour, &maxTTL)
	// RFC 9520 §3.2: failures are cached for at least 1 s, at most 5 min.
	boundedDuration(cfg, "cache_failure_min", time.Second, time.Second, 5*time.Minute, &failMin)
	boundedDuration(cfg, "cache_failure_max", 5*time.Minute, time.Second, 5*time.Minute, &failMax)
	cfg.String("roots", false, false, "", &rootsPath)
	declareMTASTS(cfg, &stsCfg)
	cfg.Callback("tlsrpt", p.parseTLSRPT)
	if _, err := cfg.Process(); err != nil {
		return err
	}

	lvl := defaultLevel
	if maxEntries < 1 {
		return fmt.Errorf("%s: cache_max_entries must be at least 1", ModuleName)
	}
	if failMin > failMax {
		return fmt.Errorf("%s: cache_failure_min (%v) is larger than cache_failure_max (%v)", ModuleName, failMin, failMax)
	}
	var err error

	p.resolver, err = dane.NewResolver(dane.ResolverConfig{Servers: servers, Timeout: timeout, TrustRemote: trustRemote})
	if err != nil {
		return fmt.Errorf("%s: %w", ModuleName, err)
	}
	if bad := p.resolver.UntrustedServers(); len(bad) != 0 {
		p.log.Msg("WARNING: resolvers not on loopback are not trusted for DNSSEC; DANE will never apply until a local validating resolver is used (or trust_remote_resolver is set)",
			"untrusted_resolvers", strings.Join(bad, ","))
	}

	var roots *x509.CertPool
	if rootsPath != "" {
		pem, err := os.ReadFile(rootsPath)
		if err != nil {
			return fmt.Errorf("%s: roots: %w", ModuleName, err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: roots: no PEM certificates in %s", ModuleName, rootsPath)
		}
	}

	p.eng, err = engine.New(engine.Config{
		Querier:      p.resolver,
		DefaultLevel: lvl,
		Policies:     p.lookupPolicy,
		Roots:        roots,
		OnQuery:      p.debugQuery,
		Cache: policycache.Config{
			MaxEntries:    maxEntries,
			MaxTTL:        maxTTL,
			MinFailureTTL: failMin,
			MaxFailureTTL: failMax,
		},
	})
	if err != nil {
		return fmt.Errorf("%s: %w", ModuleName, err)
	}
	if err := p.startMTASTS(stsCfg, roots); err != nil {
		return err
	}
	registerMetrics(p)
	p.startCacheSweeper()
	if err := p.startTLSRPT(); err != nil {
		return err
	}
	trackInstance(p)
	p.log.DebugMsg("initialized", "resolvers", strings.Join(p.resolver.Servers(), ","), "default_level", string(lvl))
	return nil
}

// addInlinePolicy handles `policy DOMAIN LEVEL [pins...]`.
func (p *Policy) addInlinePolicy(n config.Node) error {
	if len(n.Args) < 2 {
		return config.NodeErr(n, "usage: policy DOMAIN LEVEL [fingerprints...]")
	}
	raw := strings.ToLower(strings.TrimSuffix(n.Args[0], "."))
	if err := checkPolicyKey(raw); err != nil {
		return config.NodeErr(n, "policy %s: %v", n.Args[0], err)
	}
	// Keys are stored as the engine looks them up: A-labels for
	// internationalized names, so either form may be written.
	key := engine.CanonicalDomain(strings.TrimPrefix(raw, "."))
	if strings.HasPrefix(raw, ".") {
		key = "." + key
	}
	pol, err := engine.ParsePolicySpec(strings.Join(n.Args[1:], " "))
	if err != nil {
		return config.NodeErr(n, "policy %s: %v", n.Args[0], err)
	}
	if _, dup := p.inline[key]; dup {
		return config.NodeErr(n, "duplicate policy for %s", key)
	}
	pol.Source, pol.Key = "inline", key
	p.inline[key] = pol
	return nil
}

// lookupPolicy finds the policy for domain: the exact domain first, then
// ".parent" entries from the closest parent up; inline entries win over the
// table at each step.
func (p *Policy) lookupPolicy(ctx context.Context, domain string) (engine.DomainPolicy, bool, error) {
	ctx, cancel := policyTableContext(ctx)
	defer cancel()
	for _, key := range policyKeys(domain) {
		if pol, ok := p.inline[key]; ok {
			return pol, true, nil
		}
		if p.table == nil {
			continue
		}
		val, ok, err := p.table.Lookup(ctx, key)
		if err != nil {
			return engine.DomainPolicy{}, false, fmt.Errorf("policy_table lookup of %q: %w", key, err)
		}
		if !ok {
			continue
		}
		pol, err := engine.ParsePolicySpec(val)
		if err != nil {
			// A malformed entry never weakens the policy: defer.
			return engine.DomainPolicy{}, false, fmt.Errorf("policy_table entry %q: %w", key, err)
		}
		pol.Source, pol.Key = "table", key
		return pol, true, nil
	}
	return engine.DomainPolicy{}, false, nil
}

// policyKeys lists the keys tried for domain, most specific first: for
// "mx.example.org" they are "mx.example.org", ".example.org" and ".org".
// A ".parent" key applies to every domain below parent, never to parent
// itself (Postfix's convention).
func policyKeys(domain string) []string {
	keys := []string{domain}
	rest := domain
	for {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			break
		}
		rest = rest[i+1:]
		keys = append(keys, "."+rest)
	}
	return keys
}

// Close releases the module's resources at shutdown.
func (p *Policy) Close() error {
	p.closeOnce.Do(func() {
		if p.stopSweep != nil {
			p.stopSweep()
		}
		p.stopMTASTS()
		p.stopTLSRPT()
	})
	return nil
}

// Start begins the policy's work for one message.
func (p *Policy) Start(meta *module.MsgMetadata) module.DeliveryMXAuthPolicy {
	d := &delivery{p: p, dests: map[string]*engine.Destination{}}
	d.Reset(meta)
	return d
}

// delivery is the per-message state: one engine.Destination per next-hop
// domain the message goes to.
type delivery struct {
	p     *Policy
	msgID string
	mu    sync.Mutex
	dests map[string]*engine.Destination
}

func (d *delivery) Reset(meta *module.MsgMetadata) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dests = map[string]*engine.Destination{}
	d.msgID = ""
	if meta != nil {
		d.msgID = meta.ID
	}
}

func (d *delivery) dest(ctx context.Context, domain string) *engine.Destination {
	key := engine.CanonicalDomain(domain)
	d.mu.Lock()
	dst, ok := d.dests[key]
	d.mu.Unlock()
	if ok {
		return dst
	}
	start := time.Now()
	dst = d.p.eng.Destination(ctx, key)
	observeLookup(stageDestination, start)
	countSTS(dst)
	d.p.debugDestination(d.msgID, dst)
	d.mu.Lock()
	d.dests[key] = dst
	d.mu.Unlock()
	return dst
}

// PrepareDomain resolves the domain's policy and MX RRset (cached).
func (d *delivery) PrepareDomain(ctx context.Context, domain string) {
	if d.p.eng == nil {
		return
	}
	d.dest(ctx, domain)
}

// PrepareConn does nothing: target.remote calls it after CheckMX for the
// same host, whose lookups are then already done and cached.
func (d *delivery) PrepareConn(ctx context.Context, mx string) {}

// CheckMX vets an MX host before maddy connects to it.
func (d *delivery) CheckMX(ctx context.Context, mxLevel module.MXLevel, domain, mx string, dnssec bool) (module.MXLevel, error) {
	if d.p.eng == nil {
		return module.MXNone, notInitialized()
	}
	dst := d.dest(ctx, domain)
	start := time.Now()
	v := d.p.eng.CheckMX(ctx, dst, mx)
	observeLookup(stageMX, start)
	if !v.OK() {
		d.p.logVerdict(d.msgID, v, "mx")
		if d.p.reportBypass(d.msgID, v) {
			return module.MXNone, nil
		}
		return module.MXNone, smtpError(v)
	}
	d.p.debugMX(d.msgID, v)
	// Lets local_policy { min_mx_level dnssec|mtasts } work.
	return mxLevelSTS(v), nil
}

// CheckConn decides whether the established connection may carry the
// message.
func (d *delivery) CheckConn(ctx context.Context, mxLevel module.MXLevel, tlsLevel module.TLSLevel, domain, mx string, st tls.ConnectionState) (module.TLSLevel, error) {
	if d.p.eng == nil {
		return module.TLSNone, notInitialized()
	}
	dst := d.dest(ctx, domain)
	start := time.Now()
	v := d.p.eng.CheckConn(ctx, dst, mx, st)
	observeLookup(stageConn, start)
	d.p.logVerdict(d.msgID, v, "conn")
	if !v.OK() {
		if d.p.reportBypass(d.msgID, v) {
			return module.TLSNone, nil
		}
		return module.TLSNone, smtpError(v)
	}
	if v.Result == engine.Authenticated {
		return module.TLSAuthenticated, nil
	}
	return module.TLSNone, nil
}

func notInitialized() error {
	return exterrors.WithTemporary(fmt.Errorf("%s: policy not initialized", ModuleName), true)
}

// smtpError turns a Deferred verdict into the error target.remote returns.
// Every such error is temporary (4xx): the message stays queued.
func smtpError(v *engine.Verdict) error {
	return &exterrors.SMTPError{
		Code:         v.Code,
		EnhancedCode: exterrors.EnhancedCode(v.EnhancedCode),
		Message:      v.Message,
		TargetName:   "remote",
		// maddy v0.8.2 wraps the last MX error into "No usable MXs, last
		// err: <this text>" and replaces its enhanced code with 5.4.0 (while
		// keeping 451), so the text carries our enhanced code for the
		// sender. See docs/verdicts.md.
		Reason: fmt.Sprintf("%d.%d.%d %s: %s", v.EnhancedCode[0], v.EnhancedCode[1], v.EnhancedCode[2], v.Reason, v.Message),
		Misc: map[string]interface{}{
			"domain":  v.Domain,
			"mx":      v.MX,
			"verdict": string(v.Result),
		},
	}
}

// logVerdict writes the one log line per verdict described in
// docs/logging.md. stage is "mx" (refused before connecting) or "conn".
func (p *Policy) logVerdict(msgID string, v *engine.Verdict, stage string) {
	verdictCount(v)
	fields := []interface{}{
		"domain", v.Domain,
		"mx", v.MX,
		"mx_secure", v.MXSecure,
		"level", string(v.Level),
		"verdict", string(v.Result),
		"reason", string(v.Reason),
		"mechanism", string(v.Mechanism),
		"stage", stage,
	}
	if msgID != "" {
		fields = append(fields, "msg_id", msgID)
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
	p.log.Msg("verdict", fields...)
	p.recordTLSRPT(msgID, v)
}

// boundedDuration declares a duration directive whose value must lie in
// [lo, hi]; a value outside is an error naming the file and line.
func boundedDuration(cfg *config.Map, name string, def, lo, hi time.Duration, store *time.Duration) {
	cfg.Custom(name, false, false, func() (interface{}, error) {
		return def, nil
	}, func(_ *config.Map, n config.Node) (interface{}, error) {
		if len(n.Args) != 1 {
			return nil, config.NodeErr(n, "usage: %s DURATION", name)
		}
		d, err := time.ParseDuration(n.Args[0])
		if err != nil {
			return nil, config.NodeErr(n, "%s: %v", name, err)
		}
		if d < lo || d > hi {
			return nil, config.NodeErr(n, "%s must be between %v and %v", name, lo, hi)
		}
		return d, nil
	}, store)
}
