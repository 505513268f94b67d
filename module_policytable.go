package daneguard

import (
	"context"
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
