// Package smtpbed runs real SMTP servers on loopback addresses for tests of
// mail delivery: the receiving side of a DANE or MTA-STS protected hop.
//
// # Background
//
// An SMTP client that delivers mail to another domain connects to port 25
// of one of the domain's MX hosts, reads the 220 greeting, introduces itself
// with EHLO and reads the list of extensions the server supports. If
// STARTTLS is among them the client may (opportunistic TLS, RFC 3207) or
// must (DANE, RFC 7672 §2.2; MTA-STS "enforce", RFC 8461 §5) upgrade the
// connection to TLS before sending MAIL FROM, RCPT TO and DATA. During the
// TLS handshake the client sends the server's host name as Server Name
// Indication (SNI); RFC 7672 §8.1 asks DANE clients to send the MX host
// name there. After the upgrade the client repeats EHLO and continues inside
// TLS.
//
// A security policy is only as good as its failure handling, so the servers
// started here can also misbehave on purpose: advertise STARTTLS and then
// fail every handshake (what a downgrade attacker or a broken server looks
// like), reject the transaction with a chosen reply at MAIL, RCPT or DATA,
// or drop the connection right after answering EHLO.
//
// Every server records what happened on each connection (whether STARTTLS
// was attempted, the SNI the client sent, the negotiated TLS version and
// cipher suite, whether the handshake failed) and every accepted message
// together with the TLS state it arrived under, so tests can assert that a
// message was, or was not, delivered over a protected channel.
//
// Servers use github.com/emersion/go-smtp (the foxcpp fork this module
// pins), listen only on 127.0.0.0/8 or ::1, are safe for many concurrent
// connections, and are shut down through t.Cleanup. Fixed ports such as 25
// need a private network namespace; see package netns.
package smtpbed
