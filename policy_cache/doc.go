// Package policycache caches the inputs of a mail server's transport
// security policy: TLSA RRsets and MX answers for DANE (RFC 7672), CNAME
// chains, MTA-STS policies (RFC 8461). It has two parts: [Cache], an
// in-memory cache with exact TTLs, and [Store], a small on-disk store for
// what must survive a restart.
//
// # Why a dedicated cache
//
// Every outgoing SMTP connection needs a policy decision, and each decision
// may take several DNS queries (MX, address, TLSA, with their DNSSEC
// status) and, for MTA-STS, an HTTPS fetch. A queue flush towards one big
// provider asks the same questions thousands of times in a few seconds.
// Caching is therefore mandatory, but a security policy cache must not be
// sloppy: serving a TLSA RRset after its TTL means pinning a certificate
// the receiver may have rolled over (RFC 7671 §8.1), and serving a stale
// "no TLSA records" answer means downgrading to unauthenticated TLS. The
// cache therefore never serves anything beyond the lifetime its source
// allowed.
//
// # TTL exactness
//
// The function that fetches a value ([FetchFunc]) also says how long it
// may live: for DNS data, the smallest TTL of the records the value was
// derived from (a CNAME chain lives as long as its shortest link). The
// cache serves the value while
//
//	now < fetch start + min(TTL, Config.MaxTTL)
//
// and never at or after that instant. The lifetime counts from the start
// of the fetch, not its end, so a slow fetch can only shorten it. With the
// default clock (time.Now) comparisons use Go's monotonic clock, so
// stepping the wall clock neither extends nor cuts lifetimes. A TTL of zero
// means "use once": the value is given to the callers waiting for that
// fetch and not stored.
//
// # Negative answers (RFC 2308)
//
// "No such name" (NXDOMAIN) and "no records of this type" (NODATA) are
// answers, not failures, and for DANE they matter: no TLSA records means
// no DANE for that host. The cache does not know DNS; the caller returns
// the negative answer as an ordinary value, with the negative-caching TTL
// of RFC 2308 §5: the smaller of the SOA record's TTL and its MINIMUM
// field, and no caching at all when the answer carries no SOA record.
// [NegativeTTL] computes this, with a cap (three hours by default, as
// RFC 2308 §5 suggests). The cache then honours that TTL like any other.
//
// # Resolution failures (RFC 9520)
//
// A failure is different: SERVFAIL, a timeout, a DNSSEC validation
// failure, an unreachable MTA-STS server. RFC 9520 §3.2 requires a
// resolver to cache such failures, so that a broken zone does not turn
// every delivery attempt into a burst of queries, for at least one second
// and at most five minutes, preferably backing off while the failure
// persists. A [Cache] does this for every error a fetch returns:
//
//   - the first failure of a key is cached for Config.MinFailureTTL
//     (default and minimum 1 s); until it expires every Get returns the
//     same error and no fetch is made;
//   - each further failure of the same key doubles the failure TTL, up to
//     Config.MaxFailureTTL (default and maximum 5 min);
//   - a success, Invalidate, or eviction ends the streak, and so does a
//     pause: an expired failure is remembered for one more backoff period
//     (its expiry plus the next TTL); a key not asked about for longer
//     starts again at MinFailureTTL;
//   - failures are never refreshed ahead of expiry (RFC 9520 §3.2 forbids
//     new queries until the cached failure expires).
//
// The failure TTL counts from the end of the fetch, so that a lookup that
// failed by timing out is still cached for the whole TTL.
//
// Not every error is a resolution failure. Errors are not cached when they
// are the result of a context being cancelled or a foreign deadline (for
// example a caller's context captured by the fetch function), or when
// they opt out: any error whose chain (errors.As) holds a value with a
// method NoCache() bool that returns true; [NoCache] wraps an error that
// way. A timeout of the fetch itself (Config.FetchTimeout) is a failure
// and is cached (RFC 9520 §2.3). A panicking fetch function is recovered
// and reported as an error wrapping [ErrFetchPanicked], cached like any
// failure.
//
// # Collapsing and cancellation
//
// Concurrent Gets for the same key share one fetch: the first starts it,
// the others wait for it (counted as collapsed). The fetch runs in its own
// goroutine with a context that keeps the first caller's values (trace
// identifiers, say) but not its cancellation, bounded by FetchTimeout. So
// a caller that gives up, returning its own ctx.Err() at once, never
// fails the fetch for the others, and its cancellation is never cached.
// A value handed to the waiters of a fetch is the fresh result of that
// fetch, delivered even if its lifetime (counted from the fetch start)
// ran out while it was in progress; it is then not stored.
//
// # Refresh-ahead
//
// A popular entry would otherwise expire under load and make the next
// callers wait for a fetch. When a hit comes in the last
// Config.RefreshWindow of an entry's lifetime (default: the last 10%, for
// entries living at least Config.MinRefreshLifetime, default 10 s), the
// cache starts one background fetch, using the fetch function of that hit,
// and goes on serving the current value, which is still within its TTL.
// The new value replaces it when it arrives (a new TTL of zero removes
// it). At most one refresh is attempted per entry; if it fails, the
// current value is served until it expires and not a moment longer, and
// the next Get after that fetches normally. Refresh-ahead thus hides
// latency without ever extending a lifetime.
//
// # Bounds and statistics
//
// The cache holds at most Config.MaxEntries entries (values and failures
// alike, as RFC 9520 §5 asks for a bounded failure cache) and evicts the
// least recently used one when full. Expired entries are dropped when
// accessed, and by [Cache.Sweep] (or [Cache.RunSweeper]) if run. A hit
// takes one mutex, does not allocate and costs about 100 ns. [Cache.Stats]
// returns counters; [NewCollector] exports them to Prometheus.
//
// # The persistent store
//
// MTA-STS policies are cached for their max_age, up to a year (RFC 8461
// §3.2), and when no live policy can be fetched a sender MUST apply a
// valid, non-expired cached one (RFC 8461 §3.3); losing them at every
// restart would give an attacker who blocks the policy fetch a downgrade
// window. [Store] keeps such values on disk, one
// file per key. Files are named by the hex SHA-256 of the key, so keys
// (domain names from the network, untrusted) cannot reach outside the
// directory whatever bytes they contain; the key is stored in the file and
// checked on every read. Each file holds, big-endian:
//
//	"PCST" | version (2 bytes, = 1) | expiry seconds (8) | expiry ns (4) |
//	key length (2) | key | payload length (4) | CRC-32C (4) | payload
//
// where the CRC-32C covers every other byte of the file. A file that is
// truncated, too long, of another format or version, for another key, or
// failing its checksum is reported through StoreOptions.OnCorrupt, deleted,
// and reported by Get as an error wrapping [ErrCorrupt]: damaged data is
// never returned. Writes go to a temporary file in the same directory,
// which is fsynced and renamed over the entry, and the directory is then
// fsynced, so a crash leaves either the old or the new entry; temporary
// files left by a crash are removed by [OpenStore]. Expired entries are
// invisible to Get and Keys and deleted by [Store.Prune]. A Store is safe
// for concurrent use, but a directory must be used by one process at a
// time.
package policycache
