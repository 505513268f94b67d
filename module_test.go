package daneguard_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
)

func TestMain(m *testing.M) { netns.Main(m) }

// TestIntegrationSelfCheck fails if a `mx_auth { dane { } }` block stops
// reaching this package's policy in the maddy linked into the tests.
func TestIntegrationSelfCheck(t *testing.T) {
	if err := daneguard.CheckIntegration(); err != nil {
		t.Fatalf("daneguard is not behind mx_auth { dane }: %v", err)
	}
	// Independently of CheckIntegration: build a group through maddy's
	// registry and config code and look at what it keeps.
	grp, err := module.Get("mx_auth")("mx_auth", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	block := config.Node{Name: "mx_auth", Children: []config.Node{
		{Name: "dane", Children: []config.Node{{Name: "resolver", Args: []string{"127.0.0.1:53"}}}},
		{Name: "local_policy", Children: []config.Node{}},
	}}
	if err := grp.Init(config.NewMap(map[string]interface{}{}, block)); err != nil {
		t.Fatal(err)
	}
	l := reflect.ValueOf(grp).Elem().FieldByName("L")
	if l.Len() != 2 {
		t.Fatalf("mx_auth kept %d policies, want 2", l.Len())
	}
	if _, ok := l.Index(0).Interface().(*daneguard.Policy); !ok {
		t.Fatalf("first policy behind mx_auth is %T, want *daneguard.Policy", l.Index(0).Interface())
	}
}

// TestConfigErrors: an unknown or malformed directive is a start-up error
// naming the file and line.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"dane { no_such_directive yes }", "unexpected directive"},
		{"dane { default_level dane-onyl }", "unknown security level"},
		{"dane { policy example.org fingerprint sha256:zz }", "fingerprint"},
		{"dane { policy example.org }", "usage: policy"},
		{"dane { cache_failure_max 1h }", "cache_failure"},
	} {
		grp, err := module.Get("mx_auth")("mx_auth", "", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var args []string
		name, rest, _ := strings.Cut(strings.TrimSpace(tc.body), " { ")
		rest = strings.TrimSuffix(rest, " }")
		args = strings.Fields(rest)
		block := config.Node{Name: "mx_auth", Children: []config.Node{
			{Name: name, File: "test.conf", Line: 7, Children: []config.Node{{Name: args[0], Args: args[1:], File: "test.conf", Line: 8}}},
		}}
		err = grp.Init(config.NewMap(map[string]interface{}{}, block))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "test.conf:8") {
			t.Errorf("%s: error %v, want one containing %q and test.conf:8", tc.body, err, tc.want)
		}
	}
}

// world is the test bed shared by the end-to-end tests: a signed DNS tree
// served on 127.0.0.2:53, unbound validating it on 127.0.0.1:53 (the
// namespace's resolv.conf), and SMTP servers on 127.0.0.x:25.
type world struct {
	t    *testing.T
	dns  *dnsbed.Server
	ub   *dnsbed.Unbound
	ca   *pki.CA
	ip   int
	srvs map[string]*smtpbed.Server
}

func newWorld(t *testing.T) *world {
	netns.Required(t)
	w := &world{t: t, dns: dnsbed.NewServer(), ip: 10, srvs: map[string]*smtpbed.Server{}}
	w.ca = pki.NewCA(t, "daneguard test root")
	return w
}

// server starts an SMTP server for host on the next free loopback address
// and returns that address.
func (w *world) server(host string, cert *pki.Leaf) (string, *smtpbed.Server) {
	w.ip++
	ip := fmt.Sprintf("127.0.0.%d", w.ip)
	o := smtpbed.Options{Addr: ip + ":25", Hostname: host}
	if cert != nil {
		o.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate()}}
	}
	s := smtpbed.Start(w.t, o)
	w.srvs[host] = s
	return ip, s
}

func (w *world) start() {
	w.dns.Start(w.t, "127.0.0.2:53")
	w.ub = dnsbed.StartUnbound(w.t, w.dns, dnsbed.UnboundOptions{})
}

func selfSigned(t *testing.T, names ...string) *pki.Leaf {
	return pki.SelfSigned(t, pki.LeafOptions{DNSNames: names})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// verdictFor returns the daneguard verdict lines for domain.
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
	msgs, err := s.WaitMessages(ctx(t), 1)
	if err != nil || len(msgs) == 0 {
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

// TestEndToEndFoundation proves the joint: the real custom maddy, with
// mx_auth { dane { } }, delivers through target.remote and the decision is
// daneguard's, visible in maddy's log; and a daneguard deferral reaches the
// submitting client as 4xx with nothing delivered.
func TestEndToEndFoundation(t *testing.T) {
	w := newWorld(t)
	ok := selfSigned(t, "mx.good.example")
	bad := selfSigned(t, "mx.bad.example")
	other := selfSigned(t, "elsewhere.example")

	good := w.dns.Zone(t, "good.example.", dnsbed.TTL(300))
	ipGood, sGood := w.server("mx.good.example", ok)
	good.Add(t, "@ MX 10 mx", "mx A "+ipGood, pki.TLSA(t, "_25._tcp.mx.good.example.", 3, 1, 1, ok.Cert))

	badZ := w.dns.Zone(t, "bad.example.", dnsbed.TTL(300))
	ipBad, sBad := w.server("mx.bad.example", bad)
	// The TLSA record pins another key: an attacker's certificate, say.
	badZ.Add(t, "@ MX 10 mx", "mx A "+ipBad, pki.TLSA(t, "_25._tcp.mx.bad.example.", 3, 1, 1, other.Cert))
	w.start()

	m := maddybed.Start(t, maddybed.Options{MXAuth: "dane { }"})

	expectDelivered(t, m, sGood, "good.example")
	v := lastVerdict(t, m, "good.example")
	wantVerdict(t, v, "authenticated", "dane-match")
	if field(v, "mx") != "mx.good.example" || field(v, "mx_secure") != "true" || field(v, "tlsa") != "3 1 1" {
		t.Fatalf("verdict fields: %v", v.Fields)
	}
	if msgs := sGood.Messages(); !msgs[0].TLS.Used {
		t.Fatal("message to the DANE server was not sent over TLS")
	}

	res := expectDeferred(t, m, "bad.example", sBad)
	v = lastVerdict(t, m, "bad.example")
	wantVerdict(t, v, "deferred", "tlsa-mismatch")
	if field(v, "smtp_code") != "451" || field(v, "smtp_enchcode") != "4.7.5" {
		t.Fatalf("deferral codes in the log: %v", v.Fields)
	}
	if res.Code != 451 || !strings.Contains(res.Text, "4.7.5 tlsa-mismatch") || !strings.Contains(res.Text, "DANE") {
		t.Fatalf("client reply %d %s %q does not explain the DANE failure", res.Code, res.Enh, res.Text)
	}
}
