package subcmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/urfave/cli/v2"
)

// `maddy nextkey`: the key rollover workflow for `tls file` certificates
// (RFC 7671 §8.1, docs/own-domain.md).

// Exit statuses of `maddy nextkey status` and `switch`.
const (
	nkSafe       = 0 // safe to switch / switched
	nkWait       = 1 // published, but not yet for two TTLs: switching refused
	nkNotVisible = 2 // not in the secure TLSA RRset
)

// NextKey is `maddy nextkey`; server reads `tls file` and the hostname
// from maddy.conf when --key, --cert or --host are not given.
func NextKey(server ServerConfFunc) *cli.Command {
	common := []cli.Flag{
		&cli.PathFlag{Name: "config", Usage: "maddy.conf whose `tls file CERT KEY` names the current key (default: maddy's --config)"},
		&cli.PathFlag{Name: "key", Usage: "the current private key (default: from the config)"},
		&cli.PathFlag{Name: "next", Usage: "the next private key (default: KEY.next)"},
		&cli.StringFlag{Name: "host", Usage: "MX host name whose _25._tcp TLSA RRset gets the record (default: the config's hostname)"},
	}
	dnsFlags := []cli.Flag{
		&cli.StringSliceFlag{Name: "resolver", Usage: "validating DNS resolver ADDR[:PORT] (repeatable); default /etc/resolv.conf"},
		&cli.BoolFlag{Name: "trust-remote-resolver", Usage: "trust DNSSEC status from resolvers not on loopback"},
	}
	return &cli.Command{
		Name:  "nextkey",
		Usage: "Roll the key of a `tls file` certificate without breaking DANE (create, status, switch)",
		Subcommands: []*cli.Command{
			{
				Name:   "create",
				Usage:  "Create the next private key (same algorithm, mode 0600, never overwriting) and print its 3 1 1 record",
				Flags:  common,
				Action: func(c *cli.Context) error { return nextkeyCreate(c, server) },
			},
			{
				Name:   "status",
				Usage:  "Say whether the next key's record has been visible for two TTLs (exit 0 safe, 1 wait, 2 not published)",
				Flags:  append(append([]cli.Flag{}, common...), dnsFlags...),
				Action: func(c *cli.Context) error { return nextkeyStatus(c, server, false) },
			},
			{
				Name:  "switch",
				Usage: "Install the next key with its certificate, refused until `status` says it is safe",
				Flags: append(append([]cli.Flag{
					&cli.PathFlag{Name: "cert", Usage: "the current certificate file (default: from the config)"},
					&cli.PathFlag{Name: "new-cert", Required: true, Usage: "the certificate (chain) issued for the next key"},
				}, common...), dnsFlags...),
				Action: func(c *cli.Context) error { return nextkeyStatus(c, server, true) },
			},
		},
	}
}

type nkPaths struct{ cert, key, next, host string }

