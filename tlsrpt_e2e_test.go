package daneguard_test

import (
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/module"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/stsbed"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// httpsCollector is a real HTTPS report endpoint on a loopback address.
type httpsCollector struct {
	mu      sync.Mutex
	reports []collected
	srv     *http.Server
}

type collected struct {
	path, contentType string
	report            map[string]any
	raw               []byte
}

func startCollector(t *testing.T, addr string, cert tls.Certificate) *httpsCollector {
	c := &httpsCollector{}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.srv = &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				http.Error(w, "not gzip", http.StatusBadRequest)
				return
			}
			js, _ := io.ReadAll(zr)
			var m map[string]any
			if r.Method != http.MethodPost || json.Unmarshal(js, &m) != nil {
				http.Error(w, "bad report", http.StatusBadRequest)
				return
			}
			c.mu.Lock()
			c.reports = append(c.reports, collected{r.URL.Path, r.Header.Get("Content-Type"), m, js})
			c.mu.Unlock()
			w.WriteHeader(http.StatusOK)
		}),
	}
	go func() { _ = c.srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = c.srv.Close() })
	return c
}

func (c *httpsCollector) byDomain() map[string]collected {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]collected{}
	for _, r := range c.reports {
		pols, _ := r.report["policies"].([]any)
		if len(pols) == 0 {
			continue
		}
		// The report's domain is in its report-id and filename; the
		// test's domains each have one policy domain.
		id, _ := r.report["report-id"].(string)
		for _, d := range []string{"good.example", "notls.example", "bad.example", "stsfail.example"} {
			// A partial report (the day is not over) carries
			// ".uptoHHMMSS" between the domain and the "@".
			if strings.Contains(id, "."+d+"@") || strings.Contains(id, "."+d+".upto") {
				out[d] = r
			}
		}
	}
	return out
}

func tlsaRData(t *testing.T, owner string, u, s, m uint8, l *pki.Leaf) string {
	rr := pki.TLSA(t, owner, u, s, m, l.Cert)
	f := strings.Fields(rr)
	// "<owner> TLSA u s m hex"
	return strings.Join(f[len(f)-4:len(f)-1], " ") + " " + strings.ToUpper(f[len(f)-1])
}

// countVerdicts counts the verdict log lines for domain with reason.
func countVerdicts(m *maddybed.Maddy, domain, reason string) int {
	n := 0
	for _, e := range verdictFor(m, domain) {
		if field(e, "reason") == reason {
			n++
		}
	}
	return n
}

