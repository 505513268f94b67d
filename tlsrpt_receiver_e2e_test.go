package daneguard_test

import (
	"bytes"
	"compress/gzip"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

const (
	rcvIP      = "127.0.0.60"
	rcvMetrics = rcvIP + ":9749"
	rcvHTTPS   = rcvIP + ":8443"
)

// rcvReport is a §4.4 report with one policy and at most one failure
// detail.
func rcvReport(id, org, day, ptype, pdomain string, ok, failed int, rt, ip, mx string) map[string]any {
	pol := map[string]any{
		"policy":  map[string]any{"policy-type": ptype, "policy-domain": pdomain},
		"summary": map[string]any{"total-successful-session-count": ok, "total-failure-session-count": failed},
	}
	if failed > 0 {
		pol["failure-details"] = []any{map[string]any{"result-type": rt, "receiving-ip": ip, "receiving-mx-hostname": mx, "failed-session-count": failed}}
	}
	return map[string]any{
		"organization-name": org, "contact-info": "tlsrpt@sender.example", "report-id": id,
		"date-range": map[string]any{"start-datetime": day + "T00:00:00Z", "end-datetime": day + "T23:59:59Z"},
		"policies":   []any{pol},
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

func gzipOf(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// reportMail is an RFC 8460 §5.3 email carrying body (of mediaType),
// DKIM-signed by sender.example when signer is not nil. extra header
// lines go on top.
func reportMail(t *testing.T, to, id, mediaType string, body []byte, signer crypto.Signer, extra string) []byte {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString(body)
	var lines []string
	for len(b64) > 76 {
		lines, b64 = append(lines, b64[:76]), b64[76:]
	}
	lines = append(lines, b64)
	msg := extra + "From: <tlsrpt@sender.example>\r\nTo: <" + to + ">\r\nSubject: Report Domain: receiver.example Submitter: sender.example Report-ID: <" + id + ">\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <" + id + "@sender.example>\r\n" +
		"TLS-Report-Domain: receiver.example\r\nTLS-Report-Submitter: sender.example\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis is a TLS report.\r\n" +
		"--b1\r\nContent-Type: " + mediaType + "\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"r\"\r\n\r\n" +
		strings.Join(lines, "\r\n") + "\r\n--b1--\r\n"
	if signer == nil {
		return []byte(msg)
	}
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{Domain: "sender.example", Selector: "default", Signer: signer,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID", "TLS-Report-Domain", "TLS-Report-Submitter", "MIME-Version", "Content-Type"}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// submit sends msg to addr over plain SMTP and returns the reply to the
// end of DATA ("250" on success, else "CODE X.Y.Z text").
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
	w, err := c.Data()
	if err != nil {
		return res(err)
	}
	if _, err := w.Write(msg); err != nil {
		return res(err)
	}
	return res(w.Close())
}

func readSigner(t *testing.T, path string) crypto.Signer {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer)
}

// TestEndToEndTLSRPTReceiver: the real maddy with two target.tlsrpt_receiver
// blocks behind destination rules of its port 25 endpoint (check { dkim }),
// fed by a real SMTP client and an HTTPS client; then `maddy tlsrpt
// received` and maddy's metrics endpoint must show exactly the accepted
// reports; --explain names the address whose certificate its TLSA record
// does not match; and a report of daneguard's own sender (a second real
// maddy) round trips through the receiver field for field.
func TestEndToEndTLSRPTReceiver(t *testing.T) {
	w := newWorld(t)
	keyPath, dkimTXT := dkimKey(t)
	w.dns.Zone(t, "sender.example.", dnsbed.TTL(300)).Add(t, "@ A 127.0.0.1", `default._domainkey TXT "`+dkimTXT+`"`)
	rcvLeaf := w.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.receiver.example"}})
	other := selfSigned(t, "mx.receiver.example")
	// The TLSA record names another key than the one maddy serves: what
	// the reports below complain about, and what --explain must find.
	w.dns.Zone(t, "receiver.example.", dnsbed.TTL(300)).Add(t, "@ MX 10 mx", "mx A "+rcvIP,
		pki.TLSA(t, "_25._tcp.mx.receiver.example.", 3, 1, 1, other.Cert))
	goodLeaf := selfSigned(t, "mx.good.example")
	ipGood, sGood := w.server("mx.good.example", goodLeaf)
	const collectorIP = "127.0.0.50"
	w.dns.Zone(t, "good.example.", dnsbed.TTL(300)).Add(t, "@ MX 10 mx", "mx A "+ipGood,
		pki.TLSA(t, "_25._tcp.mx.good.example.", 3, 1, 1, goodLeaf.Cert),
		`_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tlsrpt@receiver.example,https://reports.collector.example/v1"`)
	w.dns.Zone(t, "collector.example.", dnsbed.TTL(300)).Add(t, "reports A "+collectorIP)
	w.start()

	dir := t.TempDir()
	cert, key := rcvLeaf.WriteFiles(t, dir)
	conf := filepath.Join(dir, "maddy.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`state_dir %[1]s
runtime_dir %[1]s
hostname mx.receiver.example
tls file %[2]s %[3]s
openmetrics tcp://%[4]s { }

target.tlsrpt_receiver tlsrpt_in {
    domains receiver.example mx.receiver.example
    max_report_size 64K
    max_json_size 1M
    https_listen %[5]s
    https_cert %[2]s
    https_key %[3]s
    https_path /tlsrpt
}
target.tlsrpt_receiver tlsrpt_strict {
    store strict.db
    require_dkim yes
}
smtp tcp://%[6]s:25 {
    hostname mx.receiver.example
    check { dkim }
    destination tlsrpt@receiver.example { deliver_to &tlsrpt_in }
    destination tlsrpt-strict@receiver.example { deliver_to &tlsrpt_strict }
    default_destination { reject 550 5.1.1 "no such mailbox" }
}
`, dir, cert, key, rcvMetrics, rcvHTTPS, rcvIP)), 0o600); err != nil {
		t.Fatal(err)
	}
	m := maddybed.StartFile(t, conf, rcvIP+":25")
	signer := readSigner(t, keyPath)
	now := time.Now().UTC()
	day1, day0 := tlsrpt.Day(now.AddDate(0, 0, -1)), tlsrpt.Day(now.AddDate(0, 0, -2))
	const to, strict = "tlsrpt@receiver.example", "tlsrpt-strict@receiver.example"

	gzRep := rcvReport("r-gzip", "Gzip Org", day1, "tlsa", "mx.receiver.example", 5, 2, "certificate-host-mismatch", rcvIP, "mx.receiver.example")
	jsRep := rcvReport("r-json", "JSON Org", day1, "sts", "receiver.example", 7, 0, "", "", "")
	unsigned := rcvReport("r-unsigned", "Unsigned Org", day0, "sts", "receiver.example", 1, 1, "starttls-not-supported", rcvIP, "mx.receiver.example")
	big := rcvReport("r-big", "Big Org", day1, "sts", "receiver.example", 1, 0, "", "", "")
	big["padding"] = strings.Repeat("x", 70<<10)
	malformed := rcvReport("r-bad", "Bad Org", day1, "tlsa", "mx.receiver.example", 0, 2, "validation-failure", rcvIP, "mx.receiver.example")
	malformed["policies"].([]any)[0].(map[string]any)["failure-details"].([]any)[0].(map[string]any)["failed-session-count"] = "2"
	bomb := gzipOf(t, make([]byte, 8<<20)) // 8 MiB of zeros in ~8 KiB

	for _, tc := range []struct {
		name, rcpt string
		msg        []byte
		want       string
	}{
		{"gzip", to, reportMail(t, to, "r-gzip", tlsrpt.ContentTypeGzip, gzipOf(t, jsonOf(t, gzRep)), signer, ""), "250"},
		{"json", to, reportMail(t, to, "r-json", tlsrpt.ContentTypeJSON, jsonOf(t, jsRep), signer, ""), "250"},
		{"oversized", to, reportMail(t, to, "r-big", tlsrpt.ContentTypeJSON, jsonOf(t, big), signer, ""), "552 5.3.4 TLS report too large"},
		{"gzip bomb", to, reportMail(t, to, "r-bomb", tlsrpt.ContentTypeGzip, bomb, signer, ""), "552 5.3.4 TLS report too large: tlsrpt: decompressed report exceeds the limit"},
		{"malformed", to, reportMail(t, to, "r-bad", tlsrpt.ContentTypeJSON, jsonOf(t, malformed), signer, ""),
			"550 5.6.0 Not a valid TLS report: tlsrpt: malformed report: policies[0].failure-details[0].failed-session-count: a string, want a count"},
		{"duplicate", to, reportMail(t, to, "r-gzip", tlsrpt.ContentTypeGzip, gzipOf(t, jsonOf(t, gzRep)), signer, ""), "250"},
		// Unsigned, with a forged Authentication-Results field claiming a
		// pass from this server: recorded as dkim=none.
		{"unsigned", to, reportMail(t, to, "r-unsigned", tlsrpt.ContentTypeJSON, jsonOf(t, unsigned), nil,
			"Authentication-Results: mx.receiver.example; dkim=pass header.d=sender.example\r\n"), "250"},
		{"unsigned, require_dkim", strict, reportMail(t, strict, "r-strict-unsigned", tlsrpt.ContentTypeJSON,
			jsonOf(t, rcvReport("r-strict-unsigned", "Strict Org", day1, "sts", "strict.example", 3, 0, "", "", "")), nil, ""), "550 5.7.20"},
		{"signed, require_dkim", strict, reportMail(t, strict, "r-strict", tlsrpt.ContentTypeJSON,
			jsonOf(t, rcvReport("r-strict", "Strict Org", day1, "sts", "strict.example", 3, 0, "", "", "")), signer, ""), "250"},
	} {
		if got := submit(t, rcvIP+":25", tc.rcpt, tc.msg); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: reply %q, want %q...", tc.name, got, tc.want)
		}
	}

	// HTTPS (RFC 8460 §5.4): 201 for a new report, 200 for the same again.
	httpsRep := rcvReport("r-https", "HTTPS Org", day0, "tlsa", "mx.receiver.example", 4, 0, "", "", "")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: w.ca.Pool(), ServerName: "mx.receiver.example"}}}
	for _, want := range []int{http.StatusCreated, http.StatusOK} {
		resp, err := client.Post("https://"+rcvHTTPS+"/tlsrpt", tlsrpt.ContentTypeGzip, bytes.NewReader(gzipOf(t, jsonOf(t, httpsRep))))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("POST: %s %s, want %d", resp.Status, b, want)
		}
	}
	if resp, err := client.Post("https://"+rcvHTTPS+"/other", tlsrpt.ContentTypeGzip, strings.NewReader("x")); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("POST to another path: %v %v", err, resp)
	}

	// The log: one line per report, with its totals and DKIM result.
	logged := map[string]maddybed.Entry{}
	dups := 0
	for _, e := range m.Entries("daneguard/tlsrpt_receiver", "tlsrpt report received") {
		if e.Fields["duplicate"] == true {
			dups++
			continue
		}
		logged[field(e, "report_id")] = e
	}
	if len(logged) != 5 || dups != 2 {
		t.Fatalf("%d reports and %d duplicates logged, want 5 and 2:\n%s", len(logged), dups, m.Log())
	}
	for id, want := range map[string]string{"r-gzip": "email pass sender.example 5 2", "r-json": "email pass sender.example 7 0",
		"r-unsigned": "email none  1 1", "r-strict": "email pass sender.example 3 0", "r-https": "https   4 0"} {
		e := logged[id]
		if got := strings.Join([]string{field(e, "transport"), field(e, "dkim"), field(e, "dkim_domain"), field(e, "successful"), field(e, "failed")}, " "); got != want {
			t.Errorf("log line of %s: %q, want %q (%v)", id, got, want, e.Fields)
		}
	}
	if n := len(m.Entries("daneguard/tlsrpt_receiver", "tlsrpt report refused")); n != 4 {
		t.Errorf("%d refusals logged, want 4", n)
	}

	// The command shows exactly the accepted reports.
	var days []tlsrpt.ReceivedDay
	if err := json.Unmarshal([]byte(runMaddy(t, m, "tlsrpt", "received", "--json", "--days", "7")), &days); err != nil {
		t.Fatal(err)
	}
	org := func(name string, n int, ok, failed uint64) tlsrpt.ReceivedOrg {
		return tlsrpt.ReceivedOrg{Name: name, Reports: n, Successful: ok, Failed: failed}
	}
	want := []tlsrpt.ReceivedDay{
		{Day: day0, PolicyDomain: "mx.receiver.example", Reports: 1, Successful: 4, ByResultType: map[string]uint64{},
			Organizations: []tlsrpt.ReceivedOrg{org("HTTPS Org", 1, 4, 0)}, Failures: []tlsrpt.ReceivedFailure{}},
		{Day: day0, PolicyDomain: "receiver.example", Reports: 1, Successful: 1, Failed: 1, Unsigned: 1,
			ByResultType:  map[string]uint64{"starttls-not-supported": 1},
			Organizations: []tlsrpt.ReceivedOrg{org("Unsigned Org", 1, 1, 1)},
			Failures:      []tlsrpt.ReceivedFailure{{ResultType: "starttls-not-supported", ReceivingIP: rcvIP, MXHost: "mx.receiver.example", Organization: "Unsigned Org", Sessions: 1}}},
		{Day: day1, PolicyDomain: "mx.receiver.example", Reports: 1, Successful: 5, Failed: 2,
			ByResultType:  map[string]uint64{"certificate-host-mismatch": 2},
			Organizations: []tlsrpt.ReceivedOrg{org("Gzip Org", 1, 5, 2)},
			Failures:      []tlsrpt.ReceivedFailure{{ResultType: "certificate-host-mismatch", ReceivingIP: rcvIP, MXHost: "mx.receiver.example", Organization: "Gzip Org", Sessions: 2}}},
		{Day: day1, PolicyDomain: "receiver.example", Reports: 1, Successful: 7, ByResultType: map[string]uint64{},
			Organizations: []tlsrpt.ReceivedOrg{org("JSON Org", 1, 7, 0)}, Failures: []tlsrpt.ReceivedFailure{}},
		{Day: day1, PolicyDomain: "strict.example", Reports: 1, Successful: 3, ByResultType: map[string]uint64{},
			Organizations: []tlsrpt.ReceivedOrg{org("Strict Org", 1, 3, 0)}, Failures: []tlsrpt.ReceivedFailure{}},
	}
	if !reflect.DeepEqual(days, want) {
		t.Fatalf("tlsrpt received:\n%+v\nwant\n%+v", days, want)
	}
	if out := runMaddy(t, m, "tlsrpt", "received", "--days", "1"); !strings.Contains(out, "no TLS reports received") {
		t.Errorf("--days 1 (today only) shows reports:\n%s", out)
	}

	// The metrics count what the command shows.
	s := scrape(t, "http://"+rcvMetrics+"/metrics")
	for k, v := range map[string]float64{
		`maddy_daneguard_tlsrpt_received_reports_total{result="accepted",transport="email"}`:                                                             4,
		`maddy_daneguard_tlsrpt_received_reports_total{result="duplicate",transport="email"}`:                                                            1,
		`maddy_daneguard_tlsrpt_received_reports_total{result="too-large",transport="email"}`:                                                            1,
		`maddy_daneguard_tlsrpt_received_reports_total{result="decompression-limit",transport="email"}`:                                                  1,
		`maddy_daneguard_tlsrpt_received_reports_total{result="malformed",transport="email"}`:                                                            1,
		`maddy_daneguard_tlsrpt_received_reports_total{result="dkim-required",transport="email"}`:                                                        1,
		`maddy_daneguard_tlsrpt_received_reports_total{result="accepted",transport="https"}`:                                                             1,
		`maddy_daneguard_tlsrpt_received_reports_total{result="duplicate",transport="https"}`:                                                            1,
		`maddy_daneguard_tlsrpt_received_sessions_total{organization="Gzip Org",policy_domain="mx.receiver.example",result="success"}`:                   5,
		`maddy_daneguard_tlsrpt_received_sessions_total{organization="Gzip Org",policy_domain="mx.receiver.example",result="certificate-host-mismatch"}`: 2,
		`maddy_daneguard_tlsrpt_received_sessions_total{organization="JSON Org",policy_domain="receiver.example",result="success"}`:                      7,
		`maddy_daneguard_tlsrpt_received_sessions_total{organization="Unsigned Org",policy_domain="receiver.example",result="starttls-not-supported"}`:   1,
		`maddy_daneguard_tlsrpt_received_sessions_total{organization="HTTPS Org",policy_domain="mx.receiver.example",result="success"}`:                  4,
		// strict.example is not in `domains`: folded.
		`maddy_daneguard_tlsrpt_received_sessions_total{organization="Strict Org",policy_domain="other",result="success"}`: 3,
	} {
		if got, ok := s[k]; !ok || got != v {
			t.Errorf("%s = %v (exported: %v), want %v", k, got, ok, v)
		}
	}

	// --explain: the self-check probes this maddy's port 25 and finds the
	// certificate the TLSA record does not match.
	out := runMaddy(t, m, "tlsrpt", "received", "--days", "7", "--explain")
	if !strings.Contains(out, "likely cause: "+rcvIP+":25 serves a certificate that _25._tcp.mx.receiver.example does not match") {
		t.Fatalf("--explain output lacks the cause:\n%s", out)
	}

	// Round trip: daneguard's own sender in a second maddy reports its
	// deliveries to good.example by email to this receiver (DKIM-signed
	// through its msgpipeline; delivered despite the receiver's DANE
	// mismatch, RFC 8460 §5.3) and by HTTPS to a collector.
	colLeaf := w.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"reports.collector.example"}})
	col := startCollector(t, collectorIP+":443", colLeaf.TLSCertificate())
	caPath := w.ca.WritePEM(t, t.TempDir())
	snd := maddybed.Start(t, maddybed.Options{MXAuth: fmt.Sprintf(`dane {
        tlsrpt {
            organization "Daneguard Sender"
            contact tlsrpt@sender.example
            deliver_to &tlsrpt_out
            https_roots %s
            poll_interval 100ms
        }
    }`, caPath), Extra: fmt.Sprintf(`
msgpipeline tlsrpt_out {
    modify {
        dkim sender.example default {
            key_path %s
            sign_fields From To Subject Date Message-ID MIME-Version Content-Type TLS-Report-Domain TLS-Report-Submitter
        }
    }
    deliver_to &remote
}
`, keyPath)})
	expectDelivered(t, snd, sGood, "good.example")
	today := tlsrpt.Day(time.Now().UTC())
	if o := runMaddy(t, snd, "tlsrpt", "send", "--day", today, "--wait", "--timeout", "90s"); !strings.Contains(o, "good.example: sent") {
		t.Fatalf("send: %s\n%s", o, snd.Log())
	}
	posted := col.byDomain()["good.example"]
	if posted.raw == nil {
		t.Fatalf("the collector got no good.example report")
	}
	st, err := tlsrpt.OpenReceivedStore(filepath.Join(dir, "daneguard", "tlsrpt_received.db"), tlsrpt.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	es, err := st.ReceivedSince(ctx(t), today)
	if err != nil {
		t.Fatal(err)
	}
	var got *tlsrpt.ReceivedEntry
	for i := range es {
		if es[i].Report.OrganizationName == "Daneguard Sender" {
			got = &es[i]
		}
	}
	if got == nil {
		t.Fatalf("the receiver did not store the sender's report: %+v\nreceiver log:\n%s", es, m.Log())
	}
	if got.DKIM != "pass" || got.DKIMDomain != "sender.example" || got.Transport != "email" || got.MediaType != tlsrpt.ContentTypeGzip || len(got.Warnings) != 0 {
		t.Fatalf("stored entry: dkim %q %q, transport %q, media %q, warnings %v", got.DKIM, got.DKIMDomain, got.Transport, got.MediaType, got.Warnings)
	}
	js, err := got.Report.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var stored, sent map[string]any
	if err := json.Unmarshal(js, &stored); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(posted.raw, &sent); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(stored, sent) {
		t.Fatalf("the received report differs from the one sent:\nreceived %s\nsent     %s", js, posted.raw)
	}
}

// TestReceiverConfigErrors: malformed receiver directives (shared_store's
// block included) are start-up errors naming the file and line; a
// listener that cannot be bound fails the start.
func TestReceiverConfigErrors(t *testing.T) {
	dir := t.TempDir()
	leaf := selfSigned(t, "mx.example.org")
	cert, key := leaf.WriteFiles(t, dir)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	store := config.Node{Name: "store", Args: []string{filepath.Join(dir, "r.db")}, File: "test.conf", Line: 8}
	for _, tc := range []struct {
		dirs []config.Node
		want string
	}{
		{[]config.Node{{Name: "keep_days", Args: []string{"0"}}}, "test.conf:9: keep_days must be at least 1"},
		{[]config.Node{{Name: "max_json_size", Args: []string{"10X"}}}, "test.conf:9: size \"10X\": unknown unit suffix"},
		{[]config.Node{{Name: "require_dkim", Args: []string{"maybe"}}}, "test.conf:9: bool argument"},
		{[]config.Node{{Name: "no_such", Args: []string{"1"}}}, "unexpected directive"},
		{[]config.Node{{Name: "https_listen", Args: []string{"127.0.0.1:0"}}}, "https_listen needs https_cert and https_key"},
		{[]config.Node{{Name: "https_listen", Args: []string{"127.0.0.1:0"}}, {Name: "https_cert", Args: []string{"/nonexistent"}}, {Name: "https_key", Args: []string{key}}},
			"https certificate: stat /nonexistent"},
		{[]config.Node{{Name: "https_listen", Args: []string{busy.Addr().String()}}, {Name: "https_cert", Args: []string{cert}}, {Name: "https_key", Args: []string{key}}},
			"address already in use"},
		// shared_store: the dane block's store syntax; errors name the
		// directive's line, a child's error its own.
		{[]config.Node{{Name: "shared_store", Args: []string{"http://127.0.0.1/0"}}}, "test.conf:9: fleet: bad store URL"},
		{[]config.Node{{Name: "shared_store", Args: []string{"redis://127.0.0.1/0"},
			Children: []config.Node{{Name: "claim_ttl", Args: []string{"2m"}, File: "test.conf", Line: 10}}}}, "test.conf:9: claim_ttl is the dane block's"},
		{[]config.Node{{Name: "shared_store", Args: []string{"redis://127.0.0.1/0"},
			Children: []config.Node{{Name: "read_timeout", Args: []string{"1h"}, File: "test.conf", Line: 10}}}}, "test.conf:10: read_timeout must be more than 0s and at most 5s"},
	} {
		mod, err := module.Get("target.tlsrpt_receiver")("target.tlsrpt_receiver", "r", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range tc.dirs {
			tc.dirs[i].File, tc.dirs[i].Line = "test.conf", 9
		}
		block := config.Node{Name: "target.tlsrpt_receiver", File: "test.conf", Line: 7, Children: append([]config.Node{store}, tc.dirs...)}
		err = mod.Init(config.NewMap(map[string]interface{}{"hostname": "mx.example.org"}, block))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.dirs, err, tc.want)
		}
	}
}
