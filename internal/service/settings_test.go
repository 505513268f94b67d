package service

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
)

func apply[T any](t *testing.T, ds []Directive[T], into *T, name string, args ...string) error {
	t.Helper()
	for _, d := range ds {
		if d.Name == name {
			return d.Set(into, args)
		}
	}
	t.Fatalf("no directive %s", name)
	return nil
}

// TestDirectives: what each dane block directive accepts and refuses, with
// maddy's wording for the generic kinds.
func TestDirectives(t *testing.T) {
	roots := pki.NewCA(t, "settings test root").WritePEM(t, t.TempDir())
	notPEM := filepath.Join(t.TempDir(), "x.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		err   string // "" for success
		check func(s Settings) bool
	}{
		{"debug", nil, "", func(s Settings) bool { return s.Debug }},
		{"debug", []string{"no"}, "", func(s Settings) bool { return !s.Debug }},
		{"debug", []string{"maybe"}, "bool argument should be 'yes' or 'no'", nil},
		{"resolver", nil, "expected at least one argument", nil},
		{"resolver", []string{"127.0.0.1", "::1"}, "", func(s Settings) bool { return len(s.Resolvers) == 2 }},
		{"resolver_timeout", []string{"2s"}, "", func(s Settings) bool { return s.ResolverTimeout == 2*time.Second }},
		{"resolver_timeout", []string{"-2s"}, "duration must not be negative", nil},
		{"default_level", []string{"dane-only"}, "", func(s Settings) bool { return s.DefaultLevel == engine.LevelDANEOnly }},
		{"default_level", []string{"fingerprint"}, "fingerprint needs per-domain pins", nil},
		{"default_level", []string{"dane-onyl"}, "unknown security level", nil},
		{"cache_max_entries", []string{"0"}, "cache_max_entries must be at least 1", nil},
		{"cache_max_entries", []string{"many"}, "invalid integer: many", nil},
		{"cache_max_entries", []string{"10"}, "", func(s Settings) bool { return s.CacheMaxEntries == 10 }},
		{"cache_max_ttl", []string{"25h"}, "cache_max_ttl must be between 1s and 24h0m0s", nil},
		{"cache_failure_min", []string{"0s"}, "cache_failure_min must be between", nil},
		{"cache_failure_max", []string{"2m"}, "", func(s Settings) bool { return s.CacheFailureMax == 2*time.Minute }},
		{"roots", []string{roots}, "", func(s Settings) bool { return s.Roots != nil && s.RootsPath == roots }},
		{"roots", []string{notPEM}, "roots: no PEM certificates", nil},
		{"roots", []string{"/nonexistent/roots.pem"}, "roots: open /nonexistent/roots.pem", nil},
		{"mtasts", []string{"off"}, "", func(s Settings) bool { return !s.MTASTS }},
		{"mtasts_dir", nil, "expected 1 argument", nil},
		{"policy", []string{"*.bank.example", "dane-only"}, "write .bank.example", nil},
	} {
		s := DefaultSettings()
		err := apply(t, Directives, &s, tc.name, tc.args...)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s %q: %v", tc.name, tc.args, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s %q: error %v, want one containing %q", tc.name, tc.args, err, tc.err)
		case tc.check != nil && !tc.check(s):
			t.Errorf("%s %q: settings %+v", tc.name, tc.args, s)
		}
	}
	s := DefaultSettings()
	if err := apply(t, Directives, &s, "policy", "a.example", "encrypt"); err != nil {
		t.Fatal(err)
	}
	if err := apply(t, Directives, &s, "policy", "A.example.", "dane"); err == nil || !strings.Contains(err.Error(), "duplicate policy for a.example") {
		t.Fatalf("duplicate policy: %v", err)
	}
	s.CacheFailureMin, s.CacheFailureMax = time.Minute, time.Second
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "cache_failure_min (1m0s) is larger than cache_failure_max (1s)") {
		t.Fatalf("Validate: %v", err)
	}
}

