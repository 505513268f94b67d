package tests

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/stsbed"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

const (
	collectorIP = "127.0.0.50"
	metricsAddr = "127.0.0.1:9749"
)

// TestEndToEnd09 runs the scenarios through one maddy 0.9.4 with
// one configuration, the kind an admin moving from the 0.8 build keeps:
// DANE-EE, DANE-TA, a TLSA mismatch, a bogus TLSA RRset, an MTA-STS
// enforce mismatch, per-domain dane-only and none, then the day's TLS
// reports built and posted, and the metrics under their 0.8 names.
func TestEndToEnd09(t *testing.T) {
	w := newWorld(t)
	zone := func(name string, opts ...dnsbed.ZoneOption) *dnsbed.Zone {
		return w.dns.Zone(t, name+".", append([]dnsbed.ZoneOption{dnsbed.TTL(300)}, opts...)...)
	}
	tlsa := func(host string, u, s, m uint8, l *pki.Leaf) string {
		return pki.TLSA(t, "_25._tcp."+host+".", u, s, m, l.Cert)
	}
	rua := `_smtp._tls TXT "v=TLSRPTv1; rua=https://reports.collector.example/v1/tlsrpt"`

	// DANE-EE(3) SPKI(1) SHA2-256(1), self-signed; the domain asks for
	// TLS reports.
	eeLeaf := selfSigned(t, "mx.ee.example")
	ipEE, sEE := w.server("mx.ee.example", eeLeaf)
	zone("ee.example").Add(t, "@ MX 10 mx", "mx A "+ipEE, tlsa("mx.ee.example", 3, 1, 1, eeLeaf), rua)

	// DANE-TA(2) Cert(0) SHA2-256(1) on the root, sent by the server.
	inter := w.ca.Intermediate(t, "daneguard test intermediate")
	taLeaf := inter.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.ta.example"}})
	ipTA, sTA := w.serverTLS("mx.ta.example", &tls.Config{Certificates: []tls.Certificate{taLeaf.TLSCertificateWithRoot()}})
	zone("ta.example").Add(t, "@ MX 10 mx", "mx A "+ipTA, pki.TLSA(t, "_25._tcp.mx.ta.example.", 2, 0, 1, w.ca.Cert))

	// The TLSA record pins another key; the domain asks for reports.
	badLeaf := selfSigned(t, "mx.bad.example")
	ipBad, sBad := w.server("mx.bad.example", badLeaf)
	zone("bad.example").Add(t, "@ MX 10 mx", "mx A "+ipBad, tlsa("mx.bad.example", 3, 1, 1, selfSigned(t, "attacker.example")), rua)

	// Bogus TLSA: an alias into a zone with broken signatures.
	bgLeaf := selfSigned(t, "mx.bogustlsa.example")
	ipBG, sBG := w.server("mx.bogustlsa.example", bgLeaf)
	zone("broken.example", dnsbed.BadSignatures()).Add(t, tlsa("x.broken.example", 3, 1, 1, bgLeaf))
	zone("bogustlsa.example").Add(t, "@ MX 10 mx", "mx A "+ipBG, "_25._tcp.mx CNAME _25._tcp.x.broken.example.")

	// dane-only on a signed domain without TLSA.
	ipOnly, sOnly := w.server("mx.only.example", selfSigned(t, "mx.only.example"))
	zone("only.example").Add(t, "@ MX 10 mx", "mx A "+ipOnly)

	// none: a TLSA record that the server (without STARTTLS) cannot
	// satisfy; the level says deliver anyway, in plaintext.
	ipNone, sNone := w.server("mx.none.example", nil)
	zone("none.example").Add(t, "@ MX 10 mx", "mx A "+ipNone, tlsa("mx.none.example", 3, 1, 1, eeLeaf))

	// MTA-STS enforce policy that does not list the MX host.
	sts := stsbed.Start(t, stsAddr, w.ca)
	_, sMis := w.stsDomain(sts, "mismatch.example", "x1", stsbed.Policy("enforce", 86400, "mail.elsewhere.example"),
		w.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mx.mismatch.example"}}))

	zone("collector.example").Add(t, "reports A "+collectorIP)
	w.start()
	col := startCollector(t, collectorIP+":443", w.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"reports.collector.example"}}).TLSCertificate())
	roots := w.ca.WritePEM(t, t.TempDir())

	m := maddybed.Start(t, maddybed.Options{Binary: maddy09(t), Extra: "openmetrics tcp://" + metricsAddr + " { }",
		MXAuth: fmt.Sprintf(`dane {
        roots %s
        policy only.example dane-only
        policy none.example none
        tlsrpt {
            organization "Daneguard Test Org"
            contact tlsrpt@sender.test
            https_roots %s
            poll_interval 100ms
        }
    }`, roots, roots)})

	t.Run("dane-ee", func(t *testing.T) {
		expectDelivered(t, m, sEE, "ee.example")
		v := lastVerdict(t, m, "ee.example")
		wantVerdict(t, v, "authenticated", "dane-match")
		if field(v, "mx") != "mx.ee.example" || field(v, "mx_secure") != "true" || field(v, "tlsa") != "3 1 1" ||
			field(v, "tlsa_base") != "mx.ee.example" || field(v, "mechanism") != "dane" {
			t.Fatalf("verdict fields: %v", v.Fields)
		}
		if !sEE.Messages()[0].TLS.Used {
			t.Fatal("delivered without TLS")
		}
		// A log difference maddy 0.9 forces (docs/install.md): maddy's own
		// per-delivery lines of target.remote carry no module name (0.8.2:
		// "remote: ..."). Here: its PKIX-first dial of a self-signed MX.
		// daneguard's lines keep their "daneguard: " prefix (above).
		const pkix = "TLS verify error, trying without authentication\t"
		bare, named := 0, 0
		for _, l := range strings.Split(m.Log(), "\n") {
			switch {
			case strings.HasPrefix(l, pkix):
				bare++
			case strings.Contains(l, ": "+pkix):
				named++
			}
		}
		if bare == 0 || named != 0 {
			t.Fatalf("maddy's target.remote delivery lines: %d without a module name, %d with one:\n%s", bare, named, m.Log())
		}
	})
	t.Run("dane-ta", func(t *testing.T) {
		expectDelivered(t, m, sTA, "ta.example")
		v := lastVerdict(t, m, "ta.example")
		wantVerdict(t, v, "authenticated", "dane-match")
		if field(v, "tlsa") != "2 0 1" {
			t.Fatalf("verdict fields: %v", v.Fields)
		}
	})
	t.Run("tlsa-mismatch-4.7.5", func(t *testing.T) {
		res := expectDeferred(t, m, "bad.example", sBad)
		v := lastVerdict(t, m, "bad.example")
		wantVerdict(t, v, "deferred", "tlsa-mismatch")
		if field(v, "smtp_code") != "451" || field(v, "smtp_enchcode") != "4.7.5" {
			t.Fatalf("deferral codes in the log: %v", v.Fields)
		}
		// maddy 0.9.4 wraps the last MX error exactly like 0.8.2:
		// 451 5.4.0 "No usable MXs, last err: 4.7.5 tlsa-mismatch: ...".
		if res.Code != 451 || !strings.Contains(res.Text, "last err: 4.7.5 tlsa-mismatch") || !strings.Contains(res.Text, "DANE") {
			t.Fatalf("client reply %d %s %q does not explain the DANE failure", res.Code, res.Enh, res.Text)
		}
	})
	t.Run("bogus-tlsa", func(t *testing.T) {
		res := expectDeferred(t, m, "bogustlsa.example", sBG)
		v := lastVerdict(t, m, "bogustlsa.example")
		if field(v, "verdict") != "deferred" || !strings.HasPrefix(field(v, "reason"), "dns") {
			t.Fatalf("verdict: %v", v.Fields)
		}
		if !strings.Contains(res.Text, "4.4.3") {
			t.Fatalf("reply %q lacks 4.4.3", res.Text)
		}
		if n := sBG.ConnectionCount(); n != 0 {
			t.Fatalf("maddy connected %d times to a server whose TLSA lookup failed", n)
		}
	})
	t.Run("mtasts-enforce-mismatch", func(t *testing.T) {
		res := expectDeferred(t, m, "mismatch.example", sMis)
		v := lastVerdict(t, m, "mismatch.example")
		wantVerdict(t, v, "deferred", "mtasts-mx-mismatch")
		if field(v, "stage") != "mx" || field(v, "smtp_enchcode") != "4.7.4" || field(v, "sts_id") != "x1" {
			t.Fatalf("verdict fields: %v", v.Fields)
		}
		if !strings.Contains(res.Text, "4.7.4 mtasts-mx-mismatch") {
			t.Fatalf("reply %d %q does not explain the MTA-STS refusal", res.Code, res.Text)
		}
		if n := sMis.ConnectionCount(); n != 0 {
			t.Fatalf("maddy connected %d times to an MX the policy does not list", n)
		}
	})
	t.Run("policy-dane-only", func(t *testing.T) {
		expectDeferred(t, m, "only.example", sOnly)
		v := lastVerdict(t, m, "only.example")
		wantVerdict(t, v, "deferred", "dane-required")
		if field(v, "level") != "dane-only" {
			t.Fatalf("verdict fields: %v", v.Fields)
		}
	})
	t.Run("policy-none", func(t *testing.T) {
		expectDelivered(t, m, sNone, "none.example")
		v := lastVerdict(t, m, "none.example")
		wantVerdict(t, v, "plaintext", "policy-none")
		if sNone.Messages()[0].TLS.Used {
			t.Fatal("the server has no STARTTLS, yet TLS was used")
		}
	})

	t.Run("check-with-config", func(t *testing.T) {
		// `maddy check --config` reads the dane block through maddy 0.9's
		// configuration code next to the running server, and the policy
		// entries apply.
		out := runMaddy(t, m, "check", "--connect", "ee.example")
		if !strings.Contains(out, "authenticated") || !strings.Contains(out, "dane-match") {
			t.Fatalf("check ee.example:\n%s", out)
		}
		cmd := exec.Command(maddy09(t), "--config", m.Config, "check", "only.example")
		b, err := cmd.CombinedOutput()
		if exitCode(err) != 2 || !strings.Contains(string(b), "dane-required") {
			t.Fatalf("check only.example (dane-only from the config): exit %d\n%s", exitCode(err), b)
		}
	})
	t.Run("tlsrpt-report-built", func(t *testing.T) {
		out := runMaddy(t, m, "tlsrpt", "list", "--json")
		var list []tlsrpt.Pending
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		got := map[string]tlsrpt.Pending{}
		for _, p := range list {
			got[p.Domain] = p
		}
		if len(list) == 0 {
			t.Fatal("no TLS report data recorded")
		}
		day := list[0].Day
		if got["ee.example"].Successes < 1 || got["bad.example"].Failures < 1 {
			t.Fatalf("store: %+v", list)
		}
		out = runMaddy(t, m, "tlsrpt", "send", "--day", day, "--wait", "--timeout", "90s")
		for _, want := range []string{"ee.example: sent", "bad.example: sent"} {
			if !strings.Contains(out, want) {
				t.Fatalf("send output lacks %q:\n%s", want, out)
			}
		}
		reps := col.byDomain()
		// A tlsa policy's policy-domain is the TLSA base domain (RFC 8460
		// §4.3), here the MX host.
		ee, bad := reps["mx.ee.example"], reps["mx.bad.example"]
		if ee == nil || bad == nil {
			t.Fatalf("collector got reports for %v, want mx.ee.example and mx.bad.example", keys(reps))
		}
		if ee["organization-name"] != "Daneguard Test Org" || ee["contact-info"] != "tlsrpt@sender.test" {
			t.Fatalf("report metadata: %v", ee)
		}
		pol := onePolicy(t, bad)
		p, _ := pol["policy"].(map[string]any)
		sum, _ := pol["summary"].(map[string]any)
		if p["policy-type"] != "tlsa" || p["policy-domain"] != "mx.bad.example" || num(sum["total-failure-session-count"]) < 1 {
			t.Fatalf("bad.example policy: %v", pol)
		}
		fds, _ := pol["failure-details"].([]any)
		// A TLSA mismatch: RFC 8460 §4.3.1 certificate-host-mismatch, as in
		// the root's TLS-RPT test (docs/tlsrpt.md).
		if len(fds) == 0 || fds[0].(map[string]any)["result-type"] != "certificate-host-mismatch" {
			t.Fatalf("bad.example failure details: %v", pol["failure-details"])
		}
		pol = onePolicy(t, ee)
		sum, _ = pol["summary"].(map[string]any)
		if num(sum["total-successful-session-count"]) < 1 || num(sum["total-failure-session-count"]) != 0 {
			t.Fatalf("ee.example summary: %v", sum)
		}
	})

	t.Run("metrics-same-names", func(t *testing.T) {
		s := scrape(t, "http://"+metricsAddr+"/metrics")
		for _, k := range []string{
			`maddy_daneguard_verdicts_total{mechanism="dane",reason="dane-match",result="authenticated"}`,
			`maddy_daneguard_verdicts_total{mechanism="dane",reason="tlsa-mismatch",result="deferred"}`,
			`maddy_daneguard_lookup_duration_seconds_count{stage="destination"}`,
			`maddy_daneguard_cache_entries{cache="dns"}`,
			`maddy_daneguard_tlsrpt_reports_total{result="sent"}`,
		} {
			if s[k] <= 0 {
				t.Errorf("%s = %v, want > 0", k, s[k])
			}
		}
		if t.Failed() {
			var names []string
			for k := range s {
				if strings.HasPrefix(k, "maddy_daneguard") {
					names = append(names, k)
				}
			}
			t.Logf("daneguard series: %v", names)
		}
	})
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func onePolicy(t *testing.T, r map[string]any) map[string]any {
	t.Helper()
	pols, _ := r["policies"].([]any)
	if len(pols) != 1 {
		t.Fatalf("%d policies, want 1: %v", len(pols), r)
	}
	return pols[0].(map[string]any)
}

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

