package selfcheck_test

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
)

const metricsAddr = "127.0.0.1:9749"

// The background self-check and the resolver health loop inside the real
// maddy: metrics on its openmetrics endpoint and log lines, for a matching
// TLSA RRset, a broken one, and the resolver stopped and started again.
// Every wait has a generous deadline and asserts nothing about speed.
func TestBackgroundSelfcheck(t *testing.T) {
	b := newBed(t)
	roots := b.ca.Root().WritePEM(t, t.TempDir())
	b.daneBlock = `dane {
    resolver ` + b.ub.Addr() + `
    roots ` + roots + `
    resolver_check_interval 1s
    selfcheck_interval 1s
    selfcheck_days 14
    selfcheck_cert ` + b.cert + `
    selfcheck_domains own.example
}`
	b.extra = "openmetrics tcp://" + metricsAddr + " { }"
	l := b.leaf()
	base := []string{"@ MX 10 mx", "mx A " + mxIP}
	b.publish(append(base, rec(t, 3, 1, l.Cert))...)
	b.install(l)

	match := `maddy_daneguard_selfcheck_match{address="` + mxIP + `:25",mx="` + mxHost + `"}`
	loaded := `maddy_daneguard_selfcheck_loaded_match{mx="` + mxHost + `"}`
	up := `maddy_daneguard_resolver_up{server="` + b.ub.Addr() + `"}`
	validating := `maddy_daneguard_resolver_validating{server="` + b.ub.Addr() + `"}`

	// 1. Matching 3 1 1: match and loaded_match 1, no errors; the 3 1 1
	// of a file key does not survive a key change; the resolver is healthy.
	m := waitMetrics(t, b.maddy, func(m map[string]float64) bool {
		v, ok := m[match]
		return ok && v == 1 && m[up] == 1
	})
	for k, want := range map[string]float64{
		loaded: 1, validating: 1,
		`maddy_daneguard_selfcheck_problems{severity="error"}`:               0,
		`maddy_daneguard_selfcheck_survives_key_change{mx="` + mxHost + `"}`: 0,
	} {
		if v, ok := m[k]; !ok || v != want {
			t.Errorf("%s = %v (exported %v), want %v", k, v, ok, want)
		}
	}
	// tls file: the next key change is the expiry of the 90-day leaf.
	if d := m[`maddy_daneguard_selfcheck_days_to_key_change{mx="`+mxHost+`"}`]; d < 80 || d > 91 {
		t.Errorf("days_to_key_change = %v, want the leaf's remaining ~90 days", d)
	}
	if v := m["maddy_daneguard_selfcheck_last_run_timestamp_seconds"]; v < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("last_run_timestamp_seconds = %v", v)
	}
	if es := b.maddy.Entries("daneguard", "self-check problem"); len(es) != 0 {
		t.Errorf("problems logged for a matching RRset: %v", es)
	}
	if es := b.maddy.Entries("daneguard", "self-check done"); len(es) == 0 || es[0].Fields["status"] != "ok" {
		t.Errorf("self-check done lines: %v", es)
	}

	// 2. The RRset replaced by the record of another key: the metric turns
	// 0 and a warning names the address, the record and the fix.
	other := b.leaf()
	b.publish(append(base, rec(t, 3, 1, other.Cert))...)
	waitMetrics(t, b.maddy, func(m map[string]float64) bool { return m[match] == 0 && m[loaded] == 0 })
	fix := selfcheck.ZoneLine(tlsa, selfcheck.RecordFor(dane.DANEEE, l.Cert))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	served := waitProblem(ctx, t, b.maddy, "served-mismatch", mxHost+" "+mxIP+":25")
	if sev := served.Fields["severity"]; sev != "error" || !strings.Contains(served.Fields["fix"].(string), fix) {
		t.Errorf("served-mismatch line: %v, want severity error and the fix %q", served.Fields, fix)
	}
	lm := waitProblem(ctx, t, b.maddy, "loaded-mismatch", "_25._tcp."+mxHost)
	if !strings.Contains(lm.Fields["fix"].(string), fix) || !strings.Contains(lm.Fields["problem"].(string), b.cert) {
		t.Errorf("loaded-mismatch line: %v", lm.Fields)
	}

	// 3. The resolver stopped while maddy runs: a warning and the metric
	// within an interval or so; started again: a recovery line.
	b.ub.Stop()
	bad := b.maddy.WaitEntries(ctx, "daneguard", "resolver unhealthy", 1)
	if bad[0].Fields["server"] != b.ub.Addr() || bad[0].Fields["code"] != "resolver-down" || bad[0].Fields["fix"] == "" {
		t.Errorf("resolver unhealthy line: %v", bad[0].Fields)
	}
	waitMetrics(t, b.maddy, func(m map[string]float64) bool { v, ok := m[up]; return ok && v == 0 && m[validating] == 0 })
	if n := len(b.maddy.Entries("daneguard", "resolver unhealthy")); n != 1 {
		t.Errorf("%d resolver unhealthy lines for one outage, want 1 (logged when it turns bad)", n)
	}
	b.ub = dnsbed.StartUnbound(t, b.dns, dnsbed.UnboundOptions{Addr: b.ub.Addr()})
	good := b.maddy.WaitEntries(ctx, "daneguard", "resolver recovered", 1)
	if good[0].Fields["server"] != b.ub.Addr() {
		t.Errorf("resolver recovered line: %v", good[0].Fields)
	}
	waitMetrics(t, b.maddy, func(m map[string]float64) bool { return m[up] == 1 && m[validating] == 1 })
}

