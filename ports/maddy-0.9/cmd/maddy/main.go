// Command maddy is maddy v0.9.4 with the daneguard security policy compiled
// in: maddy's own command line (run, verify-config, version) plus
//
//	maddy check DOMAIN    show what the policy sees and decides for a domain (docs/checker.md)
//	maddy check --self    check this server's own inbound DANE and MTA-STS (docs/own-domain.md)
//	maddy nextkey ...     roll a `tls file` key without breaking DANE (create, status, switch)
//	maddy tlsrpt list     show the recorded TLS report data (docs/tlsrpt.md)
//	maddy tlsrpt send     have the running maddy send a day's TLS reports now
//	maddy tlsrpt received show the TLS reports others sent about our domains (docs/tlsrpt-receiver.md)
//
// See ports/maddy-0.9/README.md for building it, and docs/install.md for
// what differs from the maddy 0.8 build.
package main

import "github.com/maddy-dane/daneguard/ports/maddy-0.9/internal/maddymain"

func main() { maddymain.Main() }
