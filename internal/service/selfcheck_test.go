package service

import (
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
)

func directive(t *testing.T, name string) Directive[Settings] {
	t.Helper()
	for _, d := range Directives {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("no directive %s", name)
	return Directive[Settings]{}
}

// The selfcheck_* and resolver_check_interval directives: defaults, what
// each accepts and what it refuses.
func TestSelfcheckDirectives(t *testing.T) {
	def := DefaultSettings()
	if def.Selfcheck.Interval != 0 || def.Selfcheck.Days != 14 || def.ResolverCheckInterval != 30*time.Second {
		t.Fatalf("defaults: selfcheck %+v, resolver_check_interval %v", def.Selfcheck, def.ResolverCheckInterval)
	}
	type row struct {
		name  string
		args  []string
		check func(Settings) bool
		err   string
	}
	for _, r := range []row{
		{"selfcheck_interval", []string{"1h"}, func(s Settings) bool { return s.Selfcheck.Interval == time.Hour }, ""},
		{"selfcheck_interval", []string{"off"}, func(s Settings) bool { return s.Selfcheck.Interval == 0 }, ""},
		{"selfcheck_interval", []string{"100ms"}, nil, "at least 1s"},
		{"selfcheck_interval", []string{"soon"}, nil, "invalid duration"},
		{"selfcheck_interval", nil, nil, "usage"},
		{"resolver_check_interval", []string{"off"}, func(s Settings) bool { return s.ResolverCheckInterval == 0 }, ""},
		{"resolver_check_interval", []string{"5s"}, func(s Settings) bool { return s.ResolverCheckInterval == 5*time.Second }, ""},
		{"resolver_check_interval", []string{"-1s"}, nil, "at least 1s"},
		{"selfcheck_days", []string{"30"}, func(s Settings) bool { return s.Selfcheck.Days == 30 }, ""},
		{"selfcheck_days", []string{"0"}, func(s Settings) bool { return s.Selfcheck.Days == 0 }, ""},
		{"selfcheck_days", []string{"-1"}, nil, "between 0 and 366"},
		{"selfcheck_days", []string{"x"}, nil, "invalid integer"},
		{"selfcheck_cert", []string{"/etc/maddy/certs/fullchain.pem"}, func(s Settings) bool {
			return s.Selfcheck.CertPath == "/etc/maddy/certs/fullchain.pem" && !s.Selfcheck.ACME
		}, ""},
		{"selfcheck_cert", []string{"acme"}, func(s Settings) bool { return s.Selfcheck.ACME && s.Selfcheck.CertPath == "" }, ""},
		{"selfcheck_cert", []string{"acme", "/var/lib/maddy/acme"}, func(s Settings) bool {
			return s.Selfcheck.ACME && s.Selfcheck.CertPath == "/var/lib/maddy/acme"
		}, ""},
		{"selfcheck_cert", []string{"a", "b"}, nil, "usage"},
		{"selfcheck_cert", nil, nil, "usage"},
		{"selfcheck_domains", []string{"Example.ORG.", "example.net"}, func(s Settings) bool {
			return strings.Join(s.Selfcheck.Domains, ",") == "example.org,example.net"
		}, ""},
		{"selfcheck_domains", []string{"user@example.org"}, nil, "not a domain name"},
		{"selfcheck_domains", nil, nil, "at least one"},
		{"selfcheck_address", []string{"192.0.2.25", "2001:db8::25"}, func(s Settings) bool {
			return len(s.Selfcheck.Addresses) == 2 && s.Selfcheck.Addresses[1].Equal(net.ParseIP("2001:db8::25"))
		}, ""},
		{"selfcheck_address", []string{"mx.example.org"}, nil, "not an IP address"},
	} {
		s := DefaultSettings()
		err := directive(t, r.name).Set(&s, r.args)
		switch {
		case r.err != "" && (err == nil || !strings.Contains(err.Error(), r.err)):
			t.Errorf("%s %v: error %v, want one containing %q", r.name, r.args, err, r.err)
		case r.err == "" && err != nil:
			t.Errorf("%s %v: %v", r.name, r.args, err)
		case r.err == "" && !r.check(s):
			t.Errorf("%s %v: settings %+v", r.name, r.args, s.Selfcheck)
		}
	}
}

// A background self-check without the global hostname is refused at New.
func TestSelfcheckNeedsHostname(t *testing.T) {
	s := DefaultSettings()
	s.Selfcheck.Interval = time.Hour
	if _, err := New(s, Deps{Log: &recLog{}}); err == nil || !strings.Contains(err.Error(), "hostname") {
		t.Fatalf("New without a hostname: %v", err)
	}
}

// servedChain takes the chain a server TLS configuration presents, through
// GetConfigForClient as maddy's global tls directive builds it, and through
// GetCertificate.
func TestServedChain(t *testing.T) {
	ca := pki.NewCA(t, "root").Intermediate(t, "issuer")
	l := ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.example.org"}})
	inner := &tls.Config{Certificates: []tls.Certificate{l.TLSCertificate()}}
	for name, cfg := range map[string]*tls.Config{
		"GetConfigForClient": {GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return inner, nil }},
		"GetCertificate": {GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if h.ServerName != "mx.example.org" {
				t.Errorf("SNI %q", h.ServerName)
			}
			c := l.TLSCertificate()
			return &c, nil
		}},
	} {
		chain, err := servedChain(cfg, "mx.example.org")
		if err != nil || len(chain) != 2 || !chain[0].Equal(l.Cert) {
			t.Errorf("%s: %v, %d certificates", name, err, len(chain))
		}
	}
	if _, err := servedChain(&tls.Config{}, "mx.example.org"); err == nil {
		t.Error("a configuration without certificates gave a chain")
	}
	panicky := &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		_ = h.Conn.LocalAddr() // a callback that expects a handshake
		return nil, nil
	}}
	if _, err := servedChain(panicky, "mx.example.org"); err == nil {
		t.Error("a panicking callback gave no error")
	}
}

