package smtpbed

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
)

func TestMain(m *testing.M) { netns.Main(m) }

// waitCtx bounds waits so that a broken test fails instead of hanging; it is
// never used to assert how fast something happens.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type testPKI struct {
	root *pki.CA
	leaf *pki.Leaf
}

func newPKI(t *testing.T, names ...string) testPKI {
	root := pki.NewCA(t, "smtpbed Test Root")
	leaf := root.Intermediate(t, "smtpbed Test Intermediate").Leaf(t, pki.LeafOptions{DNSNames: names})
	return testPKI{root: root, leaf: leaf}
}

func (p testPKI) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.leaf.TLSCertificate()}}
}

func (p testPKI) clientTLS(sni string) *tls.Config {
	return &tls.Config{RootCAs: p.root.Pool(), ServerName: sni}
}

func message(i int) string {
	return fmt.Sprintf("Subject: test %d\r\nMessage-ID: <%d@smtpbed.test>\r\n\r\nBody %d\r\n", i, i, i)
}

// deliver sends one message on a fresh connection, with STARTTLS if cfg is
// not nil.
func deliver(addr string, cfg *tls.Config, from string, to []string, body string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if cfg != nil {
		if err := c.StartTLS(cfg); err != nil {
			return err
		}
	}
	if err := c.SendMail(from, to, strings.NewReader(body)); err != nil {
		return err
	}
	return c.Quit()
}

