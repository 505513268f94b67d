package main

// maddy tlsrpt list|send: look at and push out the TLS reports (RFC 8460)
// that the daneguard policy keeps. See docs/tlsrpt.md.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/maddy-dane/daneguard/internal/service"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/urfave/cli/v2"
)

func init() {
	extraCommands = append(extraCommands, tlsrptCommand())
}

func tlsrptCommand() *cli.Command {
	dirFlag := &cli.StringFlag{Name: "dir", Usage: "TLS report directory (default: the `dir` of the tlsrpt block in the configuration)"}
	return &cli.Command{
		Name:  "tlsrpt",
		Usage: "Show and send the TLS reports (RFC 8460) of the daneguard policy",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "List the recorded days and domains with their counts and report status",
				Flags: []cli.Flag{dirFlag, &cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: func(c *cli.Context) error {
					st, err := openTLSRPTStore(c)
					if err != nil {
						return cli.Exit(err.Error(), 2)
					}
					list, err := st.List()
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					if c.Bool("json") {
						if list == nil {
							list = []tlsrpt.Pending{}
						}
						enc := json.NewEncoder(os.Stdout)
						enc.SetIndent("", "  ")
						return enc.Encode(list)
					}
					tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "DAY\tDOMAIN\tSUCCESSES\tFAILURES\tSTATUS\tATTEMPTS\tNEXT ATTEMPT\tLAST ERROR")
					for _, p := range list {
						fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%s\t%s\n", p.Day, p.Domain, p.Successes, p.Failures,
							status(p), p.State.Attempts, timeOrDash(p.State.NextAttempt), dash(p.State.LastError))
					}
					return tw.Flush()
				},
			},
			{
				Name:  "send",
				Usage: "Ask the running maddy to send the reports of a day now (default: yesterday, UTC)",
				Flags: []cli.Flag{
					dirFlag,
					&cli.StringFlag{Name: "day", Usage: "the UTC day, YYYY-MM-DD"},
					&cli.BoolFlag{Name: "wait", Usage: "wait until the running maddy has tried every report of the day, and print the outcome"},
					&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, Usage: "how long --wait waits"},
				},
				Action: tlsrptSend,
			},
		},
	}
}

func status(p tlsrpt.Pending) string {
	switch {
	case p.State.Done:
		return p.State.Outcome
	case p.Requested:
		return "send-requested"
	case p.State.Attempts > 0:
		return "retrying"
	}
	return "pending"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func tlsrptSend(c *cli.Context) error {
	st, err := openTLSRPTStore(c)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	day := c.String("day")
	if day == "" {
		day = tlsrpt.Day(time.Now().UTC().AddDate(0, 0, -1))
	}
	if _, err := tlsrpt.ParseDay(day); err != nil {
		return cli.Exit("--day: want YYYY-MM-DD: "+err.Error(), 2)
	}
	requested := time.Now()
	if err := st.RequestSend(day, requested); err != nil {
		return cli.Exit(err.Error(), 1)
	}
	fmt.Printf("send requested for %s; the running maddy sends it at its next poll\n", day)
	if !c.Bool("wait") {
		return nil
	}
	deadline := time.Now().Add(c.Duration("timeout"))
	for {
		list, err := st.List()
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		var mine []tlsrpt.Pending
		waiting := false
		for _, p := range list {
			if p.Day != day {
				continue
			}
			mine = append(mine, p)
			// Tried since the request: done, or an attempt recorded.
			// A day not over yet gets a partial report (Early* fields).
			tried := p.State.Done && !p.State.DoneAt.Before(requested.Add(-time.Second)) ||
				!p.State.FirstAttempt.IsZero() && p.State.Attempts > 0 && !p.Requested ||
				!p.State.EarlyAt.Before(requested.Add(-time.Second)) && !p.Requested
			if p.Requested || !tried {
				waiting = true
			}
		}
		if !waiting {
			failed := false
			sort.Slice(mine, func(i, j int) bool { return mine[i].Domain < mine[j].Domain })
			for _, p := range mine {
				if !p.State.EarlyAt.Before(requested.Add(-time.Second)) {
					// The day is not over: a partial report, the
					// complete one still goes out after the day ends.
					fmt.Printf("%s %s: partial report %s", p.Day, p.Domain, p.State.EarlyOutcome)
					if len(p.State.EarlySentTo) != 0 {
						fmt.Printf(" (to %s)", strings.Join(p.State.EarlySentTo, ", "))
					}
					if p.State.EarlyError != "" {
						fmt.Printf(": %s", p.State.EarlyError)
						failed = true
					}
					fmt.Println()
					continue
				}
				fmt.Printf("%s %s: %s", p.Day, p.Domain, status(p))
				if len(p.State.SentTo) != 0 {
					fmt.Printf(" (to %s)", strings.Join(p.State.SentTo, ", "))
				}
				if p.State.LastError != "" && p.State.Outcome != "sent" {
					fmt.Printf(": %s", p.State.LastError)
					failed = true
				}
				fmt.Println()
			}
			if failed {
				return cli.Exit("some reports were not delivered", 1)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return cli.Exit("timed out waiting for the running maddy to send the reports (is it running, with a tlsrpt block?)", 1)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// openTLSRPTStore finds the store: --dir, else the tlsrpt block of the
// configuration file (its dir, or <state_dir>/daneguard/tlsrpt).
func openTLSRPTStore(c *cli.Context) (*tlsrpt.Store, error) {
	dir := c.String("dir")
	if dir == "" {
		dirs, err := tlsrptDirsFromConfig(c.Path("config"))
		if err != nil {
			return nil, err
		}
		switch len(dirs) {
		case 0:
			return nil, errors.New("no tlsrpt block inside a dane block in " + c.Path("config") + "; use --dir")
		case 1:
			dir = dirs[0]
		default:
			return nil, fmt.Errorf("several tlsrpt directories in the configuration (%s); pick one with --dir", strings.Join(dirs, ", "))
		}
	}
	path := service.TLSRPTStorePath(dir)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no TLS report store at %s: %w", path, err)
	}
	return tlsrpt.OpenStore(path, tlsrpt.StoreOptions{OnCorrupt: func(moved string, err error) {
		fmt.Fprintf(os.Stderr, "warning: the store was corrupt (%v); moved to %s, starting empty\n", err, moved)
	}})
}

func tlsrptDirsFromConfig(path string) ([]string, error) {
	nodes, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	if _, _, err := maddy.ReadGlobals(nodes); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var dirs []string
	var walk func(ns []config.Node, inDane bool)
	walk = func(ns []config.Node, inDane bool) {
		for _, n := range ns {
			if n.Name == "tlsrpt" && inDane {
				if len(n.Args) == 1 && n.Args[0] == "off" {
					continue
				}
				dir := service.DefaultTLSRPTDir(config.StateDirectory)
				for _, ch := range n.Children {
					if ch.Name == "dir" && len(ch.Args) == 1 {
						dir = ch.Args[0]
					}
				}
				if !seen[dir] {
					seen[dir] = true
					dirs = append(dirs, dir)
				}
				continue
			}
			walk(n.Children, n.Name == "dane")
		}
	}
	walk(nodes, false)
	return dirs, nil
}
