package dnsbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/miekg/dns"
)

// Names or paths of the unbound binaries (Debian package "unbound"),
// looked up in $PATH. Where AppArmor is enabled, StartUnbound runs a copy of
// UnboundBinary (see unboundExecutable).
var (
	UnboundBinary        = "unbound"
	UnboundControlBinary = "unbound-control"
)

// UnboundOptions configures StartUnbound.
type UnboundOptions struct {
	// Addr is the address unbound listens on, "ip:port"; port 0 picks a
	// free port. Empty means 127.0.0.1:53 inside the test network namespace
	// (see package netns) and 127.0.0.1 on a free port outside it.
	Addr string
	// Extra is appended verbatim to the "server:" clause of the
	// configuration, one option per line; later options override the
	// defaults written before them.
	Extra string
	// LogQueries makes unbound log every query it receives from clients
	// (log-queries: yes), so that ClientQueries can count them by name and
	// type.
	LogQueries bool
}

// Unbound is a running unbound resolver that validates with the test root
// key and sends every query to a Server.
type Unbound struct {
	addr    string
	dir     string // config, log, pid
	conf    string
	logPath string
	errBuf  *lockedBuffer // unbound's stderr
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	// logQueries is set when unbound logs client queries.
	logQueries bool
	waitErr    error
	stop       sync.Once
}

// StartUnbound starts unbound as a validating resolver ("validator
// iterator") that forwards all queries to auth, trusting auth's root key. It
// waits until unbound answers, fails t with the tail of unbound's log if it
// does not, and stops it when the test ends.
//
// Besides the options the brief of a test bed needs (no chroot, no user
// switch, do-not-query-localhost: no, qname-minimisation: no, no prefetch,
// val-log-level: 2, small caches, remote control on a unix socket), the
// configuration turns off aggressive NSEC use (RFC 8198), so that every
// client query for an uncached name reaches auth, and turns on
// serve-original-ttl, so that TTLs in answers are the ones auth served.
func StartUnbound(t testing.TB, auth *Server, opts UnboundOptions) *Unbound {
	t.Helper()
	if auth == nil || auth.Addr() == "" {
		t.Fatal("dnsbed: StartUnbound needs a started Server")
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		u, err := startUnbound(t, auth, opts)
		if err == nil {
			t.Cleanup(u.Stop)
			return u
		}
		lastErr = err
		if _, port, _ := net.SplitHostPort(opts.Addr); opts.Addr != "" && port != "0" {
			break // a fixed address will not get free by retrying
		}
	}
	t.Fatalf("dnsbed: starting unbound: %v", lastErr)
	return nil
}

func startUnbound(t testing.TB, auth *Server, opts UnboundOptions) (*Unbound, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
		if netns.Inside() {
			addr = "127.0.0.1:53"
		}
	}
	listenHost, listenPort, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address: %v", err)
	}
	if listenPort == "0" {
		if listenPort, err = freePort(listenHost); err != nil {
			return nil, err
		}
	}
	authHost, authPort, err := net.SplitHostPort(auth.Addr())
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(t.TempDir(), "unbound-")
	if err != nil {
		return nil, err
	}
	// A unix socket path must stay under 108 bytes; TempDir paths embed the
	// test name and can be long, so the socket gets a short directory.
	sockDir, err := os.MkdirTemp("", "ubctl")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })

	ip6 := "no"
	if strings.Contains(listenHost, ":") || strings.Contains(authHost, ":") {
		ip6 = "yes"
	}
	u := &Unbound{
		addr:    net.JoinHostPort(listenHost, listenPort),
		dir:     dir,
		conf:    filepath.Join(dir, "unbound.conf"),
		logPath: filepath.Join(dir, "unbound.log"),
		errBuf:  &lockedBuffer{},
		done:    make(chan struct{}),

		logQueries: opts.LogQueries,
	}
	conf := fmt.Sprintf(`server:
	verbosity: 1
	interface: %[1]s@%[2]s
	port: %[2]s
	do-ip4: yes
	do-ip6: %[3]s
	do-udp: yes
	do-tcp: yes
	access-control: 127.0.0.0/8 allow
	access-control: ::1/128 allow
	interface-automatic: no
	chroot: ""
	username: ""
	directory: "%[4]s"
	pidfile: "%[4]s/unbound.pid"
	logfile: "%[5]s"
	use-syslog: no
	log-time-ascii: yes
	do-daemonize: no
	num-threads: 1
	so-reuseport: no
	outgoing-range: 64
	num-queries-per-thread: 32
	msg-cache-size: 512k
	rrset-cache-size: 512k
	key-cache-size: 256k
	neg-cache-size: 256k
	infra-cache-numhosts: 100
	module-config: "validator iterator"
	trust-anchor: "%[6]s"
	val-log-level: 2
	do-not-query-localhost: no
	qname-minimisation: no
	prefetch: no
	prefetch-key: no
	aggressive-nsec: no
	trust-anchor-signaling: no
	root-key-sentinel: no
	serve-original-ttl: yes
	statistics-interval: 0
	extended-statistics: yes
	statistics-cumulative: no
%[7]s
remote-control:
	control-enable: yes
	control-interface: "%[8]s"

forward-zone:
	name: "."
	forward-addr: %[9]s@%[10]s
`, listenHost, listenPort, ip6, dir, u.logPath, auth.TrustAnchor(),
		indent(logQueries(opts.LogQueries)+opts.Extra), filepath.Join(sockDir, "c"), authHost, authPort)
	if err := os.WriteFile(u.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}

	bin, err := unboundExecutable()
	if err != nil {
		return nil, err
	}
	u.cmd = exec.Command(bin, "-d", "-c", u.conf)
	u.cmd.Dir = dir
	u.cmd.Stdout = u.errBuf
	u.cmd.Stderr = u.errBuf
	// Never outlive the test process.
	u.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := u.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		u.waitErr = u.cmd.Wait()
		close(u.done)
	}()
	if err := u.waitReady(filepath.Join(sockDir, "c"), 15*time.Second); err != nil {
		u.Stop()
		return nil, fmt.Errorf("%v\n--- unbound log tail ---\n%s", err, u.logTail(40))
	}
	return u, nil
}

