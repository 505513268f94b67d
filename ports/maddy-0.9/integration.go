package daneguard

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	_ "unsafe" // for go:linkname

	// The maddy root package links every built-in module, target.remote
	// among them. Importing it makes their init functions, which register
	// maddy's own mx_auth.dane and mx_auth.mtasts, run before ours.
	_ "github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/container"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/foxcpp/maddy/framework/module/modules"
	"github.com/maddy-dane/daneguard/internal/maddyconf"
)

// maddy 0.9.4's mx_auth block (internal/target/remote/policy_group.go), like
// 0.8.2's, creates every child block as module "mx_auth.<name>" but keeps
// only the blocks named mtasts, sts_preload, dane, dnssec and local_policy;
// modules.Register panics on a name already taken. So the glue takes over
// "mx_auth.dane" in the registry, which moved from framework/module to
// framework/module/modules in 0.9 (same unexported map and lock).
// docs/integration.md explains the choice.

//go:linkname maddyModules github.com/foxcpp/maddy/framework/module/modules.modules
var maddyModules map[string]modules.FuncNewModule

//go:linkname maddyModulesLock github.com/foxcpp/maddy/framework/module/modules.modulesLock
var maddyModulesLock sync.RWMutex

// probing is set while the self-check builds a throw-away mx_auth group.
var probing atomic.Bool

var (
	selfCheckOnce sync.Once
	selfCheckErr  error
)

func init() {
	maddyModulesLock.Lock()
	maddyModules[ModuleName] = New
	maddyModules[stsModuleName] = newSTSRefusal
	maddyModulesLock.Unlock()
}

// CheckIntegration verifies, with the maddy linked into this binary, that a
// `mx_auth { dane { } }` block makes target.remote run this package's policy.
// It builds a real mx_auth group through maddy's registry and config code,
// inside a throw-away container, and inspects the policies the group keeps.
// A non-nil error means this policy would silently not run; the command
// (cmd/maddy) and the module refuse to start then.
func CheckIntegration() error {
	selfCheckOnce.Do(func() { selfCheckErr = checkIntegration() })
	return selfCheckErr
}

func integrationError() error {
	if err := CheckIntegration(); err != nil {
		return fmt.Errorf("%s: this maddy build would not run the daneguard policy: %w (see docs/integration.md)", ModuleName, err)
	}
	return nil
}

func checkIntegration() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("self-check panicked: %v", r)
		}
	}()
	if f := modules.Get(ModuleName); f == nil {
		return errors.New("maddy's module registry has no " + ModuleName)
	} else if reflect.ValueOf(f).Pointer() != reflect.ValueOf(New).Pointer() {
		return errors.New("maddy's module registry maps " + ModuleName + " to another implementation")
	}
	newGroup := modules.Get("mx_auth")
	if newGroup == nil {
		return errors.New("maddy has no mx_auth module")
	}
	// maddy 0.9's inline-module code adds every configured child to
	// container.Global's lifetime (and fails on a nil Global outside a
	// configuration). The probe must neither join the server's modules
	// nor depend on being called during one: it gets a container of its
	// own, restored afterwards.
	saved := container.Global
	c := container.New()
	container.Global = c
	defer func() { container.Global = saved }()
	probing.Store(true)
	defer probing.Store(false)
	grp, err := newGroup(c, "mx_auth", "")
	if err != nil {
		return fmt.Errorf("creating an mx_auth group: %w", err)
	}
	if err := grp.Configure(nil, maddyconf.ProbeBlock()); err != nil {
		return fmt.Errorf("configuring an mx_auth group with a dane block: %w", err)
	}
	return maddyconf.GroupKeeps(grp, func(p any) bool {
		pol, ok := p.(*Policy)
		return ok && pol.probe
	})
}

// maddy's own `mtasts` policy is replaced by a module that refuses to be
// configured, as in the maddy 0.8 build: daneguard's dane block applies
// MTA-STS itself, and maddy's policy would run first, answer an
// enforce-mode mismatch with a permanent 550 and fail DANE-authenticated
// connections that lack a WebPKI certificate (docs/mtasts.md).
const stsModuleName = "mx_auth.mtasts"

type stsRefusal struct{ instName string }

func newSTSRefusal(_ *container.C, _, instName string) (module.Module, error) {
	return &stsRefusal{instName: instName}, nil
}

func (r *stsRefusal) Name() string         { return stsModuleName }
func (r *stsRefusal) InstanceName() string { return r.instName }

// Configure always fails, with the error maddy prints at start-up (and
// verify-config) next to the block. The text is the maddy 0.8 build's.
func (r *stsRefusal) Configure(_ []string, cfg *config.Map) error {
	cfg.AllowUnknown()
	_, _ = cfg.Process()
	return fmt.Errorf("mx_auth: the `mtasts { }` block is not supported in this maddy build: daneguard's `dane { }` block applies MTA-STS itself " +
		"(directive `mtasts`, on by default; policies are kept in `mtasts_dir`). Remove the `mtasts { }` block from mx_auth " +
		"(and its cache settings; see docs/mtasts.md, \"Migrating from maddy's mtasts\")")
}

// The remaining methods make the refusal a complete mx_auth policy, so that
// maddy's policy group accepts it; they are never reached because
// Configure fails.
func (r *stsRefusal) StartDelivery(*module.MsgMetadata) module.DeliveryMXAuthPolicy {
	return stsNoop{}
}
func (r *stsRefusal) Weight() int { return 10 }

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
