// Package subcmd is the MTA-free part of the subcommands a daneguard maddy
// build adds to maddy's command line: `maddy check` (docs/checker.md) and
// `maddy tlsrpt` (docs/tlsrpt.md). Each maddy build's main (examples/maddy
// for maddy 0.8, ports/maddy-0.9 for maddy 0.9) supplies what needs its
// maddy: reading the dane block out of maddy.conf. The package imports
// nothing of maddy.
package subcmd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/maddy-dane/daneguard/internal/checker"
	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/urfave/cli/v2"
)

// DaneBlock is what `check --config` takes from a configuration: the
// first dane block's validated settings and policy table, and the global
// hostname.
type DaneBlock struct {
	Settings    service.Settings
	PolicyTable service.TableLookup // nil: none
	Hostname    string
	// Done releases what reading the configuration opened; may be nil.
	Done func()
}

// LoadFunc reads the first dane block of the configuration file at path
// the way the maddy it is built for configures it, without starting
// anything.
type LoadFunc func(path string) (DaneBlock, error)

// Self is `maddy check --self` (docs/checker.md, "Checking your own
// domain"), for builds that offer it: Run does the check, Flags are the
// flags only --self uses.
type Self struct {
	Run   func(c *cli.Context) error
	Flags []cli.Flag
}

