package daneguard

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"errors"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
	"github.com/foxcpp/maddy"
	"github.com/foxcpp/maddy/framework/buffer"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/container"
	"github.com/foxcpp/maddy/framework/exterrors"
	"github.com/foxcpp/maddy/framework/module/modules"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
)

// Parity with features the maddy 0.8 glue gained after the port: the
// dane block's store block (root fleet_e2e_test.go TestStoreConfigErrors,
// same cases), target.tlsrpt_receiver (root TestReceiverConfigErrors) and
// what maddy 0.9's globals tell the self-check.

// TestStoreConfigErrors09: errors of the store block name the file and
// the line of the directive at fault; a valid block configures (without
// connecting: Configure opens nothing).
func TestStoreConfigErrors09(t *testing.T) {
	for _, tc := range []struct {
		store    config.Node
		want     string
		wantLine string
	}{
		{config.Node{Name: "store", Args: []string{"http://127.0.0.1"}, File: "test.conf", Line: 8}, "scheme must be redis or rediss", "test.conf:8"},
		{config.Node{Name: "store", File: "test.conf", Line: 8}, "usage: store", "test.conf:8"},
		{config.Node{Name: "store", Args: []string{"redis://127.0.0.1/0"}, File: "test.conf", Line: 8, Children: []config.Node{
			{Name: "read_timeout", Args: []string{"9s"}, File: "test.conf", Line: 9}}}, "read_timeout must be more than 0s and at most 5s", "test.conf:9"},
		{config.Node{Name: "store", Args: []string{"redis://127.0.0.1/0"}, File: "test.conf", Line: 8, Children: []config.Node{
			{Name: "no_such_option", Args: []string{"1"}, File: "test.conf", Line: 10}}}, "unexpected directive", "test.conf:10"},
		{config.Node{Name: "store", Args: []string{"rediss://127.0.0.1/0"}, File: "test.conf", Line: 8, Children: []config.Node{
			{Name: "tls", Args: []string{"off"}, File: "test.conf", Line: 9}}}, "tls off contradicts", "test.conf:8"},
		{config.Node{Name: "store", Args: []string{"redis://127.0.0.1/0"}, File: "test.conf", Line: 8, Children: []config.Node{
			{Name: "claim_ttl", Args: []string{"1h"}, File: "test.conf", Line: 11}}}, "claim_ttl must be between", "test.conf:11"},
	} {
		err := configureGroupErr(t, config.Node{Name: "dane", File: "test.conf", Line: 7, Children: []config.Node{tc.store}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.wantLine) {
			t.Errorf("%v: error %v, want one containing %q and %s", tc.store, err, tc.want, tc.wantLine)
		}
	}
	ok := config.Node{Name: "store", Args: []string{"redis://127.0.0.1:1/0"}, File: "test.conf", Line: 8, Children: []config.Node{
		{Name: "claim_ttl", Args: []string{"30s"}, File: "test.conf", Line: 9}}}
	before := len(Instances())
	if err := configureGroupErr(t, config.Node{Name: "dane", File: "test.conf", Line: 7, Children: []config.Node{ok}}); err != nil {
		t.Fatalf("valid store block: %v", err)
	}
	insts := Instances()[before:]
	if len(insts) != 1 || insts[0].Settings().Store == nil || insts[0].Settings().Store.URL == "" {
		t.Fatalf("valid store block: settings %+v", insts)
	}
}

func newReceiver(t *testing.T, c *container.C) *Receiver {
	t.Helper()
	mod, err := modules.Get(ReceiverModuleName)(c, ReceiverModuleName, "r")
	if err != nil {
		t.Fatal(err)
	}
	return mod.(*Receiver)
}

// TestReceiverConfigErrors09: malformed receiver directives fail Configure
// with file and line; a listener that cannot be bound fails Start, which
// leaves nothing running (maddy 0.9 does not Stop a module whose Start
// failed).
func TestReceiverConfigErrors09(t *testing.T) {
	dir := t.TempDir()
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.example.org"}})
	cert, key := leaf.WriteFiles(t, dir)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	store := config.Node{Name: "store", Args: []string{filepath.Join(dir, "r.db")}, File: "test.conf", Line: 8}
	globals := map[string]interface{}{"hostname": "mx.example.org"}
	for _, tc := range []struct {
		dirs    []config.Node
		want    string
		atStart bool
	}{
		{[]config.Node{{Name: "keep_days", Args: []string{"0"}}}, "test.conf:9: keep_days must be at least 1", false},
		{[]config.Node{{Name: "max_json_size", Args: []string{"10X"}}}, "test.conf:9: size \"10X\": unknown unit suffix", false},
		{[]config.Node{{Name: "require_dkim", Args: []string{"maybe"}}}, "test.conf:9: bool argument", false},
		{[]config.Node{{Name: "no_such", Args: []string{"1"}}}, "unexpected directive", false},
		{[]config.Node{{Name: "https_listen", Args: []string{"127.0.0.1:0"}}}, "https_listen needs https_cert and https_key", false},
		// As in the 0.8 build, the certificate and the listener are
		// checked when the receiver starts (verify-config does not).
		{[]config.Node{{Name: "https_listen", Args: []string{"127.0.0.1:0"}}, {Name: "https_cert", Args: []string{"/nonexistent"}}, {Name: "https_key", Args: []string{key}}},
			"https certificate: stat /nonexistent", true},
		{[]config.Node{{Name: "https_listen", Args: []string{busy.Addr().String()}}, {Name: "https_cert", Args: []string{cert}}, {Name: "https_key", Args: []string{key}}},
			"address already in use", true},
	} {
		m := newReceiver(t, container.New())
		for i := range tc.dirs {
			tc.dirs[i].File, tc.dirs[i].Line = "test.conf", 9
		}
		block := config.Node{Name: ReceiverModuleName, File: "test.conf", Line: 7, Children: append([]config.Node{store}, tc.dirs...)}
		err := m.Configure(nil, config.NewMap(globals, block))
		if tc.atStart {
			if err != nil {
				t.Errorf("%v: Configure: %v, want the error at Start", tc.dirs, err)
				continue
			}
			err = m.Start()
			if m.receiver() != nil {
				t.Errorf("%v: a failed Start left a receiver behind", tc.dirs)
			}
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.dirs, err, tc.want)
		}
	}
	m := newReceiver(t, container.New())
	if err := m.Configure([]string{"x"}, config.NewMap(globals, config.Node{Name: ReceiverModuleName})); err == nil ||
		!strings.Contains(err.Error(), "inline arguments are not used") {
		t.Errorf("inline argument: %v", err)
	}
}

