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
//
// The receiving side (receive.go and received_*.go) takes the reports
// other MTAs send about the operator's own domains: ParseEmail for
// RFC 8460 §5.3 report emails, Handler for §5.4 HTTPS POSTs, ParseReport
// for the §4.4 JSON itself (strict, with errors naming the field), all
// bounded in size and decompressed size. ReceivedStore keeps them
// (duplicates by report-id once, retention by day), SummarizeReceived
// aggregates them per day and policy domain, and ReceivedMetrics counts
// them for Prometheus with bounded labels.
package tlsrpt
