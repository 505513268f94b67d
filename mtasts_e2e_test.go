package daneguard_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
	"github.com/maddy-dane/daneguard/internal/testbed/stsbed"
)

// stsAddr is where the MTA-STS policy server listens; every mta-sts.<domain>
// name points at it.
const stsAddr = "127.0.0.3:443"

// stsDomain publishes, in an unsigned zone (signed: DNSSEC-signed),
// MX mx.<domain> served by an SMTP server with cert, the TXT record with id
// and the policy host answering policy ("" leaves the answer to the caller).
func (w *world) stsDomain(sts *stsbed.Server, domain, id, policy string, cert *pki.Leaf, signed bool) (*dnsbed.Zone, *stsbed.Site, *smtpbed.Server) {
	opts := []dnsbed.ZoneOption{dnsbed.TTL(300)}
	if !signed {
		opts = append(opts, dnsbed.Unsigned())
	}
	ip, srv := w.server("mx."+domain, cert)
	z := w.dns.Zone(w.t, domain+".", opts...)
	z.Add(w.t, "@ MX 10 mx", "mx A "+ip, "mta-sts A "+sts.IP(), `_mta-sts TXT "v=STSv1; id=`+id+`;"`)
	site := sts.Site(domain)
	if policy != "" {
		site.SetPolicy(policy)
	}
	return z, site, srv
}

