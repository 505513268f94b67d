// Package selfcheck checks a mail server's own inbound DANE and MTA-STS
// set-up the way a sending MTA sees it, and says what to change before
// senders start deferring mail to it.
//
// # Why a server needs to check itself
//
// A TLSA record at "_25._tcp.<mx host>" is a promise to every DANE-aware
// sender: "this server presents a certificate matching these records".
// When the promise breaks, senders do not fall back to plaintext or to
// unauthenticated TLS; they defer (RFC 7672 §2.2, §3.1), and the operator
// hears of it days later when a correspondent complains. The usual causes:
//
//   - a certificate renewal with a new key under a "3 1 1" record (maddy's
//     ACME loader makes a new key at every renewal);
//   - one of several addresses of the MX host (often the IPv6 one, served
//     by another listener or another machine) presenting another
//     certificate;
//   - an expired DNSSEC signature over the TLSA RRset: the RRset becomes
//     bogus and senders treat the host as unreachable (RFC 7672 §2.1.1);
//   - an MTA-STS policy whose "mx" lines no longer name the MX hosts.
//
// # Rollover (RFC 7671 §8, RFC 7672 §3.1.2)
//
// A TLSA RRset survives a key change only if one of its records matches
// something that does not change with the key. "3 1 1" (DANE-EE, SPKI,
// SHA-256) matches the leaf key: it survives a renewal that keeps the key
// and dies with a new key. "3 0 1" matches the whole leaf certificate and
// dies at every renewal. "2 1 1" of the issuing CA matches the issuer's
// key and survives any leaf change as long as the CA keeps issuing from
// that key. The safe sets are therefore either "3 1 1 current + 3 1 1
// next", published at least two TTLs before the switch (RFC 7671 §8.1), or
// "3 1 1 current + 2 1 1 issuer" (RFC 7671 §5.2.1, RFC 7672 §3.1.2 and §4),
// the only one that works with a loader that picks its own new key at a
// time of its choosing.
//
// Run performs the whole check with a validating Querier and a dialer;
// AssessRollover, RecordFates and the next-key functions are pure and
// unit-tested. CheckResolver is the health check of the resolver the
// server depends on. Nothing here imports maddy: reading maddy.conf is the
// command line's job.
package selfcheck
