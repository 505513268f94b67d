// Package tests runs the end-to-end scenarios of the maddy 0.8 build
// (module_test.go, mtasts_e2e_test.go, tlsrpt_e2e_test.go at the
// repository root) against the real maddy 0.9.4 built with the glue
// (../cmd/maddy): a DNSSEC-signed tree served by dnsbed and validated by a
// real unbound, real SMTP servers (smtpbed), MTA-STS policy hosts (stsbed),
// the real maddy (maddybed). The assertions are the 0.8 build's: same
// directives, verdicts, log fields, SMTP codes and metrics. The tests need
// root (network namespaces); without it they skip.
package tests

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
	"github.com/maddy-dane/daneguard/internal/testbed/stsbed"
)

func TestMain(m *testing.M) { netns.Main(m) }

// maddy09 builds the daneguard maddy 0.9 command of this module, once.
func maddy09(t *testing.T) string { return maddybed.BuildBinary(t, "..", "./cmd/maddy") }

// The helpers below mirror the root's end-to-end helpers (module_test.go,
// mtasts_e2e_test.go); the root's are in package daneguard_test of the
// root module and cannot be imported.

// stsAddr is the MTA-STS policy host's address (stsbed).
const stsAddr = "127.0.0.3:443"

type world struct {
	t   *testing.T
	dns *dnsbed.Server
	ca  *pki.CA
	ip  int
}

func newWorld(t *testing.T) *world {
	netns.Required(t)
	return &world{t: t, dns: dnsbed.NewServer(), ip: 10, ca: pki.NewCA(t, "daneguard test root")}
}

func (w *world) server(host string, cert *pki.Leaf) (string, *smtpbed.Server) {
	if cert == nil {
		return w.serverTLS(host, nil)
	}
	return w.serverTLS(host, &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate()}})
}

func (w *world) serverTLS(host string, cfg *tls.Config) (string, *smtpbed.Server) {
	w.ip++
	ip := fmt.Sprintf("127.0.0.%d", w.ip)
	return ip, smtpbed.Start(w.t, smtpbed.Options{Addr: ip + ":25", Hostname: host, TLS: cfg})
}

func (w *world) start() {
	w.dns.Start(w.t, "127.0.0.2:53")
	dnsbed.StartUnbound(w.t, w.dns, dnsbed.UnboundOptions{})
}

// stsDomain publishes, in an unsigned zone, MX mx.<domain> served with
// cert, the MTA-STS TXT record with id and the policy.
func (w *world) stsDomain(sts *stsbed.Server, domain, id, policy string, cert *pki.Leaf) (*dnsbed.Zone, *smtpbed.Server) {
	ip, srv := w.server("mx."+domain, cert)
	z := w.dns.Zone(w.t, domain+".", dnsbed.TTL(300), dnsbed.Unsigned())
	z.Add(w.t, "@ MX 10 mx", "mx A "+ip, "mta-sts A "+sts.IP(), `_mta-sts TXT "v=STSv1; id=`+id+`;"`)
	sts.Site(domain).SetPolicy(policy)
	return z, srv
}

func selfSigned(t *testing.T, names ...string) *pki.Leaf {
	return pki.SelfSigned(t, pki.LeafOptions{DNSNames: names})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func verdictFor(m *maddybed.Maddy, domain string) []maddybed.Entry {
	var out []maddybed.Entry
	for _, e := range m.Entries("daneguard", "verdict") {
		if e.Fields["domain"] == domain {
			out = append(out, e)
		}
	}
	return out
}

func lastVerdict(t *testing.T, m *maddybed.Maddy, domain string) maddybed.Entry {
	t.Helper()
	vs := verdictFor(m, domain)
	if len(vs) == 0 {
		t.Fatalf("no daneguard verdict logged for %s:\n%s", domain, m.Log())
	}
	return vs[len(vs)-1]
}

func expectDelivered(t *testing.T, m *maddybed.Maddy, s *smtpbed.Server, domain string) {
	t.Helper()
	res := m.Send("alice@sender.test", []string{"bob@" + domain}, "hello "+domain)
	if res.Err != nil {
		t.Fatalf("delivery to %s failed: %v\n%s", domain, res.Err, m.Log())
	}
	if msgs, err := s.WaitMessages(ctx(t), 1); err != nil || len(msgs) == 0 {
		t.Fatalf("server for %s got no message: %v", domain, err)
	}
}

func expectDeferred(t *testing.T, m *maddybed.Maddy, domain string, servers ...*smtpbed.Server) maddybed.SendResult {
	t.Helper()
	res := m.Send("alice@sender.test", []string{"bob@" + domain}, "hello "+domain)
	if res.Err == nil {
		t.Fatalf("delivery to %s succeeded, want a deferral\n%s", domain, m.Log())
	}
	if res.Code/100 != 4 {
		t.Fatalf("delivery to %s: reply %d %s %q, want 4xx (deferral, never a bounce)", domain, res.Code, res.Enh, res.Text)
	}
	for _, s := range servers {
		if n := len(s.Messages()); n != 0 {
			t.Fatalf("server %s received %d messages for a deferred delivery", s.Hostname(), n)
		}
	}
	return res
}

func field(e maddybed.Entry, k string) string {
	v, ok := e.Fields[k]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

func wantVerdict(t *testing.T, e maddybed.Entry, verdict, reason string) {
	t.Helper()
	if field(e, "verdict") != verdict || field(e, "reason") != reason {
		t.Fatalf("verdict %s/%s, want %s/%s: %v", field(e, "verdict"), field(e, "reason"), verdict, reason, e.Fields)
	}
}
