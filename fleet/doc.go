// Package fleet shares what daneguard learns between the outbound maddy
// nodes of one mail provider, on Redis (client: go-redis v9). Without it,
// each node keeps its own MTA-STS policy store and its own TLS-RPT store:
// a rebuilt node starts with no MTA-STS knowledge, although RFC 8461 §3.3
// and §10.2 rely on the cached policy to resist a downgrade on later
// contacts, and each receiving domain gets one partial TLS report per node
// and day, where RFC 8460 §4.1 expects one per reporting organization.
//
// What is shared:
//
//   - MTA-STS policies (SharedPolicies, LayeredPolicies): a policy fetched
//     by any node is seen by all, with its expiry; reads take the fresher
//     of the local and the shared copy; a background refresh is done by
//     one node per domain (LockRefresh, SET NX PX).
//   - TLS-RPT session counts and report state (SharedReports): counts add
//     up across nodes atomically; one node builds and sends each report
//     under a claim with expiry.
//   - TLS reports received about the operator's domains (SharedReceived,
//     for target.tlsrpt_receiver): stored once per report-id fleet-wide
//     (SET NX), each node's ReceivedStore its journal.
//
// Redis is never on the critical path of a delivery: every operation is
// bounded by small timeouts (Settings), a failure marks the store down for
// a moment so that later deliveries do not wait on it (Client), TLS-RPT
// sessions are committed to the local store first and pushed in the
// background, and what could not be pushed is replayed from the local
// store, idempotently, when Redis is back. The package imports nothing of
// maddy; the glue builds it from the dane block's store directive.
//
// A single Redis server (optionally with replicas) is assumed: the Lua
// scripts touch several keys of one report, which Redis Cluster would
// accept only in one slot (the keys share a {hash tag}, but the index key
// does not).
package fleet
