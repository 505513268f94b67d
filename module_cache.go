package daneguard

import (
	"context"
	"time"
)

// sweepInterval is how often expired cache entries are removed. Expired
// entries are never served; sweeping only returns their memory and keeps
// the entries gauge close to the live count.
const sweepInterval = time.Minute

// startCacheSweeper removes expired entries from the DNS cache every
// sweepInterval until Close.
func (p *Policy) startCacheSweeper() {
	ctx, cancel := context.WithCancel(context.Background())
	p.stopSweep = cancel
	go p.eng.Cache().RunSweeper(ctx, sweepInterval)
}

// Values of the stage label of maddy_daneguard_lookup_duration_seconds.
const (
	// stageDestination: the domain's policy and its MX RRset, once per
	// next-hop domain and message.
	stageDestination = "destination"
	// stageMX: address and TLSA lookups for one MX host, before connecting.
	stageMX = "mx"
	// stageConn: the check of an established connection (DANE or WebPKI
	// verification, any lookup CheckMX did not make).
	stageConn = "conn"
)

// observeLookup records the time spent in one stage since start. With a
// warm cache the destination and mx stages take well under a millisecond;
// a cold lookup shows the resolver's latency.
func observeLookup(stage string, start time.Time) {
	lookupSeconds.WithLabelValues(stage).Observe(time.Since(start).Seconds())
}
