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
// This package is the maddy v0.8 glue and nothing else: this file parses
// the block into service.Settings, runs the service's life cycle and
// translates verdicts into maddy's MX/TLS levels and SMTP errors;
// integration.go does the registry work. Construction, per-delivery state,
// logs, metrics and reports are package internal/service, the decisions
// package internal/engine; neither imports maddy. See docs/integration.md.
package daneguard

import (
	"fmt"
	"maps"

	"github.com/foxcpp/maddy/framework/config"
	modconfig "github.com/foxcpp/maddy/framework/config/module"
	"github.com/foxcpp/maddy/framework/exterrors"
	"github.com/foxcpp/maddy/framework/hooks"
	"github.com/foxcpp/maddy/framework/log"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/maddyconf"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// ModuleName is the name maddy knows the policy by. target.remote only runs
// the mx_auth children it knows by name; see integration.go.
const ModuleName = "mx_auth.dane"

// Policy is the module instance: one per `dane { }` block.
type Policy struct {
	instName string
	probe    bool
	svc      *service.Service
	table    module.Table
}

// New is the module factory registered under ModuleName.
func New(_, instName string, _, inlineArgs []string) (module.Module, error) {
	if len(inlineArgs) != 0 {
		return nil, fmt.Errorf("%s: inline arguments are not used", ModuleName)
	}
	return &Policy{instName: instName, probe: probing.Load()}, nil
}

func (p *Policy) Name() string         { return ModuleName }
func (p *Policy) InstanceName() string { return p.instName }

// Weight orders policies in maddy versions that sort them; dane runs after
// MTA-STS policies and before local_policy, like maddy's own.
func (p *Policy) Weight() int { return 10 }

// Init parses the `dane { }` block and starts the service. Every directive
// is documented in docs/configuration.md.
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
	s := service.DefaultSettings()
	s.Debug = log.DefaultLogger.Debug
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
		t, tgt, err := maddyconf.ParseTLSRPT(m, n, config.StateDirectory)
		if tgt != nil {
			submit = maddyconf.SubmitVia(tgt.Start)
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

	lg := maddyLog{log.Logger{Name: "daneguard", Debug: s.Debug}}
	deps := service.Deps{Log: lg, Instance: p.instName, SubmitReport: submit, StateDir: config.StateDirectory, NoRun: module.NoRun}
	// What maddy tells a module of its server, for the self-check (an
	// endpoint's own tls directive is not among it: selfcheck_cert).
	deps.SetMaddyGlobals(cfg.Globals)
	if p.table != nil {
		deps.PolicyTable = p.table.Lookup
	}
	svc, err := service.New(s, deps)
	if err != nil {
		return fmt.Errorf("%s: %w", ModuleName, err)
	}
	if err := svc.Start(); err != nil {
		_ = svc.Close()
		return fmt.Errorf("%s: %w", ModuleName, err)
	}
	// maddy does not close mx_auth policies at shutdown; the hook does.
	hooks.AddHook(hooks.EventShutdown, func() { _ = svc.Close() })
	p.svc = svc
	service.RecordConfigured(service.ConfiguredBlock{Settings: s, PolicyTable: deps.PolicyTable})
	return nil
}

// Close stops the service at shutdown.
func (p *Policy) Close() error {
	if p.svc != nil {
		return p.svc.Close()
	}
	return nil
}

// Start begins the policy's work for one message.
func (p *Policy) Start(meta *module.MsgMetadata) module.DeliveryMXAuthPolicy {
	return maddyconf.NewDelivery(func() *service.Service { return p.svc }, notInitialized, meta)
}

func notInitialized() error {
	return exterrors.WithTemporary(fmt.Errorf("%s: policy not initialized", ModuleName), true)
}

// maddyLog is the service's Logger on maddy's log, under the name
// "daneguard".
type maddyLog struct{ l log.Logger }

func (m maddyLog) Msg(msg string, kv ...any)              { m.l.Msg(msg, kv...) }
func (m maddyLog) Error(msg string, err error, kv ...any) { m.l.Error(msg, err, kv...) }
func (m maddyLog) DebugMsg(msg string, kv ...any)         { m.l.DebugMsg(msg, kv...) }
func (m maddyLog) Debug() bool                            { return m.l.Debug }

func (m maddyLog) With(kv ...any) service.Logger {
	n := m.l
	n.Fields = maps.Clone(m.l.Fields)
	if n.Fields == nil {
		n.Fields = map[string]interface{}{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if k, ok := kv[i].(string); ok {
			n.Fields[k] = kv[i+1]
		}
	}
	return maddyLog{n}
}
