package fleet

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/redisbed"
	"github.com/maddy-dane/daneguard/internal/testbed/stsbed"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
)

type stsNode struct {
	m     *mtastsfallback.Manager
	local *policycache.Store
	store *LayeredPolicies
}

// stsNode builds one fleet node's MTA-STS manager: a local store in its
// own directory layered under the shared store of c. Its fetches go to
// policyHost ("" : the policy host is unreachable for this node).
func newSTSNode(t *testing.T, c *Client, clk *clock, ca *pki.CA, policyHost string) *stsNode {
	t.Helper()
	local, err := policycache.OpenStore(t.TempDir(), policycache.StoreOptions{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	shared := NewSharedPolicies(c)
	layered := NewLayeredPolicies(local, shared, nil, nil)
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		if policyHost == "" {
			return nil, errors.New("policy host unreachable from this node")
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", policyHost)
	}
	m, err := mtastsfallback.NewManager(mtastsfallback.Config{
		LookupTXT: func(context.Context, string) ([]string, error) { return []string{"v=STSv1; id=1"}, nil },
		Fetcher:   &mtastsfallback.Fetcher{RootCAs: ca.Pool(), DialContext: dial},
		Store:     layered, IsNotFound: func(err error) bool { return errors.Is(err, policycache.ErrNotFound) },
		StoreShared: true, RefreshLocker: shared, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return &stsNode{m: m, local: local, store: layered}
}

func policy(t *testing.T, n *stsNode, d string) *mtastsfallback.Result {
	t.Helper()
	r, err := n.m.Policy(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSharedPolicyFleet: a policy node A fetched is enforced by a fresh
// node B whose policy host is unreachable; B keeps a local copy, so it
// survives Redis going away; a background refresh due on three nodes at
// once fetches once (the refresh lock) and all three adopt the result.
func TestSharedPolicyFleet(t *testing.T) {
	srv := redisbed.Start(t, redisbed.Options{})
	c := client(t, srv, nil)
	ca := pki.NewCA(t, "fleet test CA")
	host := stsbed.Start(t, "127.0.0.1:0", ca)
	site := host.Site("example.com")
	site.SetPolicy(stsbed.Policy("enforce", 7*86400, "mx.example.com"))
	clk := &clock{t: time.Now()}

	a := newSTSNode(t, c, clk, ca, host.Addr())
	if r := policy(t, a, "example.com"); r.Source != mtastsfallback.SourceFetched || site.Fetches() != 1 {
		t.Fatalf("node A: source %s, %d fetches", r.Source, site.Fetches())
	}

	b := newSTSNode(t, c, clk, ca, "")
	r := policy(t, b, "example.com")
	if r.Policy == nil || r.Policy.Mode != mtastsfallback.ModeEnforce || r.Source != mtastsfallback.SourceCache {
		t.Fatalf("node B did not get A's policy: %+v", r)
	}
	if err := r.Policy.CheckMX("rogue.example.net"); err == nil {
		t.Fatal("node B accepts an MX outside A's policy")
	}
	if _, _, err := b.local.Get("mta-sts/example.com"); err != nil {
		t.Fatalf("shared policy not copied to B's local store: %v", err)
	}

	// Without Redis, a new manager on B's local store still has it.
	srv.Stop()
	b2, err := mtastsfallback.NewManager(mtastsfallback.Config{
		LookupTXT: func(context.Context, string) ([]string, error) { return []string{"v=STSv1; id=1"}, nil },
		Store:     NewLayeredPolicies(b.local, NewSharedPolicies(c), nil, nil), Now: clk.Now, StoreShared: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	r2, err := b2.Policy(context.Background(), "example.com")
	if err != nil || r2.Policy == nil || r2.Policy.Mode != mtastsfallback.ModeEnforce {
		t.Fatalf("B after Redis stopped: %+v %v", r2, err)
	}
	srv.Restart() // empty: no persistence
	time.Sleep(100 * time.Millisecond)

	// Redis came back empty (no persistence): new nodes that can reach
	// the policy host fetch it themselves and share it again.
	c2 := newSTSNode(t, c, clk, ca, host.Addr())
	d := newSTSNode(t, c, clk, ca, host.Addr())
	for _, n := range []*stsNode{c2, d} {
		if r := policy(t, n, "example.com"); r.Policy == nil {
			t.Fatalf("node without a policy: %+v", r)
		}
	}
	before := site.Fetches()
	clk.Add(25 * time.Hour) // past RefreshInterval
	var wg sync.WaitGroup
	for _, n := range []*stsNode{a, c2, d} {
		wg.Add(1)
		go func() { defer wg.Done(); n.m.RefreshNow(context.Background()) }()
	}
	wg.Wait()
	if got := site.Fetches() - before; got != 1 {
		t.Fatalf("three nodes refreshing: %d fetches, want 1", got)
	}
	v, _, err := NewSharedPolicies(c).Get("mta-sts/example.com")
	if err != nil {
		t.Fatalf("refreshed policy not in the shared store: %v", err)
	}
	fresh, _ := mtastsfallback.UnmarshalPolicy(v)
	for i, n := range []*stsNode{a, c2, d} {
		n.m.RefreshNow(context.Background()) // adopts, fetches nothing
		r := policy(t, n, "example.com")
		if !r.Policy.FetchedAt.Equal(fresh.FetchedAt) {
			t.Errorf("node %d applies the policy fetched at %v, want the refresh of %v", i, r.Policy.FetchedAt, fresh.FetchedAt)
		}
	}
	if got := site.Fetches() - before; got != 1 {
		t.Fatalf("after adopting: %d fetches, want 1", got)
	}
}
