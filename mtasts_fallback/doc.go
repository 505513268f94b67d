// Package mtastsfallback is a client for SMTP MTA Strict Transport Security
// (MTA-STS, RFC 8461) for use by a sending MTA. It answers three questions:
// what MTA-STS policy does a destination domain publish, may this MX host be
// used under it, and does this TLS connection satisfy it. It has no
// dependency on any particular mail server.
//
// # What MTA-STS protects against
//
// SMTP between servers uses STARTTLS opportunistically: a sender upgrades to
// TLS when the receiver offers it and does not check the certificate. An
// active attacker can strip the STARTTLS offer, or point the MX lookup at a
// host of his own, and read the mail. MTA-STS lets a domain declare, over
// DNS plus HTTPS, "my MX hosts are these, and they all have certificates
// that a web browser would accept; do not deliver otherwise". Unlike DANE
// (RFC 7672) it needs no DNSSEC; the price is that its first discovery can
// be blocked by the same attacker (RFC 8461 §10.2), which is why policies
// are cached for a long time and refreshed before they expire. Where both
// apply, DANE wins: a failing DANE check must never be overridden by a
// passing MTA-STS check (RFC 8461 §2). That decision belongs to the caller.
//
// # Discovery
//
// A domain announces a policy with a TXT record at "_mta-sts.<domain>"
// (RFC 8461 §3.1):
//
//	_mta-sts.example.com. IN TXT "v=STSv1; id=20160831085700Z;"
//
// The id changes whenever the policy changes, so a sender that has cached
// the policy only needs this cheap DNS lookup to know that its copy is
// current. ParseTXT picks the one record starting with "v=STSv1" and returns
// its id; zero or several such records mean "no policy announced".
//
// The policy itself is a small text file fetched from
// https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 §3.2, §3.3):
//
//	version: STSv1
//	mode: enforce
//	mx: mail.example.com
//	mx: *.example.net
//	max_age: 604800
//
// Fetcher retrieves it with the protections §3.3 asks for: the HTTPS
// server must present a WebPKI-valid certificate for "mta-sts.<domain>",
// redirects are refused, only status 200 and media type text/plain are
// accepted, the body is limited to 64 KiB and the whole exchange to one
// minute. ParsePolicy turns the body into a Policy.
//
// # Caching
//
// A fetched policy may be used for max_age seconds after the fetch
// (RFC 8461 §3.2). Manager keeps policies in memory and in a persistent
// Store, so that a restart does not reopen the window an attacker needs.
// For each message it looks up the TXT record: same id as the cached policy
// means use the cache; a new id (or no cached policy) means fetch. If the
// TXT record disappears, or DNS or the fetch fails, a cached policy that has
// not expired stays in force (§3.3, §5.1): removing a policy is done by
// publishing one in mode "none" (§8.3), not by deleting DNS records.
// Failures are remembered with a growing delay so that a broken domain is
// not hit for every message, and concurrent requests for one domain share a
// single lookup and fetch. In the background (Run, or RefreshNow), policies
// are re-fetched daily whatever the TXT record says, so that an attacker
// would have to block every refresh during the whole max_age (§10.2).
//
// # Applying a policy
//
// Given a policy, a sender checks each candidate MX (RFC 8461 §4):
//
//  1. the MX host name must match one of the policy's mx patterns (§4.1;
//     Policy.MatchMX, Policy.CheckMX); "*.example.net" matches exactly one
//     extra left-most label;
//  2. the MX must offer STARTTLS, negotiate TLS 1.2 or later (§7.2) and
//     present a certificate chain valid under WebPKI for the MX host name
//     (§4.2; CheckConn).
//
// What happens on failure depends on the mode (§5): "enforce" forbids
// delivery to that MX (try the next one; if none is left, the message stays
// queued: the failure is temporary, and the TXT record must be checked for
// a newer policy before giving up); "testing" delivers anyway and only
// reports; "none" means the domain has withdrawn its policy. This package
// returns failures as *Error values carrying an RFC 8460 §4.3 result type
// (Reason) for TLS reporting, with ReportOnly set in testing mode.
//
// # Typical use
//
//	m, err := mtastsfallback.NewManager(mtastsfallback.Config{
//		LookupTXT: resolver.LookupTXT, // e.g. net.DefaultResolver.LookupTXT
//		Store:     store,               // optional
//		Logger:    slog.Default(),
//	})
//	go m.Run(ctx)
//	defer m.Close()
//
//	res, err := m.Policy(ctx, "example.com") // err: invalid domain or ctx only
//	// res.Err: discovery trouble worth logging/reporting; decisions use res.Policy.
//	for _, mx := range mxHosts {
//		if err := res.Policy.CheckMX(mx); err != nil && !mtastsfallback.IsReportOnly(err) {
//			continue // treat as unreachable (RFC 8461 §8.4)
//		}
//		// connect, STARTTLS without verification, then:
//		err := mtastsfallback.CheckConn(res.Policy, mx, conn.ConnectionState(), nil, time.Now())
//		...
//	}
//
// # What is left to the caller
//
//   - IDNA: domain and host names are handled in ASCII (A-label) form
//     only; convert U-labels first (NormalizeDomain explains).
//   - DNS: LookupTXT must follow CNAMEs (RFC 8461 §3.1, §8.2) and join the
//     strings of each TXT record; net.Resolver does both.
//   - Smart hosts: the Policy Domain is the smart host's domain when mail is
//     relayed through one (§3.4); pass that to Manager.Policy.
//   - Certificate revocation (OCSP, CRLs) is not checked; RFC 8461 makes it
//     optional.
//   - Sending SNI with the MX host name (§7.1) is the SMTP client's job.
package mtastsfallback
