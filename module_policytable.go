package daneguard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// policyTableTimeout bounds the policy_table lookups for one destination.
// maddy gives the policy a context without a deadline, so a table backed
// by a server that stops answering (table.sql_query) would otherwise hold
// the delivery, and its queue slot, forever. Past the deadline the lookup
// fails and the destination is deferred with policy-lookup-failure, like
// any other unreadable table: the policy is never weakened.
var policyTableTimeout = 30 * time.Second

// policyTableContext is the context the table lookups of one destination
// run under.
func policyTableContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, policyTableTimeout)
}

// checkPolicyKey rejects an inline `policy` key that no destination could
// ever match. Such an entry would be accepted and silently never apply,
// leaving the domain at default_level while the operator believes it is
// covered: a weaker policy than configured.
func checkPolicyKey(key string) error {
	name := strings.TrimPrefix(key, ".")
	switch {
	case name == "":
		return errors.New("not a domain name")
	case strings.Contains(name, "*"):
		parent := strings.TrimLeft(name, "*.")
		if parent == "" || strings.Contains(parent, "*") {
			return errors.New("wildcards are not supported")
		}
		return fmt.Errorf("wildcards are not supported; write .%s for every domain below %s", parent, parent)
	case strings.Contains(name, "@"):
		return errors.New("not a domain name (an address?); keys are destination domains")
	case strings.HasPrefix(name, ".") || strings.Contains(name, ".."):
		return errors.New("not a domain name (empty label)")
	}
	return nil
}
