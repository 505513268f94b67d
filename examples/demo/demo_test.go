// Package demo is what `make demo` runs: the custom maddy binary, started on
// the example configuration examples/demo/maddy.conf, delivering four
// messages in a private network namespace that stands in for the Internet.
//
// It runs as a Go test because the stand-in Internet (a signed DNS tree,
// a real validating unbound, real receiving SMTP servers) is the project's
// test bed; CI runs it too, so the demo cannot rot.
package demo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
)

func TestMain(m *testing.M) { netns.Main(m) }

// scenario is one destination domain of the demo and what daneguard must
// do with mail for it.
type scenario struct {
	domain, story string
	srv           *smtpbed.Server
	deliver       bool
	verdict       string
	reason        string
}

func TestDemo(t *testing.T) {
	netns.Required(t)
	dnsSrv := dnsbed.NewServer()
	ip := 10
	server := func(host string, leaf *pki.Leaf) (string, *smtpbed.Server) {
		ip++
		addr := fmt.Sprintf("127.0.0.%d", ip)
		o := smtpbed.Options{Addr: addr + ":25", Hostname: host}
		if leaf != nil {
			o.TLS = tlsConfig(leaf)
		}
		return addr, smtpbed.Start(t, o)
	}
	self := func(name string) *pki.Leaf { return pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{name}}) }

	// good.demo: DNSSEC-signed, TLSA 3 1 1 pinning its server's key.
	goodKey := self("mx.good.demo")
	a, good := server("mx.good.demo", goodKey)
	dnsSrv.Zone(t, "good.demo.", dnsbed.TTL(300)).Add(t, "@ MX 10 mx", "mx A "+a,
		pki.TLSA(t, "_25._tcp.mx.good.demo.", 3, 1, 1, goodKey.Cert))

	// mitm.demo: signed, but the server presents a key the TLSA record
	// does not name, as after a STARTTLS interception.
	intruder := self("mx.mitm.demo")
	a, mitm := server("mx.mitm.demo", intruder)
	dnsSrv.Zone(t, "mitm.demo.", dnsbed.TTL(300)).Add(t, "@ MX 10 mx", "mx A "+a,
		pki.TLSA(t, "_25._tcp.mx.mitm.demo.", 3, 1, 1, self("mx.mitm.demo").Cert))

	// legacy.demo: no DNSSEC; DANE does not apply, STARTTLS is used
	// opportunistically.
	a, legacy := server("mx.legacy.demo", self("mx.legacy.demo"))
	dnsSrv.Zone(t, "legacy.demo.", dnsbed.TTL(300), dnsbed.Unsigned()).Add(t, "@ MX 10 mx", "mx A "+a)

	// bank.demo: no DNSSEC either, but maddy.conf says dane-only.
	a, bank := server("mx.bank.demo", self("mx.bank.demo"))
	dnsSrv.Zone(t, "bank.demo.", dnsbed.TTL(300), dnsbed.Unsigned()).Add(t, "@ MX 10 mx", "mx A "+a)

	dnsSrv.Start(t, "127.0.0.2:53")
	dnsbed.StartUnbound(t, dnsSrv, dnsbed.UnboundOptions{})

	_, file, _, _ := runtime.Caller(0)
	conf := filepath.Join(filepath.Dir(file), "maddy.conf")
	m := maddybed.StartFile(t, conf, "127.0.0.1:2525", "DEMO_STATE="+t.TempDir())

	scenarios := []scenario{
		{"good.demo", "signed MX, TLSA matches", good, true, "authenticated", "dane-match"},
		{"mitm.demo", "signed MX, TLSA does not match the server", mitm, false, "deferred", "tlsa-mismatch"},
		{"legacy.demo", "no DNSSEC: DANE does not apply", legacy, true, "encrypted", "insecure-mx"},
		{"bank.demo", "no DNSSEC, policy dane-only", bank, false, "deferred", "dane-required"},
	}
	var report strings.Builder
	fmt.Fprintf(&report, "\n%-12s %-44s %-30s %s\n", "DESTINATION", "SITUATION", "VERDICT (reason)", "REPLY TO THE SENDER")
	for _, sc := range scenarios {
		res := m.Send("alice@sender.demo", []string{"bob@" + sc.domain}, "Hello from the daneguard demo.")
		var verdict, reason string
		for _, e := range m.Entries("daneguard", "verdict") {
			if e.Fields["domain"] == sc.domain {
				verdict, reason = fmt.Sprint(e.Fields["verdict"]), fmt.Sprint(e.Fields["reason"])
			}
		}
		reply := "250 accepted and delivered"
		if res.Err != nil {
			reply = fmt.Sprintf("%d %s", res.Code, res.Text)
		}
		fmt.Fprintf(&report, "%-12s %-44s %-30s %s\n", sc.domain, sc.story, verdict+" ("+reason+")", reply)

		delivered := len(sc.srv.Messages()) > 0
		switch {
		case delivered != sc.deliver:
			t.Errorf("%s: delivered=%v, want %v (reply %q)", sc.domain, delivered, sc.deliver, reply)
		case !sc.deliver && res.Code/100 != 4:
			t.Errorf("%s: reply %q, want a 4xx deferral", sc.domain, reply)
		case verdict != sc.verdict || reason != sc.reason:
			t.Errorf("%s: verdict %s (%s), want %s (%s)", sc.domain, verdict, reason, sc.verdict, sc.reason)
		}
	}
	fmt.Print(report.String())

	fmt.Println("\nmaddy's log lines from daneguard:")
	for _, line := range strings.Split(m.Log(), "\n") {
		if strings.Contains(line, "daneguard") {
			fmt.Println("  " + line)
		}
	}

	// The operator's checker, on the same configuration: what the policy
	// sees for one destination and what it would decide.
	state := t.TempDir()
	check := exec.Command(maddybed.Binary(t), "--config", conf, "check", "--connect", "mitm.demo")
	check.Env = append(os.Environ(), "DEMO_STATE="+state)
	out, err := check.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "tlsa-mismatch") {
		t.Errorf("maddy check --connect mitm.demo: %v, want exit status 2 naming tlsa-mismatch:\n%s", err, out)
	}
	fmt.Printf("\n$ maddy --config examples/demo/maddy.conf check --connect mitm.demo\n%s", out)
}
