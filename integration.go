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
	// maddy's own mx_auth.dane, run before ours.
	_ "github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/maddyconf"
)

// maddy v0.8.2's mx_auth block (internal/target/remote/policy_group.go)
// creates every child block as module "mx_auth.<name>" but then keeps only
// the blocks named mtasts, sts_preload, dane, dnssec and local_policy. A
// policy registered under any other name is configured and never called,
// and module.Register panics on a name already taken. The only way in is to
// take over one of those names, and "dane" is the one this policy
// supersedes. The registry map is unexported, hence go:linkname.
// docs/integration.md explains the choice and its alternatives.

//go:linkname maddyModules github.com/foxcpp/maddy/framework/module.modules
var maddyModules map[string]module.FuncNewModule

//go:linkname maddyModulesLock github.com/foxcpp/maddy/framework/module.modulesLock
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
	maddyModulesLock.Unlock()
}

// CheckIntegration verifies, with the maddy linked into this binary, that a
// `mx_auth { dane { } }` block makes target.remote run this package's policy.
// It builds a real mx_auth group through maddy's registry and config code
// and inspects the policies the group keeps. A non-nil error means this
// policy would silently not run; the module refuses to start then.
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
	if f := module.Get(ModuleName); f == nil {
		return errors.New("maddy's module registry has no " + ModuleName)
	} else if reflect.ValueOf(f).Pointer() != reflect.ValueOf(New).Pointer() {
		return errors.New("maddy's module registry maps " + ModuleName + " to another implementation")
	}
	newGroup := module.Get("mx_auth")
	if newGroup == nil {
		return errors.New("maddy has no mx_auth module")
	}
	probing.Store(true)
	defer probing.Store(false)
	grp, err := newGroup("mx_auth", "", nil, nil)
	if err != nil {
		return fmt.Errorf("creating an mx_auth group: %w", err)
	}
	if err := grp.Init(maddyconf.ProbeBlock()); err != nil {
		return fmt.Errorf("initializing an mx_auth group with a dane block: %w", err)
	}
	return maddyconf.GroupKeeps(grp, func(p any) bool {
		pol, ok := p.(*Policy)
		return ok && pol.probe
	})
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
