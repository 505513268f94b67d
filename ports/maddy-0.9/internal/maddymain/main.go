// Package maddymain is the main function of the daneguard maddy 0.9
// binary (cmd/maddy), in a package of its own so that test binaries can
// run the same command line.
//
// It keeps maddy's own command line by calling maddy's CLI entry point and
// adds the maddy 0.8 build's commands: `check` (with --self), `nextkey`
// and `tlsrpt list|send|received` (internal/subcmd; the configuration
// reading that is the same in both maddy versions is internal/maddyconf,
// the rest is config.go). maddy 0.9 registers a verify-config command of
// its own, which runs maddy's configuration step (and with it every dane
// block's Configure); it is kept: the maddy 0.8 build's verify-config is
// not added (maddy's CLI takes the first command of a name, so it would
// never be reached). docs/install.md describes the difference in output.
//
// Account and IMAP management commands (creds, imap-acct, imap-mboxes, ...)
// live in a maddy package that cannot be linked from outside maddy's
// module; use a stock maddy v0.9.4 binary with the same config for those.
package maddymain

import (
	"fmt"
	"os"
	_ "unsafe" // for go:linkname

	"github.com/maddy-dane/daneguard/internal/subcmd"
	daneguard "github.com/maddy-dane/daneguard/ports/maddy-0.9"
	"github.com/urfave/cli/v2"
)

// maddy's CLI application lives in internal/cli, which the maddy root
// package (imported by the glue) links and initializes: run, version,
// verify-config and the global flags are registered there by maddy
// itself. Run and AddSubcommand have the same signatures in maddy 0.8.2
// and 0.9.4 (go:linkname does not check them).

//go:linkname maddyCLIRun github.com/foxcpp/maddy/internal/cli.Run
func maddyCLIRun()

//go:linkname maddyAddSubcommand github.com/foxcpp/maddy/internal/cli.AddSubcommand
func maddyAddSubcommand(cmd *cli.Command)

// Main runs maddy's command line with daneguard's subcommands.
func Main() {
	maddyAddSubcommand(subcmd.Check(loadDaneBlock, subcmd.SelfCheck(loadDaneBlock, serverConf)))
	maddyAddSubcommand(subcmd.NextKey(serverConf))
	rpt := subcmd.TLSRPT(tlsrptDirsFromConfig)
	rpt.Subcommands = append(rpt.Subcommands, subcmd.Received(receiverStoresFromConfig, serverConf))
	maddyAddSubcommand(rpt)
	// Refuse to run at all if this maddy would not run the policy.
	if err := daneguard.CheckIntegration(); err != nil {
		fmt.Fprintln(os.Stderr, "daneguard: this binary's maddy does not run the daneguard policy for mx_auth { dane }:", err)
		os.Exit(2)
	}
	maddyCLIRun()
}
