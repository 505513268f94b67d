// Package tlsrpt implements the sending side of SMTP TLS Reporting
// (RFC 8460): it records the outcome of every outbound SMTP session against
// the receiving domain, aggregates the outcomes per UTC day in a durable
// embedded store, discovers the domain's reporting policy (the
// "_smtp._tls" TXT record), builds the JSON report of RFC 8460 §4, and
// delivers it gzip'd by HTTPS POST and by email.
//
// The package knows nothing about maddy. The caller supplies the DNS TXT
// lookup, the function that submits an email, and the clock.
//
// Typical use:
//
//	st, err := tlsrpt.OpenStore(path, tlsrpt.StoreOptions{})
//	// for each SMTP session:
//	st.Add(now, tlsrpt.Record{...})
//	// once, in the background:
//	s := &tlsrpt.Sender{Store: st, ...}
//	go s.Run(ctx)
package tlsrpt