func runMaddy(t *testing.T, m *maddybed.Maddy, args ...string) string {
	t.Helper()
	out, err := exec.Command(maddy09(t), append([]string{"--config", m.Config}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("maddy %s: %v\n%s\nmaddy log:\n%s", strings.Join(args, " "), err, out, m.Log())
	}
	return string(out)
}

// collector is an HTTPS TLS-RPT endpoint (RFC 8460 §3): gzip'd JSON by POST.
type collector struct {
	mu      sync.Mutex
	reports []map[string]any
}

func startCollector(t *testing.T, addr string, cert tls.Certificate) *collector {
	c := &collector{}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil || r.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
				http.Error(w, "want application/tlsrpt+gzip", http.StatusBadRequest)
				return
			}
			js, _ := io.ReadAll(zr)
			var rep map[string]any
			if r.Method != http.MethodPost || json.Unmarshal(js, &rep) != nil {
				http.Error(w, "bad report", http.StatusBadRequest)
				return
			}
			c.mu.Lock()
			c.reports = append(c.reports, rep)
			c.mu.Unlock()
		}),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return c
}

// byDomain returns the last report per policy domain.
func (c *collector) byDomain() map[string]map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[string]any{}
	for _, r := range c.reports {
		pols, _ := r["policies"].([]any)
		for _, p := range pols {
			pol, _ := p.(map[string]any)["policy"].(map[string]any)
			if d, ok := pol["policy-domain"].(string); ok {
				out[d] = r
			}
		}
	}
	return out
}

// scrape fetches a Prometheus text exposition: samples by "name{labels}".
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = v
			}
		}
	}
	return out
}

// writeConf writes a maddy.conf into a new directory and returns its path
// and the directory.
func writeConf(t *testing.T, body func(dir string) string) (string, string) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "maddy.conf")
	if err := os.WriteFile(conf, []byte(body(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	return conf, dir
}