// waitProblem waits for a "self-check problem" line with code whose
// subject contains subject.
func waitProblem(ctx context.Context, t *testing.T, m *maddybed.Maddy, code, subject string) maddybed.Entry {
	t.Helper()
	for {
		for _, e := range m.Entries("daneguard", "self-check problem") {
			if e.Fields["code"] == code && strings.Contains(e.Fields["subject"].(string), subject) {
				return e
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no self-check problem %s for %s logged:\n%s", code, subject, m.Log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitMetrics scrapes maddy's openmetrics endpoint until ok holds (60 s at
// most) and returns that scrape.
func waitMetrics(t *testing.T, mad *maddybed.Maddy, ok func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last map[string]float64
	for {
		if m, err := scrape("http://" + metricsAddr + "/metrics"); err == nil {
			last = m
			if ok(m) {
				return m
			}
		}
		if time.Now().After(deadline) {
			var have []string
			for k, v := range last {
				if strings.Contains(k, "selfcheck") || strings.Contains(k, "resolver_") {
					have = append(have, k+" "+strconv.FormatFloat(v, 'g', -1, 64))
				}
			}
			t.Fatalf("metrics did not reach the expected state; own-server series:\n%s\nmaddy log:\n%s", strings.Join(have, "\n"), mad.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scrape fetches a Prometheus text exposition: samples by "name{labels}".
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
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
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// Without selfcheck_cert the background check takes the certificate the
// global tls directive serves (maddy hands it to modules as a *tls.Config).
func TestBackgroundSelfcheckGlobalTLS(t *testing.T) {
	b := newBed(t)
	b.daneBlock = `dane {
    resolver ` + b.ub.Addr() + `
    selfcheck_interval 1s
    selfcheck_domains own.example
}`
	b.extra = "openmetrics tcp://" + metricsAddr + " { }\ntls file " + b.cert + " " + b.key
	l := b.leaf()
	base := []string{"@ MX 10 mx", "mx A " + mxIP}
	other := b.leaf()
	// The RRset names another key: the loaded (global tls) certificate
	// must be reported as not matching, which it can only be if it was
	// read.
	b.publish(append(base, rec(t, 3, 1, other.Cert))...)
	b.install(l)
	loaded := `maddy_daneguard_selfcheck_loaded_match{mx="` + mxHost + `"}`
	waitMetrics(t, b.maddy, func(m map[string]float64) bool { v, ok := m[loaded]; return ok && v == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := waitProblem(ctx, t, b.maddy, "loaded-mismatch", "_25._tcp."+mxHost)
	if !strings.Contains(e.Fields["problem"].(string), "global tls directive") {
		t.Errorf("loaded-mismatch line does not name the global tls directive: %v", e.Fields)
	}
	if n := len(b.maddy.Entries("daneguard", "self-check: no certificate to check")); n != 0 {
		t.Errorf("%d 'no certificate' lines with a global tls directive", n)
	}
	// Matching now: loaded_match turns 1.
	b.publish(append(base, rec(t, 3, 1, l.Cert))...)
	waitMetrics(t, b.maddy, func(m map[string]float64) bool { return m[loaded] == 1 })
}
