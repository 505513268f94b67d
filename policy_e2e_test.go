package daneguard_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
)

func sha256Pin(l *pki.Leaf) string {
	s := sha256.Sum256(l.Cert.Raw)
	return "sha256:" + hex.EncodeToString(s[:])
}

// newVerdict waits for a verdict line for domain beyond the first before
// ones (maddy's log reaches the test through a pipe, possibly after the
// SMTP reply) and returns the last one.
func newVerdict(t *testing.T, m *maddybed.Maddy, domain string, before int) maddybed.Entry {
	t.Helper()
	c := ctx(t)
	for {
		if vs := verdictFor(m, domain); len(vs) > before {
			return vs[len(vs)-1]
		}
		select {
		case <-c.Done():
			t.Fatalf("no new daneguard verdict logged for %s:\n%s", domain, m.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestEndToEndPolicy runs the per-destination levels through the real
// maddy: inline `policy` entries, a table.file behind `policy_table`
// (exact, ".parent" and malformed entries), and maddy's local_policy on
// top. One DNS tree, two maddy instances.
func TestEndToEndPolicy(t *testing.T) {
	w := newWorld(t)
	zone := func(name string, opts ...dnsbed.ZoneOption) *dnsbed.Zone {
		return w.dns.Zone(t, name+".", append([]dnsbed.ZoneOption{dnsbed.TTL(300)}, opts...)...)
	}
	// host starts a server for "mx.<domain>" in a zone of its own; leaf
	// nil means no STARTTLS. extra records go into the zone.
	host := func(domain string, leaf *pki.Leaf, signed bool, extra ...string) *smtpbed.Server {
		ip, s := w.server("mx."+domain, leaf)
		var opts []dnsbed.ZoneOption
		if !signed {
			opts = append(opts, dnsbed.Unsigned())
		}
		zone(domain, opts...).Add(t, append([]string{"@ MX 10 mx", "mx A " + ip}, extra...)...)
		return s
	}
	self := func(name string) *pki.Leaf { return selfSigned(t, name) }

	// Inline entries.
	sDaneOnly := host("only.example", self("mx.only.example"), true)
	// dane-only with only unusable TLSA records (PKIX-EE): no authentication
	// possible, so no delivery.
	unLeaf := self("mx.onlyunusable.example")
	sOnlyUnusable := host("onlyunusable.example", unLeaf, true, pki.TLSA(t, "_25._tcp.mx.onlyunusable.example.", 1, 1, 1, unLeaf.Cert))
	sEncNoTLS := host("encnotls.example", nil, true)
	sEncOK := host("encok.example", self("mx.encok.example"), false)
	// none: a TLSA record is published, the server has no STARTTLS; level
	// none does not even look.
	noneLeaf := self("mx.none.example")
	sNone := host("none.example", nil, true, pki.TLSA(t, "_25._tcp.mx.none.example.", 3, 1, 1, noneLeaf.Cert))
	pinLeaf := self("mx.pin.example")
	sPin := host("pin.example", pinLeaf, false)
	sPinBad := host("pinbad.example", self("mx.pinbad.example"), false)
	webLeaf := w.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.webpki.example"}})
	sWeb := host("webpki.example", webLeaf, false)
	sWebBad := host("webpkibad.example", self("mx.webpkibad.example"), false)

	// Table entries.
	sTblOnly := host("tblonly.example", self("mx.tblonly.example"), true)
	tblPinLeaf := self("mx.tblpin.example")
	sTblPin := host("tblpin.example", tblPinLeaf, false)
	sSubChild := host("a.sub.example", nil, false) // under ".sub.example: encrypt"
	sSubApex := host("sub.example", nil, false)    // the parent itself: not covered
	sBroken := host("broken.example", nil, false)  // malformed entry; default would allow plaintext

	// local_policy { min_tls_level authenticated } on top.
	lpDaneLeaf := self("mx.lpdane.example")
	sLPDane := host("lpdane.example", lpDaneLeaf, true, pki.TLSA(t, "_25._tcp.mx.lpdane.example.", 3, 1, 1, lpDaneLeaf.Cert))
	sLPEnc := host("lpenc.example", self("mx.lpenc.example"), false)
	sLPNone := host("lpnone.example", nil, false)
	// REQUIRETLS (RFC 8689): a DANE-authenticated destination whose server
	// supports the extension, and one that only gets encryption.
	rtLeaf := self("mx.rtdane.example")
	w.ip++
	rtIP := fmt.Sprintf("127.0.0.%d", w.ip)
	sRTDane := smtpbed.Start(t, smtpbed.Options{Addr: rtIP + ":25", Hostname: "mx.rtdane.example", EnableREQUIRETLS: true,
		TLS: &tls.Config{Certificates: []tls.Certificate{rtLeaf.TLSCertificate()}}})
	zone("rtdane.example").Add(t, "@ MX 10 mx", "mx A "+rtIP, pki.TLSA(t, "_25._tcp.mx.rtdane.example.", 3, 1, 1, rtLeaf.Cert))
	sRTEnc := host("rtenc.example", self("mx.rtenc.example"), true)
	w.start()

	dir := t.TempDir()
	roots := w.ca.WritePEM(t, dir)
	table := filepath.Join(dir, "tls_policy")
	tableBody := strings.Join([]string{
		"# destination: level [pins]",
		"tblonly.example: dane-only",
		"tblpin.example: fingerprint " + sha256Pin(tblPinLeaf),
		".sub.example: encrypt",
		"broken.example: dane-onyl",
	}, "\n") + "\n"
	if err := os.WriteFile(table, []byte(tableBody), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("levels", func(t *testing.T) {
		m := maddybed.Start(t, maddybed.Options{
			Extra: fmt.Sprintf("table.file tls_policy {\n    file %s\n}\n", table),
			MXAuth: fmt.Sprintf(`dane {
            roots %s
            policy only.example dane-only
            policy onlyunusable.example dane-only
            policy encnotls.example encrypt
            policy encok.example encrypt
            policy none.example none
            policy pin.example fingerprint %s
            policy pinbad.example fingerprint %s spki-sha256:%s
            policy webpki.example verify
            policy webpkibad.example verify
            policy rtenc.example encrypt
            policy_table &tls_policy
        }`, roots, sha256Pin(pinLeaf), sha256Pin(noneLeaf), strings.Repeat("ab", 32)),
		})

		for _, tc := range []struct {
			name, domain    string
			srv             *smtpbed.Server
			verdict, reason string
			enh             string // deferrals: enhanced code in the reply text
		}{
			{"dane-only-without-tlsa", "only.example", sDaneOnly, "deferred", "dane-required", "4.7.5"},
			{"dane-only-unusable-tlsa", "onlyunusable.example", sOnlyUnusable, "deferred", "dane-required", "4.7.5"},
			{"encrypt-without-starttls", "encnotls.example", sEncNoTLS, "deferred", "starttls-not-supported", "4.7.4"},
			{"encrypt-any-certificate", "encok.example", sEncOK, "encrypted", "encrypt-satisfied", ""},
			{"none-plaintext-despite-tlsa", "none.example", sNone, "plaintext", "policy-none", ""},
			{"fingerprint-match", "pin.example", sPin, "authenticated", "fingerprint-match", ""},
			{"fingerprint-mismatch", "pinbad.example", sPinBad, "deferred", "fingerprint-mismatch", "4.7.5"},
			{"verify-webpki", "webpki.example", sWeb, "authenticated", "webpki-valid", ""},
			{"verify-self-signed", "webpkibad.example", sWebBad, "deferred", "webpki-invalid", "4.7.5"},
			{"table-dane-only", "tblonly.example", sTblOnly, "deferred", "dane-required", "4.7.5"},
			{"table-fingerprint", "tblpin.example", sTblPin, "authenticated", "fingerprint-match", ""},
			{"table-parent-entry", "a.sub.example", sSubChild, "deferred", "starttls-not-supported", "4.7.4"},
			{"table-parent-not-itself", "sub.example", sSubApex, "plaintext", "insecure-mx", ""},
			{"table-malformed-defers", "broken.example", sBroken, "deferred", "policy-lookup-failure", "4.4.3"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := len(verdictFor(m, tc.domain))
				if tc.verdict == "deferred" {
					res := expectDeferred(t, m, tc.domain, tc.srv)
					if !strings.Contains(res.Text, tc.enh+" "+tc.reason) {
						t.Errorf("reply %d %s %q lacks %q", res.Code, res.Enh, res.Text, tc.enh+" "+tc.reason)
					}
				} else {
					expectDelivered(t, m, tc.srv, tc.domain)
				}
				v := newVerdict(t, m, tc.domain, before)
				wantVerdict(t, v, tc.verdict, tc.reason)
				msgs := tc.srv.Messages()
				switch tc.verdict {
				case "plaintext":
					if msgs[0].TLS.Used {
						t.Error("verdict plaintext but the message went over TLS")
					}
				case "encrypted", "authenticated":
					if !msgs[0].TLS.Used {
						t.Error("message sent without TLS")
					}
				}
			})
		}
		// maddy v0.8.2 honours REQUIRETLS in target.remote: it needs TLS
		// level "authenticated" (which daneguard grants on a DANE match)
		// and an MX level of at least mtasts (daneguard grants dnssec for
		// a secure MX RRset); otherwise it fails the recipient with maddy's
		// own 550 5.7.30, a permanent error as RFC 8689 §5 asks.
		t.Run("requiretls-dane", func(t *testing.T) {
			code, text := sendRequireTLS(t, m.Opts.SubmitAddr, "rtdane.example")
			if code != 250 {
				t.Fatalf("REQUIRETLS to a DANE destination: %d %s", code, text)
			}
			msgs, err := sRTDane.WaitMessages(ctx(t), 1)
			if err != nil || !msgs[0].RequireTLS || !msgs[0].TLS.Used {
				t.Fatalf("message at the DANE server: %v %+v", err, msgs)
			}
		})
		t.Run("requiretls-encrypted-only", func(t *testing.T) {
			code, text := sendRequireTLS(t, m.Opts.SubmitAddr, "rtenc.example")
			if code != 550 || !strings.Contains(text, "5.7.30") {
				t.Fatalf("REQUIRETLS to an unauthenticated destination: %d %s", code, text)
			}
			if n := len(sRTEnc.Messages()); n != 0 {
				t.Fatalf("%d messages delivered", n)
			}
			wantVerdict(t, newVerdict(t, m, "rtenc.example", 0), "encrypted", "encrypt-satisfied")
		})

		// A malformed table entry is reported with the key, in the log
		// line an operator searches for.
		if d := field(lastVerdict(t, m, "broken.example"), "detail"); !strings.Contains(d, `"broken.example"`) || !strings.Contains(d, "dane-onyl") {
			t.Errorf("detail %q does not name the entry", d)
		}
	})

	t.Run("local-policy-authenticated", func(t *testing.T) {
		m := maddybed.Start(t, maddybed.Options{
			SubmitAddr: "127.0.0.1:2526",
			MXAuth: `dane {
            policy lpenc.example encrypt
            policy lpnone.example none
        }
        local_policy {
            min_tls_level authenticated
        }`,
		})
		// DANE authentication satisfies local_policy: daneguard raises
		// maddy's TLS level to authenticated.
		expectDelivered(t, m, sLPDane, "lpdane.example")
		wantVerdict(t, newVerdict(t, m, "lpdane.example", 0), "authenticated", "dane-match")

		// daneguard accepts these (encrypted, plaintext) but local_policy
		// does not: the stricter of the two wins, and the deferral is
		// maddy's own 4.7.1.
		for _, tc := range []struct{ domain, verdict string }{{"lpenc.example", "encrypted"}, {"lpnone.example", "plaintext"}} {
			srv := map[string]*smtpbed.Server{"lpenc.example": sLPEnc, "lpnone.example": sLPNone}[tc.domain]
			res := expectDeferred(t, m, tc.domain, srv)
			if v := newVerdict(t, m, tc.domain, 0); field(v, "verdict") != tc.verdict {
				t.Errorf("%s: daneguard verdict %v", tc.domain, v.Fields)
			}
			if !strings.Contains(res.Text, "unauthenticated but required") {
				t.Errorf("%s: reply %d %s %q is not local_policy's", tc.domain, res.Code, res.Enh, res.Text)
			}
		}
	})
}

// sendRequireTLS submits a message with the REQUIRETLS MAIL parameter
// (RFC 8689 §4.1) and returns the first reply that is not 2xx/3xx, or the
// final 250.
func sendRequireTLS(t *testing.T, addr, domain string) (int, string) {
	t.Helper()
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		cmd    string
		expect int
	}{
		{"EHLO client.test", 250},
		{"MAIL FROM:<alice@sender.test> REQUIRETLS", 250},
		{"RCPT TO:<bob@" + domain + ">", 250},
		{"DATA", 354},
		{"From: <alice@sender.test>\r\nTo: <bob@" + domain + ">\r\nSubject: requiretls\r\n\r\nhello\r\n.", 250},
	}
	var code int
	var msg string
	for _, s := range steps {
		id, err := c.Cmd("%s", s.cmd)
		if err != nil {
			t.Fatal(err)
		}
		c.StartResponse(id)
		code, msg, err = c.ReadResponse(s.expect)
		c.EndResponse(id)
		if err != nil {
			return code, msg
		}
	}
	_, _ = c.Cmd("QUIT")
	return code, msg
}