// TestEndToEndMTASTS runs the RFC 8461 scenarios through the real maddy: one
// maddy, one destination domain per scenario.
func TestEndToEndMTASTS(t *testing.T) {
	w := newWorld(t)
	sts := stsbed.Start(t, stsAddr, w.ca)
	leaf := func(names ...string) *pki.Leaf { return w.ca.Leaf(t, pki.LeafOptions{DNSNames: names}) }
	pad := "x-pad: " + strings.Repeat("a", 70<<10) + "\r\n"

	_, sMatch, srvMatch := w.stsDomain(sts, "match.example", "m1", stsbed.Policy("enforce", 86400, "*.match.example"), leaf("mx.match.example"), false)
	_, _, srvMis := w.stsDomain(sts, "mismatch.example", "x1", stsbed.Policy("enforce", 86400, "mail.elsewhere.example"), leaf("mx.mismatch.example"), false)
	_, _, srvTest := w.stsDomain(sts, "testing.example", "t1", stsbed.Policy("testing", 86400, "mx.testing.example"), leaf("wrong.example"), false)
	_, _, srvNone := w.stsDomain(sts, "none.example", "n1", stsbed.Policy("none", 86400), leaf("wrong.example"), false)
	_, sBig, srvBig := w.stsDomain(sts, "big.example", "b1", stsbed.Policy("enforce", 86400, "mx.big.example")+pad, leaf("mx.big.example"), false)
	_, sBad, srvBad := w.stsDomain(sts, "malformed.example", "f1", "version: STSv1\r\nmode: enforce\r\nmx: mx.malformed.example\r\n", leaf("mx.malformed.example"), false)
	_, sRedir, srvRedir := w.stsDomain(sts, "redirect.example", "r1", "", leaf("mx.redirect.example"), false)
	sRedir.SetResponse(stsbed.Response{Status: http.StatusFound, Location: "https://mta-sts.match.example/.well-known/mta-sts.txt"})
	// DANE and MTA-STS: DANE-EE on a self-signed certificate that is not
	// WebPKI-valid; the enforce policy lists the host. DANE governs.
	self := selfSigned(t, "mx.both.example")
	zBoth, sBoth, srvBoth := w.stsDomain(sts, "both.example", "bo1", stsbed.Policy("enforce", 86400, "mx.both.example"), self, true)
	zBoth.Add(t, pki.TLSA(t, "_25._tcp.mx.both.example.", 3, 1, 1, self.Cert))
	// DANE fails (the TLSA record pins another key); the WebPKI
	// certificate satisfies the policy but must not rescue it.
	zFail, _, srvFail := w.stsDomain(sts, "danefail.example", "df1", stsbed.Policy("enforce", 86400, "mx.danefail.example"), leaf("mx.danefail.example"), true)
	zFail.Add(t, pki.TLSA(t, "_25._tcp.mx.danefail.example.", 3, 1, 1, selfSigned(t, "attacker.example").Cert))
	w.start()

	roots := w.ca.WritePEM(t, t.TempDir())
	m := maddybed.Start(t, maddybed.Options{MXAuth: "dane {\n roots " + roots + "\n" +
		" policy big.example mtasts\n policy malformed.example mtasts\n policy redirect.example mtasts\n }"})

	t.Run("enforce-match", func(t *testing.T) {
		expectDelivered(t, m, srvMatch, "match.example")
		v := lastVerdict(t, m, "match.example")
		wantVerdict(t, v, "authenticated", "mtasts-valid")
		if field(v, "mechanism") != "mta-sts" || field(v, "sts_id") != "m1" || field(v, "sts_mode") != "enforce" {
			t.Fatalf("verdict fields: %v", v.Fields)
		}
		if !srvMatch.Messages()[0].TLS.Used || sMatch.Fetches() != 1 {
			t.Fatalf("TLS %v, %d policy fetches", srvMatch.Messages()[0].TLS.Used, sMatch.Fetches())
		}
	})
	t.Run("enforce-mismatch-deferred", func(t *testing.T) {
		res := expectDeferred(t, m, "mismatch.example", srvMis)
		v := lastVerdict(t, m, "mismatch.example")
		wantVerdict(t, v, "deferred", "mtasts-mx-mismatch")
		if field(v, "stage") != "mx" || field(v, "smtp_enchcode") != "4.7.4" || field(v, "sts_id") != "x1" {
			t.Fatalf("verdict fields: %v", v.Fields)
		}
		if !strings.Contains(res.Text, "4.7.4 mtasts-mx-mismatch") {
			t.Fatalf("reply %d %q does not explain the MTA-STS refusal", res.Code, res.Text)
		}
		if n := srvMis.ConnectionCount(); n != 0 {
			t.Fatalf("maddy connected %d times to an MX the policy does not list", n)
		}
	})
	t.Run("testing-mode-delivers", func(t *testing.T) {
		expectDelivered(t, m, srvTest, "testing.example")
		v := lastVerdict(t, m, "testing.example")
		wantVerdict(t, v, "encrypted", "mtasts-testing-failure")
		if field(v, "sts_mode") != "testing" || !strings.Contains(field(v, "detail"), "certificate-host-mismatch") {
			t.Fatalf("verdict fields: %v", v.Fields)
		}
	})
	t.Run("mode-none", func(t *testing.T) {
		expectDelivered(t, m, srvNone, "none.example")
		v := lastVerdict(t, m, "none.example")
		wantVerdict(t, v, "encrypted", "insecure-mx")
		if field(v, "sts_mode") != "none" || field(v, "mechanism") != "none" {
			t.Fatalf("verdict fields: %v", v.Fields)
		}
	})
	for _, tc := range []struct {
		domain string
		site   *stsbed.Site
		srv    *smtpbed.Server
		detail string
	}{
		{"big.example", sBig, srvBig, "body-too-large"},
		{"malformed.example", sBad, srvBad, "policy-syntax"},
		{"redirect.example", sRedir, srvRedir, "http-redirect"},
	} {
		t.Run("level-mtasts-"+tc.detail, func(t *testing.T) {
			fetches := sMatch.Fetches()
			expectDeferred(t, m, tc.domain, tc.srv)
			v := lastVerdict(t, m, tc.domain)
			wantVerdict(t, v, "deferred", "mtasts-fetch-failure")
			if !strings.Contains(field(v, "detail"), tc.detail) || tc.site.Fetches() != 1 {
				t.Fatalf("verdict fields %v after %d fetches", v.Fields, tc.site.Fetches())
			}
			if sMatch.Fetches() != fetches {
				t.Fatal("the redirect was followed")
			}
		})
	}
	t.Run("dane-governs-self-signed", func(t *testing.T) {
		expectDelivered(t, m, srvBoth, "both.example")
		v := lastVerdict(t, m, "both.example")
		wantVerdict(t, v, "authenticated", "dane-match")
		if field(v, "sts_id") != "bo1" || field(v, "mechanism") != "dane" || sBoth.Fetches() != 1 {
			t.Fatalf("verdict fields: %v", v.Fields)
		}
	})
	t.Run("dane-failure-not-rescued", func(t *testing.T) {
		expectDeferred(t, m, "danefail.example", srvFail)
		wantVerdict(t, lastVerdict(t, m, "danefail.example"), "deferred", "tlsa-mismatch")
	})
}

