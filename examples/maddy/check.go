package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/hooks"
	"github.com/foxcpp/maddy/framework/log"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard"
	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/checker"
	"github.com/maddy-dane/daneguard/internal/engine"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	"github.com/urfave/cli/v2"
)

func init() { extraCommands = append(extraCommands, checkCommand()) }

// checkCommand is `maddy check`: docs/checker.md is its manual. The work
// is done by internal/checker with the policy engine; this is only the
// command line.
func checkCommand() *cli.Command {
	return &cli.Command{
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
		Action: runCheck,
	}
}

func usageErr(format string, args ...any) error {
	return cli.Exit("maddy check: "+fmt.Sprintf(format, args...), checker.ExitUsage)
}

func runCheck(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErr("want exactly one DOMAIN argument (see maddy check --help)")
	}
	domain := c.Args().First()

	helo := c.String("helo")
	var (
		base      engine.Config
		resolvers []string
		cleanup   = func() {}
	)
	rootsPath := c.Path("roots")
	if rootsPath != "" {
		if abs, err := filepath.Abs(rootsPath); err == nil {
			rootsPath = abs
		}
	}
	// --config after "check", or maddy's global --config / MADDY_CONFIG.
	configPath := ""
	for _, ctx := range c.Lineage() {
		if ctx.IsSet("config") {
			configPath = ctx.Path("config")
			break
		}
	}
	if configPath != "" {
		inst, hostname, done, err := loadDaneConfig(configPath)
		if err != nil {
			return usageErr("configuration: %v", err)
		}
		cleanup = done
		if !c.IsSet("helo") && hostname != "" {
			helo = hostname
		}
		base = inst.Engine().Config()
		resolvers = inst.Resolvers()
	} else {
		base.DefaultLevel = engine.LevelDANE
	}
	defer cleanup()

	if servers := c.StringSlice("resolver"); len(servers) != 0 || base.Querier == nil || c.Bool("trust-remote-resolver") {
		if len(servers) == 0 {
			servers = resolvers // the configuration's, or resolv.conf's
		}
		res, err := dane.NewResolver(dane.ResolverConfig{Servers: servers, TrustRemote: c.Bool("trust-remote-resolver")})
		if err != nil {
			return usageErr("resolver: %v", err)
		}
		if bad := res.UntrustedServers(); len(bad) != 0 {
			fmt.Fprintf(os.Stderr, "warning: resolvers not on loopback are not trusted for DNSSEC (%s); DANE will not apply\n", strings.Join(bad, ", "))
		}
		base.Querier, resolvers = res, res.Servers()
	}
	if path := rootsPath; path != "" {
		pem, err := os.ReadFile(path)
		if err != nil {
			return usageErr("roots: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return usageErr("roots: no PEM certificates in %s", path)
		}
		base.Roots = pool
	}
	if spec := c.String("level"); spec != "" {
		pol, err := engine.ParsePolicySpec(spec)
		if err != nil {
			return usageErr("--level: %v", err)
		}
		pol.Source = "command-line"
		base.Policies = func(context.Context, string) (engine.DomainPolicy, bool, error) { return pol, true, nil }
	}
	// MTA-STS: on unless --no-mtasts or the configuration turns it off
	// (`mtasts off`). The checker never uses the server's MTA-STS manager
	// and store: it looks policies up afresh, in memory.
	sts := !c.Bool("no-mtasts")
	if configPath != "" && base.STS == nil {
		sts = false
	}
	base.STS = nil

	// A fresh engine (and cache) with the configured policies.
	eng, err := engine.New(base)
	if err != nil {
		return usageErr("%v", err)
	}
	if sts {
		mgr, err := mtastsfallback.NewManager(mtastsfallback.Config{
			LookupTXT: eng.LookupTXT,
			Fetcher:   &mtastsfallback.Fetcher{RootCAs: base.Roots},
		})
		if err != nil {
			return usageErr("%v", err)
		}
		defer mgr.Close()
		eng.SetSTS(mgr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := checker.Run(ctx, checker.Options{
		Engine:    eng,
		Connect:   c.Bool("connect"),
		HeloName:  helo,
		Timeout:   c.Duration("timeout"),
		MTASTS:    sts,
		Roots:     base.Roots,
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

// loadDaneConfig initializes the configuration like `maddy run` would,
// without starting endpoints or queues, and returns the first `dane { }`
// policy it built. done releases what the configuration opened.
func loadDaneConfig(path string) (*daneguard.Policy, string, func(), error) {
	nodes, err := readConfig(path)
	if err != nil {
		return nil, "", nil, err
	}
	// The checker must not touch the running server's MTA-STS policy store
	// (it builds its own MTA-STS component, in memory): drop mtasts_dir,
	// and below hide the state directory, the store's default location.
	nodes = withoutDirective(nodes, "dane", "mtasts_dir")
	globals, blocks, err := maddy.ReadGlobals(nodes)
	if err != nil {
		return nil, "", nil, err
	}
	// Relative paths in maddy.conf (table files, roots) are relative to
	// the state directory, where `maddy run` works.
	if dir := config.StateDirectory; dir != "" {
		if err := os.Chdir(dir); err != nil {
			fmt.Fprintf(os.Stderr, "note: cannot enter the state directory (%v); relative paths in %s are taken from the current directory\n", err, path)
		}
	}
	config.StateDirectory = ""
	if out := log.DefaultLogger.Out; out != nil {
		// Hiding the state directory makes the dane block say that its
		// MTA-STS policies stay in memory: true, expected, and not the
		// operator's concern here.
		log.DefaultLogger.Out = dropOutput{Output: out, prefix: "daneguard: MTA-STS policies are kept in memory only"}
	}
	module.NoRun = true
	done := func() { hooks.RunHooks(hooks.EventShutdown) }
	_, mods, err := maddy.RegisterModules(globals, blocks)
	if err != nil {
		done()
		return nil, "", nil, err
	}
	before := len(daneguard.Instances())
	if _, err := initRemoteTargets(mods); err != nil {
		done()
		return nil, "", nil, err
	}
	insts := daneguard.Instances()[before:]
	if len(insts) == 0 {
		done()
		return nil, "", nil, errors.New("no target.remote block with mx_auth { dane { ... } } found in " + path)
	}
	if len(insts) > 1 {
		fmt.Fprintf(os.Stderr, "note: %d dane blocks in %s; using the first\n", len(insts), path)
	}
	hostname, _ := globals["hostname"].(string)
	return insts[0], hostname, done, nil
}

// withoutDirective returns nodes with every directive name removed from
// the blocks called block, at any depth.
func withoutDirective(nodes []config.Node, block, name string) []config.Node {
	out := make([]config.Node, 0, len(nodes))
	for _, n := range nodes {
		children := withoutDirective(n.Children, block, name)
		if n.Name == block {
			kept := children[:0]
			for _, c := range children {
				if c.Name != name {
					kept = append(kept, c)
				}
			}
			children = kept
		}
		if n.Children != nil {
			n.Children = children
		}
		out = append(out, n)
	}
	return out
}

// dropOutput is a maddy log output that drops messages starting with
// prefix.
type dropOutput struct {
	log.Output
	prefix string
}

func (d dropOutput) Write(stamp time.Time, debug bool, msg string) {
	if !strings.HasPrefix(msg, d.prefix) {
		d.Output.Write(stamp, debug, msg)
	}
}