// Check is `maddy check`: docs/checker.md is its manual. The work is done
// by internal/checker with the policy engine; this is only the command
// line. load reads the configuration with the maddy it is built for; self,
// if not nil, adds --self.
func Check(load LoadFunc, self *Self) *cli.Command {
	cmd := &cli.Command{
		Name:      "check",
		Usage:     "Show what the daneguard policy sees and decides for a destination domain",
		ArgsUsage: "DOMAIN",
		Description: `Looks up the domain's MX hosts, their DNSSEC status, addresses, TLSA records
and MTA-STS policy, and runs the daneguard engine on them. With --connect it
also connects to port 25 of each MX host, does STARTTLS like maddy and prints
the verdict a delivery would get.

Exit status: 0 authenticated (without --connect: some MX host passes the
pre-connection checks), 1 delivered encrypted or in plaintext without
authentication, 2 deferred, 3 usage or configuration error.`,
		Flags: []cli.Flag{
			&cli.PathFlag{Name: "config", Usage: "read the dane { } block (resolver, default_level, policy, policy_table, roots) from this maddy.conf"},
			&cli.BoolFlag{Name: "connect", Usage: "connect to each MX host on port 25 and report the verdict"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON (schema " + checker.Schema + ")"},
			&cli.StringFlag{Name: "level", Usage: "check as if the domain's policy were LEVEL (e.g. dane-only, or \"fingerprint sha256:HEX\")"},
			&cli.StringSliceFlag{Name: "resolver", Usage: "validating DNS resolver ADDR[:PORT] (repeatable); default: the config's, else /etc/resolv.conf"},
			&cli.BoolFlag{Name: "trust-remote-resolver", Usage: "trust DNSSEC status from resolvers not on loopback"},
			&cli.PathFlag{Name: "roots", Usage: "PEM file of trusted roots for the verify level and MTA-STS (default: the config's, else the system's)"},
			&cli.BoolFlag{Name: "no-mtasts", Usage: "do not look up the MTA-STS policy"},
			&cli.StringFlag{Name: "helo", Value: "localhost", Usage: "EHLO name used with --connect (default with --config: the configuration's hostname)"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "time limit for each SMTP connection"},
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return cli.Exit("usage error: "+err.Error(), checker.ExitUsage)
		},
		Action: func(c *cli.Context) error { return runCheck(c, load, self) },
	}
	if self != nil {
		cmd.Usage += "; with --self, check this server's own inbound DANE and MTA-STS"
		cmd.ArgsUsage = "DOMAIN | --self"
		cmd.Description += `

check --self [--json] [--days N] checks this server as a sender would see
it, for maddy's hostname and every local domain of maddy.conf: the MX RRset,
the TLSA RRset of each MX host that is this server against the certificate
maddy loads and against what each of the host's addresses serves on port 25,
rollover readiness, the MTA-STS policy and the TLS-RPT record. It reads the
resolver from the dane block. Exit status: 0 all good, 1 warnings (mail
flows, but something will break or is weaker than intended), 2 broken now,
3 usage or configuration error (docs/checker.md).`
		cmd.Flags = append(cmd.Flags, &cli.BoolFlag{Name: "self", Usage: "check this server's own inbound DANE, MTA-STS and TLS-RPT (needs --config)"})
		cmd.Flags = append(cmd.Flags, self.Flags...)
	}
	return cmd
}

func usageErr(format string, args ...any) error {
	return cli.Exit("maddy check: "+fmt.Sprintf(format, args...), checker.ExitUsage)
}

func runCheck(c *cli.Context, load LoadFunc, self *Self) error {
	if self != nil {
		if c.Bool("self") {
			return self.Run(c)
		}
		for _, f := range self.Flags {
			if name := f.Names()[0]; c.IsSet(name) {
				return usageErr("--%s is for --self", name)
			}
		}
	}
	if c.NArg() != 1 {
		return usageErr("want exactly one DOMAIN argument (see maddy check --help)")
	}
	domain := c.Args().First()

	helo := c.String("helo")
	rootsPath := c.Path("roots")
	if rootsPath != "" {
		// Before load enters the state directory.
		if abs, err := filepath.Abs(rootsPath); err == nil {
			rootsPath = abs
		}
	}
	// The checker builds its service with the module's own constructor:
	// the configuration's settings (or the defaults), changed by the
	// command line. It runs with NoRun: MTA-STS policies are looked up
	// afresh and kept in memory, nothing of the server's state is touched.
	settings := service.DefaultSettings()
	var deps service.Deps
	cleanup := func() {}
	// --config after "check", or maddy's global --config / MADDY_CONFIG.
	configPath := ""
	for _, ctx := range c.Lineage() {
		if ctx.IsSet("config") {
			configPath = ctx.Path("config")
			break
		}
	}
	if configPath != "" {
		blk, err := load(configPath)
		if err != nil {
			return usageErr("configuration: %v", err)
		}
		if blk.Done != nil {
			cleanup = blk.Done
		}
		if !c.IsSet("helo") && blk.Hostname != "" {
			helo = blk.Hostname
		}
		settings = blk.Settings
		deps.PolicyTable = blk.PolicyTable
	}
	defer cleanup()
	settings.Debug = false
	settings.TLSRPT = nil // the checker records nothing
	if servers := c.StringSlice("resolver"); len(servers) != 0 {
		settings.Resolvers = servers
	}
	if c.Bool("trust-remote-resolver") {
		settings.TrustRemoteResolver = true
	}
	if path := rootsPath; path != "" {
		pool, err := service.ReadRootsPEM(path)
		if err != nil {
			return usageErr("roots: %v", err)
		}
		settings.RootsPath, settings.Roots = path, pool
	}
	if spec := c.String("level"); spec != "" {
		pol, err := engine.ParsePolicySpec(spec)
		if err != nil {
			return usageErr("--level: %v", err)
		}
		pol.Source = "command-line"
		deps.Policy = func(context.Context, string) (engine.DomainPolicy, bool, error) { return pol, true, nil }
	}
	// MTA-STS: on unless --no-mtasts or the configuration turns it off
	// (`mtasts off`).
	if c.Bool("no-mtasts") {
		settings.MTASTS = false
	}
	deps.Log, deps.NoRun, deps.Instance = quietLog{}, true, "check"
	svc, err := service.New(settings, deps)
	if err != nil {
		return usageErr("%v", err)
	}
	defer svc.Close()
	resolvers := svc.Resolvers()
	if bad := svc.UntrustedResolvers(); len(bad) != 0 && (configPath == "" || c.IsSet("resolver") || c.IsSet("trust-remote-resolver")) {
		// (A configuration's own resolvers are warned about by its dane
		// block, in maddy's log.)
		fmt.Fprintf(os.Stderr, "warning: resolvers not on loopback are not trusted for DNSSEC (%s); DANE will not apply\n", strings.Join(bad, ", "))
	}
	eng := svc.Engine()
	sts := settings.MTASTS

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := checker.Run(ctx, checker.Options{
		Engine:    eng,
		Connect:   c.Bool("connect"),
		HeloName:  helo,
		Timeout:   c.Duration("timeout"),
		MTASTS:    sts,
		Roots:     settings.Roots,
		Resolvers: resolvers,
	}, domain)
	if err != nil {
		return usageErr("%v", err)
	}
	if c.Bool("json") {
		err = rep.WriteJSON(os.Stdout)
	} else {
		err = rep.WriteText(os.Stdout)
	}
	if err != nil {
		return cli.Exit(err.Error(), checker.ExitUsage)
	}
	if rep.ExitCode != 0 {
		return cli.Exit("", rep.ExitCode)
	}
	return nil
}

// quietLog is the checker service's log: the report says everything.
type quietLog struct{}

func (quietLog) Msg(string, ...any)           {}
func (quietLog) Error(string, error, ...any)  {}
func (quietLog) DebugMsg(string, ...any)      {}
func (quietLog) Debug() bool                  { return false }
func (l quietLog) With(...any) service.Logger { return l }