// TestReceiverLifecycle09: not started, a delivery is deferred; started,
// a report email is stored and a malformed one refused with the 0.8
// build's code; Stop (and a second Stop, as after EarlyStop) is clean.
func TestReceiverLifecycle09(t *testing.T) {
	dir := t.TempDir()
	m := newReceiver(t, container.New())
	block := config.Node{Name: ReceiverModuleName, File: "test.conf", Line: 7, Children: []config.Node{
		{Name: "store", Args: []string{filepath.Join(dir, "r.db")}, File: "test.conf", Line: 8}}}
	if err := m.Configure(nil, config.NewMap(map[string]interface{}{"hostname": "mx.example.org"}, block)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "r.db")); err == nil {
		t.Fatal("Configure created the store")
	}
	ctx := context.Background()
	if _, err := m.StartDelivery(ctx, nil, "x@example.org"); err == nil || !exterrors.IsTemporary(err) {
		t.Fatalf("delivery before Start: %v, want a temporary error", err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	deliver := func(js string) error {
		d, err := m.StartDelivery(ctx, nil, "tlsrpt@sender.example")
		if err != nil {
			t.Fatal(err)
		}
		var h textproto.Header
		h.Set("Content-Type", "application/tlsrpt+json")
		h.Set("From", "tlsrpt@sender.example")
		h.Set("TLS-Report-Domain", "example.org")
		h.Set("TLS-Report-Submitter", "sender.example")
		if err := d.AddRcpt(ctx, "tlsrpt@example.org", smtp.RcptOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := d.Body(ctx, h, buffer.MemoryBuffer{Slice: []byte(js)}); err != nil {
			return err
		}
		return d.Commit(ctx)
	}
	good := `{"organization-name":"Org","contact-info":"x@sender.example","report-id":"r1",` +
		`"date-range":{"start-datetime":"2026-05-01T00:00:00Z","end-datetime":"2026-05-01T23:59:59Z"},` +
		`"policies":[{"policy":{"policy-type":"sts","policy-domain":"example.org"},` +
		`"summary":{"total-successful-session-count":3,"total-failure-session-count":0}}]}`
	if err := deliver(good); err != nil {
		t.Fatalf("valid report: %v", err)
	}
	err := deliver(`{"organization-name":`)
	var se *exterrors.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (exterrors.EnhancedCode{5, 6, 0}) {
		t.Fatalf("malformed report: %#v, want 550 5.6.0", err)
	}
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "r.db")); err != nil || fi.Size() == 0 {
		t.Fatalf("store after a stored report: %v", err)
	}
}

// TestMaddyGlobals09: maddy 0.9's ReadGlobals gives a dane block what the
// background self-check takes (Deps.SetMaddyGlobals): hostname, the
// local domains and the global tls directive's configuration, the same
// keys and types as maddy 0.8's.
func TestMaddyGlobals09(t *testing.T) {
	dir := t.TempDir()
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.example.org"}})
	cert, key := leaf.WriteFiles(t, dir)
	saved := container.Global
	c := container.New()
	container.Global = c
	t.Cleanup(func() { container.Global = saved })
	nodes := []config.Node{
		{Name: "hostname", Args: []string{"mx.example.org"}},
		{Name: "autogenerated_msg_domain", Args: []string{"example.org"}},
		{Name: "auth_domains", Args: []string{"example.net", "example.com"}},
		{Name: "tls", Args: []string{"file", cert, key}},
	}
	globals, _, err := maddy.ReadGlobals(c, nodes)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(c, ModuleName, "")
	if err != nil {
		t.Fatal(err)
	}
	pol := p.(*Policy)
	if err := pol.Configure(nil, config.NewMap(globals, config.Node{Name: "dane", File: "test.conf", Line: 1})); err != nil {
		t.Fatal(err)
	}
	d := pol.deps
	if d.Hostname != "mx.example.org" || strings.Join(d.Domains, " ") != "example.org example.net example.com" || d.ServerTLS == nil {
		t.Fatalf("deps from maddy 0.9's globals: hostname %q, domains %q, tls %v", d.Hostname, d.Domains, d.ServerTLS != nil)
	}
	// The tls config serves the file loader's certificate (loaded at
	// Configure in 0.9), which the self-check compares with DNS.
	cfg, err := d.ServerTLS.GetConfigForClient(nil)
	if err != nil || len(cfg.Certificates) == 0 || !bytes.Equal(cfg.Certificates[0].Certificate[0], leaf.Cert.Raw) {
		t.Fatalf("global tls: %v", err)
	}
}
