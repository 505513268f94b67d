package policycache

import "time"

// DefaultMaxNegativeTTL is the cap [NegativeTTL] applies when given none:
// RFC 2308 §5 reports that one to three hours work well and that more than
// a day is problematic.
const DefaultMaxNegativeTTL = 3 * time.Hour

// NegativeTTL returns how long a negative answer (NXDOMAIN or NODATA) may
// be cached, for a fetcher to return as its TTL: the smaller of the TTL of
// the SOA record in the authority section and its MINIMUM field (RFC 2308
// §5), capped at limit (DefaultMaxNegativeTTL if limit <= 0). A TTL with
// its most significant bit set counts as zero (RFC 2181 §8).
//
// A negative answer without an SOA record should not be cached at all
// (RFC 2308 §5); a fetcher then returns a TTL of zero instead of calling
// this function.
func NegativeTTL(soaTTL, soaMinimum uint32, limit time.Duration) time.Duration {
	if limit <= 0 {
		limit = DefaultMaxNegativeTTL
	}
	// RFC 2181 §8: a TTL with the top bit set is treated as zero.
	if soaTTL > 1<<31-1 {
		soaTTL = 0
	}
	if soaMinimum > 1<<31-1 {
		soaMinimum = 0
	}
	ttl := time.Duration(min(soaTTL, soaMinimum)) * time.Second
	return min(ttl, limit)
}
