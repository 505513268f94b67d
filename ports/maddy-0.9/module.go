package daneguard

import (
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/foxcpp/maddy/framework/config"
	modconfig "github.com/foxcpp/maddy/framework/config/module"
	"github.com/foxcpp/maddy/framework/container"
	"github.com/foxcpp/maddy/framework/exterrors"
	"github.com/foxcpp/maddy/framework/log"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/maddyconf"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// ModuleName is the name maddy knows the policy by. target.remote only runs
// the mx_auth children it knows by name; see integration.go.
const ModuleName = "mx_auth.dane"

// Policy is the module instance: one per `dane { }` block. maddy 0.9
// configures it (Configure: parsing only, nothing opened), starts it with
// the server (Start: stores and background work) and stops it (Stop).
type Policy struct {
	instName string
	probe    bool
	log      *log.Logger
	stateDir string

	settings service.Settings
	deps     service.Deps // without Log
	table    module.Table

	svc atomic.Pointer[service.Service] // set by Start
}

// New is the module factory registered under ModuleName. c is the
// container being configured (for an inline block: container.Global).
func New(c *container.C, _, instName string) (module.Module, error) {
	p := &Policy{instName: instName, probe: probing.Load()}
	if c != nil {
		p.stateDir = c.Config.StateDirectory
		if c.DefaultLogger != nil {
			// c.DefaultLogger has no name, so lines read "daneguard: ...",
			// as in the maddy 0.8 build.
			p.log = c.DefaultLogger.Sublogger("daneguard")
		}
	}
	if p.log == nil {
		p.log = log.DefaultLogger.Sublogger("daneguard")
	}
	return p, nil
}

func (p *Policy) Name() string         { return ModuleName }
func (p *Policy) InstanceName() string { return p.instName }

// Weight orders policies in maddy versions that sort them; dane runs after
// MTA-STS policies and before local_policy, like maddy's own.
func (p *Policy) Weight() int { return 10 }

// Configure parses the `dane { }` block (docs/configuration.md). It opens
// nothing and starts nothing: `maddy verify-config` configures without
// starting, and on a configuration reload the new block is configured
// while the old one still runs.
func (p *Policy) Configure(inlineArgs []string, cfg *config.Map) error {
	if len(inlineArgs) != 0 {
		return fmt.Errorf("%s: inline arguments are not used", ModuleName)
	}
	if p.probe {
		// The start-up self-check (integration.go) only needs to see which
		// object target.remote keeps.
		_, err := cfg.Process()
		return err
	}
	if err := integrationError(); err != nil {
		return err
	}
	s := service.DefaultSettings()
	s.Debug = p.log.IsDebug()
	if g, ok := cfg.Globals["debug"].(bool); ok {
		s.Debug = g // `debug` is inherited from the global directive
	}
	maddyconf.Declare(cfg, service.Directives, &s)
	modconfig.Table(cfg, "policy_table", false, false, nil, &p.table)
	var submit tlsrpt.SubmitFunc
	cfg.Callback("tlsrpt", func(m *config.Map, n config.Node) error {
		if s.TLSRPT != nil {
			return config.NodeErr(n, "duplicate tlsrpt block")
		}
		t, tgt, err := maddyconf.ParseTLSRPT(m, n, p.stateDir)
		if tgt != nil {
			submit = maddyconf.SubmitVia(tgt.StartDelivery)
		}
		s.TLSRPT = t
		return err
	})
	if _, err := cfg.Process(); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return config.NodeErr(cfg.Block, "%v", err)
	}
	p.settings = s
	p.deps = service.Deps{Instance: p.instName, SubmitReport: submit, StateDir: p.stateDir}
	p.deps.SetMaddyGlobals(cfg.Globals)
	if p.table != nil {
		p.deps.PolicyTable = p.table.Lookup
	}
	// What service.New checks beyond the settings (resolver addresses, the
	// MTA-STS directory) is checked here too, so that verify-config
	// reports it: a configuration-only service opens and starts nothing.
	check := p.deps
	check.Log, check.NoRun = nopLog{}, true
	svc, err := service.New(s, check)
	if err != nil {
		return config.NodeErr(cfg.Block, "%v", err)
	}
	_ = svc.Close()
	trackInstance(p)
	return nil
}