// waitReady waits for the control socket to accept connections and then
// for "unbound-control status" to succeed. Unbound binds its DNS sockets
// before the control socket, so from then on queries are served.
func (u *Unbound) waitReady(sock string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	delay := 2 * time.Millisecond
	for {
		select {
		case <-u.done:
			return fmt.Errorf("unbound exited during startup: %v", u.waitErr)
		default:
		}
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			if _, err := u.control("status"); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("unbound did not become ready within %v", limit)
		}
		time.Sleep(delay)
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// Addr returns the address unbound listens on.
func (u *Unbound) Addr() string { return u.addr }

// Dir returns the directory holding unbound's configuration and log.
func (u *Unbound) Dir() string { return u.dir }

// Log returns unbound's log so far.
func (u *Unbound) Log() string {
	b, _ := os.ReadFile(u.logPath)
	return u.errBuf.String() + string(b)
}

func (u *Unbound) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(u.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop terminates unbound and waits for it. StartUnbound arranges for it to
// be called when the test ends; calling it again does nothing.
func (u *Unbound) Stop() {
	u.stop.Do(func() {
		if u.cmd.Process == nil {
			return
		}
		_ = u.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-u.done:
		case <-time.After(5 * time.Second):
			_ = u.cmd.Process.Kill()
			<-u.done
		}
	})
}

// Query sends one recursive query with the DO bit (RFC 3225) to unbound
// over UDP, repeating it over TCP if the answer is truncated, and returns
// the response. Network errors fail t.
func (u *Unbound) Query(t testing.TB, name string, qtype uint16) *dns.Msg {
	t.Helper()
	resp, err := u.Exchange(name, qtype)
	if err != nil {
		t.Fatalf("dnsbed: query %s %s: %v\n--- unbound log tail ---\n%s", name, dns.Type(qtype), err, u.logTail(20))
	}
	return resp
}

// Exchange is Query returning its error instead of failing a test.
func (u *Unbound) Exchange(name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(4096, true)
	c := &dns.Client{Net: "udp", Timeout: 10 * time.Second, UDPSize: 4096}
	resp, _, err := c.Exchange(m, u.addr)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.Exchange(m, u.addr)
	}
	return resp, err
}

// Control runs "unbound-control <args>" against this unbound and returns
// its output; errors fail t.
func (u *Unbound) Control(t testing.TB, args ...string) string {
	t.Helper()
	out, err := u.control(args...)
	if err != nil {
		t.Fatalf("dnsbed: unbound-control %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (u *Unbound) control(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, UnboundControlBinary, append([]string{"-c", u.conf}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
	}
	// unbound-control exits 0 even for some failed commands.
	if s := string(out); strings.HasPrefix(s, "error") {
		return s, errors.New(strings.TrimSpace(s))
	}
	return string(out), nil
}

// Stats returns "unbound-control stats_noreset" as a map from counter name
// ("total.num.queries", "num.query.type.TLSA", ...) to value.
func (u *Unbound) Stats(t testing.TB) map[string]float64 {
	t.Helper()
	out := u.Control(t, "stats_noreset")
	stats := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		stats[k] = f
	}
	return stats
}