func TestPlaintextDelivery(t *testing.T) {
	srv := Start(t, Options{Hostname: "mx1.example"})
	c, err := smtp.Dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS advertised without a TLS configuration")
	}
	// Asking anyway is refused.
	if err := c.StartTLS(&tls.Config{}); err == nil {
		t.Fatal("STARTTLS accepted without a TLS configuration")
	}
	if err := c.SendMail("a@client.test", []string{"b@example", "c@example"}, strings.NewReader(message(1))); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	msgs, err := srv.WaitMessages(waitCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.From != "a@client.test" || len(m.To) != 2 || m.To[0] != "b@example" || m.To[1] != "c@example" {
		t.Errorf("envelope %q -> %q", m.From, m.To)
	}
	if string(m.Data) != message(1) {
		t.Errorf("data %q", m.Data)
	}
	if m.TLS.Used || m.TLS.VersionName() != "" || m.Helo != "client.test" || m.ConnID != 1 {
		t.Errorf("message metadata %+v", m)
	}
	conns, err := srv.WaitConnections(waitCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	ci := conns[0]
	if ci.StartTLS || ci.TLS.Used || ci.HandshakeFailed || ci.Messages != 1 || !ci.Closed || ci.ID != 1 {
		t.Errorf("connection %+v", ci)
	}
	if srv.ConnectionCount() != 1 || len(srv.Messages()) != 1 {
		t.Errorf("counts: %d conns, %d msgs", srv.ConnectionCount(), len(srv.Messages()))
	}
	if srv.Hostname() != "mx1.example" || srv.Port() == 0 {
		t.Errorf("hostname %q port %d", srv.Hostname(), srv.Port())
	}
}

func TestGreetingUsesHostname(t *testing.T) {
	srv := Start(t, Options{Hostname: "mx9.example"})
	nc, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	tp := textproto.NewConn(nc)
	_, msg, err := tp.ReadResponse(220)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(msg, "mx9.example ") {
		t.Fatalf("greeting %q does not start with the host name", msg)
	}
}

func TestSTARTTLSDeliveryRecordsSNI(t *testing.T) {
	p := newPKI(t, "*.example")
	srv := Start(t, Options{Hostname: "mx1.example", TLS: p.serverTLS()})

	// Each connection sends a different SNI; the last sends none (an
	// empty ServerName with certificate checks disabled).
	snis := []string{"mx1.example", "mx2.example", ""}
	for i, sni := range snis {
		cfg := p.clientTLS(sni)
		if sni == "" {
			cfg.InsecureSkipVerify = true
		}
		if err := deliver(srv.Addr(), cfg, "a@client.test", []string{"b@example"}, message(i)); err != nil {
			t.Fatalf("delivery with SNI %q: %v", sni, err)
		}
	}
	msgs, err := srv.WaitMessages(waitCtx(t), len(snis))
	if err != nil {
		t.Fatal(err)
	}
	conns, err := srv.WaitConnections(waitCtx(t), len(snis))
	if err != nil {
		t.Fatal(err)
	}
	for i, sni := range snis {
		m := msgs[i]
		if !m.TLS.Used || m.TLS.Version != tls.VersionTLS13 || m.TLS.ServerName != sni || m.TLS.CipherSuite == 0 {
			t.Errorf("message %d TLS = %+v, want TLS 1.3 with SNI %q", i, m.TLS, sni)
		}
		if m.TLS.VersionName() != "TLS 1.3" {
			t.Errorf("VersionName = %q", m.TLS.VersionName())
		}
		if string(m.Data) != message(i) || m.ConnID != i+1 {
			t.Errorf("message %d: conn %d data %q", i, m.ConnID, m.Data)
		}
		ci := conns[i]
		if !ci.StartTLS || ci.ServerName != sni || !ci.TLS.Used || ci.TLS.ServerName != sni || ci.HandshakeFailed || ci.Messages != 1 {
			t.Errorf("connection %d = %+v", i, ci)
		}
	}
}

func TestTLSVersionRecorded(t *testing.T) {
	p := newPKI(t, "mx1.example")
	cfg := p.serverTLS()
	cfg.MaxVersion = tls.VersionTLS12
	srv := Start(t, Options{TLS: cfg})
	if err := deliver(srv.Addr(), p.clientTLS("mx1.example"), "a@client.test", []string{"b@example"}, message(0)); err != nil {
		t.Fatal(err)
	}
	msgs, err := srv.WaitMessages(waitCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if msgs[0].TLS.Version != tls.VersionTLS12 {
		t.Errorf("version %s, want TLS 1.2", msgs[0].TLS.VersionName())
	}
}

// TestUserTLSHooksStillRun checks that a caller's GetConfigForClient and
// VerifyConnection keep working under the server's own hooks.
func TestUserTLSHooksStillRun(t *testing.T) {
	p := newPKI(t, "mx1.example")
	other := newPKI(t, "mx2.example")
	var mu sync.Mutex
	var verified []string
	base := &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			if h.ServerName == "mx2.example" {
				return other.serverTLS(), nil
			}
			return nil, nil
		},
		Certificates: []tls.Certificate{p.leaf.TLSCertificate()},
		VerifyConnection: func(cs tls.ConnectionState) error {
			mu.Lock()
			verified = append(verified, cs.ServerName)
			mu.Unlock()
			return nil
		},
	}
	srv := Start(t, Options{TLS: base})
	if err := deliver(srv.Addr(), p.clientTLS("mx1.example"), "a@x", []string{"b@y"}, message(0)); err != nil {
		t.Fatal(err)
	}
	// The per-SNI config selects the other hierarchy's certificate.
	if err := deliver(srv.Addr(), other.clientTLS("mx2.example"), "a@x", []string{"b@y"}, message(1)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(verified) != 1 || verified[0] != "mx1.example" {
		t.Errorf("user VerifyConnection saw %q, want only mx1.example (the per-SNI config has no hook)", verified)
	}
	if got := srv.Messages(); len(got) != 2 || !got[1].TLS.Used {
		t.Errorf("messages %+v", got)
	}
}

func TestFailHandshake(t *testing.T) {
	p := newPKI(t, "mx1.example")
	for name, opts := range map[string]Options{
		"with TLS config":    {TLS: p.serverTLS(), Faults: Faults{FailHandshake: true}},
		"without TLS config": {Faults: Faults{FailHandshake: true}},
	} {
		t.Run(name, func(t *testing.T) {
			srv := Start(t, opts)
			c, err := smtp.Dial(srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Hello("client.test"); err != nil {
				t.Fatal(err)
			}
			if ok, _ := c.Extension("STARTTLS"); !ok {
				t.Fatal("STARTTLS not advertised")
			}
			if err := c.StartTLS(p.clientTLS("mx1.example")); err != nil {
				t.Fatalf("STARTTLS command: %v", err)
			}
			// The handshake runs with the next command.
			err = c.Mail("a@client.test", nil)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			if !strings.Contains(err.Error(), "tls") {
				t.Errorf("error %v does not come from TLS", err)
			}
			c.Close()

			conns, err := srv.WaitConnections(waitCtx(t), 1)
			if err != nil {
				t.Fatal(err)
			}
			ci := conns[0]
			if !ci.StartTLS || ci.ServerName != "mx1.example" || !ci.HandshakeFailed || ci.TLS.Used {
				t.Errorf("connection %+v", ci)
			}
			if len(srv.Messages()) != 0 {
				t.Error("message recorded")
			}
		})
	}
}

// TestClientRejectsCertificate covers the case DANE tests rely on: the
// server's handshake completes its part but the client refuses the
// certificate. The server must see a failed handshake, not a TLS session.
func TestClientRejectsCertificate(t *testing.T) {
	p := newPKI(t, "mx1.example")
	untrusted := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx1.example"}})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			srv := Start(t, Options{TLS: &tls.Config{
				Certificates: []tls.Certificate{untrusted.TLSCertificate()},
				MaxVersion:   v,
			}})
			err := deliver(srv.Addr(), p.clientTLS("mx1.example"), "a@x", []string{"b@y"}, message(0))
			var ua x509.UnknownAuthorityError
			if !errors.As(err, &ua) {
				t.Fatalf("delivery error %v, want UnknownAuthorityError", err)
			}
			conns, err := srv.WaitConnections(waitCtx(t), 1)
			if err != nil {
				t.Fatal(err)
			}
			if ci := conns[0]; !ci.StartTLS || !ci.HandshakeFailed || ci.TLS.Used || ci.ServerName != "mx1.example" {
				t.Errorf("connection %+v", ci)
			}
		})
	}
}

