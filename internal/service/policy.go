package service

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/maddy-dane/daneguard/internal/engine"
)

// policyTableTimeout bounds the policy_table lookups for one destination.
// maddy gives the policy a context without a deadline, so a table backed
// by a server that stops answering (table.sql_query) would otherwise hold
// the delivery, and its queue slot, forever. Past the deadline the lookup
// fails and the destination is deferred with policy-lookup-failure, like
// any other unreadable table: the policy is never weakened.
var policyTableTimeout = 30 * time.Second

// lookupPolicy finds the policy for domain: the exact domain first, then
// ".parent" entries from the closest parent up; inline entries win over the
// table at each step.
func (s *Service) lookupPolicy(ctx context.Context, domain string) (engine.DomainPolicy, bool, error) {
	return lookupPolicy(ctx, s.settings.Policies, s.deps.PolicyTable, domain)
}

func lookupPolicy(ctx context.Context, inline map[string]engine.DomainPolicy, table TableLookup, domain string) (engine.DomainPolicy, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, policyTableTimeout)
	defer cancel()
	for _, key := range policyKeys(domain) {
		if pol, ok := inline[key]; ok {
			return pol, true, nil
		}
		if table == nil {
			continue
		}
		val, ok, err := table(ctx, key)
		if err != nil {
			return engine.DomainPolicy{}, false, fmt.Errorf("policy_table lookup of %q: %w", key, err)
		}
		if !ok {
			continue
		}
		pol, err := engine.ParsePolicySpec(val)
		if err != nil {
			// A malformed entry never weakens the policy: defer.
			return engine.DomainPolicy{}, false, fmt.Errorf("policy_table entry %q: %w", key, err)
		}
		pol.Source, pol.Key = "table", key
		return pol, true, nil
	}
	return engine.DomainPolicy{}, false, nil
}

// policyKeys lists the keys tried for domain, most specific first: for
// "mx.example.org" they are "mx.example.org", ".example.org" and ".org".
// A ".parent" key applies to every domain below parent, never to parent
// itself (Postfix's convention).
func policyKeys(domain string) []string {
	keys := []string{domain}
	rest := domain
	for {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			break
		}
		rest = rest[i+1:]
		keys = append(keys, "."+rest)
	}
	return keys
}
