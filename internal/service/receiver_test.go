package service

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/maddy-dane/daneguard/internal/testbed/redisbed"
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

// applySharedStore applies `shared_store URL { children }` as the glue
// does: Set, the block's directives, Done.
func applySharedStore(s *ReceiverSettings, url string, children ...[]string) error {
	d := sharedStoreDirective
	if err := d.Set(s, []string{url}); err != nil {
		return err
	}
	for _, c := range children {
		found := false
		for _, b := range d.Block {
			if b.Name == c[0] {
				found = true
				if err := b.Set(s, c[1:]); err != nil {
					return err
				}
			}
		}
		if !found {
			return errUnknown(c[0])
		}
	}
	return d.Done(s)
}

// TestReceiverSharedStoreSettings: shared_store takes the dane block's
// store syntax; claim_ttl, which only the dane block's reports use, is
// refused.
func TestReceiverSharedStoreSettings(t *testing.T) {
	s := DefaultReceiverSettings()
	if err := applySharedStore(&s, "redis://u:pw@127.0.0.1:6390/2", []string{"read_timeout", "100ms"}, []string{"key_prefix", "x:"}); err != nil {
		t.Fatal(err)
	}
	st := s.SharedStore
	if st.URL != "redis://u@127.0.0.1:6390/2" || st.Redis.Addr != "127.0.0.1:6390" || st.Redis.DB != 2 || st.Redis.Password != "pw" ||
		st.Redis.ReadTimeout != 100*time.Millisecond || st.Redis.KeyPrefix != "x:" {
		t.Fatalf("settings %+v", st)
	}
	for _, bad := range []struct {
		url      string
		children [][]string
		want     string
	}{
		{"redis://127.0.0.1/0", [][]string{{"claim_ttl", "2m"}}, "no meaning in shared_store"},
		{"redis://127.0.0.1/0?x=1", nil, "query"},
		{"redis://u:pw@127.0.0.1/0", [][]string{{"password", "again"}}, "already in the store URL"},
		{"rediss://127.0.0.1/0", [][]string{{"tls", "off"}}, "tls off contradicts"},
		{"redis://127.0.0.1/0", [][]string{{"read_timeout", "1h"}}, "at most"},
	} {
		s := DefaultReceiverSettings()
		if err := applySharedStore(&s, bad.url, bad.children...); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s %v: error %v, want %q", bad.url, bad.children, err, bad.want)
		}
	}
}

// TestReceiverSharedStore: two receivers (two nodes) on one real Redis:
// a report mailed to both is accepted by both and new once fleet-wide;
// each reads the fleet's reports; a receiver sharing the URL of a dane
// block's store shares its client; a failed start (the HTTPS address is
// taken) and Close drop the reference; the configuration check opens
// nothing.
func TestReceiverSharedStore(t *testing.T) {
	srv := redisbed.Start(t, redisbed.Options{})
	ctx := context.Background()
	now := time.Now().UTC()
	day := tlsrpt.Day(now)
	settings := func() ReceiverSettings {
		s := DefaultReceiverSettings()
		s.StorePath = filepath.Join(t.TempDir(), "received.db")
		if err := applySharedStore(&s, srv.URL(0)); err != nil {
			t.Fatal(err)
		}
		if err := s.Validate("mx.example.org", ""); err != nil {
			t.Fatal(err)
		}
		return s
	}
	key := storeKey(settings().SharedStore)

	chk, err := NewReceiver(settings(), ReceiverDeps{Log: newTestLog(), NoRun: true})
	if err != nil || chk.Start() != nil || chk.Shared() != nil || fleetRefs(key) != 0 {
		t.Fatalf("a configuration check opened the shared store: %v, refs %d", err, fleetRefs(key))
	}
	_ = chk.Close()

	// A dane block naming the same store holds the client first.
	dane := fleetSettings(t, srv.URL(0), t.TempDir())
	svc, err := New(dane, Deps{Log: newTestLog(), StateDir: t.TempDir(), Instance: "dane"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()

	var nodes []*Receiver
	for range 2 {
		r, err := NewReceiver(settings(), ReceiverDeps{Log: newTestLog(), Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		nodes = append(nodes, r)
	}
	if fleetRefs(key) != 3 || nodes[0].shared == nil {
		t.Fatalf("client references %d, want 3 (one dane block, two receivers)", fleetRefs(key))
	}

	report := func(id string) string {
		return `{"organization-name":"Org","date-range":{"start-datetime":"` + day + `T00:00:00Z","end-datetime":"` + day + `T23:59:59Z"},` +
			`"contact-info":"tlsrpt@sender.example","report-id":"` + id + `","policies":[{"policy":{"policy-type":"no-policy-found","policy-domain":"example.org"},` +
			`"summary":{"total-successful-session-count":3,"total-failure-session-count":0}}]}`
	}
	deliver := func(r *Receiver, id string) {
		h := header(t, "Authentication-Results: mx.example.org; dkim=pass header.d=sender.example\nReceived: x\nFrom: <tlsrpt@sender.example>\n"+
			"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=tlsrpt; boundary=b\n")
		body := "--b\r\nContent-Type: text/plain\r\n\r\nreport\r\n--b\r\nContent-Type: application/tlsrpt+json\r\n\r\n" + report(id) + "\r\n--b--\r\n"
		if err := r.DeliverEmail(ctx, h, strings.NewReader(body)); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	dupLines := func(r *Receiver) (n int) {
		lg := r.log.(testLog)
		lg.mu.Lock()
		defer lg.mu.Unlock()
		for _, l := range *lg.lines {
			if strings.HasPrefix(l, "tlsrpt report received") && strings.Contains(l, "duplicate true") {
				n++
			}
		}
		return n
	}
	deliver(nodes[0], "both")
	deliver(nodes[1], "both")
	deliver(nodes[1], "second-only")
	if dupLines(nodes[0]) != 0 || dupLines(nodes[1]) != 1 {
		t.Fatalf("duplicate lines %d and %d, want the second node's copy as the one duplicate", dupLines(nodes[0]), dupLines(nodes[1]))
	}
	for i, r := range nodes {
		es, err := r.reports.ReceivedSince(ctx, day)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(reportIDs(es)); got != "[both second-only]" {
			t.Fatalf("node %d fleet view %s", i, got)
		}
	}
	if local, _ := nodes[0].store.ReceivedSince(ctx, day); len(local) != 1 {
		t.Fatalf("node 0's local store has %d reports, want its own 1", len(local))
	}

	// A failed start (the HTTPS certificate is missing) drops its
	// reference again.
	s := settings()
	missing := filepath.Join(t.TempDir(), "missing.pem")
	s.HTTPSListen, s.HTTPSCert, s.HTTPSKey = "127.0.0.1:0", missing, missing
	failed, err := NewReceiver(s, ReceiverDeps{Log: newTestLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := failed.Start(); err == nil {
		t.Fatal("start on a taken address succeeded")
	}
	_ = failed.Close()
	if fleetRefs(key) != 3 {
		t.Fatalf("after a failed start: %d references, want 3", fleetRefs(key))
	}
	_ = nodes[0].Close()
	_ = nodes[1].Close()
	if fleetRefs(key) != 1 {
		t.Fatalf("after closing both receivers: %d references, want the dane block's 1", fleetRefs(key))
	}
}

func reportIDs(es []tlsrpt.ReceivedEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Report.ReportID)
	}
	return out
}
