// Package maddybed runs the real custom maddy binary (examples/maddy, maddy
// v0.8.2 with this project's policy compiled in) for end-to-end tests.
//
// The binary is built once per test process. Each Maddy instance gets its
// own state directory and configuration, logs to a buffer the test can
// search, and accepts mail on a loopback SMTP listener whose pipeline
// delivers straight to target.remote, so that a policy deferral reaches the
// submitting client as a 4xx reply.
package maddybed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// repoRoot finds the module root from this source file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// build compiles one Go main package once per test process.
type build struct {
	dir  string // module directory to build in; "" is this repository's root
	pkg  string
	tags string // -tags, if any
	once sync.Once
	path string
	err  error
}

func (b *build) binary(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "daneguard-maddy-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "maddy")
		args := []string{"build", "-o", b.path}
		if b.tags != "" {
			args = append(args, "-tags", b.tags)
		}
		cmd := exec.Command("go", append(args, b.pkg)...)
		cmd.Dir = b.dir
		if cmd.Dir == "" {
			cmd.Dir = repoRoot()
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

var (
	custom    = &build{pkg: "./examples/maddy"}
	testClock = &build{pkg: "./examples/maddy", tags: "daneguard_testclock"}
	stock     = &build{pkg: "github.com/foxcpp/maddy/cmd/maddy"}
)

// Binary builds examples/maddy once and returns its path.
func Binary(t testing.TB) string { return custom.binary(t) }

// TestClockBinary builds examples/maddy with the build tag
// daneguard_testclock once and returns its path: a maddy whose TLS report
// clock runs ahead of the real one by the duration in the file named by
// the environment variable DANEGUARD_TEST_CLOCK_FILE (see
// internal/service/testclock.go), so that tests can end a day at once.
func TestClockBinary(t testing.TB) string { return testClock.binary(t) }

// StockBinary builds maddy's own command, github.com/foxcpp/maddy/cmd/maddy
// at the version this module depends on (v0.8.2), once, and returns its
// path. It has maddy's built-in mx_auth policies only (its own `dane`), so
// that tests can compare daneguard with what maddy does without it.
func StockBinary(t testing.TB) string { return stock.binary(t) }

var (
	buildsMu sync.Mutex
	builds   = map[[2]string]*build{}
)

// BuildBinary builds the main package pkg (e.g. "./cmd/maddy") in the Go
// module at directory dir, once per test process, and returns the binary's
// path. It is for the maddy builds of nested modules (ports/maddy-0.9),
// whose tests pass the result as Options.Binary. The go command runs with
// the test's environment, so GOFLAGS and GOWORK apply to it as well.
func BuildBinary(t testing.TB, dir, pkg string) string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	key := [2]string{abs, pkg}
	buildsMu.Lock()
	b := builds[key]
	if b == nil {
		b = &build{dir: abs, pkg: pkg}
		builds[key] = b
	}
	buildsMu.Unlock()
	return b.binary(t)
}

// Options configures one maddy instance.
type Options struct {
	// Hostname is maddy's own host name (EHLO). Default "sender.test".
	Hostname string
	// SubmitAddr is where the test submits mail. Default 127.0.0.1:2525.
	SubmitAddr string
	// MXAuth is the body of the mx_auth block, e.g. "dane { }". Required.
	MXAuth string
	// Extra is appended to the configuration at top level (tables, ...).
	Extra string
	// RemoteExtra is added inside the target.remote block.
	RemoteExtra string
	// Debug enables maddy's debug log.
	Debug bool
	// Queue routes mail through target.queue instead of straight to
	// target.remote, as a production configuration does.
	Queue bool
	// Stock runs maddy's own binary (StockBinary) instead of the custom
	// one: `dane { }` in MXAuth is then maddy's built-in DANE policy.
	Stock bool
	// Binary, if set, is the maddy binary to run (for example one made by
	// BuildBinary); it takes precedence over Stock and the custom build.
	Binary string
	// NoConnReuse sets target.remote's conn_reuse_limit to 0 (instead of
	// 10), so that no outbound connection is pooled: every message opens a
	// new connection and runs every mx_auth check. (maddy v0.8.2 pools a
	// connection while it has carried no more than conn_reuse_limit
	// messages, so 1 still allows two.)
	NoConnReuse bool
	// Env is added to maddy's environment.
	Env []string
}

// Maddy is a running maddy process.
type Maddy struct {
	t      testing.TB
	Opts   Options
	Dir    string
	Config string
	cmd    *exec.Cmd
	logMu  sync.Mutex
	log    bytes.Buffer
	out    *os.File // read end of maddy's stdout and stderr
	outEOF bool
	done   chan struct{}
}

// Config renders the maddy.conf used for o.
func (o Options) render(stateDir string) string {
	target := "&remote"
	queue := ""
	if o.Queue {
		target = "&queue"
		queue = `
target.queue queue {
    target &remote
    max_tries 3
    bounce {
        default_destination {
            reject 550 5.0.0 "no bounces in tests"
        }
    }
}
`
	}
	reuse := 10
	if o.NoConnReuse {
		reuse = 0
	}
	debug := "no"
	if o.Debug {
		debug = "yes"
	}
	return fmt.Sprintf(`state_dir %s
runtime_dir %s
hostname %s
debug %s

%s

target.remote remote {
    hostname %s
    connect_timeout 10s
    command_timeout 30s
    conn_reuse_limit %d
%s
    mx_auth {
%s
    }
}
%s
smtp tcp://%s {
    hostname %s
    tls off
    deliver_to %s
}
`, stateDir, stateDir, o.Hostname, debug, o.Extra, o.Hostname, reuse, o.RemoteExtra, o.MXAuth, queue, o.SubmitAddr, o.Hostname, target)
}

// Start writes the configuration and starts maddy, waiting until it accepts
// SMTP connections. maddy is stopped on test cleanup.
func Start(t testing.TB, o Options) *Maddy {
	t.Helper()
	if o.Hostname == "" {
		o.Hostname = "sender.test"
	}
	if o.SubmitAddr == "" {
		o.SubmitAddr = "127.0.0.1:2525"
	}
	bin := o.Binary
	switch {
	case bin != "":
	case o.Stock:
		bin = StockBinary(t)
	default:
		bin = Binary(t)
	}
	dir := t.TempDir()
	m := &Maddy{t: t, Opts: o, Dir: dir, Config: filepath.Join(dir, "maddy.conf"), done: make(chan struct{})}
	if err := os.WriteFile(m.Config, []byte(o.render(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	m.launch(bin, o.Env)
	return m
}

// StartFile runs the custom maddy on an existing configuration file, with
// env added to its environment (maddy expands {env:NAME} in configuration
// files). submitAddr is the SMTP endpoint the configuration listens on;
// the call returns once it accepts connections.
func StartFile(t testing.TB, config, submitAddr string, env ...string) *Maddy {
	t.Helper()
	return StartFileBinary(t, Binary(t), config, submitAddr, env...)
}

// StartFileBinary is StartFile with the maddy binary bin.
func StartFileBinary(t testing.TB, bin, config, submitAddr string, env ...string) *Maddy {
	t.Helper()
	m := &Maddy{t: t, Opts: Options{SubmitAddr: submitAddr, Binary: bin}, Dir: t.TempDir(), Config: config, done: make(chan struct{})}
	m.launch(bin, env)
	return m
}

// launch starts bin on m.Config and waits for the submission endpoint.
func (m *Maddy) launch(bin string, env []string) {
	t := m.t
	t.Helper()
	m.cmd = exec.Command(bin, "--config", m.Config, "run", "--log", "stderr")
	m.cmd.Dir = m.Dir
	if len(env) != 0 {
		m.cmd.Env = append(os.Environ(), env...)
	}
	// maddy writes its log lines straight to stderr before it answers the
	// SMTP command they concern. Reading the pipe in Log as well as in the
	// background makes every line written before a reply visible to a test
	// that calls Log after receiving that reply.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	m.out = pr
	m.cmd.Stdout = pw
	m.cmd.Stderr = pw
	err = m.cmd.Start()
	pw.Close() // the child has its own copy
	if err != nil {
		pr.Close()
		t.Fatal(err)
	}
	go func() {
		for {
			m.logMu.Lock()
			m.pumpLocked(50 * time.Millisecond)
			eof := m.outEOF
			m.logMu.Unlock()
			if eof {
				return
			}
		}
	}()
	go func() {
		_ = m.cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(m.Stop)

	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.Opts.SubmitAddr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-m.done:
			t.Fatalf("maddy exited during start-up:\n%s", m.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("maddy did not start listening on %s:\n%s", m.Opts.SubmitAddr, m.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill ends maddy with SIGKILL, as a crash would, and waits for it.
func (m *Maddy) Kill() {
	if m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.done
}

// Stop terminates maddy (idempotent).
func (m *Maddy) Stop() {
	if m.cmd.Process == nil {
		return
	}
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Signal(os.Interrupt)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	if m.t.Failed() {
		m.t.Logf("maddy log:\n%s", m.Log())
	}
}

// Log returns everything maddy logged so far.
func (m *Maddy) Log() string {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	m.pumpLocked(time.Millisecond)
	return m.log.String()
}

// pumpLocked moves what maddy has written to its output pipe into m.log,
// waiting at most wait for a first chunk. m.logMu must be held.
func (m *Maddy) pumpLocked(wait time.Duration) {
	if m.outEOF {
		return
	}
	buf := make([]byte, 64*1024)
	for {
		_ = m.out.SetReadDeadline(time.Now().Add(wait))
		n, err := m.out.Read(buf)
		m.log.Write(buf[:n])
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				// EOF: maddy has exited and closed its end.
				m.outEOF = true
				m.out.Close()
			}
			return
		}
		// Take what else is there, without waiting for more.
		wait = time.Millisecond
	}
}

// Entry is one structured maddy log line: "name: msg\t{json}".
type Entry struct {
	Module string
	Msg    string
	Fields map[string]interface{}
}

// Entries parses the structured log lines of module (e.g. "daneguard")
// with message msg.
func (m *Maddy) Entries(module, msg string) []Entry {
	var out []Entry
	for _, line := range strings.Split(m.Log(), "\n") {
		e, ok := parseLine(line)
		if ok && e.Module == module && e.Msg == msg {
			out = append(out, e)
		}
	}
	return out
}

func parseLine(line string) (Entry, bool) {
	// maddy's stderr output: "<time> [debug] module: msg\t{json}" — the
	// timestamp may be absent.
	tab := strings.IndexByte(line, '\t')
	if tab < 0 {
		return Entry{}, false
	}
	head, js := line[:tab], line[tab+1:]
	fields := map[string]interface{}{}
	if err := json.Unmarshal([]byte(js), &fields); err != nil {
		return Entry{}, false
	}
	colon := strings.LastIndex(head, ": ")
	if colon < 0 {
		return Entry{}, false
	}
	msg := head[colon+2:]
	mod := head[:colon]
	if sp := strings.LastIndexByte(mod, ' '); sp >= 0 {
		mod = mod[sp+1:]
	}
	return Entry{Module: mod, Msg: msg, Fields: fields}, true
}

// WaitEntries waits until at least n entries of module/msg were logged.
func (m *Maddy) WaitEntries(ctx context.Context, module, msg string, n int) []Entry {
	m.t.Helper()
	for {
		es := m.Entries(module, msg)
		if len(es) >= n {
			return es
		}
		select {
		case <-ctx.Done():
			m.t.Fatalf("timed out waiting for %d %q/%q log entries (have %d):\n%s", n, module, msg, len(es), m.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// SendResult is the outcome of one submission.
type SendResult struct {
	Err  error
	Code int    // SMTP code of the failure, 0 on success
	Enh  string // enhanced code "x.y.z" of the failure
	Text string
}

// Send submits a message from from to rcpts and reports the server's
// verdict. Errors of the test plumbing (cannot connect) fail the test.
func (m *Maddy) Send(from string, rcpts []string, body string) SendResult {
	m.t.Helper()
	c, err := smtp.Dial(m.Opts.SubmitAddr)
	if err != nil {
		m.t.Fatalf("connecting to maddy: %v", err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		m.t.Fatalf("EHLO: %v", err)
	}
	msg := "From: <" + from + ">\r\nTo: <" + strings.Join(rcpts, ">, <") + ">\r\nSubject: daneguard test\r\nMessage-ID: <" + fmt.Sprint(time.Now().UnixNano()) + "@client.test>\r\n\r\n" + body + "\r\n"
	err = c.SendMail(from, rcpts, strings.NewReader(msg))
	if err == nil {
		_ = c.Quit()
		return SendResult{}
	}
	res := SendResult{Err: err, Text: err.Error()}
	if se, ok := err.(*smtp.SMTPError); ok {
		res.Code = se.Code
		res.Enh = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		res.Text = se.Message
	}
	return res
}
