// Package netns runs a test binary inside network and mount namespaces of its
// own, so that tests can bind fixed ports (25 for SMTP, 53 for DNS, 443 for
// HTTPS) on 127.0.0.0/8 and point /etc/resolv.conf at a resolver they start,
// without touching the host's network or files.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { netns.Main(m) }
//
// The first invocation re-executes the test binary with CLONE_NEWNET and
// CLONE_NEWNS. The child brings up its loopback interface and bind-mounts a
// private resolv.conf ("nameserver 127.0.0.1") over /etc/resolv.conf. Only
// the loopback interface exists inside, so no test traffic can leave the
// machine. Creating namespaces needs root (or CAP_SYS_ADMIN); without it the
// tests that need the namespace are skipped through Required.
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

const envMarker = "DANEGUARD_IN_NETNS"

// ResolverAddr is the address written to the namespace's /etc/resolv.conf.
const ResolverAddr = "127.0.0.1"

var inside bool

// Inside reports whether this process runs in the private namespace set up
// by Main.
func Inside() bool { return inside }

// Required skips t unless the process runs inside the private namespace.
func Required(t testing.TB) {
	t.Helper()
	if !inside {
		t.Skip("needs a private network namespace (run as root on Linux)")
	}
}

// Main re-executes the test binary inside fresh namespaces and exits with its
// status. Inside the namespace it prepares loopback and resolv.conf, then runs
// the tests.
func Main(m *testing.M) {
	if os.Getenv(envMarker) == "1" {
		if err := setupInside(); err != nil {
			fmt.Fprintln(os.Stderr, "netns: setting up the test namespace failed:", err)
			os.Exit(3)
		}
		inside = true
		os.Exit(m.Run())
	}
	if os.Geteuid() != 0 || os.Getenv("DANEGUARD_NO_NETNS") == "1" {
		fmt.Fprintln(os.Stderr, "netns: not root (or DANEGUARD_NO_NETNS=1); namespace tests will be skipped")
		os.Exit(m.Run())
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "netns:", err)
		os.Exit(3)
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envMarker+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "netns: cannot start the test binary in a new namespace:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

func setupInside() error {
	// Mounts made here must not propagate back to the host.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set lo up: %v: %s", err, out)
	}
	dir, err := os.MkdirTemp("", "daneguard-netns-")
	if err != nil {
		return err
	}
	resolv := filepath.Join(dir, "resolv.conf")
	content := "nameserver " + ResolverAddr + "\noptions timeout:2 attempts:2\n"
	if err := os.WriteFile(resolv, []byte(content), 0o644); err != nil {
		return err
	}
	if err := syscall.Mount(resolv, "/etc/resolv.conf", "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount resolv.conf: %w", err)
	}
	// /etc/hosts stays the host's: tests use only names they serve via DNS.
	return nil
}