// Start builds the service (stores, resolver, cache) and starts its
// background work. On error nothing is left running: maddy does not call
// Stop for a module whose Start failed.
func (p *Policy) Start() error {
	if p.probe {
		return nil
	}
	deps := p.deps
	deps.Log = maddyLog{l: p.log, debug: p.settings.Debug}
	svc, err := service.New(p.settings, deps)
	if err != nil {
		return fmt.Errorf("%s: %w", ModuleName, err)
	}
	if err := svc.Start(); err != nil {
		_ = svc.Close()
		return fmt.Errorf("%s: %w", ModuleName, err)
	}
	p.svc.Store(svc)
	return nil
}

// Stop stops the background work and releases the stores. A store shared
// with the dane block of a newer configuration (a reload) stays open for
// it; see internal/service/stores.go.
func (p *Policy) Stop() error {
	if svc := p.svc.Load(); svc != nil {
		return svc.Close()
	}
	return nil
}

// StartDelivery begins the policy's work for one message.
func (p *Policy) StartDelivery(meta *module.MsgMetadata) module.DeliveryMXAuthPolicy {
	return maddyconf.NewDelivery(p.svc.Load, notStarted, meta)
}

func notStarted() error {
	return exterrors.WithTemporary(fmt.Errorf("%s: policy not started", ModuleName), true)
}

// maddyLog is the service's Logger on a maddy 0.9 *log.Logger. debug is
// the block's `debug` setting: a `debug no` block stays quiet under a
// debug parent logger, as in the maddy 0.8 build.
type maddyLog struct {
	l     *log.Logger
	debug bool
}

func (m maddyLog) Msg(msg string, kv ...any)              { m.l.Msg(msg, kv...) }
func (m maddyLog) Error(msg string, err error, kv ...any) { m.l.Error(msg, err, kv...) }
func (m maddyLog) Debug() bool                            { return m.debug }

func (m maddyLog) DebugMsg(msg string, kv ...any) {
	if !m.debug {
		return
	}
	// maddy 0.9 prints debug lines when the logger or a parent has
	// debug on; the block's own setting decides here.
	l := *m.l
	l.Debug = true
	l.DebugMsg(msg, kv...)
}

func (m maddyLog) With(kv ...any) service.Logger {
	n := *m.l
	n.Fields = maps.Clone(m.l.Fields)
	if n.Fields == nil {
		n.Fields = map[string]interface{}{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if k, ok := kv[i].(string); ok {
			n.Fields[k] = kv[i+1]
		}
	}
	return maddyLog{l: &n, debug: m.debug}
}

// nopLog discards everything: the configuration-only service of Configure.
type nopLog struct{}

func (nopLog) Msg(string, ...any)          {}
func (nopLog) Error(string, error, ...any) {}
func (nopLog) DebugMsg(string, ...any)     {}
func (nopLog) Debug() bool                 { return false }
func (l nopLog) With(...any) service.Logger {
	return l
}

// Configured policy instances, in the order maddy configured them, for
// `maddy check --config`, which builds its own service from an instance's
// settings and policy table.
var (
	instancesMu sync.Mutex
	instances   []*Policy
)

func trackInstance(p *Policy) {
	instancesMu.Lock()
	instances = append(instances, p)
	instancesMu.Unlock()
}

// Instances returns the policy instances configured so far in this
// process.
func Instances() []*Policy {
	instancesMu.Lock()
	defer instancesMu.Unlock()
	return append([]*Policy(nil), instances...)
}

// Settings returns the validated settings of a configured instance.
func (p *Policy) Settings() service.Settings { return p.settings }

// PolicyTable returns the instance's policy_table lookup, nil without one.
func (p *Policy) PolicyTable() service.TableLookup {
	if p.table == nil {
		return nil
	}
	return p.table.Lookup
}

var (
	_ module.MXAuthPolicy      = (*Policy)(nil)
	_ container.LifetimeModule = (*Policy)(nil)
	_ module.MXAuthPolicy      = (*stsRefusal)(nil)
)
