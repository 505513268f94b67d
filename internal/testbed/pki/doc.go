// Package pki builds X.509 certificate hierarchies inside a test process, so
// that TLS, DANE and MTA-STS tests never depend on certificate files from
// outside the repository or on the host's trust store.
//
// # Background
//
// A TLS server proves its identity with a chain of certificates: the leaf
// (end-entity) certificate names the host in its subjectAltName (SAN)
// extension, and each certificate is signed by the next one up, ending at a
// trust anchor. Two independent ways to decide what to trust matter for mail:
//
//   - PKIX (RFC 5280), used by MTA-STS (RFC 8461 §4.2): the chain must end at
//     a root from a trust store, every certificate must be inside its
//     validity window, the leaf must carry the host name in a SAN, and any
//     name constraints in the issuing CAs must permit that name.
//   - DANE (RFC 6698, RFC 7672): TLSA records published under DNSSEC name
//     the certificate or public key to expect. A TLSA record has three
//     parameters: the certificate usage (RFC 6698 §2.1.1; SMTP uses only
//     DANE-TA(2) and DANE-EE(3), RFC 7672 §3.1), the selector (0: the whole
//     certificate, 1: its SubjectPublicKeyInfo, §2.1.2) and the matching type
//     (0: the data itself, 1: SHA-256, 2: SHA-512, §2.1.3). With DANE-EE(3)
//     the validity dates and names of the leaf are ignored (RFC 7672
//     §3.1.1); with DANE-TA(2) the names are checked against the chain that
//     starts at the matched trust anchor (RFC 7672 §3.1.2).
//
// This package creates every kind of certificate those checks must accept or
// reject: leaves from a private root, leaves below an intermediate CA,
// self-signed leaves, expired and not-yet-valid leaves, leaves for the wrong
// name, wildcard leaves, leaves without a SAN, and CAs restricted by name
// constraints. It also renders TLSA records for them in the presentation
// format understood by github.com/miekg/dns.
//
// All keys are generated fresh per call (ECDSA P-256 unless asked otherwise),
// so nothing secret is committed to the repository. Every constructor takes a
// testing.TB and fails the test on error; the package is meant for tests
// only.
package pki
