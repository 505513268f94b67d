package tests

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/netns"
)

// minimalConf is a maddy.conf with one dane block; mxauth is the body of
// mx_auth.
func minimalConf(mxauth string) func(dir string) string {
	return func(dir string) string {
		return fmt.Sprintf(`state_dir %s
runtime_dir %s
hostname mx.sender.test
target.remote out {
    mx_auth {
%s
    }
}
smtp tcp://127.0.0.1:2526 {
    tls off
    deliver_to &out
}
`, filepath.Join(dir, "state"), filepath.Join(dir, "run"), mxauth)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestVerifyConfig09: maddy 0.9's own verify-config is the command (maddy
// registers it first; the 0.8 build's is not added). It configures the
// dane block, so daneguard's errors come with file and line and exit
// status 2, as in the 0.8 build; success prints maddy's "No errors
// detected" on stderr instead of the 0.8 build's "configuration OK: PATH"
// on stdout. Like `maddy run`, maddy 0.9's verify-config creates the state
// and runtime directories; daneguard's stores are not created.
func TestVerifyConfig09(t *testing.T) {
	netns.Required(t) // maddy's InitDirs and chdir; root for parity with the other tests
	bin := maddy09(t)
	conf, dir := writeConf(t, minimalConf(`        dane {
            resolver 127.0.0.1:53
            tlsrpt {
                contact postmaster@sender.test
            }
        }`))
	cmd := exec.Command(bin, "--config", conf, "verify-config")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("verify-config: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "No errors detected") || strings.Contains(stdout.String(), "configuration OK") {
		t.Fatalf("verify-config output: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	for _, p := range []string{"state/daneguard", "state/daneguard/tlsrpt", "state/daneguard/mtasts"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("verify-config created %s", p)
		}
	}

	for _, tc := range []struct{ block, want string }{
		{"        dane {\n            default_level dane-onyl\n        }", "maddy.conf:7: unknown security level"},
		{"        dane {\n            tlsrpt {\n                contact not-an-address\n            }\n        }", "contact \"not-an-address\" is not an email address"},
		{"        mtasts {\n            cache ram\n        }", "the `mtasts { }` block is not supported in this maddy build"},
		{"        dane inline-arg {\n        }", "mx_auth.dane: inline arguments are not used"},
	} {
		conf, _ := writeConf(t, minimalConf(tc.block))
		out, err := exec.Command(bin, "--config", conf, "verify-config").CombinedOutput()
		if exitCode(err) != 2 || !strings.Contains(string(out), tc.want) {
			t.Errorf("verify-config on %q: exit %d, output %q; want exit 2 and %q", tc.block, exitCode(err), out, tc.want)
		}
	}
}

// TestSelfCheckForeignRegistry09: a binary in which mx_auth.dane is not
// the glue's (internal/testbin/foreigndane) refuses to start, with the
// reason, and never serves mail.
func TestSelfCheckForeignRegistry09(t *testing.T) {
	netns.Required(t)
	bin := maddybed.BuildBinary(t, "..", "./internal/testbin/foreigndane")
	conf, _ := writeConf(t, minimalConf("        dane { }"))
	for _, args := range [][]string{{"run", "--log", "stderr"}, {"verify-config"}, {"version"}} {
		out, err := exec.Command(bin, append([]string{"--config", conf}, args...)...).CombinedOutput()
		if exitCode(err) != 2 || !strings.Contains(string(out), "does not run the daneguard policy") ||
			!strings.Contains(string(out), "maps mx_auth.dane to another implementation") {
			t.Fatalf("%v with a foreign mx_auth.dane: exit %d\n%s", args, exitCode(err), out)
		}
	}
	// The real build passes the same check.
	if out, err := exec.Command(maddy09(t), "version").CombinedOutput(); err != nil {
		t.Fatalf("maddy version: %v\n%s", err, out)
	}
}
