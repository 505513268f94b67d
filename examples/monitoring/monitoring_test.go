// Package monitoring holds no code: its test checks the Prometheus alert
// rules and the Grafana dashboard of this directory.
package monitoring

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var metricRE = regexp.MustCompile(`maddy_daneguard_[a-z0-9_]+`)

func metricsIn(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, m := range metricRE.FindAllString(string(b), -1) {
		set[strings.TrimSuffix(m, "_bucket")] = true
	}
	var out []string
	for m := range set {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// TestMetricNames: every metric the rules and the dashboard use is
// documented in docs/metrics.md.
func TestMetricNames(t *testing.T) {
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"alerts.yml", "grafana-dashboard.json"} {
		used := metricsIn(t, f)
		if len(used) < 5 {
			t.Errorf("%s: only %d metrics found", f, len(used))
		}
		for _, m := range used {
			if !strings.Contains(string(doc), m) {
				t.Errorf("%s: %s is not in docs/metrics.md", f, m)
			}
		}
	}
}

// TestDashboard: the dashboard is valid JSON with a query in every panel.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard %q with %d panels", d.Title, len(d.Panels))
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 || p.Targets[0].Expr == "" {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; scripts/deps.sh installs it): alert rules not checked")
	}
	return p
}

// TestRules runs `promtool check rules` and `promtool test rules`
// (tests.yml: synthetic series for every alert, firing and not firing).
func TestRules(t *testing.T) {
	pt := promtool(t)
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "tests.yml"}} {
		out, err := exec.Command(pt, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestRulesCanFail: the rule tests notice a broken rule: with the DANE
// deferral threshold raised, tests.yml must fail.
func TestRulesCanFail(t *testing.T) {
	pt := promtool(t)
	dir := t.TempDir()
	rules, err := os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(rules), `[30m])) >= 5`, `[30m])) >= 500`, 1)
	if broken == string(rules) {
		t.Fatal("threshold not found in alerts.yml")
	}
	tests, err := os.ReadFile("tests.yml")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"alerts.yml": []byte(broken), "tests.yml": tests} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(pt, "test", "rules", "tests.yml")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("promtool accepted the broken rule:\n%s", out)
	}
	if !strings.Contains(string(out), "DaneguardDANEDeferralsRising") {
		t.Errorf("failure does not name the rule:\n%s", out)
	}
}
