package tests

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

const rcvIP = "127.0.0.40"

// TestReceiverAndSelfCheck09: the maddy 0.8 build's target.tlsrpt_receiver,
// `maddy tlsrpt received` and `maddy check --self` on the real maddy 0.9.4
// (root tlsrpt_receiver_e2e_test.go and internal/selfcheck/e2e_test.go, in
// short). The port 25 endpoint routes the report mailbox to a receiver
// block; a real SMTP client sends one valid and one malformed report; the
// TLSA record of the receiving MX names another key than the one maddy
// serves, which check --self must find, over the dane block's resolver.
func TestReceiverAndSelfCheck09(t *testing.T) {
	w := newWorld(t)
	rcvLeaf := w.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.receiver.example"}})
	other := selfSigned(t, "mx.receiver.example")
	w.dns.Zone(t, "receiver.example.", dnsbed.TTL(300)).Add(t, "@ MX 10 mx", "mx A "+rcvIP,
		pki.TLSA(t, "_25._tcp.mx.receiver.example.", 3, 1, 1, other.Cert))
	w.start()

	dir := t.TempDir()
	cert, key := rcvLeaf.WriteFiles(t, dir) // absolute: maddy 0.9's tls file wants them so
	conf := filepath.Join(dir, "maddy.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`state_dir %[1]s
runtime_dir %[1]s
hostname mx.receiver.example
tls file %[2]s %[3]s

target.remote out {
    mx_auth {
        dane {
            resolver 127.0.0.1:53
        }
    }
}
target.tlsrpt_receiver tlsrpt_in {
    domains receiver.example mx.receiver.example
}
smtp tcp://%[4]s:25 {
    hostname mx.receiver.example
    destination tlsrpt@receiver.example { deliver_to &tlsrpt_in }
    default_destination { deliver_to &out }
}
`, dir, cert, key, rcvIP)), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := maddy09(t)
	m := maddybed.StartFileBinary(t, bin, conf, rcvIP+":25")

	day := tlsrpt.Day(time.Now().UTC().AddDate(0, 0, -1))
	const to = "tlsrpt@receiver.example"
	// Two sessions failed on the certificate the TLSA record does not
	// match: what --explain must name.
	good := report("r-json", "JSON Org", day, "mx.receiver.example", 5, 2)
	bad := report("r-bad", "Bad Org", day, "mx.receiver.example", 1, 1)
	bad["policies"].([]any)[0].(map[string]any)["failure-details"].([]any)[0].(map[string]any)["failed-session-count"] = "1"
	for _, tc := range []struct {
		name string
		msg  []byte
		want string
	}{
		{"valid", reportMail(t, to, "r-json", jsonOf(t, good)), "250"},
		{"malformed", reportMail(t, to, "r-bad", jsonOf(t, bad)), "550 5.6.0 Not a valid TLS report"},
	} {
		if got := submit(t, rcvIP+":25", to, tc.msg); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: reply %q, want %q...\n%s", tc.name, got, tc.want, m.Log())
		}
	}
	// The 0.8 build's log lines, under the same module name.
	rcv := m.Entries("daneguard/tlsrpt_receiver", "tlsrpt report received")
	if len(rcv) != 1 || field(rcv[0], "report_id") != "r-json" || field(rcv[0], "transport") != "email" ||
		field(rcv[0], "dkim") != "none" || field(rcv[0], "successful") != "5" || field(rcv[0], "failed") != "2" {
		t.Fatalf("received lines %+v\n%s", rcv, m.Log())
	}
	if n := len(m.Entries("daneguard/tlsrpt_receiver", "tlsrpt report refused")); n != 1 {
		t.Errorf("%d refusals logged, want 1", n)
	}

	// tlsrpt received finds the store from maddy.conf (0.9's globals).
	var days []tlsrpt.ReceivedDay
	out := run09(t, bin, conf, "tlsrpt", "received", "--json", "--days", "7")
	if err := json.Unmarshal([]byte(out), &days); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []tlsrpt.ReceivedDay{{Day: day, PolicyDomain: "mx.receiver.example", Reports: 1, Successful: 5, Failed: 2, Unsigned: 1,
		ByResultType:  map[string]uint64{"certificate-host-mismatch": 2},
		Organizations: []tlsrpt.ReceivedOrg{{Name: "JSON Org", Reports: 1, Successful: 5, Failed: 2}},
		Failures: []tlsrpt.ReceivedFailure{{ResultType: "certificate-host-mismatch", ReceivingIP: rcvIP, MXHost: "mx.receiver.example",
			Organization: "JSON Org", Sessions: 2}}}}
	if !reflect.DeepEqual(days, want) {
		t.Fatalf("tlsrpt received:\n%+v\nwant\n%+v", days, want)
	}

	// check --self: the certificate maddy loads, the address that serves
	// it, and the TLSA record that names another key: broken (exit 2).
	roots := w.ca.Root().WritePEM(t, t.TempDir())
	cmd := exec.Command(bin, "--config", conf, "check", "--self", "--json", "--domain", "receiver.example", "--roots", roots)
	out2, err := cmd.Output()
	var rep selfcheck.Report
	if jerr := json.Unmarshal(out2, &rep); jerr != nil {
		t.Fatalf("check --self: %v %v\n%s", err, jerr, out2)
	}
	if exitCode(err) != selfcheck.ExitBroken || rep.ExitCode != selfcheck.ExitBroken {
		t.Fatalf("check --self: exit %d (report %d), want %d\n%s", exitCode(err), rep.ExitCode, selfcheck.ExitBroken, out2)
	}
	if rep.Certificate == nil || rep.Certificate.Path != cert || len(rep.Hosts) != 1 || len(rep.Hosts[0].Addresses) != 1 ||
		rep.Hosts[0].Addresses[0].Result != "mismatch" {
		t.Fatalf("check --self --json:\n%s", out2)
	}
	if len(rep.Resolvers) != 1 || rep.Resolvers[0].Server != "127.0.0.1:53" || !rep.Resolvers[0].Validating {
		t.Errorf("check --self did not use the dane block's resolver: %+v", rep.Resolvers)
	}
	// --explain of tlsrpt received runs the same self-check and names
	// the cause next to the failure.
	if out := run09(t, bin, conf, "tlsrpt", "received", "--days", "7", "--explain"); !strings.Contains(out,
		"likely cause: "+rcvIP+":25 serves a certificate that _25._tcp.mx.receiver.example does not match") {
		t.Errorf("--explain output lacks the cause:\n%s", out)
	}
	// nextkey reads `tls file` from maddy.conf; without a next key,
	// status says so (exit 3, usage).
	nk := exec.Command(bin, "--config", conf, "nextkey", "status")
	nkOut, err := nk.CombinedOutput()
	if exitCode(err) != selfcheck.ExitUsage || !strings.Contains(string(nkOut), key+".next") {
		t.Errorf("nextkey status without a next key: exit %d\n%s", exitCode(err), nkOut)
	}
}

func run09(t *testing.T, bin, conf string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, append([]string{"--config", conf}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("maddy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// report is an RFC 8460 §4.4 report with one tlsa policy and one failure
// detail (certificate-host-mismatch at the receiver's MX).
func report(id, org, day, domain string, ok, failed int) map[string]any {
	return map[string]any{
		"organization-name": org, "contact-info": "tlsrpt@sender.example", "report-id": id,
		"date-range": map[string]any{"start-datetime": day + "T00:00:00Z", "end-datetime": day + "T23:59:59Z"},
		"policies": []any{map[string]any{
			"policy":  map[string]any{"policy-type": "tlsa", "policy-domain": domain},
			"summary": map[string]any{"total-successful-session-count": ok, "total-failure-session-count": failed},
			"failure-details": []any{map[string]any{"result-type": "certificate-host-mismatch", "receiving-ip": rcvIP,
				"receiving-mx-hostname": "mx.receiver.example", "failed-session-count": failed}},
		}},
	}
}

func jsonOf(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reportMail is an unsigned RFC 8460 §5.3 report email.
func reportMail(t *testing.T, to, id string, body []byte) []byte {
	t.Helper()
	var b64 bytes.Buffer
	enc := base64.StdEncoding.EncodeToString(body)
	for len(enc) > 76 {
		b64.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b64.WriteString(enc)
	return []byte("From: <tlsrpt@sender.example>\r\nTo: <" + to + ">\r\nSubject: Report Domain: receiver.example Submitter: sender.example Report-ID: <" + id + ">\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <" + id + "@sender.example>\r\n" +
		"TLS-Report-Domain: receiver.example\r\nTLS-Report-Submitter: sender.example\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis is a TLS report.\r\n" +
		"--b1\r\nContent-Type: " + tlsrpt.ContentTypeJSON + "\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		b64.String() + "\r\n--b1--\r\n")
}

// submit sends msg to addr over plain SMTP and returns the reply to the
// end of DATA ("250", else "CODE X.Y.Z text").
func submit(t *testing.T, addr, rcpt string, msg []byte) string {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	res := func(err error) string {
		if err == nil {
			return "250"
		}
		if se, ok := err.(*smtp.SMTPError); ok {
			return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
		}
		t.Fatalf("SMTP: %v", err)
		return ""
	}
	if err := c.Mail("tlsrpt@sender.example", nil); err != nil {
		return res(err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return res(err)
	}
	wc, err := c.Data()
	if err != nil {
		return res(err)
	}
	if _, err := wc.Write(msg); err != nil {
		return res(err)
	}
	return res(wc.Close())
}
