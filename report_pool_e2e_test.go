package daneguard_test

import (
	"strings"
	"testing"

	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
)

// TestReportBypassConnectionPool: a TLS report goes out despite its
// destination's DANE failure (RFC 8460 §3), and ordinary mail to the same
// destination right after it is still deferred, in both set-ups
// docs/tlsrpt.md advises: reports through a target.remote of their own
// (the main one keeps connection reuse), or conn_reuse_limit 0 on the
// shared one. (With a shared, reusing target.remote, maddy v0.8.2 would
// hand the report's connection from its pool to the next message without
// asking any policy: the caveat that section documents.)
func TestReportBypassConnectionPool(t *testing.T) {
	t.Run("dedicated-target", func(t *testing.T) {
		reportBypassScenario(t, maddybed.Options{
			MXAuth: `dane {
        tlsrpt {
            organization "Daneguard Test Org"
            contact tlsrpt@sender.example
            deliver_to &reports
            poll_interval 100ms
        }
    }`,
			Extra: `target.remote reports {
    hostname sender.test
    mx_auth {
        dane { mtasts off }
    }
}`,
		})
	})
	t.Run("no-conn-reuse", func(t *testing.T) {
		reportBypassScenario(t, maddybed.Options{NoConnReuse: true, MXAuth: `dane {
        tlsrpt {
            organization "Daneguard Test Org"
            contact tlsrpt@sender.example
            deliver_to &remote
            poll_interval 100ms
        }
    }`})
	})
}

func reportBypassScenario(t *testing.T, opts maddybed.Options) {
	w := newWorld(t)
	leaf := selfSigned(t, "mx.victim.example")
	other := selfSigned(t, "attacker.example")
	ip, s := w.server("mx.victim.example", leaf)
	// The TLSA record pins another key: every connection fails DANE, and
	// the report address is at the failing domain itself.
	w.dns.Zone(t, "victim.example.", dnsbed.TTL(300)).Add(t, "@ MX 10 mx", "mx A "+ip,
		pki.TLSA(t, "_25._tcp.mx.victim.example.", 3, 1, 1, other.Cert),
		`_smtp._tls TXT "v=TLSRPTv1;rua=mailto:tlsrpt@victim.example"`)
	w.start()
	m := maddybed.Start(t, opts)

	expectDeferred(t, m, "victim.example", s)
	day := ""
	for _, l := range strings.Split(runMaddy(t, m, "tlsrpt", "list"), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == "victim.example" {
			day = f[0]
		}
	}
	if day == "" {
		t.Fatalf("nothing recorded for victim.example:\n%s", m.Log())
	}
	if out := runMaddy(t, m, "tlsrpt", "send", "--day", day, "--wait", "--timeout", "60s"); !strings.Contains(out, "victim.example: sent (partial report: the day is not over)") {
		t.Fatalf("report not sent:\n%s\n%s", out, m.Log())
	}
	msgs := s.Messages()
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "TLS-Report-Domain: victim.example") {
		t.Fatalf("the server got %d messages, want exactly the report", len(msgs))
	}
	if len(m.Entries("daneguard", "tlsrpt report delivered despite policy failure (RFC 8460 §5.3)")) == 0 {
		t.Fatalf("report bypass not logged:\n%s", m.Log())
	}

	// The next ordinary message gets a connection of its own, checked
	// like any other: still deferred, nothing delivered.
	expectDeferred(t, m, "victim.example")
	if n := len(s.Messages()); n != 1 {
		t.Fatalf("ordinary mail reached the server that fails DANE (%d messages)\n%s", n, m.Log())
	}
	wantVerdict(t, lastVerdict(t, m, "victim.example"), "deferred", "tlsa-mismatch")
}