func TestRejectReplies(t *testing.T) {
	cases := []struct {
		name   string
		faults Faults
		code   int
		ec     smtp.EnhancedCode
		msg    string
	}{
		{"MAIL 451", Faults{RejectMail: &Reply{Code: 451, EnhancedCode: [3]int{4, 7, 0}, Message: "try later"}}, 451, smtp.EnhancedCode{4, 7, 0}, "try later"},
		{"RCPT 550", Faults{RejectRcpt: &Reply{Code: 550, EnhancedCode: [3]int{5, 1, 1}, Message: "no such user"}}, 550, smtp.EnhancedCode{5, 1, 1}, "no such user"},
		{"RCPT 450 default text", Faults{RejectRcpt: &Reply{Code: 450}}, 450, smtp.EnhancedCode{4, 0, 0}, "Rejected by smtpbed"},
		{"DATA 554", Faults{RejectData: &Reply{Code: 554, EnhancedCode: [3]int{5, 7, 1}, Message: "spam"}}, 554, smtp.EnhancedCode{5, 7, 1}, "spam"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := Start(t, Options{Faults: tc.faults})
			err := deliver(srv.Addr(), nil, "a@x", []string{"b@y"}, message(0))
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				t.Fatalf("error %v (%T), want *smtp.SMTPError", err, err)
			}
			if se.Code != tc.code || se.EnhancedCode != tc.ec || se.Message != tc.msg {
				t.Errorf("reply %d %v %q, want %d %v %q", se.Code, se.EnhancedCode, se.Message, tc.code, tc.ec, tc.msg)
			}
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("%d messages recorded", n)
			}
			// After clearing the fault the same server accepts mail.
			if err := srv.SetFaults(Faults{}); err != nil {
				t.Fatal(err)
			}
			if err := deliver(srv.Addr(), nil, "a@x", []string{"b@y"}, message(1)); err != nil {
				t.Fatalf("after clearing faults: %v", err)
			}
			if msgs, err := srv.WaitMessages(waitCtx(t), 1); err != nil || string(msgs[0].Data) != message(1) {
				t.Fatalf("messages %v: %v", msgs, err)
			}
		})
	}
}

