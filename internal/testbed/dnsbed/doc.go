// Package dnsbed is the DNS half of the test bed: a DNSSEC-signing
// authoritative server built on github.com/miekg/dns, and a launcher for a
// real validating resolver, unbound, that trusts the server's root key.
// Tests get SECURE, INSECURE and BOGUS answers validated for real, with the
// AD bit set by unbound, instead of faking them.
//
// # DNSSEC in one page
//
// A validating resolver trusts one key, the trust anchor: here the key of
// the test root zone ".", given to unbound as a DS record
// (Server.TrustAnchor). From there trust flows down the tree (RFC 4033 §2,
// RFC 4035 §5):
//
//   - every zone has a DNSKEY RRset; this server uses one ECDSA P-256 key
//     (algorithm 13, RFC 6605) per zone, flagged as key-signing key (257);
//   - every RRset a zone is authoritative for carries an RRSIG made with
//     that key, valid from an hour ago for three weeks;
//   - a parent vouches for a signed child with a DS record: a SHA-256
//     digest of the child's DNSKEY (RFC 4509), itself signed by the parent.
//
// Answers come out in one of three states (RFC 4035 §4.3):
//
//   - secure: a signature chain reaches the trust anchor; unbound sets AD;
//   - insecure: the parent proves, with a signed NSEC record, that the child
//     has no DS (Unsigned zones); unbound answers without AD;
//   - bogus: the chain should exist but fails, e.g. signatures that do not
//     verify (BadSignatures zones); unbound answers SERVFAIL.
//
// Negative answers are proved too (authenticated denial, RFC 4035 §3.1.3).
// Each signed zone lists its names in canonical order (RFC 4034 §6.1) and
// links each to the next with an NSEC record whose type bitmap says which
// types exist at the name. A NODATA answer shows the NSEC of the name
// without the asked type. An NXDOMAIN answer shows an NSEC whose span
// covers the name and one covering the wildcard at the closest encloser, so
// no wildcard could have matched. Empty non-terminals (_tcp.mx1.example.
// when only _25._tcp.mx1.example. has records) exist without records: they
// get NODATA, proved by the NSEC whose span covers them and whose next name
// lies below them (RFC 7129 §3.2). The SOA goes in the authority section of
// every negative answer with TTL min(SOA TTL, MINIMUM) (RFC 2308 §3), the
// TTL of the NSEC records as well (RFC 9077).
//
// # The server
//
// One Server answers for all its zones from one UDP+TCP address. The
// deepest zone containing a query name answers it, except DS queries for a
// zone's apex, which the parent answers. Creating a zone below another
// gives the parent the delegation: the child's NS records and, when the
// child is signed, its DS. Records are plain zone-file text. Every change
// re-signs and bumps the SOA serial; signing happens lazily, on the next
// query after a change. CNAMEs are answered with the CNAME and followed
// while the target has data in a served zone (RFC 1034 §4.3.2); a target
// that does not exist is left to the resolver, which asks for it itself.
// Faults (SERVFAIL, no answer, truncation) can be injected per name and
// type, and queries are counted.
//
// # The resolver
//
// StartUnbound writes a configuration into the test's temporary directory
// and runs unbound in the foreground with "module-config: validator
// iterator", forwarding everything to the server. Inside the test network
// namespace (package netns) it listens on 127.0.0.1:53, where the
// namespace's resolv.conf points; outside it on a free loopback port.
// unbound-control is reachable through a unix socket for statistics and
// cache flushes.
package dnsbed
