// Command maddy is maddy v0.8.2 with the daneguard security policy compiled
// in. It keeps maddy's own command line (run, version, and maddy's hidden
// helpers) by calling maddy's CLI entry point, and adds:
//
//	maddy verify-config   check a configuration file without starting the server
//	maddy check DOMAIN    show what the policy sees and decides for a domain (docs/checker.md)
//	maddy check --self    check this server's own inbound DANE and MTA-STS (docs/own-domain.md)
//	maddy nextkey ...     roll a `tls file` key without breaking DANE (create, status, switch)
//	maddy tlsrpt list     show the recorded TLS report data (docs/tlsrpt.md)
//	maddy tlsrpt send     have the running maddy send a day's TLS reports now
//	maddy tlsrpt received show the TLS reports others sent about our domains (docs/tlsrpt-receiver.md)
//
// Account and IMAP management commands (creds, imap-acct, imap-mboxes, ...)
// live in a maddy package that cannot be linked from outside maddy's module;
// use a stock maddy v0.8.2 binary with the same config for those (see
// docs/install.md).
package main

import (
	"fmt"
	"os"
	_ "unsafe" // for go:linkname

	"github.com/maddy-dane/daneguard"
	"github.com/urfave/cli/v2"
)

// maddy's CLI application lives in internal/cli, which the maddy root
// package (imported by daneguard) links and initializes: the "run" and
// "version" commands and the global flags are registered there by maddy
// itself. These two functions are its public-in-all-but-name entry points.

//go:linkname maddyCLIRun github.com/foxcpp/maddy/internal/cli.Run
func maddyCLIRun()

//go:linkname maddyAddSubcommand github.com/foxcpp/maddy/internal/cli.AddSubcommand
func maddyAddSubcommand(cmd *cli.Command)

func main() {
	maddyAddSubcommand(verifyConfigCommand())
	for _, c := range extraCommands {
		maddyAddSubcommand(c)
	}
	// Refuse to run at all if this maddy would not run the policy.
	if err := daneguard.CheckIntegration(); err != nil {
		fmt.Fprintln(os.Stderr, "daneguard: this binary's maddy does not run the daneguard policy for mx_auth { dane }:", err)
		os.Exit(2)
	}
	maddyCLIRun()
}

// extraCommands are added by other files of this package.
var extraCommands []*cli.Command
