package daneguard

// These tests pin down the facts about maddy 0.9.4 that the 0.9 glue
// depends on. Each one fails if a maddy release changes the behaviour the
// glue (registry takeover, start-up self-check, lifecycle) relies on.

import (
	"reflect"
	"testing"

	_ "github.com/foxcpp/maddy" // links every built-in module, mx_auth among them
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/container"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/foxcpp/maddy/framework/module/modules"

	// The maddy-free packages the glue builds on. Linking them here with
	// maddy 0.9.4 checks that the two dependency graphs (go-smtp fork,
	// miekg/dns, prometheus, bbolt, urfave/cli) resolve to one build.
	_ "github.com/maddy-dane/daneguard/dane"
	_ "github.com/maddy-dane/daneguard/internal/engine"
	_ "github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	_ "github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	_ "github.com/maddy-dane/daneguard/internal/testbed/netns"
	_ "github.com/maddy-dane/daneguard/internal/testbed/pki"
	_ "github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
	_ "github.com/maddy-dane/daneguard/internal/testbed/stsbed"
	_ "github.com/maddy-dane/daneguard/mtasts_fallback"
	_ "github.com/maddy-dane/daneguard/policy_cache"
	_ "github.com/maddy-dane/daneguard/tlsrpt"
)

// probePolicy is an mx_auth policy registered under a name maddy's
// PolicyGroup does not know.
type probePolicy struct{ configured bool }

func (p *probePolicy) Configure([]string, *config.Map) error { p.configured = true; return nil }
func (*probePolicy) Name() string                            { return "mx_auth.daneguard_probe" }
func (*probePolicy) InstanceName() string                    { return "" }
func (*probePolicy) Weight() int                             { return 10 }
func (*probePolicy) StartDelivery(*module.MsgMetadata) module.DeliveryMXAuthPolicy {
	return nil
}

var probes []*probePolicy

func init() {
	modules.Register("mx_auth.daneguard_probe", func(*container.C, string, string) (module.Module, error) {
		p := &probePolicy{}
		probes = append(probes, p)
		return p, nil
	})
}

// configureGroup builds an mx_auth group the way target.remote does, with
// the given child blocks. maddy 0.9's inline-module code reads
// container.Global, so a throw-away container stands in for the one
// `maddy run` builds.
func configureGroup(t *testing.T, children ...config.Node) reflect.Value {
	t.Helper()
	saved := container.Global
	container.Global = container.New()
	t.Cleanup(func() { container.Global = saved })

	newGroup := modules.Get("mx_auth")
	if newGroup == nil {
		t.Fatal("maddy has no mx_auth module")
	}
	grp, err := newGroup(container.Global, "mx_auth", "")
	if err != nil {
		t.Fatal(err)
	}
	block := config.Node{Name: "mx_auth", File: "test", Children: children}
	if err := grp.Configure(nil, config.NewMap(map[string]interface{}{}, block)); err != nil {
		t.Fatalf("configuring mx_auth: %v", err)
	}
	v := reflect.ValueOf(grp)
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		t.Fatalf("mx_auth group is a %s", v.Kind())
	}
	l := v.FieldByName("L")
	if !l.IsValid() || l.Kind() != reflect.Slice {
		t.Fatal("mx_auth group has no policy list L")
	}
	return l
}

// child is a policy block `name { directives }` inside mx_auth.
func child(name string, directives ...config.Node) config.Node {
	return config.Node{Name: name, File: "test", Line: 1, Children: append([]config.Node{}, directives...)}
}

// TestPolicyGroupKeepsOnlyKnownNames: maddy 0.9.4's mx_auth group
// configures every child block but runs only those named mtasts,
// sts_preload, dane, dnssec and local_policy, in that order. A policy under
// another name never runs, which is why the glue takes over mx_auth.dane.
func TestPolicyGroupKeepsOnlyKnownNames(t *testing.T) {
	probes = nil
	l := configureGroup(t, child("daneguard_probe"), child("local_policy"), child("dane"))
	if len(probes) != 1 || !probes[0].configured {
		t.Fatalf("the probe block was not created and configured once (%d instances)", len(probes))
	}
	if l.Len() != 2 {
		t.Fatalf("group keeps %d policies, want 2 (dane, local_policy)", l.Len())
	}
	for i := 0; i < l.Len(); i++ {
		if _, ok := l.Index(i).Interface().(*probePolicy); ok {
			t.Fatalf("group kept the policy named daneguard_probe at %d", i)
		}
	}
	if got := l.Index(0).Interface().(module.Module).Name(); got != "mx_auth.dane" {
		t.Errorf("first kept policy is %s, want mx_auth.dane", got)
	}
	if got := l.Index(1).Interface().(module.Module).Name(); got != "mx_auth.local_policy" {
		t.Errorf("second kept policy is %s, want mx_auth.local_policy (runs last)", got)
	}
}

// TestInlinePolicyJoinsGlobalLifetime: an inline mx_auth child that
// implements container.LifetimeModule (the glue's dane block) is added to
// container.Global's lifetime tracker when it is configured, and is
// started and stopped with the server. The self-check must therefore swap
// in a throw-away container, or its probe would join the real modules.
func TestInlinePolicyJoinsGlobalLifetime(t *testing.T) {
	l := configureGroup(t, child("dane", config.Node{Name: "resolver", Args: []string{"127.0.0.1:53"}, File: "test", Line: 2}))
	if l.Len() != 1 {
		t.Fatalf("group keeps %d policies, want 1", l.Len())
	}
	pol, ok := l.Index(0).Interface().(*Policy)
	if !ok {
		t.Fatalf("mx_auth keeps %T for a dane block, want *Policy", l.Index(0).Interface())
	}
	// The tracker's list is unexported; its length is what matters.
	tracked := reflect.ValueOf(container.Global.Lifetime).Elem().FieldByName("instances")
	if !tracked.IsValid() || tracked.Len() != 1 {
		t.Fatalf("container.Global's lifetime tracker holds %v modules after configuring one inline dane policy, want 1", tracked)
	}
	if pol.svc.Load() != nil {
		t.Fatal("Configure built the running service; only Start may")
	}
	if err := container.Global.Lifetime.StartAll(); err != nil {
		t.Fatal(err)
	}
	if pol.svc.Load() == nil {
		t.Fatal("Start did not build the service")
	}
	if err := container.Global.Lifetime.StopAll(); err != nil {
		t.Fatal(err)
	}
}