// TestTLSRPTSettings: the tlsrpt block's checks and host-dependent
// defaults.
func TestTLSRPTSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"send_hour", []string{"24"}, "send_hour must be between 0 and 23"},
		{"keep_days", []string{"0"}, "keep_days must be at least 1"},
		{"poll_interval", []string{"1ms"}, "poll_interval is too small"},
		{"https_timeout", []string{"0s"}, "https_timeout must be more than 0s"},
		{"sending_ip", []string{"host.example"}, `sending_ip "host.example" is not an IP address`},
		{"https_roots", []string{"/nonexistent"}, "https_roots: open /nonexistent"},
	} {
		r := DefaultTLSRPTSettings()
		if err := apply(t, TLSRPTDirectives, &r, tc.name, tc.args...); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s %q: error %v, want one containing %q", tc.name, tc.args, err, tc.err)
		}
	}
	r := DefaultTLSRPTSettings()
	if err := r.Validate("", "/state"); err == nil || !strings.Contains(err.Error(), "contact is required") {
		t.Fatalf("without hostname: %v", err)
	}
	r = DefaultTLSRPTSettings()
	if err := r.Validate("mx.example", "/state"); err != nil {
		t.Fatal(err)
	}
	if r.Contact != "postmaster@mx.example" || r.From != r.Contact || r.Organization != "mx.example" || r.Dir != "/state/daneguard/tlsrpt" {
		t.Fatalf("defaults %+v", r)
	}
	r = DefaultTLSRPTSettings()
	r.Contact = "Admin <admin@mx.example>"
	if err := r.Validate("mx.example", "/state"); err == nil || !strings.Contains(err.Error(), "is not an email address") {
		t.Fatalf("display name accepted: %v", err)
	}
}

// TestLifecycle: New opens the MTA-STS store, Close releases it (a second
// service can then own the directory again), and NoRun writes nothing.
func TestLifecycle(t *testing.T) {
	state := t.TempDir()
	s := DefaultSettings()
	s.Resolvers = []string{"127.0.0.1:9"}
	deps := Deps{Log: newTestLog(), StateDir: state}

	probe := deps
	probe.NoRun = true
	svc, err := New(s, probe)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	_ = svc.Close()
	if _, err := os.Stat(filepath.Join(state, "daneguard")); !os.IsNotExist(err) {
		t.Fatalf("NoRun created the state directory's daneguard/ (%v)", err)
	}

	svc, err = New(s, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	if svc.Start() == nil {
		t.Fatal("a second Start succeeded")
	}
	dir, _ := filepath.Abs(DefaultMTASTSDir(state))
	stsStoresMu.Lock()
	e := stsStores[dir]
	stsStoresMu.Unlock()
	if e == nil || e.refs != 1 {
		t.Fatalf("store entry %+v, want one reference", e)
	}
	_ = svc.Close()
	_ = svc.Close() // idempotent
	stsStoresMu.Lock()
	_, held := stsStores[dir]
	stsStoresMu.Unlock()
	if held {
		t.Fatal("Close kept the MTA-STS store")
	}

	// A failing New holds nothing: an MTA-STS directory that is a file.
	file := filepath.Join(state, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s.MTASTSDir = file
	if _, err := New(s, deps); err == nil {
		t.Fatal("New accepted a file as mtasts_dir")
	}
	stsStoresMu.Lock()
	n := len(stsStores)
	stsStoresMu.Unlock()
	if n != 0 {
		t.Fatalf("%d stores held after a failed New", n)
	}
}

// FuzzDirectives: any arguments to any directive give a value or an
// error, never a panic, and an error leaves the settings as they were.
func FuzzDirectives(f *testing.F) {
	f.Add(uint8(0), "yes", "")
	f.Add(uint8(4), "dane-only", "")
	f.Add(uint8(5), "example.org", "fingerprint sha256:00")
	f.Add(uint8(6), "0", "")
	f.Add(uint8(7), "25h", "")
	f.Add(uint8(12), "/nonexistent", "")
	f.Fuzz(func(t *testing.T, which uint8, a1, a2 string) {
		var args []string
		for _, a := range []string{a1, a2} {
			if a != "" {
				args = append(args, a)
			}
		}
		all := len(Directives) + len(TLSRPTDirectives)
		i := int(which) % all
		if i < len(Directives) {
			d := Directives[i]
			s, before := DefaultSettings(), DefaultSettings()
			if err := d.Set(&s, args); err != nil {
				if err.Error() == "" || !reflect.DeepEqual(s, before) {
					t.Fatalf("%s %q: error %q changed the settings or says nothing", d.Name, args, err)
				}
			}
			return
		}
		d := TLSRPTDirectives[i-len(Directives)]
		r, before := DefaultTLSRPTSettings(), DefaultTLSRPTSettings()
		if err := d.Set(&r, args); err != nil {
			if err.Error() == "" || !reflect.DeepEqual(r, before) {
				t.Fatalf("%s %q: error %q changed the settings or says nothing", d.Name, args, err)
			}
		}
	})
}
