// Package coldbench measures the cold path of outbound delivery: the first
// message to a destination whose DNS nothing has cached yet, which is every
// new destination, every destination whose records expired, and every
// destination after a restart.
//
// The measurement (cold_test.go, run by `make bench-cold`, skipped unless
// DANEGUARD_COLD=1) puts a fixed latency between the validating unbound
// and the authoritative server (dnsbed.Server.SetDelay), so that every
// cache miss of the resolver costs one round trip as it does on the
// Internet, while the resolver's own cache answers at once. For each
// message it starts a new maddy process (so daneguard's in-process cache
// is empty), flushes unbound's cache, submits one message and times it
// until the destination's SMTP server accepted it. It compares maddy
// without any mx_auth policy, with daneguard, and with maddy's built-in
// dane policy, and counts from the authoritative server's query log how
// many resolver round trips happened one after the other before maddy
// opened its first SMTP connection.
//
// The package holds no code besides its tests.
package coldbench
