package subcmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/urfave/cli/v2"
)

// `maddy check --self` checks this server's own inbound DANE and MTA-STS
// as a sender sees them (docs/checker.md, docs/own-domain.md). The work is
// internal/selfcheck's; the build supplies the reading of maddy.conf.

// ErrNoDaneBlock is what a LoadFunc returns (wrapped) when the
// configuration runs no daneguard policy; check --self then goes on with
// --resolver or /etc/resolv.conf.
var ErrNoDaneBlock = errors.New("no target.remote block with mx_auth { dane { ... } }")

// ServerConfFunc reads the self-check's view of the server from the
// configuration file at path, configuring nothing.
type ServerConfFunc func(path string) (*selfcheck.ServerConf, error)

// SelfCheck is check's --self: load reads the dane block (resolver,
// roots, selfcheck_* settings), server the rest of maddy.conf.
func SelfCheck(load LoadFunc, server ServerConfFunc) *Self {
	return &Self{Run: func(c *cli.Context) error { return runSelfcheck(c, load, server) }, Flags: selfcheckFlags()}
}

// selfcheckFlags are the flags of check that only --self uses; the others
// (--config, --json, --resolver, --trust-remote-resolver, --roots,
// --no-mtasts, --timeout) are shared with the domain check.
func selfcheckFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "days", Usage: "with --self: also say what still matches N days from now; a key change within N days is a warning"},
		&cli.StringSliceFlag{Name: "domain", Usage: "with --self: local domain to check (repeatable); default: the dane block's selfcheck_domains, else the destination domains of the smtp endpoints"},
		&cli.StringSliceFlag{Name: "address", Usage: "with --self: a public address of this server (repeatable), besides its listen and interface addresses and the dane block's selfcheck_address"},
	}
}

func scUsage(format string, args ...any) error {
	return cli.Exit("maddy check --self: "+fmt.Sprintf(format, args...), selfcheck.ExitUsage)
}

func configPathOf(c *cli.Context) string {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet("config") {
			return ctx.Path("config")
		}
	}
	return ""
}

func runSelfcheck(c *cli.Context, load LoadFunc, server ServerConfFunc) error {
	if c.NArg() != 0 {
		return scUsage("takes no DOMAIN argument (use --domain)")
	}
	path := configPathOf(c)
	if path == "" {
		return scUsage("--config is required")
	}
	rootsPath := c.Path("roots")
	if rootsPath != "" {
		// Before load enters the state directory.
		if abs, err := filepath.Abs(rootsPath); err == nil {
			rootsPath = abs
		}
	}
	mc, err := server(path)
	if err != nil {
		return scUsage("configuration: %v", err)
	}
	// The dane block's resolver, roots and selfcheck_* settings, through
	// the module's own parser: the check asks the resolver the server
	// asks.
	settings := service.DefaultSettings()
	blk, err := load(path)
	switch {
	case errors.Is(err, ErrNoDaneBlock):
		fmt.Fprintf(os.Stderr, "note: %v; using --resolver or /etc/resolv.conf\n", err)
	case err != nil:
		return scUsage("configuration: %v", err)
	default:
		if blk.Done != nil {
			defer blk.Done()
		}
		settings = blk.Settings
	}
	opts := selfcheck.Options{
		Hostname: mc.Hostname, Domains: mc.Domains, Days: c.Int("days"),
		NoMTASTS: c.Bool("no-mtasts"), Timeout: c.Duration("timeout"),
	}
	if settings.Selfcheck.Domains != nil {
		opts.Domains = settings.Selfcheck.Domains
	}
	if d := c.StringSlice("domain"); len(d) != 0 {
		opts.Domains = d
	}
	opts.LocalAddrs = append(opts.LocalAddrs, mc.Listen...)
	opts.LocalAddrs = append(opts.LocalAddrs, settings.Selfcheck.Addresses...)
	if ifs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifs {
			if n, ok := a.(*net.IPNet); ok {
				opts.LocalAddrs = append(opts.LocalAddrs, n.IP)
			}
		}
	}
	for _, a := range c.StringSlice("address") {
		ip := net.ParseIP(a)
		if ip == nil {
			return scUsage("--address %q is not an IP address", a)
		}
		opts.LocalAddrs = append(opts.LocalAddrs, ip)
	}
	opts.Source, opts.ChainPath = mc.Source, mc.CertPath
	if mc.CertErr != nil {
		fmt.Fprintf(os.Stderr, "warning: cannot read the certificate maddy loads: %v\n", mc.CertErr)
	} else if mc.CertPath != "" {
		if opts.Chain, err = selfcheck.ReadChain(mc.CertPath); err != nil {
			fmt.Fprintf(os.Stderr, "warning: %v\n", err)
		}
	}
	servers, trust := settings.Resolvers, settings.TrustRemoteResolver || c.Bool("trust-remote-resolver")
	if s := c.StringSlice("resolver"); len(s) != 0 {
		servers = s
	}
	res, err := dane.NewResolver(dane.ResolverConfig{Servers: servers, Timeout: settings.ResolverTimeout, TrustRemote: trust})
	if err != nil {
		return scUsage("resolver: %v", err)
	}
	if bad := res.UntrustedServers(); len(bad) != 0 {
		fmt.Fprintf(os.Stderr, "warning: resolvers not on loopback are not trusted for DNSSEC (%s); TLSA records will look insecure\n", strings.Join(bad, ", "))
	}
	opts.Querier, opts.Resolvers, opts.Roots = res, res.Servers(), settings.Roots
	if rootsPath != "" {
		if opts.Roots, err = service.ReadRootsPEM(rootsPath); err != nil {
			return scUsage("roots: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := selfcheck.Run(ctx, opts)
	if err != nil {
		return scUsage("%v", err)
	}
	if c.Bool("json") {
		err = rep.WriteJSON(os.Stdout)
	} else {
		err = rep.WriteText(os.Stdout)
	}
	if err != nil {
		return cli.Exit(err.Error(), selfcheck.ExitUsage)
	}
	if rep.ExitCode != 0 {
		return cli.Exit("", rep.ExitCode)
	}
	return nil
}
