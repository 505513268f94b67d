package service

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/fleet"
	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/internal/testbed/redisbed"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// applyStore applies `store URL { children }` as the glue does: Set, the
// block's directives, then Done. It returns the first error.
func applyStore(s *Settings, url string, children [][]string) error {
	if err := storeDirective.Set(s, []string{url}); err != nil {
		return err
	}
	for _, c := range children {
		var d *Directive[Settings]
		for i := range storeDirective.Block {
			if storeDirective.Block[i].Name == c[0] {
				d = &storeDirective.Block[i]
			}
		}
		if d == nil {
			return errUnknown(c[0])
		}
		if err := d.Set(s, c[1:]); err != nil {
			return err
		}
	}
	return storeDirective.Done(s)
}

type errUnknown string

func (e errUnknown) Error() string { return "unknown directive " + string(e) }

func TestStoreDirective(t *testing.T) {
	for _, tc := range []struct {
		name     string
		url      string
		children [][]string
		want     string // error substring; "" for success
		check    func(t *testing.T, st *StoreSettings)
	}{
		{name: "defaults", url: "redis://127.0.0.1/3", check: func(t *testing.T, st *StoreSettings) {
			r := st.Redis
			if r.Addr != "127.0.0.1:6379" || r.DB != 3 || r.TLS != nil || r.DialTimeout != fleet.DefaultDialTimeout ||
				r.ReadTimeout != fleet.DefaultReadTimeout || r.RetryDown != fleet.DefaultRetryDown || r.KeyPrefix != fleet.DefaultKeyPrefix ||
				st.ClaimTTL != time.Minute || st.URL != "redis://127.0.0.1/3" {
				t.Fatalf("settings %+v", st)
			}
		}},
		{name: "options", url: "redis://redis.internal:6380/0", children: [][]string{
			{"password", "s3cret"}, {"tls", "on"}, {"dial_timeout", "1s"}, {"read_timeout", "100ms"}, {"write_timeout", "2s"},
			{"retry_down", "10s"}, {"key_prefix", "mx1:"}, {"claim_ttl", "30s"},
		}, check: func(t *testing.T, st *StoreSettings) {
			r := st.Redis
			if r.Password != "s3cret" || r.TLS == nil || r.TLS.ServerName != "redis.internal" || r.DialTimeout != time.Second ||
				r.ReadTimeout != 100*time.Millisecond || r.WriteTimeout != 2*time.Second || r.RetryDown != 10*time.Second ||
				r.KeyPrefix != "mx1:" || st.ClaimTTL != 30*time.Second {
				t.Fatalf("settings %+v", st)
			}
		}},
		{name: "password-redacted", url: "rediss://app:pw@redis.internal/1", check: func(t *testing.T, st *StoreSettings) {
			if st.URL != "rediss://app@redis.internal/1" || st.Redis.Password != "pw" || st.Redis.Username != "app" || st.Redis.TLS == nil {
				t.Fatalf("settings %+v", st)
			}
		}},
		{name: "bad-scheme", url: "http://127.0.0.1", want: "scheme must be redis or rediss"},
		{name: "query", url: "redis://127.0.0.1/0?db=1", want: "no query"},
		{name: "bad-db", url: "redis://127.0.0.1/16", want: "database must be a number 0-15"},
		{name: "password-twice", url: "redis://:pw@127.0.0.1/0", children: [][]string{{"password", "x"}}, want: "already in the store URL"},
		{name: "tls-off-rediss", url: "rediss://127.0.0.1/0", children: [][]string{{"tls", "off"}}, want: "tls off contradicts"},
		{name: "timeout-zero", url: "redis://127.0.0.1/0", children: [][]string{{"read_timeout", "0s"}}, want: "read_timeout must be more than 0s"},
		{name: "timeout-large", url: "redis://127.0.0.1/0", children: [][]string{{"dial_timeout", "6s"}}, want: "at most 5s"},
		{name: "retry-down-large", url: "redis://127.0.0.1/0", children: [][]string{{"retry_down", "2m"}}, want: "at most 1m0s"},
		{name: "claim-ttl-small", url: "redis://127.0.0.1/0", children: [][]string{{"claim_ttl", "1s"}}, want: "claim_ttl must be between"},
		{name: "bad-prefix", url: "redis://127.0.0.1/0", children: [][]string{{"key_prefix", "a*b"}}, want: "pattern characters"},
		{name: "ca-missing", url: "redis://127.0.0.1/0", children: [][]string{{"tls_ca", "/nonexistent/ca.pem"}}, want: "tls ca"},
		{name: "client-cert-usage", url: "redis://127.0.0.1/0", children: [][]string{{"tls_client_cert", "only-one"}}, want: "usage: tls_client_cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := DefaultSettings()
			err := applyStore(&s, tc.url, tc.children)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s.Store)
		})
	}
}

