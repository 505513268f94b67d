package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/foxcpp/maddy/framework/config"
	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/urfave/cli/v2"
)

// `maddy check --self` checks this server's own inbound DANE and MTA-STS
// as a sender sees them (docs/checker.md, docs/own-domain.md). The work is
// internal/selfcheck's; this file reads maddy.conf for it.

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

func runSelfcheck(c *cli.Context) error {
	if c.NArg() != 0 {
		return scUsage("takes no DOMAIN argument (use --domain)")
	}
	path := configPathOf(c)
	if path == "" {
		return scUsage("--config is required")
	}
	rootsPath := c.Path("roots")
	if rootsPath != "" {
		// Before loadDaneConfig enters the state directory.
		if abs, err := filepath.Abs(rootsPath); err == nil {
			rootsPath = abs
		}
	}
	mc, err := readMaddyConf(path)
	if err != nil {
		return scUsage("configuration: %v", err)
	}
	// The dane block's resolver, roots and selfcheck_* settings, through
	// the module's own parser: the check asks the resolver the server
	// asks.
	settings := service.DefaultSettings()
	inst, _, done, err := loadDaneConfig(path)
	switch {
	case errors.Is(err, errNoDaneBlock):
		fmt.Fprintf(os.Stderr, "note: %v; using --resolver or /etc/resolv.conf\n", err)
	case err != nil:
		return scUsage("configuration: %v", err)
	default:
		defer done()
		settings = inst.Settings
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

// maddyConf is what the self-check needs from maddy.conf.
type maddyConf struct {
	Hostname string
	StateDir string
	Domains  []string
	Listen   []net.IP
	Source   selfcheck.KeySource
	CertPath string
	KeyPath  string
	CertErr  error
}

// readMaddyConf reads maddy.conf with maddy's own parser (macros and
// imports expanded) without initializing any module.
func readMaddyConf(path string) (*maddyConf, error) {
	nodes, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	mc := &maddyConf{StateDir: "/var/lib/maddy"}
	var globalTLS *config.Node
	for i, n := range nodes {
		switch n.Name {
		case "hostname":
			if len(n.Args) == 1 {
				mc.Hostname = n.Args[0]
			}
		case "state_dir":
			if len(n.Args) == 1 {
				mc.StateDir = n.Args[0]
			}
		case "tls":
			globalTLS = &nodes[i]
		}
	}
	if mc.Hostname == "" {
		return nil, fmt.Errorf("%s: no top-level hostname directive", path)
	}
	var tlsNode *config.Node
	for _, n := range nodes {
		if n.Name != "smtp" || !listensOn25(n.Args) {
			continue
		}
		for _, a := range n.Args {
			if u, err := url.Parse(a); err == nil {
				if ip := net.ParseIP(strings.Trim(u.Hostname(), "[]")); ip != nil && !ip.IsUnspecified() {
					mc.Listen = append(mc.Listen, ip)
				}
			}
		}
		for i, ch := range n.Children {
			switch ch.Name {
			case "tls":
				if tlsNode == nil {
					tlsNode = &n.Children[i]
				}
			case "destination":
				for _, d := range ch.Args {
					if d != "postmaster" && !strings.ContainsAny(d, "@&/$") {
						mc.Domains = append(mc.Domains, d)
					}
				}
			}
		}
	}
	if tlsNode == nil {
		tlsNode = globalTLS
	}
	mc.tls(nodes, tlsNode)
	return mc, nil
}

func listensOn25(args []string) bool {
	for _, a := range args {
		if u, err := url.Parse(a); err == nil && u.Port() == "25" {
			return true
		}
	}
	return false
}

// tls finds the certificate the tls directive loads: `tls file CERT KEY`,
// `tls { loader acme { ... } }` or a reference to a top-level
// tls.loader.file / tls.loader.acme block. Relative paths are relative to
// the state directory, where maddy runs.
func (mc *maddyConf) tls(nodes []config.Node, n *config.Node) {
	mc.Source = selfcheck.SourceFile
	if n == nil {
		mc.CertErr = fmt.Errorf("no tls directive for the port 25 endpoint")
		return
	}
	loader, args, block := "", n.Args, []config.Node(nil)
	if len(args) == 0 {
		for _, ch := range n.Children {
			if ch.Name == "loader" && len(ch.Args) > 0 {
				args, block = ch.Args, ch.Children
			}
		}
	}
	if len(args) == 0 || args[0] == "off" {
		mc.CertErr = fmt.Errorf("tls is off on the port 25 endpoint")
		return
	}
	loader = args[0]
	if ref, ok := strings.CutPrefix(loader, "&"); ok {
		for _, t := range nodes {
			if strings.HasPrefix(t.Name, "tls.loader.") && len(t.Args) > 0 && t.Args[0] == ref {
				loader, block = strings.TrimPrefix(t.Name, "tls.loader."), t.Children
				args = append([]string{loader}, t.Args[1:]...)
			}
		}
	}
	rel := func(p string) string {
		if p != "" && !filepath.IsAbs(p) {
			return filepath.Join(mc.StateDir, p)
		}
		return p
	}
	switch loader {
	case "file":
		if len(args) >= 3 {
			mc.CertPath, mc.KeyPath = rel(args[1]), rel(args[2])
			return
		}
		mc.CertErr = fmt.Errorf("tls file without CERT KEY arguments")
	case "acme":
		mc.Source = selfcheck.SourceACME
		store, host := filepath.Join(mc.StateDir, "acme"), mc.Hostname
		for _, ch := range block {
			if len(ch.Args) == 1 && ch.Name == "store_path" {
				store = rel(ch.Args[0])
			}
			if len(ch.Args) == 1 && ch.Name == "hostname" {
				host = ch.Args[0]
			}
		}
		mc.CertPath, mc.CertErr = selfcheck.ACMECertPath(store, host)
	default:
		mc.CertErr = fmt.Errorf("tls loader %q is not understood by the self-check", loader)
	}
}