func TestCloseAfterEHLO(t *testing.T) {
	p := newPKI(t, "mx1.example")
	srv := Start(t, Options{TLS: p.serverTLS(), Faults: Faults{CloseAfterEHLO: true}})
	c, err := smtp.Dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	// EHLO was answered in full.
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("EHLO reply incomplete: no STARTTLS")
	}
	// The next command finds the connection gone.
	err = c.StartTLS(p.clientTLS("mx1.example"))
	if err == nil {
		t.Fatal("STARTTLS answered after CloseAfterEHLO")
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		t.Fatalf("got an SMTP reply %v, want a dropped connection", se)
	}
	conns, err := srv.WaitConnections(waitCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if ci := conns[0]; ci.StartTLS || ci.Helo != "client.test" {
		t.Errorf("connection %+v", ci)
	}
}

func TestREQUIRETLS(t *testing.T) {
	p := newPKI(t, "mx1.example")
	srv := Start(t, Options{TLS: p.serverTLS(), EnableREQUIRETLS: true})
	c, err := smtp.Dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.StartTLS(p.clientTLS("mx1.example")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@x", &smtp.MailOptions{RequireTLS: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@y", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, message(0))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	msgs, err := srv.WaitMessages(waitCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if !msgs[0].RequireTLS || !msgs[0].TLS.Used {
		t.Errorf("message %+v", msgs[0])
	}
}

// TestConcurrentDeliveries sends many messages at once, mixing plaintext and
// STARTTLS, and checks that each is recorded once with the right TLS state.
func TestConcurrentDeliveries(t *testing.T) {
	const workers, perWorker = 16, 20
	p := newPKI(t, "mx1.example")
	srv := Start(t, Options{TLS: p.serverTLS()})
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perWorker {
				i := w*perWorker + j
				var cfg *tls.Config
				if i%2 == 0 {
					cfg = p.clientTLS("mx1.example")
				}
				if err := deliver(srv.Addr(), cfg, fmt.Sprintf("s%d@x", i), []string{"r@y"}, message(i)); err != nil {
					errs <- fmt.Errorf("message %d: %w", i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := workers * perWorker
	msgs, err := srv.WaitMessages(waitCtx(t), total)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != total {
		t.Fatalf("%d messages, want %d", len(msgs), total)
	}
	seen := make(map[string]bool)
	for _, m := range msgs {
		var i int
		if _, err := fmt.Sscanf(m.From, "s%d@x", &i); err != nil {
			t.Fatalf("from %q", m.From)
		}
		if seen[m.From] {
			t.Fatalf("%s recorded twice", m.From)
		}
		seen[m.From] = true
		if !bytes.Equal(m.Data, []byte(message(i))) {
			t.Errorf("message %d body %q", i, m.Data)
		}
		if m.TLS.Used != (i%2 == 0) {
			t.Errorf("message %d TLS.Used = %v", i, m.TLS.Used)
		}
	}
	conns, err := srv.WaitConnections(waitCtx(t), total)
	if err != nil {
		t.Fatal(err)
	}
	tlsConns := 0
	for _, c := range conns {
		if c.TLS.Used {
			tlsConns++
		}
	}
	if len(conns) != total || tlsConns != total/2 {
		t.Errorf("%d connections, %d with TLS", len(conns), tlsConns)
	}
}

func TestInvalidOptions(t *testing.T) {
	for name, opts := range map[string]Options{
		"public address":    {Addr: "192.0.2.1:25"},
		"host name":         {Addr: "localhost:25"},
		"no port":           {Addr: "127.0.0.1"},
		"2xx reject":        {Faults: Faults{RejectMail: &Reply{Code: 250}}},
		"enhanced mismatch": {Faults: Faults{RejectRcpt: &Reply{Code: 450, EnhancedCode: [3]int{5, 1, 1}}}},
		"bad data code":     {Faults: Faults{RejectData: &Reply{Code: 600}}},
	} {
		if s, err := start(t, opts); err == nil {
			s.shutdown()
			t.Errorf("%s: accepted", name)
		}
	}
	srv := Start(t, Options{})
	if err := srv.SetFaults(Faults{RejectRcpt: &Reply{Code: 200}}); err == nil {
		t.Error("SetFaults accepted code 200")
	}
	// The invalid call changed nothing.
	if err := deliver(srv.Addr(), nil, "a@x", []string{"b@y"}, message(0)); err != nil {
		t.Fatal(err)
	}
}

func TestWaitStopsAtContextEnd(t *testing.T) {
	srv := Start(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := srv.WaitMessages(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitMessages: %v", err)
	}
	if _, err := srv.WaitConnections(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitConnections: %v", err)
	}
}

// TestCleanupClosesIdleConnections checks that shutdown does not wait for
// clients that keep their connection open.
func TestCleanupClosesIdleConnections(t *testing.T) {
	var srv *Server
	t.Run("inner", func(t *testing.T) {
		srv = Start(t, Options{})
		c, err := smtp.Dial(srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Hello("idle.test"); err != nil {
			t.Fatal(err)
		}
	})
	conns := srv.Connections()
	if len(conns) != 1 || !conns[0].Closed {
		t.Fatalf("after cleanup: %+v", conns)
	}
	if _, err := smtp.Dial(srv.Addr()); err == nil {
		t.Fatal("server still accepts connections after cleanup")
	}
}

// TestPort25InNamespace binds the real SMTP port on a non-default loopback
// address, as the DANE end-to-end tests do.
func TestPort25InNamespace(t *testing.T) {
	netns.Required(t)
	p := newPKI(t, "mx1.example")
	srv := Start(t, Options{Addr: "127.0.0.10:25", Hostname: "mx1.example", TLS: p.serverTLS()})
	if srv.Addr() != "127.0.0.10:25" {
		t.Fatalf("listening on %s", srv.Addr())
	}
	if err := deliver("127.0.0.10:25", p.clientTLS("mx1.example"), "a@x", []string{"b@y"}, message(0)); err != nil {
		t.Fatal(err)
	}
	msgs, err := srv.WaitMessages(waitCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if !msgs[0].TLS.Used || msgs[0].TLS.ServerName != "mx1.example" {
		t.Errorf("message TLS %+v", msgs[0].TLS)
	}
}

// BenchmarkDeliverSTARTTLS measures one full delivery (connect, EHLO,
// STARTTLS, EHLO, MAIL, RCPT, DATA, QUIT) against the test server.
func BenchmarkDeliverSTARTTLS(b *testing.B) {
	root := pki.NewCA(b, "bench root")
	leaf := root.Leaf(b, pki.LeafOptions{DNSNames: []string{"mx1.example"}})
	srv := Start(b, Options{TLS: &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()}}})
	cfg := &tls.Config{RootCAs: root.Pool(), ServerName: "mx1.example"}
	body := message(0)
	for b.Loop() {
		if err := deliver(srv.Addr(), cfg, "a@x", []string{"b@y"}, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeliverPlain is BenchmarkDeliverSTARTTLS without TLS.
func BenchmarkDeliverPlain(b *testing.B) {
	srv := Start(b, Options{})
	body := message(0)
	for b.Loop() {
		if err := deliver(srv.Addr(), nil, "a@x", []string{"b@y"}, body); err != nil {
			b.Fatal(err)
		}
	}
}
