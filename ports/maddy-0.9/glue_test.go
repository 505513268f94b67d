package daneguard

import (
	"strings"
	"testing"

	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/container"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/foxcpp/maddy/framework/module/modules"
)

// TestIntegrationSelfCheck: in this maddy 0.9.4, mx_auth { dane { } }
// reaches the glue, and the self-check leaves container.Global as it
// found it.
func TestIntegrationSelfCheck(t *testing.T) {
	before := container.Global
	if err := checkIntegration(); err != nil {
		t.Fatalf("daneguard is not behind mx_auth { dane }: %v", err)
	}
	if container.Global != before {
		t.Fatal("the self-check did not restore container.Global")
	}
	l := configureGroup(t, child("dane", config.Node{Name: "resolver", Args: []string{"127.0.0.1:53"}, File: "test", Line: 2}), child("local_policy"))
	if l.Len() != 2 {
		t.Fatalf("mx_auth kept %d policies, want 2", l.Len())
	}
	if _, ok := l.Index(0).Interface().(*Policy); !ok {
		t.Fatalf("first policy behind mx_auth is %T, want *Policy", l.Index(0).Interface())
	}
}

// TestSelfCheckForeignEntry: when the registry maps mx_auth.dane to
// anything but this glue's factory, the self-check fails.
func TestSelfCheckForeignEntry(t *testing.T) {
	maddyModulesLock.Lock()
	saved := maddyModules[ModuleName]
	maddyModules[ModuleName] = func(c *container.C, m, i string) (module.Module, error) { return New(c, m, i) }
	maddyModulesLock.Unlock()
	defer func() {
		maddyModulesLock.Lock()
		maddyModules[ModuleName] = saved
		maddyModulesLock.Unlock()
	}()
	err := checkIntegration()
	if err == nil || !strings.Contains(err.Error(), "another implementation") {
		t.Fatalf("self-check with a foreign mx_auth.dane: %v", err)
	}
	if modules.Get(stsModuleName) == nil {
		t.Fatal("no mx_auth.mtasts")
	}
}

// TestConfigErrors: the directive table's errors carry the file and line,
// as in the maddy 0.8 build (root TestConfigErrors, same cases).
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"no_such_directive yes", "unexpected directive"},
		{"default_level dane-onyl", "unknown security level"},
		{"policy example.org fingerprint sha256:zz", "fingerprint"},
		{"policy example.org", "usage: policy"},
		{"cache_failure_max 1h", "cache_failure"},
		{"cache_max_ttl 0s", "cache_max_ttl must be between"},
		{"policy *.bank.example dane-only", "write .bank.example for every domain below bank.example"},
		// Checked by the configuration-only service: the error names the block.
		{"resolver not:an:address:53", "test.conf:7: dane: resolver address"},
	} {
		args := strings.Fields(tc.body)
		err := configureGroupErr(t, config.Node{Name: "dane", File: "test.conf", Line: 7,
			Children: []config.Node{{Name: args[0], Args: args[1:], File: "test.conf", Line: 8}}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "test.conf:") {
			t.Errorf("%s: error %v, want one containing %q and test.conf", tc.body, err, tc.want)
		}
	}
}

// TestMTASTSRefused: maddy's own mtasts block is refused with the maddy
// 0.8 build's message.
func TestMTASTSRefused(t *testing.T) {
	err := configureGroupErr(t, child("mtasts", config.Node{Name: "cache", Args: []string{"ram"}, File: "test", Line: 2}))
	if err == nil || !strings.Contains(err.Error(), "the `mtasts { }` block is not supported in this maddy build") {
		t.Fatalf("mtasts block: %v", err)
	}
}

func configureGroupErr(t *testing.T, children ...config.Node) error {
	t.Helper()
	saved := container.Global
	container.Global = container.New()
	t.Cleanup(func() { container.Global = saved })
	grp, err := modules.Get("mx_auth")(container.Global, "mx_auth", "")
	if err != nil {
		t.Fatal(err)
	}
	return grp.Configure(nil, config.NewMap(map[string]interface{}{}, config.Node{Name: "mx_auth", File: "test.conf", Children: children}))
}
