// Package dane implements DANE for SMTP (RFC 7672): how a sending mail
// server learns from DNSSEC-signed DNS that a receiving server supports TLS,
// and how to authenticate that server's certificate.
//
// # Why SMTP needs it
//
// Mail servers find each other through MX records and upgrade connections
// to TLS with STARTTLS. Without more, that TLS is opportunistic: an attacker
// on the path can strip the STARTTLS offer, or present any certificate,
// because the sender has no way to know what to expect. The web answers
// this with public certificate authorities and a user who sees warnings;
// SMTP has neither an agreed list of CAs nor a user to click through.
// DANE moves the expectation into DNS, protected by DNSSEC: if the records
// are signed, an attacker cannot remove or forge them.
//
// # TLSA records
//
// A TLSA record, published at "_25._tcp.<mx host>", associates a certificate
// or public key with the server (RFC 6698 §2). It has three parameters and
// the association data, written "3 1 1 <hex>" or, with the RFC 7218 names,
// "DANE-EE(3) SPKI(1) SHA2-256(1)":
//
//   - the certificate usage says what the data designates (see below);
//   - the selector says whether the data refers to the whole certificate,
//     Cert(0), or only its SubjectPublicKeyInfo, SPKI(1), which survives
//     certificate renewals with the same key;
//   - the matching type says whether the data is the selected bytes
//     themselves, Full(0), or their SHA2-256(1) or SHA2-512(2) digest.
//
// The four usages:
//
//   - DANE-EE(3), "domain-issued certificate": the data matches the server's
//     own certificate or key. Nothing else is checked: not the names in the
//     certificate, not its dates, not who issued it (RFC 7672 §3.1.1). The
//     DNSSEC signature on the record is what vouches for the key. "3 1 1" is
//     the recommended record for SMTP servers.
//   - DANE-TA(2), "trust anchor assertion": the data designates a CA
//     certificate or key, which becomes the only trust anchor for the
//     server's chain. The chain must be valid up to that anchor and the
//     server certificate must carry an expected name (RFC 7672 §3.1.2,
//     §3.2.2). The server has to send the anchor certificate in its chain
//     unless the record contains it in full.
//   - PKIX-TA(0) and PKIX-EE(1) are DANE-TA and DANE-EE plus ordinary
//     public-CA validation. They are unusable for SMTP (RFC 7672 §3.1.3):
//     mail servers share no set of trusted CAs, and an attacker able to
//     subvert DNSSEC could replace them with DANE usages anyway.
//
// A record is "usable" when this client supports all its parameters and its
// data is well formed (RFC 6698 §4.1, RFC 7672 §3.1); Classify sorts an
// RRset into usable and unusable records, each unusable one with a reason,
// and applies digest algorithm agility (RFC 7671 §9): when a usage and
// selector are published with both SHA2-256 and SHA2-512 digests, only the
// stronger is used.
//
// # What the records mean for a connection
//
// The presence of a secure TLSA RRset is a promise by the receiving domain
// that its server speaks TLS (RFC 7672 §2.2). Hence:
//
//   - usable records: the connection must use TLS and the server must be
//     authenticated with them; otherwise try another MX host or retry later,
//     never send in cleartext;
//   - only unusable records: TLS is still mandatory, authentication is not;
//   - no secure TLSA records (insecure zone, or signed proof that none
//     exist): DANE does not apply and ordinary opportunistic TLS is used;
//   - a failed or bogus DNS lookup: the server is treated as unreachable.
//
// Decide turns these cases, and the outcome of the TLS handshake and of
// Verify, into a Verdict.
//
// # What "authenticated" means
//
// Verify reports a server as authenticated when at least one usable TLSA
// record matches its certificate chain: for DANE-EE(3), the leaf
// certificate or key matches, whatever its names or dates; for DANE-TA(2),
// a chain leads from the leaf to the designated anchor, every certificate
// on it is within its validity period, the anchor's constraints hold, and
// the leaf names one of the reference identifiers (the TLSA base domain,
// and, when the MX records were signed, the recipient domain). The
// guarantee is that the peer holds a key the receiving domain, through
// DNSSEC, vouched for. It is worth as much as the DNSSEC validation
// behind the records: the caller must only pass records a validating
// resolver marked secure.
//
// # Scope of this package
//
// The files tlsa.go, verify.go and verdict.go are the certificate side of
// DANE and use neither DNS nor the network: records in, chain in, verdict
// out. Finding the MX hosts, their TLSA records and the reference
// identifiers through a validating resolver (RFC 7672 §2) is done by the
// discovery code in the same package (Resolver, Discoverer,
// ReferenceNames).
package dane