func fleetSettings(t testing.TB, url, dir string) Settings {
	t.Helper()
	s := DefaultSettings()
	s.Resolvers = []string{"127.0.0.1:53"}
	s.MTASTSDir = filepath.Join(dir, "mtasts")
	if url != "" {
		if err := applyStore(&s, url, nil); err != nil {
			t.Fatal(err)
		}
	}
	rpt := DefaultTLSRPTSettings()
	rpt.Dir = filepath.Join(dir, "tlsrpt")
	if err := rpt.Validate("sender.example", dir); err != nil {
		t.Fatal(err)
	}
	s.TLSRPT = &rpt
	return s
}

func fleetRefs(key string) int {
	fleetMu.Lock()
	defer fleetMu.Unlock()
	if e := fleetClients[key]; e != nil {
		return e.refs
	}
	return 0
}

// TestServiceFleetLifecycle: two dane blocks naming the same store share
// one client and one push loop; a delivery's session reaches Redis; a
// block whose directory is another's with different store settings fails
// to start and leaves nothing open; the last Close closes the client; the
// configuration check opens nothing.
func TestServiceFleetLifecycle(t *testing.T) {
	srv := redisbed.Start(t, redisbed.Options{})
	dir := t.TempDir()
	s1 := fleetSettings(t, srv.URL(0), dir)
	key := storeKey(s1.Store)

	// verify-config / the checker.
	chk, err := New(s1, Deps{Log: newTestLog(), StateDir: dir, NoRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if chk.fleet != nil || fleetRefs(key) != 0 {
		t.Fatal("a configuration check opened the shared store")
	}
	if err := chk.Start(); err != nil {
		t.Fatal(err)
	}
	_ = chk.Close()

	a, err := New(s1, Deps{Log: newTestLog(), StateDir: dir, Instance: "a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	b, err := New(s1, Deps{Log: newTestLog(), StateDir: dir, Instance: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if fleetRefs(key) != 2 || a.fleet.client != b.fleet.client || a.fleet.rpt != b.fleet.rpt || a.fleet.layer != b.fleet.layer {
		t.Fatalf("blocks with the same store do not share it: refs %d", fleetRefs(key))
	}
	if a.rpt.sender.Shared == nil || b.rpt.sender.Shared == nil {
		t.Fatal("the blocks' senders do not use the shared store")
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	// One sender per store directory (stores.go): the block started first.
	if a.rpt.stop == nil || b.rpt.stop != nil {
		t.Fatal("the first block must run the one shared sender")
	}

	// Same directories, no store: refused, and nothing left behind.
	bad := fleetSettings(t, "", dir)
	if _, err := New(bad, Deps{Log: newTestLog(), StateDir: dir}); err == nil || !strings.Contains(err.Error(), "different store settings") {
		t.Fatalf("error %v, want a conflict of store settings", err)
	}
	if fleetRefs(key) != 2 {
		t.Fatalf("a failed New changed the client's references: %d", fleetRefs(key))
	}

	// A session recorded through the second block is pushed by the loop.
	v := &engine.Verdict{Domain: "d.example", MX: "mx.d.example", Result: engine.Authenticated, Reason: engine.ReasonDANEMatch, Mechanism: engine.MechDANE, TLSABase: "mx.d.example"}
	b.Delivery("m1").recordTLSRPT(v)
	day := tlsrpt.Day(time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		aggs, err := a.fleet.rpt.sr.Aggregates(ctx, day, "d.example")
		if err == nil && len(aggs) == 1 && aggs[0].Count == 1 && aggs[0].Key.Success {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the session never reached the shared store: %+v %v", aggs, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	_ = b.Close()
	if fleetRefs(key) != 1 {
		t.Fatalf("refs after one Close: %d", fleetRefs(key))
	}
	_ = a.Close()
	_ = a.Close() // twice is fine
	if fleetRefs(key) != 0 {
		t.Fatal("the client outlived its last user")
	}
	fleetMu.Lock()
	n := len(fleetSTS) + len(fleetRpt) + len(dirStores)
	fleetMu.Unlock()
	if n != 0 {
		t.Fatalf("%d shared entries left after every Close", n)
	}
}
