package service

import (
	"bufio"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

func header(t *testing.T, raw string) textproto.Header {
	t.Helper()
	h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(strings.ReplaceAll(raw, "\n", "\r\n") + "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestDKIMResult: only this server's Authentication-Results fields count:
// those with its authserv-id above its Received field.
func TestDKIMResult(t *testing.T) {
	for _, tc := range []struct{ name, hdr, want, dom string }{
		{"pass", "Authentication-Results: mx.example.org; dkim=pass header.d=Sender.example\nReceived: from x by mx.example.org\nFrom: a@b\n", "pass", "sender.example"},
		{"fail then pass", "Authentication-Results: mx.example.org; dkim=fail header.d=a.example; dkim=pass header.d=b.example\nReceived: x\n", "pass", "b.example"},
		{"fail", "Authentication-Results: mx.example.org; dkim=permerror header.d=a.example\nReceived: x\n", "permerror", ""},
		{"none", "Authentication-Results: mx.example.org; dkim=none\nReceived: x\n", "none", ""},
		{"no field", "Received: x\nFrom: a@b\n", "none", ""},
		{"forged below Received", "Received: x\nAuthentication-Results: mx.example.org; dkim=pass header.d=evil.example\n", "none", ""},
		{"other authserv-id", "Authentication-Results: mx.evil.example; dkim=pass header.d=evil.example\nReceived: x\n", "none", ""},
		{"spf only", "Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=a@b\nReceived: x\n", "none", ""},
	} {
		got, dom := DKIMResult(header(t, tc.hdr), "mx.example.org")
		if got != tc.want || dom != tc.dom {
			t.Errorf("%s: %q %q, want %q %q", tc.name, got, dom, tc.want, tc.dom)
		}
	}
}

func TestReceiverSettings(t *testing.T) {
	set := func(s *ReceiverSettings, name string, args ...string) error {
		for _, d := range ReceiverDirectives {
			if d.Name == name {
				return d.Set(s, args)
			}
		}
		t.Fatalf("no directive %s", name)
		return nil
	}
	s := DefaultReceiverSettings()
	if err := set(&s, "max_report_size", "1M", "512K"); err != nil || s.Limits.MaxBody != 1<<20+512<<10 {
		t.Fatalf("max_report_size: %v %d", err, s.Limits.MaxBody)
	}
	for _, bad := range [][]string{{"max_json_size", "10"}, {"max_json_size", "10Q"}, {"keep_days", "0"}, {"https_listen", "8443"},
		{"https_path", "x"}, {"domains", "a@b"}, {"metrics_max_organizations", "0"}} {
		s := DefaultReceiverSettings()
		if err := set(&s, bad[0], bad[1:]...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	s = DefaultReceiverSettings()
	if err := s.Validate("mx.example.org", "/var/lib/maddy"); err != nil || s.StorePath != "/var/lib/maddy/daneguard/tlsrpt_received.db" || s.AuthservID != "mx.example.org" {
		t.Fatalf("defaults: %v %+v", err, s)
	}
	s = DefaultReceiverSettings()
	s.HTTPSListen = "127.0.0.1:8443"
	if err := s.Validate("h", "/x"); err == nil || !strings.Contains(err.Error(), "https_cert") {
		t.Fatalf("https_listen without cert: %v", err)
	}
	s = DefaultReceiverSettings()
	s.Limits.MaxBody = 32 << 20
	if err := s.Validate("h", "/x"); err == nil {
		t.Fatal("max_report_size over max_message_size accepted")
	}
}

// TestReceiverReplies: the SMTP reply for each kind of report email, on a
// real store; a duplicate is accepted and stored once; require_dkim.
func TestReceiverReplies(t *testing.T) {
	s := DefaultReceiverSettings()
	s.StorePath = filepath.Join(t.TempDir(), "received.db")
	s.Limits = tlsrpt.Limits{MaxMessage: 1 << 20, MaxBody: 64 << 10, MaxJSON: 256 << 10}
	if err := s.Validate("mx.example.org", ""); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 3, 2, 12, 0, 0, 0, time.UTC)
	lg := newTestLog()
	r, err := NewReceiver(s, ReceiverDeps{Log: lg, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	report := func(id, pad string) string {
		return `{"organization-name":"Org","date-range":{"start-datetime":"2025-03-01T00:00:00Z","end-datetime":"2025-03-01T23:59:59Z"},` +
			`"contact-info":"tlsrpt@sender.example","report-id":"` + id + `","policies":[{"policy":{"policy-type":"no-policy-found","policy-domain":"example.org"` + pad + `},` +
			`"summary":{"total-successful-session-count":3,"total-failure-session-count":0}}]}`
	}
	mail := func(js string) (textproto.Header, *strings.Reader) {
		h := header(t, "Authentication-Results: mx.example.org; dkim=pass header.d=sender.example\nReceived: x\nFrom: <tlsrpt@sender.example>\n"+
			"TLS-Report-Domain: example.org\nTLS-Report-Submitter: sender.example\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=tlsrpt; boundary=b\n")
		body := "--b\r\nContent-Type: text/plain\r\n\r\nreport\r\n--b\r\nContent-Type: application/tlsrpt+json\r\n\r\n" + js + "\r\n--b--\r\n"
		return h, strings.NewReader(body)
	}
	deliver := func(js string) error {
		h, b := mail(js)
		return r.DeliverEmail(context.Background(), h, b)
	}
	code := func(err error) string {
		var rep *Reply
		if !errors.As(err, &rep) {
			return "no reply: " + err.Error()
		}
		return strings.Join(strings.Fields(rep.Error())[:2], " ")
	}
	if err := deliver(report("r1", "")); err != nil {
		t.Fatalf("good report: %v", err)
	}
	if err := deliver(report("r1", "")); err != nil {
		t.Fatalf("duplicate: %v", err)
	}
	if err := deliver(report("r2", `,"x":"`+strings.Repeat("a", 70<<10)+`"`)); err == nil || code(err) != "552 5.3.4" {
		t.Fatalf("oversized: %v", err)
	}
	if err := deliver(strings.Replace(report("r3", ""), `:3,`, `:-3,`, 1)); err == nil || code(err) != "550 5.6.0" ||
		!strings.Contains(err.Error(), "policies[0].summary.total-successful-session-count") {
		t.Fatalf("malformed: %v", err)
	}
	es, err := r.store.ReceivedSince(context.Background(), "2025-01-01")
	if err != nil || len(es) != 1 || es[0].DKIM != "pass" || es[0].DKIMDomain != "sender.example" || es[0].Transport != "email" {
		t.Fatalf("store: %v %+v", err, es)
	}

	r.set.RequireDKIM = true
	h, b := mail(report("r4", ""))
	h.Del("Authentication-Results")
	if err := r.DeliverEmail(context.Background(), h, b); err == nil || code(err) != "550 5.7.20" {
		t.Fatalf("unsigned with require_dkim: %v", err)
	}

	// Retention: keep_days 30 from 2025-04-05 drops the 2025-03-01 report.
	now = time.Date(2025, 4, 5, 0, 0, 0, 0, time.UTC)
	if n := r.Prune(context.Background()); n != 1 {
		t.Fatalf("pruned %d, want 1", n)
	}
	var received, refused int
	for _, l := range *lg.lines {
		switch {
		case strings.HasPrefix(l, "tlsrpt report received"):
			received++
		case strings.HasPrefix(l, "tlsrpt report refused"):
			refused++
		}
	}
	if received != 2 || refused != 3 {
		t.Fatalf("%d received and %d refused log lines, want 2 and 3:\n%s", received, refused, strings.Join(*lg.lines, "\n"))
	}
}