// Start runs the health loop against a resolver that refuses (nothing on
// the port): one "resolver unhealthy" line however many probes fail, the
// metric's state, and Close stops both loops (and may be called again).
func TestHealthLoopLifecycle(t *testing.T) {
	// A UDP port on loopback with nothing behind it: the probe gets
	// "connection refused" at once.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	s := DefaultSettings()
	s.Resolvers = []string{dead}
	s.ResolverCheckInterval = time.Second
	s.Selfcheck.Interval = time.Second
	s.MTASTS = false
	lg := &recLog{}
	svc, err := New(s, Deps{Log: lg, Hostname: "mx.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(); err == nil {
		t.Error("a second Start was accepted")
	}
	deadline := time.Now().Add(30 * time.Second)
	for lg.count(msgSelfcheck) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no two self-check runs; log %v", lg.all())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	_ = svc.Close()
	if n := lg.count(msgResolverBad); n != 1 {
		t.Errorf("%d %q lines for a resolver down throughout, want 1; log %v", n, msgResolverBad, lg.all())
	}
	if lg.count(msgNoCert) != 1 {
		t.Errorf("no %q line without a certificate source", msgNoCert)
	}
	own.mu.Lock()
	h, ok := own.health[dead]
	rep := own.report
	own.mu.Unlock()
	if !ok || h.Up || h.Problem == nil || h.Problem.Code != "resolver-down" {
		t.Errorf("health state %+v", h)
	}
	if rep == nil || rep.ExitCode != selfcheck.ExitBroken {
		t.Errorf("self-check report with the resolver down: %+v", rep)
	}
	// After Close nothing more is logged.
	n := len(lg.all())
	time.Sleep(1500 * time.Millisecond)
	if m := len(lg.all()); m != n {
		t.Errorf("%d lines logged after Close", m-n)
	}
}

// recLog records messages.
type recLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *recLog) Msg(msg string, kv ...any) {
	l.mu.Lock()
	l.msgs = append(l.msgs, msg)
	l.mu.Unlock()
}
func (l *recLog) Error(msg string, err error, kv ...any) { l.Msg(msg + ": " + err.Error()) }
func (l *recLog) DebugMsg(string, ...any)                {}
func (l *recLog) Debug() bool                            { return false }
func (l *recLog) With(...any) Logger                     { return l }

func (l *recLog) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

func (l *recLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}