func nextkeyPaths(c *cli.Context, server ServerConfFunc) (nkPaths, error) {
	var p nkPaths
	p.key, p.next, p.host = c.Path("key"), c.Path("next"), c.String("host")
	if c.IsSet("cert") {
		p.cert = c.Path("cert")
	}
	if path := configPathOf(c); path != "" && (p.key == "" || p.host == "" || p.cert == "") {
		mc, err := server(path)
		if err != nil {
			return p, err
		}
		if mc.Source != selfcheck.SourceFile {
			return p, errors.New("the port 25 endpoint does not use `tls file`: with the ACME loader publish the issuer's 2 1 1 instead (maddy check --self prints it)")
		}
		p.key, p.cert, p.host = cmpOr(p.key, mc.KeyPath), cmpOr(p.cert, mc.CertPath), cmpOr(p.host, mc.Hostname)
	}
	if p.key == "" || p.host == "" {
		return p, errors.New("need --key and --host, or --config with a `tls file` directive")
	}
	p.next = cmpOr(p.next, selfcheck.NextKeyPath(p.key))
	return p, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func owner(host string) string { return "_25._tcp." + strings.TrimSuffix(host, ".") + "." }

func nextkeyCreate(c *cli.Context, server ServerConfFunc) error {
	p, err := nextkeyPaths(c, server)
	if err != nil {
		return cli.Exit("maddy nextkey: "+err.Error(), selfcheck.ExitUsage)
	}
	cur, err := selfcheck.ReadPrivateKey(p.key)
	if err != nil {
		return cli.Exit("maddy nextkey: current key: "+err.Error(), selfcheck.ExitUsage)
	}
	next, err := selfcheck.NewKeyLike(cur)
	if err != nil {
		return cli.Exit("maddy nextkey: "+err.Error(), selfcheck.ExitUsage)
	}
	if err := selfcheck.WriteNewKey(p.next, next); err != nil {
		return cli.Exit("maddy nextkey: "+err.Error(), selfcheck.ExitUsage)
	}
	curRec, _ := selfcheck.RecordOf(cur)
	rec, err := selfcheck.RecordOf(next)
	if err != nil {
		return cli.Exit("maddy nextkey: "+err.Error(), selfcheck.ExitUsage)
	}
	fmt.Printf(`Next key written to %s (mode 0600).

Publish this TLSA RRset now (keep the current record; RFC 7671 §8.1):
%s
%s

Then get a certificate for the next key, for example:
  openssl req -new -key %s -subj /CN=%s -addext subjectAltName=DNS:%s -out next.csr
and have your CA sign next.csr. Switch only when this says so:
  maddy nextkey status --key %s --host %s
`, p.next, selfcheck.ZoneLine(owner(p.host), curRec), selfcheck.ZoneLine(owner(p.host), rec),
		p.next, strings.TrimSuffix(p.host, "."), strings.TrimSuffix(p.host, "."), p.key, p.host)
	return nil
}

func nextkeyStatus(c *cli.Context, server ServerConfFunc, doSwitch bool) error {
	p, err := nextkeyPaths(c, server)
	if err != nil {
		return cli.Exit("maddy nextkey: "+err.Error(), selfcheck.ExitUsage)
	}
	next, err := selfcheck.ReadPrivateKey(p.next)
	if err != nil {
		return cli.Exit("maddy nextkey: next key: "+err.Error()+" (run `maddy nextkey create` first)", selfcheck.ExitUsage)
	}
	rec, err := selfcheck.RecordOf(next)
	if err != nil {
		return cli.Exit("maddy nextkey: "+err.Error(), selfcheck.ExitUsage)
	}
	res, err := dane.NewResolver(dane.ResolverConfig{Servers: c.StringSlice("resolver"), TrustRemote: c.Bool("trust-remote-resolver")})
	if err != nil {
		return cli.Exit("maddy nextkey: resolver: "+err.Error(), selfcheck.ExitUsage)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now()
	st, err := selfcheck.CheckNextKey(ctx, res, owner(p.host), rec, selfcheck.StatePath(p.next), now)
	if err != nil {
		return cli.Exit("maddy nextkey: "+err.Error(), nkNotVisible)
	}
	line := selfcheck.ZoneLine(owner(p.host), rec)
	switch {
	case !st.Visible:
		fmt.Printf("NOT PUBLISHED: %s is not in the secure TLSA RRset at %s; publish it beside the current record.\n", line, owner(p.host))
	case !st.Safe:
		fmt.Printf("WAIT: %s first seen %s, TTL %ds; safe to switch from %s (two TTLs, RFC 7671 §8.1). Run this again then.\n",
			line, st.State.FirstSeen.UTC().Format(time.RFC3339), st.State.MaxTTL, st.SafeAt.UTC().Format(time.RFC3339))
	default:
		fmt.Printf("SAFE: %s visible since %s, more than two TTLs (%ds each).\n", line, st.State.FirstSeen.UTC().Format(time.RFC3339), st.State.MaxTTL)
	}
	if !st.Safe {
		if doSwitch {
			fmt.Println("switch refused: senders may still hold the RRset without the new record and would defer mail.")
		}
		if st.Visible {
			return cli.Exit("", nkWait)
		}
		return cli.Exit("", nkNotVisible)
	}
	if !doSwitch {
		return nil
	}
	return nextkeySwitch(p, c.Path("new-cert"))
}

// nextkeySwitch installs the next key and its certificate where maddy's
// `tls file` reads them, keeping the old ones as .prev. maddy reloads the
// files within a minute (or on SIGUSR2).
func nextkeySwitch(p nkPaths, newCert string) error {
	if p.cert == "" {
		return cli.Exit("maddy nextkey switch: need --cert (or --config with tls file)", selfcheck.ExitUsage)
	}
	chain, err := selfcheck.ReadChain(newCert)
	if err != nil {
		return cli.Exit("maddy nextkey switch: "+err.Error(), selfcheck.ExitUsage)
	}
	next, err := selfcheck.ReadPrivateKey(p.next)
	if err != nil {
		return cli.Exit("maddy nextkey switch: "+err.Error(), selfcheck.ExitUsage)
	}
	if err := selfcheck.CertMatchesKey(chain, next); err != nil {
		return cli.Exit("maddy nextkey switch: "+newCert+": "+err.Error(), selfcheck.ExitUsage)
	}
	certPEM, err := os.ReadFile(newCert)
	if err != nil {
		return cli.Exit("maddy nextkey switch: "+err.Error(), selfcheck.ExitUsage)
	}
	keyPEM, err := os.ReadFile(p.next)
	if err != nil {
		return cli.Exit("maddy nextkey switch: "+err.Error(), selfcheck.ExitUsage)
	}
	for _, f := range []string{p.key, p.cert} {
		if err := os.Rename(f, f+".prev"); err != nil {
			return cli.Exit("maddy nextkey switch: keeping the old file: "+err.Error(), selfcheck.ExitUsage)
		}
	}
	if err := os.WriteFile(p.key, keyPEM, 0o600); err != nil {
		return cli.Exit("maddy nextkey switch: "+err.Error(), selfcheck.ExitUsage)
	}
	if err := os.WriteFile(p.cert, certPEM, 0o644); err != nil {
		return cli.Exit("maddy nextkey switch: "+err.Error(), selfcheck.ExitUsage)
	}
	_ = os.Remove(p.next)
	_ = os.Remove(selfcheck.StatePath(p.next))
	fmt.Printf("switched: %s and %s now hold the next key and its certificate (old ones: .prev). maddy reloads them within a minute.\n"+
		"Remove the old 3 1 1 record once `maddy check --self` shows every address serving the new key.\n", p.key, p.cert)
	return nil
}