// QueryCount returns how many queries unbound received from clients
// (total.num.queries), cache hits included.
func (u *Unbound) QueryCount(t testing.TB) int64 {
	t.Helper()
	v, ok := u.Stats(t)["total.num.queries"]
	if !ok {
		t.Fatal("dnsbed: unbound statistics lack total.num.queries")
	}
	return int64(v)
}

// ClientQueries returns how many queries for name and qtype unbound
// received from clients, cache hits included, as its query log shows. It
// needs UnboundOptions.LogQueries; without it t fails. unbound flushes its
// log after every line, so a query whose answer has been received is
// already counted.
func (u *Unbound) ClientQueries(t testing.TB, name string, qtype uint16) int64 {
	t.Helper()
	if !u.logQueries {
		t.Fatal("dnsbed: ClientQueries needs UnboundOptions.LogQueries")
	}
	b, err := os.ReadFile(u.logPath)
	if err != nil {
		t.Fatalf("dnsbed: reading unbound's log: %v", err)
	}
	want, typ := strings.ToLower(dns.Fqdn(name)), dns.TypeToString[qtype]
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		// "[time] unbound[pid:tid] info: 127.0.0.1 mx.example. A IN"
		_, rest, ok := strings.Cut(line, "] info: ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 4 && f[3] == "IN" && strings.EqualFold(f[1], want) && f[2] == typ {
			n++
		}
	}
	return n
}

func logQueries(on bool) string {
	if on {
		return "log-queries: yes\n"
	}
	return ""
}

// FlushZone removes everything at or below name from unbound's message,
// RRset and key caches.
func (u *Unbound) FlushZone(t testing.TB, name string) {
	t.Helper()
	u.Control(t, "flush_zone", dns.Fqdn(name))
}

// Flush empties all of unbound's caches, including validation failures
// (flush_bogus), negative answers (flush_negative) and what it learnt
// about the upstream server (flush_infra), so that the next query goes to
// the authoritative server again.
func (u *Unbound) Flush(t testing.TB) {
	t.Helper()
	for _, cmd := range [][]string{{"flush_zone", "."}, {"flush_bogus"}, {"flush_negative"}, {"flush_infra", "all"}} {
		u.Control(t, cmd...)
	}
}

// Reload makes unbound re-read its configuration, which also empties its
// caches.
func (u *Unbound) Reload(t testing.TB) {
	t.Helper()
	u.Control(t, "reload")
}

// unboundExecutable returns the unbound binary to run. Debian and Ubuntu
// ship an AppArmor profile attached to the path /usr/sbin/unbound that
// denies reading a configuration or writing a log outside /etc/unbound and
// /var/lib/unbound, which is where the test bed keeps them. Where AppArmor
// is enabled, a copy of the binary at another path is run instead: the
// profile does not attach to it.
func unboundExecutable() (string, error) {
	path, err := exec.LookPath(UnboundBinary)
	if err != nil {
		return "", fmt.Errorf("unbound is not installed (apt-get install unbound): %v", err)
	}
	if b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled"); err != nil || strings.TrimSpace(string(b)) != "Y" {
		return path, nil
	}
	return copyExecutable(path, os.TempDir())
}

// copyExecutable copies the executable at src into dir under a name derived
// from its size and modification time, so that repeated runs reuse one
// copy, and returns the copy's path.
func copyExecutable(src, dir string) (string, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, fmt.Sprintf("dnsbed-%s-%d-%d-%d", filepath.Base(src), os.Getuid(), fi.Size(), fi.ModTime().UnixNano()))
	if got, err := os.Stat(dst); err == nil && got.Size() == fi.Size() && got.Mode()&0o111 != 0 {
		return dst, nil
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(dst)+".tmp*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	// Rename is atomic: parallel test processes never run a partial copy.
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return dst, nil
}

// freePort returns a port on host that is free for UDP and TCP at the
// moment of the call.
func freePort(host string) (string, error) {
	for attempt := 0; attempt < 20; attempt++ {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", err
		}
		addr := pc.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		pc.Close()
		if err != nil {
			continue
		}
		l.Close()
		_, port, err := net.SplitHostPort(addr)
		return port, err
	}
	return "", fmt.Errorf("no free port found on %s", host)
}

func indent(extra string) string {
	var b strings.Builder
	for _, line := range strings.Split(extra, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		b.WriteString("\t" + strings.TrimSpace(line) + "\n")
	}
	return b.String()
}

// lockedBuffer collects process output written from another goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
