package service

import (
	"context"
	"errors"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
)

// hangingTable is a policy table whose backend never answers: like
// table.sql_query against a stalled database, it returns only when the
// context ends.
type hangingTable struct{ calls int }

func (h *hangingTable) Lookup(ctx context.Context, key string) (string, bool, error) {
	h.calls++
	<-ctx.Done()
	return "", false, ctx.Err()
}

// noQuerier fails the test if the engine asks DNS anything: a destination
// whose policy cannot be read must not be looked up.
type noQuerier struct{ t *testing.T }

func (q noQuerier) Query(context.Context, string, uint16) (*dane.Answer, error) {
	q.t.Error("DNS queried for a destination without a policy")
	return nil, errors.New("unexpected query")
}

// TestPolicyTableLookupIsBounded: maddy hands the policy a context without
// a deadline; a table that stops answering must not hold the delivery
// forever. The lookup gives up, and the destination is deferred (4.4.3),
// never delivered under a weaker default.
func TestPolicyTableLookupIsBounded(t *testing.T) {
	old := policyTableTimeout
	policyTableTimeout = 50 * time.Millisecond
	t.Cleanup(func() { policyTableTimeout = old })

	tbl := &hangingTable{}
	inline := map[string]engine.DomainPolicy{}
	lookup := func(ctx context.Context, domain string) (engine.DomainPolicy, bool, error) {
		return lookupPolicy(ctx, inline, tbl.Lookup, domain)
	}
	// The caller's context, as maddy's, has no deadline.
	_, ok, err := lookup(context.Background(), "stalled.example")
	if ok || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lookup: ok=%v err=%v, want a deadline error", ok, err)
	}
	if !strings.Contains(err.Error(), `"stalled.example"`) {
		t.Fatalf("error %q does not name the key", err)
	}
	if tbl.calls != 1 {
		t.Fatalf("table asked %d times, want 1 (the first key fails the lookup)", tbl.calls)
	}

	eng, err := engine.New(engine.Config{DNS: engine.NewCachedQuerier(noQuerier{t}, policycache.Config{}, nil), Policies: lookup})
	if err != nil {
		t.Fatal(err)
	}
	dst := eng.Destination(context.Background(), "stalled.example")
	v := eng.CheckMX(context.Background(), dst, "mx.stalled.example")
	if v.OK() || v.Reason != engine.ReasonPolicyLookup || v.Code != 451 || v.EnhancedCode != [3]int{4, 4, 3} {
		t.Fatalf("verdict %s %s %d %v, want deferred policy-lookup-failure 451 4.4.3", v.Result, v.Reason, v.Code, v.EnhancedCode)
	}
	if !strings.Contains(v.Detail, "deadline exceeded") {
		t.Fatalf("detail %q loses the cause", v.Detail)
	}
}
