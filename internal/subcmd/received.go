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
	"github.com/maddy-dane/daneguard/fleet"
	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/urfave/cli/v2"
)

// ReceiverStoresFunc lists where the target.tlsrpt_receiver blocks of the
// configuration file at path keep their reports.
type ReceiverStoresFunc func(path string) ([]service.ReceiverStore, error)

// Received is `maddy tlsrpt received`, a subcommand of TLSRPT's command:
// stores reads the configuration's receiver blocks, server reads it for
// --explain.
func Received(stores ReceiverStoresFunc, server ServerConfFunc) *cli.Command {
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

func tlsrptReceived(c *cli.Context, stores ReceiverStoresFunc, server ServerConfFunc) error {
	if c.Int("days") < 1 {
		return cli.Exit("--days must be at least 1", 2)
	}
	var srcs []service.ReceiverStore
	for _, p := range c.StringSlice("store") {
		srcs = append(srcs, service.ReceiverStore{Path: p})
	}
	if len(srcs) == 0 {
		var err error
		if srcs, err = stores(c.Path("config")); err != nil {
			return cli.Exit(err.Error(), 2)
		}
		if len(srcs) == 0 {
			return cli.Exit("no target.tlsrpt_receiver block in "+c.Path("config")+"; use --store", 2)
		}
	}
	since := tlsrpt.RetentionCutoff(time.Now(), c.Int("days"))
	var lists [][]tlsrpt.ReceivedEntry
	for _, src := range srcs {
		es, err := readReceived(c.Context, src, since)
		if err != nil {
			return err
		}
		lists = append(lists, es)
	}
	// Each report-id once: several blocks may name one shared store, and
	// a node's local store holds copies of what it pushed.
	entries := fleet.MergeReceived(lists...)
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

// readReceived returns the reports of day since or later that src keeps.
// With a shared store: the fleet's (Redis) and this node's local ones not
// pushed yet (if its local store exists: the command does not create a
// store maddy will own); a shared store that does not answer is an error
// (exit 1), never a silently partial view.
func readReceived(ctx context.Context, src service.ReceiverStore, since string) ([]tlsrpt.ReceivedEntry, error) {
	var shared []tlsrpt.ReceivedEntry
	if st := src.Shared; st != nil {
		cl, err := fleet.Open(st.Redis, nil)
		if err != nil {
			return nil, cli.Exit(fmt.Sprintf("shared_store %s: %v", st.URL, err), 1)
		}
		defer cl.Close()
		if shared, err = fleet.ReadReceived(ctx, cl, since); err != nil {
			return nil, cli.Exit(fmt.Sprintf("shared_store %s: %v (use --store %s for this node's own reports)", st.URL, err, src.Path), 1)
		}
		if _, err := os.Stat(src.Path); err != nil {
			return shared, nil
		}
	} else if _, err := os.Stat(src.Path); err != nil {
		return nil, cli.Exit(fmt.Sprintf("no received-report store at %s: %v", src.Path, err), 2)
	}
	st, err := tlsrpt.OpenReceivedStore(src.Path, tlsrpt.StoreOptions{OnCorrupt: func(moved string, err error) {
		fmt.Fprintf(os.Stderr, "warning: the store %s was corrupt (%v); moved to %s, starting empty\n", src.Path, err, moved)
	}})
	if err != nil {
		return nil, cli.Exit(err.Error(), 1)
	}
	local, err := st.ReceivedSince(ctx, since)
	if err != nil {
		return nil, cli.Exit(err.Error(), 1)
	}
	return fleet.MergeReceived(shared, local), nil
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