// TestEndToEndMTASTSRestart: policies survive a restart of maddy
// (mtasts_dir); a new TXT id makes the restarted maddy fetch the new
// policy; with the policy server down, the cached policy stays in force.
func TestEndToEndMTASTSRestart(t *testing.T) {
	w := newWorld(t)
	sts := stsbed.Start(t, stsAddr, w.ca)
	leaf := func(names ...string) *pki.Leaf { return w.ca.Leaf(t, pki.LeafOptions{DNSNames: names}) }
	zChange, sChange, srvChange := w.stsDomain(sts, "change.example", "c1", stsbed.Policy("enforce", 86400, "mx.change.example"), leaf("mx.change.example"), false)
	zDown, sDown, srvDown := w.stsDomain(sts, "down.example", "d1", stsbed.Policy("enforce", 86400, "mx.down.example"), leaf("mx.down.example"), false)
	ipRogue, srvRogue := w.server("rogue.down.example", leaf("rogue.down.example"))
	zDown.Add(t, "rogue A "+ipRogue)
	// No MTA-STS, valid certificate: maddy's MX level stays "none".
	ipPlain, srvPlain := w.server("mx.plain.example", leaf("mx.plain.example"))
	w.dns.Zone(t, "plain.example.", dnsbed.TTL(300), dnsbed.Unsigned()).Add(t, "@ MX 10 mx", "mx A "+ipPlain)
	w.start()

	dir := filepath.Join(t.TempDir(), "mtasts")
	conf := "dane {\n roots " + w.ca.WritePEM(t, t.TempDir()) + "\n mtasts_dir " + dir + "\n }"

	// maddy's local_policy sees the levels daneguard raises: MX level
	// "mtasts" for a host an enforce policy lists, TLS level
	// "authenticated" for a connection MTA-STS validated.
	m := maddybed.Start(t, maddybed.Options{MXAuth: conf + "\nlocal_policy {\n min_mx_level mtasts\n min_tls_level authenticated\n }"})
	res := expectDeferred(t, m, "plain.example", srvPlain)
	if !strings.Contains(res.Text, "MX record authenticity") {
		t.Fatalf("plain.example deferred by %q, want maddy's local_policy MX level check", res.Text)
	}
	expectDelivered(t, m, srvChange, "change.example")
	expectDelivered(t, m, srvDown, "down.example")
	wantVerdict(t, lastVerdict(t, m, "down.example"), "authenticated", "mtasts-valid")
	m.Stop()
	if sChange.Fetches() != 1 || sDown.Fetches() != 1 {
		t.Fatalf("fetches %d and %d, want 1 each", sChange.Fetches(), sDown.Fetches())
	}

	// change.example publishes a new policy that no longer lists its MX.
	sChange.SetPolicy(stsbed.Policy("enforce", 86400, "new.change.example"))
	zChange.Replace(t, `_mta-sts TXT "v=STSv1; id=c2;"`)
	// down.example: the policy host is down, a new id is announced, and
	// the MX record now points to a host the cached policy does not list.
	sDown.SetDown(true)
	zDown.Replace(t, `_mta-sts TXT "v=STSv1; id=d2;"`, "@ MX 10 rogue")
	w.ub.Flush(t)

	m2 := maddybed.Start(t, maddybed.Options{MXAuth: conf})
	t.Run("txt-id-change-refetches", func(t *testing.T) {
		expectDeferred(t, m2, "change.example")
		if n := len(srvChange.Messages()); n != 1 {
			t.Fatalf("MX got %d messages, want only the one before the restart", n)
		}
		v := lastVerdict(t, m2, "change.example")
		wantVerdict(t, v, "deferred", "mtasts-mx-mismatch")
		if field(v, "sts_id") != "c2" || sChange.Fetches() != 2 {
			t.Fatalf("verdict fields %v after %d fetches; want the new policy c2", v.Fields, sChange.Fetches())
		}
	})
	t.Run("server-down-cached-policy-enforced", func(t *testing.T) {
		expectDeferred(t, m2, "down.example", srvRogue)
		if n := len(srvDown.Messages()); n != 1 {
			t.Fatalf("old MX got %d messages, want only the one before the restart", n)
		}
		v := lastVerdict(t, m2, "down.example")
		wantVerdict(t, v, "deferred", "mtasts-mx-mismatch")
		if field(v, "sts_id") != "d1" || field(v, "mx") != "rogue.down.example" {
			t.Fatalf("verdict fields: %v; want the cached policy d1 applied to the rogue MX", v.Fields)
		}
		if sDown.Fetches() != 2 {
			t.Fatalf("%d fetches, want 2 (the new id was tried)", sDown.Fetches())
		}
		if n := srvRogue.ConnectionCount(); n != 0 {
			t.Fatalf("maddy connected %d times to the rogue MX", n)
		}
	})
}