func runMaddy(t *testing.T, m *maddybed.Maddy, args ...string) string {
	t.Helper()
	cmd := exec.Command(maddybed.Binary(t), append([]string{"--config", m.Config}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("maddy %s: %v\n%s\nmaddy log:\n%s", strings.Join(args, " "), err, out, m.Log())
	}
	return string(out)
}

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// TestEndToEndTLSRPT drives real deliveries through the real maddy (DANE
// success, a DANE mismatch, a server without STARTTLS), then has maddy
// build and send the day's reports: by HTTPS POST to a real HTTPS
// collector and by email, through maddy's own target.remote, to a real
// SMTP server. The reports are checked field by field against RFC 8460
// §4 and the verdicts maddy logged.
func TestEndToEndTLSRPT(t *testing.T) {
	w := newWorld(t)
	zone := func(name string) *dnsbed.Zone { return w.dns.Zone(t, name+".", dnsbed.TTL(300)) }
	const collectorIP = "127.0.0.50"
	rptHTTPS := "https://reports.collector.example/v1/tlsrpt"
	rptMail := "mailto:tlsrpt@rua.example"

	goodLeaf := selfSigned(t, "mx.good.example")
	ipGood, sGood := w.server("mx.good.example", goodLeaf)
	zone("good.example").Add(t, "@ MX 10 mx", "mx A "+ipGood, pki.TLSA(t, "_25._tcp.mx.good.example.", 3, 1, 1, goodLeaf.Cert),
		`_smtp._tls TXT "v=TLSRPTv1; rua=`+rptHTTPS+`"`)

	badLeaf := selfSigned(t, "mx.bad.example")
	other := selfSigned(t, "attacker.example")
	ipBad, sBad := w.server("mx.bad.example", badLeaf)
	zone("bad.example").Add(t, "@ MX 10 mx", "mx A "+ipBad, pki.TLSA(t, "_25._tcp.mx.bad.example.", 3, 1, 1, other.Cert),
		`_smtp._tls TXT "v=TLSRPTv1;rua=`+rptMail+`"`)

	ipNoTLS, sNoTLS := w.server("mx.notls.example", nil)
	zone("notls.example").Add(t, "@ MX 10 mx", "mx A "+ipNoTLS, pki.TLSA(t, "_25._tcp.mx.notls.example.", 3, 1, 1, goodLeaf.Cert),
		// Split into two strings: RFC 8460 §3 concatenates them.
		`_smtp._tls TXT "v=TLSRPTv1; rua=`+rptHTTPS+`," "`+rptMail+`"`)

	// A domain without a TLSRPT record: recorded, never reported.
	plainLeaf := selfSigned(t, "mx.quiet.example")
	ipQuiet, sQuiet := w.server("mx.quiet.example", plainLeaf)
	zone("quiet.example").Add(t, "@ MX 10 mx", "mx A "+ipQuiet, pki.TLSA(t, "_25._tcp.mx.quiet.example.", 3, 1, 1, plainLeaf.Cert))

	// The report mailbox's server fails DANE (its TLSA pins another key):
	// RFC 8460 §5.3 wants reports delivered anyway, and §3 wants no report
	// about that delivery.
	ruaLeaf := selfSigned(t, "mx.rua.example")
	ipRUA, sRUA := w.server("mx.rua.example", ruaLeaf)
	zone("rua.example").Add(t, "@ MX 10 mx", "mx A "+ipRUA, pki.TLSA(t, "_25._tcp.mx.rua.example.", 3, 1, 1, other.Cert),
		`_smtp._tls TXT "v=TLSRPTv1;rua=https://reports.collector.example/rua"`)

	zone("collector.example").Add(t, "reports A "+collectorIP)

	// MTA-STS: an enforce policy listing the MX, whose certificate is not
	// WebPKI-valid (self-signed); the zone is unsigned, so DANE does not
	// apply and MTA-STS governs.
	sts := stsbed.Start(t, stsAddr, w.ca)
	stsZone, _, sSTS := w.stsDomain(sts, "stsfail.example", "s1", stsbed.Policy("enforce", 86400, "mx.stsfail.example"),
		selfSigned(t, "mx.stsfail.example"), false)
	stsZone.Add(t, `_smtp._tls TXT "v=TLSRPTv1; rua=`+rptHTTPS+`"`)
	// The sending domain publishes the DKIM key maddy signs reports with.
	keyPath, dkimTXT := dkimKey(t)
	zone("sender.example").Add(t, "@ A 127.0.0.1", `default._domainkey TXT "`+dkimTXT+`"`)
	w.start()

	colLeaf := w.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"reports.collector.example"}})
	col := startCollector(t, collectorIP+":443", colLeaf.TLSCertificate())
	caPath := w.ca.WritePEM(t, t.TempDir())

	// Report emails go through a msgpipeline that DKIM-signs them (RFC 8460
	// §3), then through the same target.remote as all mail.
	m := maddybed.Start(t, maddybed.Options{MXAuth: fmt.Sprintf(`dane {
        roots %s
        tlsrpt {
            organization "Daneguard Test Org"
            contact tlsrpt@sender.example
            deliver_to &tlsrpt_out
            https_roots %s
            poll_interval 100ms
        }
    }`, caPath, caPath), Extra: fmt.Sprintf(`
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

	expectDelivered(t, m, sGood, "good.example")
	expectDelivered(t, m, sGood, "good.example")
	expectDelivered(t, m, sQuiet, "quiet.example")
	expectDeferred(t, m, "bad.example", sBad)
	expectDeferred(t, m, "notls.example", sNoTLS)
	wantVerdict(t, lastVerdict(t, m, "notls.example"), "deferred", "starttls-not-supported")
	expectDeferred(t, m, "stsfail.example", sSTS)
	wantVerdict(t, lastVerdict(t, m, "stsfail.example"), "deferred", "mtasts-webpki-invalid")

	// What the store holds, as the admin sees it.
	var list []tlsrpt.Pending
	if err := json.Unmarshal([]byte(runMaddy(t, m, "tlsrpt", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	got := map[string]tlsrpt.Pending{}
	for _, p := range list {
		got[p.Domain] = p
	}
	day := list[0].Day
	for _, p := range list {
		if p.Day != day {
			t.Skipf("the deliveries straddled UTC midnight (%s and %s); the per-day counts below assume one day", day, p.Day)
		}
	}
	nGood := countVerdicts(m, "good.example", "dane-match")
	nBad := countVerdicts(m, "bad.example", "tlsa-mismatch")
	nNoTLS := countVerdicts(m, "notls.example", "starttls-not-supported")
	nSTS := countVerdicts(m, "stsfail.example", "mtasts-webpki-invalid")
	// Sessions, not messages: maddy reuses the connection for the second
	// message to good.example, so the count comes from the verdict lines.
	if nGood < 1 || nBad < 1 || nNoTLS < 1 || nSTS < 1 {
		t.Fatalf("verdicts: %d good, %d bad, %d notls", nGood, nBad, nNoTLS)
	}
	for d, want := range map[string][2]uint64{
		"good.example": {uint64(nGood), 0}, "quiet.example": {1, 0}, "bad.example": {0, uint64(nBad)}, "notls.example": {0, uint64(nNoTLS)},
		"stsfail.example": {0, uint64(nSTS)},
	} {
		p := got[d]
		if p.Day != day || p.Successes != want[0] || p.Failures != want[1] {
			t.Errorf("store for %s: %+v, want %d successes, %d failures on %s", d, p, want[0], want[1], day)
		}
	}
	if len(got) != 5 {
		t.Fatalf("store holds %d domains, want 5: %+v", len(got), list)
	}

	// Send the day now (the scheduler would wait for the day's end). The
	// day is today, so these are partial reports (tlsrpt/early.go): the
	// complete ones still go out after the day ends.
	out := runMaddy(t, m, "tlsrpt", "send", "--day", day, "--wait", "--timeout", "90s")
	// The --wait wording is docs/tlsrpt.md's.
	for _, want := range []string{"good.example: sent (partial report", "bad.example: sent (partial report", "notls.example: sent (partial report",
		"stsfail.example: sent (partial report", "quiet.example: no-policy (partial report: the day is not over)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("send output lacks %q:\n%s", want, out)
		}
	}

	// The day is today, so these are partial reports: the day's report-id
	// with the time of sending, a date-range that ends then, and the
	// complete report still to come after the day (tlsrpt/early.go).
	start := day + "T00:00:00Z"
	checkMeta := func(r map[string]any, domain string) {
		t.Helper()
		id, _ := r["report-id"].(string)
		upto := regexp.MustCompile(`^` + regexp.QuoteMeta(strings.ReplaceAll(day, "-", "")+"."+domain) + `\.upto(\d{6})@sender\.example$`).FindStringSubmatch(id)
		if r["organization-name"] != "Daneguard Test Org" || r["contact-info"] != "tlsrpt@sender.example" || upto == nil {
			t.Fatalf("%s report metadata: %v", domain, r)
		}
		dr, _ := r["date-range"].(map[string]any)
		end, _ := dr["end-datetime"].(string)
		endT, err := time.Parse(time.RFC3339, end)
		if dr["start-datetime"] != start || err != nil || endT.Format("150405") != upto[1] || endT.Format("2006-01-02") != day {
			t.Fatalf("%s date-range %v (report-id %s)", domain, dr, id)
		}
	}
	onePolicy := func(r map[string]any, domain string) map[string]any {
		t.Helper()
		pols, _ := r["policies"].([]any)
		if len(pols) != 1 {
			t.Fatalf("%s: %d policies, want 1: %v", domain, len(pols), r)
		}
		return pols[0].(map[string]any)
	}

	// HTTPS: good.example and notls.example.
	byDom := col.byDomain()
	if len(byDom) != 3 {
		t.Fatalf("collector got reports for %v, want good.example, notls.example and stsfail.example", byDom)
	}
	for d, c := range byDom {
		if c.contentType != "application/tlsrpt+gzip" || c.path != "/v1/tlsrpt" {
			t.Fatalf("%s: POST to %s with %q", d, c.path, c.contentType)
		}
	}
	good := byDom["good.example"].report
	checkMeta(good, "good.example")
	p := onePolicy(good, "good.example")
	wantPol := map[string]any{
		"policy-type":   "tlsa",
		"policy-string": []any{tlsaRData(t, "_25._tcp.mx.good.example.", 3, 1, 1, goodLeaf)},
		"policy-domain": "mx.good.example", // RFC 8460 §1.1: the TLSA base domain
		"mx-host":       "mx.good.example",
	}
	if !reflect.DeepEqual(p["policy"], wantPol) {
		t.Fatalf("good.example policy %v, want %v", p["policy"], wantPol)
	}
	if s := p["summary"].(map[string]any); num(s["total-successful-session-count"]) != nGood || num(s["total-failure-session-count"]) != 0 {
		t.Fatalf("good.example summary %v", s)
	}
	if _, ok := p["failure-details"]; ok {
		t.Fatalf("good.example has failure details: %v", p)
	}

	notls := byDom["notls.example"].report
	checkMeta(notls, "notls.example")
	p = onePolicy(notls, "notls.example")
	wantPol = map[string]any{
		"policy-type":   "tlsa",
		"policy-string": []any{tlsaRData(t, "_25._tcp.mx.notls.example.", 3, 1, 1, goodLeaf)},
		"policy-domain": "mx.notls.example",
		"mx-host":       "mx.notls.example",
	}
	if !reflect.DeepEqual(p["policy"], wantPol) {
		t.Fatalf("notls.example policy %v, want %v", p["policy"], wantPol)
	}
	if s := p["summary"].(map[string]any); num(s["total-successful-session-count"]) != 0 || num(s["total-failure-session-count"]) != nNoTLS {
		t.Fatalf("notls.example summary %v", s)
	}
	fds := p["failure-details"].([]any)
	if len(fds) != 1 {
		t.Fatalf("notls.example failure-details %v", fds)
	}
	fd := fds[0].(map[string]any)
	if fd["result-type"] != "starttls-not-supported" || fd["receiving-mx-hostname"] != "mx.notls.example" ||
		fd["receiving-ip"] != ipNoTLS || fd["sending-mta-ip"] != "127.0.0.1" || num(fd["failed-session-count"]) != nNoTLS || fd["failure-reason-code"] == "" {
		t.Fatalf("notls.example failure detail %v", fd)
	}

	stsRep := byDom["stsfail.example"].report
	checkMeta(stsRep, "stsfail.example")
	p = onePolicy(stsRep, "stsfail.example")
	wantPol = map[string]any{
		"policy-type":   "sts",
		"policy-string": []any{"version: STSv1", "mode: enforce", "mx: mx.stsfail.example", "max_age: 86400"},
		"policy-domain": "stsfail.example",
		"mx-host":       []any{"mx.stsfail.example"}, // RFC 8460 §4.4: the policy's patterns
	}
	if !reflect.DeepEqual(p["policy"], wantPol) {
		t.Fatalf("stsfail.example policy %v, want %v", p["policy"], wantPol)
	}
	if s := p["summary"].(map[string]any); num(s["total-successful-session-count"]) != 0 || num(s["total-failure-session-count"]) != nSTS {
		t.Fatalf("stsfail.example summary %v", s)
	}
	fds = p["failure-details"].([]any)
	fd = fds[0].(map[string]any)
	// A self-signed certificate: RFC 8460 §4.3.1 certificate-not-trusted.
	if len(fds) != 1 || fd["result-type"] != "certificate-not-trusted" || fd["receiving-mx-hostname"] != "mx.stsfail.example" ||
		num(fd["failed-session-count"]) != nSTS || fd["failure-reason-code"] == "" {
		t.Fatalf("stsfail.example failure details %v", fds)
	}

	// Email: bad.example and notls.example, through maddy's target.remote
	// to the rua.example server whose DANE check fails.
	msgs, err := sRUA.WaitMessages(ctx(t), 2)
	if err != nil {
		t.Fatalf("report emails: %v\n%s", err, m.Log())
	}
	mailed := map[string]map[string]any{}
	for _, msg := range msgs {
		if msg.From != "tlsrpt@sender.example" || len(msg.To) != 1 || msg.To[0] != "tlsrpt@rua.example" {
			t.Fatalf("report envelope %s -> %v", msg.From, msg.To)
		}
		dom, rep := parseReportEmail(t, msg.Data)
		mailed[dom] = rep
		// maddy's DKIM signing applied, over the report header fields, and
		// the signature verifies against the published key.
		verifs, err := dkim.Verify(bytes.NewReader(msg.Data))
		if err != nil || len(verifs) != 1 || verifs[0].Err != nil || verifs[0].Domain != "sender.example" {
			t.Fatalf("DKIM of the %s report: %v %+v\n%s", dom, err, verifs[0], msg.Data)
		}
		hf := strings.ToLower(strings.Join(verifs[0].HeaderKeys, ":"))
		if !strings.Contains(hf, "tls-report-domain") || !strings.Contains(hf, "tls-report-submitter") {
			t.Fatalf("DKIM signature does not cover the report header fields: %v", verifs[0].HeaderKeys)
		}
		hm, _ := mail.ReadMessage(bytes.NewReader(msg.Data))
		for _, tag := range strings.Split(hm.Header.Get("DKIM-Signature"), ";") {
			if strings.HasPrefix(strings.TrimSpace(tag), "l=") {
				t.Fatalf("DKIM signature limits the body length (l=), RFC 8460 §3 forbids it")
			}
		}
	}
	if len(mailed) != 2 || mailed["bad.example"] == nil || mailed["notls.example"] == nil {
		t.Fatalf("emailed reports for %v", mailed)
	}
	if !reflect.DeepEqual(mailed["notls.example"], notls) {
		t.Fatalf("the emailed and posted notls.example reports differ:\n%v\n%v", mailed["notls.example"], notls)
	}
	bad := mailed["bad.example"]
	checkMeta(bad, "bad.example")
	p = onePolicy(bad, "bad.example")
	wantPol = map[string]any{
		"policy-type":   "tlsa",
		"policy-string": []any{tlsaRData(t, "_25._tcp.mx.bad.example.", 3, 1, 1, other)},
		"policy-domain": "mx.bad.example",
		"mx-host":       "mx.bad.example",
	}
	if !reflect.DeepEqual(p["policy"], wantPol) {
		t.Fatalf("bad.example policy %v, want %v", p["policy"], wantPol)
	}
	if s := p["summary"].(map[string]any); num(s["total-successful-session-count"]) != 0 || num(s["total-failure-session-count"]) != nBad {
		t.Fatalf("bad.example summary %v", s)
	}
	fds = p["failure-details"].([]any)
	fd = fds[0].(map[string]any)
	// A TLSA mismatch: RFC 8460 §4.3.1 certificate-host-mismatch (the
	// certificate does not adhere to the DANE policy; docs/tlsrpt.md).
	if len(fds) != 1 || fd["result-type"] != "certificate-host-mismatch" || fd["receiving-mx-hostname"] != "mx.bad.example" ||
		fd["receiving-ip"] != ipBad || fd["sending-mta-ip"] != "127.0.0.1" || num(fd["failed-session-count"]) != nBad || fd["failure-reason-code"] == "" {
		t.Fatalf("bad.example failure details %v", fds)
	}

	// The report deliveries failed DANE, went out anyway, and are not
	// recorded for a report to rua.example.
	if n := countVerdicts(m, "rua.example", "tlsa-mismatch"); n == 0 {
		t.Fatalf("no DANE verdict for the report delivery:\n%s", m.Log())
	}
	if len(m.Entries("daneguard", "tlsrpt report delivered despite policy failure (RFC 8460 §5.3)")) == 0 {
		t.Fatalf("report delivery bypass not logged:\n%s", m.Log())
	}
	list = nil
	if err := json.Unmarshal([]byte(runMaddy(t, m, "tlsrpt", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	for _, p := range list {
		if p.Domain == "rua.example" {
			t.Fatalf("the delivery of reports was recorded: %+v", p)
		}
		// Today's reports went out as partial ones: the day's own report
		// is still to come.
		if want := map[string]string{"good.example": "sent", "bad.example": "sent", "notls.example": "sent", "stsfail.example": "sent", "quiet.example": "no-policy"}[p.Domain]; p.State.EarlyOutcome != want || p.State.Outcome != "" || p.State.Done {
			t.Fatalf("%s: partial report outcome %q, day's report %q (done %v), want %q and not done", p.Domain, p.State.EarlyOutcome, p.State.Outcome, p.State.Done, want)
		}
	}
	// The day is still pending: its complete report goes out after it ends.
	if out := runMaddy(t, m, "tlsrpt", "list"); !strings.Contains(out, "good.example") || !strings.Contains(out, "pending") {
		t.Fatalf("list output:\n%s", out)
	}
}

// parseReportEmail checks an RFC 8460 §5.3 message and returns its
// TLS-Report-Domain and the decoded report.
func parseReportEmail(t *testing.T, data []byte) (string, map[string]any) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Header
	dom := h.Get("TLS-Report-Domain")
	if h.Get("TLS-Report-Submitter") != "sender.example" {
		t.Fatalf("TLS-Report-Submitter %q", h.Get("TLS-Report-Submitter"))
	}
	subj := strings.Join(strings.Fields(h.Get("Subject")), " ")
	if !strings.HasPrefix(subj, "Report Domain: "+dom+" Submitter: sender.example Report-ID: <") || !strings.HasSuffix(subj, "@sender.example>") {
		t.Fatalf("subject %q", subj)
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("content-type %q", h.Get("Content-Type"))
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var rep map[string]any
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if part.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
			continue
		}
		b64, _ := io.ReadAll(part)
		gz, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(b64)))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		js, _ := io.ReadAll(zr)
		if err := json.Unmarshal(js, &rep); err != nil {
			t.Fatal(err)
		}
	}
	if rep == nil {
		t.Fatal("no application/tlsrpt+gzip part")
	}
	return dom, rep
}

// dkimKey writes an Ed25519 DKIM key for maddy and returns its path and
// the DKIM TXT record (RFC 8463) for it.
func dkimKey(t *testing.T) (string, string) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dkim.key")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	// s=tlsrpt: RFC 8460 §3 service type.
	return path, "v=DKIM1; k=ed25519; s=email:tlsrpt; p=" + base64.StdEncoding.EncodeToString(pub)
}

// TestEndToEndTLSRPTStoreRestartAndCorruption: a corrupt store is moved
// aside without stopping mail, and the counts of a day add up across a
// maddy restart, with nothing lost or counted twice.
func TestEndToEndTLSRPTStoreRestartAndCorruption(t *testing.T) {
	w := newWorld(t)
	leaf := selfSigned(t, "mx.good.example")
	ip, s := w.server("mx.good.example", leaf)
	w.dns.Zone(t, "good.example.", dnsbed.TTL(300)).Add(t, "@ MX 10 mx", "mx A "+ip,
		pki.TLSA(t, "_25._tcp.mx.good.example.", 3, 1, 1, leaf.Cert))
	w.start()

	dir := t.TempDir()
	garbage := bytes.Repeat([]byte("this is not a bbolt file "), 400)
	if err := os.WriteFile(filepath.Join(dir, "tlsrpt.db"), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := maddybed.Options{MXAuth: fmt.Sprintf("dane {\n tlsrpt {\n contact tlsrpt@sender.example\n dir %s\n }\n }", dir)}

	m1 := maddybed.Start(t, opts)
	expectDelivered(t, m1, s, "good.example")
	if !strings.Contains(m1.Log(), "tlsrpt store was corrupt: moved aside, starting an empty one") {
		t.Fatalf("corruption not reported:\n%s", m1.Log())
	}
	moved, _ := filepath.Glob(filepath.Join(dir, "tlsrpt.db.corrupt-*"))
	if len(moved) != 1 {
		t.Fatalf("corrupt store not kept aside: %v", moved)
	}
	if kept, _ := os.ReadFile(moved[0]); !bytes.Equal(kept, garbage) {
		t.Fatal("the moved-aside file is not the corrupt store")
	}
	n1 := countVerdicts(m1, "good.example", "dane-match")
	m1.Stop()

	m2 := maddybed.Start(t, opts)
	expectDelivered(t, m2, s, "good.example")
	n2 := countVerdicts(m2, "good.example", "dane-match")
	if strings.Contains(m2.Log(), "corrupt") {
		t.Fatalf("the fresh store was found corrupt after a restart:\n%s", m2.Log())
	}
	var list []tlsrpt.Pending
	if err := json.Unmarshal([]byte(runMaddy(t, m2, "tlsrpt", "list", "--json", "--dir", dir)), &list); err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, p := range list {
		if p.Domain == "good.example" {
			total += p.Successes
		}
	}
	if n1 < 1 || n2 < 1 || total != uint64(n1+n2) {
		t.Fatalf("store holds %d successes, the two maddy processes logged %d + %d sessions: %+v", total, n1, n2, list)
	}
}

// TestTLSRPTConfigErrors: malformed tlsrpt directives are start-up errors
// naming the file and line.
func TestTLSRPTConfigErrors(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir  config.Node
		want string
	}{
		{config.Node{Name: "send_hour", Args: []string{"24"}}, "send_hour"},
		{config.Node{Name: "contact", Args: []string{"not an address"}}, "contact"},
		{config.Node{Name: "keep_days", Args: []string{"0"}}, "keep_days"},
		{config.Node{Name: "no_such_thing", Args: []string{"1"}}, "unexpected directive"},
		{config.Node{Name: "deliver_to", Args: []string{"&no_such_target"}}, "no_such_target"},
		{config.Node{Name: "https_timeout", Args: []string{"soon"}}, "invalid duration"},
		{config.Node{Name: "https_timeout", Args: []string{"0s"}}, "https_timeout must be more than 0s"},
		{config.Node{Name: "https_roots", Args: []string{"/nonexistent/roots.pem"}}, "https_roots: open /nonexistent/roots.pem"},
		{config.Node{Name: "https_roots", Args: []string{notPEM}}, "https_roots: no PEM certificates"},
		{config.Node{Name: "sending_ip", Args: []string{"mx.example"}}, "sending_ip"},
	} {
		grp, err := module.Get("mx_auth")("mx_auth", "", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		tc.dir.File, tc.dir.Line = "test.conf", 9
		block := config.Node{Name: "mx_auth", Children: []config.Node{
			{Name: "dane", File: "test.conf", Line: 7, Children: []config.Node{
				{Name: "tlsrpt", File: "test.conf", Line: 8, Children: []config.Node{
					{Name: "contact", Args: []string{"tlsrpt@sender.example"}, File: "test.conf", Line: 8},
					{Name: "dir", Args: []string{t.TempDir()}, File: "test.conf", Line: 8},
					tc.dir,
				}},
			}},
		}}
		if tc.dir.Name == "contact" {
			block.Children[0].Children[0].Children = block.Children[0].Children[0].Children[1:]
		}
		err = grp.Init(config.NewMap(map[string]interface{}{}, block))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "test.conf:") {
			t.Errorf("%s %v: error %v, want one containing %q and test.conf:", tc.dir.Name, tc.dir.Args, err, tc.want)
		}
	}
}

// TestTLSRPTOff: "tlsrpt off" is accepted alone and refused with a block.
func TestTLSRPTOff(t *testing.T) {
	for _, tc := range []struct {
		children []config.Node
		wantErr  bool
	}{
		{nil, false},
		{[]config.Node{{Name: "dir", Args: []string{t.TempDir()}, File: "test.conf", Line: 9}}, true},
	} {
		grp, err := module.Get("mx_auth")("mx_auth", "", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		block := config.Node{Name: "mx_auth", Children: []config.Node{
			{Name: "dane", File: "test.conf", Line: 7, Children: []config.Node{
				{Name: "tlsrpt", Args: []string{"off"}, File: "test.conf", Line: 8, Children: tc.children},
			}},
		}}
		err = grp.Init(config.NewMap(map[string]interface{}{}, block))
		if (err != nil) != tc.wantErr || err != nil && !strings.Contains(err.Error(), "test.conf:8") {
			t.Errorf("tlsrpt off with %d directives: error %v, want error=%v at test.conf:8", len(tc.children), err, tc.wantErr)
		}
	}
}
