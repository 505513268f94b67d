package subcmd

// maddy tlsrpt received: the reports others sent about our own domains, as
// target.tlsrpt_receiver stored them. See docs/tlsrpt-receiver.md.

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/urfave/cli/v2"
)

// Received is `maddy tlsrpt received`, a subcommand of TLSRPT's command:
// stores lists the received-report stores of the configuration file at
// path (DirsFunc's shape), server reads it for --explain.
func Received(stores DirsFunc, server ServerConfFunc) *cli.Command {
	return &cli.Command{
		Name:  "received",
		Usage: "Show the TLS reports other MTAs sent about this server's domains (target.tlsrpt_receiver)",
		Description: `Per UTC day and policy domain: reports, sessions, failures by result type,
receiving IP, MX host and reporting organization. With --explain, runs the
self-check (network checks, as "maddy check --self") and puts its likely cause
next to each failure.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.IntFlag{Name: "days", Value: 7, Usage: "show the last N days (UTC, today included)"},
			&cli.StringSliceFlag{Name: "store", Usage: "received-report store (repeatable; default: the store of every target.tlsrpt_receiver block in the configuration)"},
			&cli.BoolFlag{Name: "explain", Usage: "run the self-check and show the likely cause of each failure"},
			&cli.StringSliceFlag{Name: "resolver", Usage: "with --explain: validating DNS resolver ADDR[:PORT] (default /etc/resolv.conf)"},
		},
		Action: func(c *cli.Context) error { return tlsrptReceived(c, stores, server) },
	}
}

func tlsrptReceived(c *cli.Context, stores DirsFunc, server ServerConfFunc) error {
	if c.Int("days") < 1 {
		return cli.Exit("--days must be at least 1", 2)
	}
	paths := c.StringSlice("store")
	if len(paths) == 0 {
		var err error
		if paths, err = stores(c.Path("config")); err != nil {
			return cli.Exit(err.Error(), 2)
		}
		if len(paths) == 0 {
			return cli.Exit("no target.tlsrpt_receiver block in "+c.Path("config")+"; use --store", 2)
		}
	}
	since := tlsrpt.RetentionCutoff(time.Now(), c.Int("days"))
	var entries []tlsrpt.ReceivedEntry
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return cli.Exit(fmt.Sprintf("no received-report store at %s: %v", p, err), 2)
		}
		st, err := tlsrpt.OpenReceivedStore(p, tlsrpt.StoreOptions{OnCorrupt: func(moved string, err error) {
			fmt.Fprintf(os.Stderr, "warning: the store %s was corrupt (%v); moved to %s, starting empty\n", p, err, moved)
		}})
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		es, err := st.ReceivedSince(c.Context, since)
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		entries = append(entries, es...)
	}
	var opts tlsrpt.SummaryOptions
	if c.Bool("explain") {
		rep, err := selfcheckForExplain(c, server, entries)
		if err != nil {
			fmt.Fprintf(os.Stderr, "warning: the self-check could not run, no likely causes: %v\n", err)
		} else {
			opts.Explain = rep.Explain
		}
	}
	days := tlsrpt.SummarizeReceived(entries, opts)
	if c.Bool("json") {
		return tlsrpt.WriteReceivedJSON(os.Stdout, days)
	}
	return tlsrpt.WriteReceivedText(os.Stdout, days)
}

// selfcheckForExplain runs the self-check for the configuration's domains
// and the policy domains of the reports.
func selfcheckForExplain(c *cli.Context, server ServerConfFunc, entries []tlsrpt.ReceivedEntry) (*selfcheck.Report, error) {
	mc, err := server(c.Path("config"))
	if err != nil {
		return nil, err
	}
	opts := selfcheck.Options{Hostname: mc.Hostname, Domains: mc.Domains, Source: mc.Source, ChainPath: mc.CertPath, LocalAddrs: mc.Listen}
	for _, e := range entries {
		for _, p := range e.Report.Policies {
			if d := strings.ToLower(strings.TrimSuffix(p.Policy.PolicyDomain, ".")); !slices.Contains(opts.Domains, d) {
				opts.Domains = append(opts.Domains, d)
			}
		}
	}
	if ifs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifs {
			if n, ok := a.(*net.IPNet); ok {
				opts.LocalAddrs = append(opts.LocalAddrs, n.IP)
			}
		}
	}
	if mc.CertErr == nil && mc.CertPath != "" {
		opts.Chain, _ = selfcheck.ReadChain(mc.CertPath)
	}
	res, err := dane.NewResolver(dane.ResolverConfig{Servers: c.StringSlice("resolver")})
	if err != nil {
		return nil, err
	}
	opts.Querier, opts.Resolvers = res, res.Servers()
	ctx, cancel := context.WithTimeout(c.Context, 5*time.Minute)
	defer cancel()
	return selfcheck.Run(ctx, opts)
}