// TestMaddyMTASTSBlockRefused: in a daneguard build, maddy's own
// `mtasts { }` policy refuses to start and says why.
func TestMaddyMTASTSBlockRefused(t *testing.T) {
	grp, err := module.Get("mx_auth")("mx_auth", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	block := config.Node{Name: "mx_auth", Children: []config.Node{
		{Name: "mtasts", File: "maddy.conf", Line: 12, Children: []config.Node{{Name: "cache", Args: []string{"fs"}, File: "maddy.conf", Line: 13}}},
	}}
	err = grp.Init(config.NewMap(map[string]interface{}{}, block))
	if err == nil || !strings.Contains(err.Error(), "daneguard") || !strings.Contains(err.Error(), "Remove the `mtasts { }` block") {
		t.Fatalf("Init of an mtasts block: %v, want the daneguard refusal", err)
	}
}

// TestMTASTSConfig: the MTA-STS directives are checked at start-up, with
// the file and line of the offending directive where maddy knows it.
func TestMTASTSConfig(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := t.TempDir()
	// As for verify-config: no background refresh outliving the test.
	module.NoRun = true
	defer func() { module.NoRun = false }()
	for _, tc := range []struct {
		dirs [][]string
		want string // "" means Init must succeed
	}{
		{[][]string{{"mtasts", "maybe"}}, "test.conf:8"},
		{[][]string{{"mtasts_dir"}}, "test.conf:8"},
		{[][]string{{"mtasts_dir", notDir}}, "mtasts_dir"},
		{[][]string{{"mtasts", "off"}, {"mtasts_dir", notDir}}, ""},
		{[][]string{{"mtasts", "on"}, {"mtasts_dir", good}}, ""},
	} {
		var children []config.Node
		for i, d := range tc.dirs {
			children = append(children, config.Node{Name: d[0], Args: d[1:], File: "test.conf", Line: 8 + i})
		}
		grp, err := module.Get("mx_auth")("mx_auth", "", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		block := config.Node{Name: "mx_auth", Children: []config.Node{
			{Name: "dane", File: "test.conf", Line: 7, Children: append(children, config.Node{Name: "resolver", Args: []string{"127.0.0.1:53"}})},
		}}
		err = grp.Init(config.NewMap(map[string]interface{}{}, block))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.dirs, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: error %v, want one containing %q", tc.dirs, err, tc.want)
		}
	}
}
