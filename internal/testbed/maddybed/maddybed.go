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
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// repoRoot finds the module root from this source file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Binary builds examples/maddy once and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "daneguard-maddy-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "maddy")
		cmd := exec.Command("go", "build", "-o", buildPath, "./examples/maddy")
		cmd.Dir = repoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./examples/maddy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
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
    conn_reuse_limit 10
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
`, stateDir, stateDir, o.Hostname, debug, o.Extra, o.Hostname, o.RemoteExtra, o.MXAuth, queue, o.SubmitAddr, o.Hostname, target)
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
	bin := Binary(t)
	dir := t.TempDir()
	m := &Maddy{t: t, Opts: o, Dir: dir, Config: filepath.Join(dir, "maddy.conf"), done: make(chan struct{})}
	if err := os.WriteFile(m.Config, []byte(o.render(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	m.launch(bin, nil)
	return m
}

// StartFile runs the custom maddy on an existing configuration file, with
// env added to its environment (maddy expands {env:NAME} in configuration
// files). submitAddr is the SMTP endpoint the configuration listens on;
// the call returns once it accepts connections.
func StartFile(t testing.TB, config, submitAddr string, env ...string) *Maddy {
	t.Helper()
	m := &Maddy{t: t, Opts: Options{SubmitAddr: submitAddr}, Dir: t.TempDir(), Config: config, done: make(chan struct{})}
	m.launch(Binary(t), env)
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
	pr, pw := io.Pipe()
	m.cmd.Stdout = pw
	m.cmd.Stderr = pw
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			m.logMu.Lock()
			m.log.Write(sc.Bytes())
			m.log.WriteByte('\n')
			m.logMu.Unlock()
		}
	}()
	go func() {
		_ = m.cmd.Wait()
		pw.Close()
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
	return m.log.String()
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
	defer m.settle(m.outcomes())
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

// outcomes counts the log lines maddy writes when it has decided about a
// submission (accepted, or a recipient or data refused).
func (m *Maddy) outcomes() int {
	n := 0
	for _, line := range strings.Split(m.Log(), "\n") {
		if strings.Contains(line, "smtp: accepted") || strings.Contains(line, "smtp: RCPT error") || strings.Contains(line, "smtp: DATA error") {
			n++
		}
	}
	return n
}

// settle waits until the log shows more outcomes than before: maddy writes
// its log lines before it replies, but they reach the test through a pipe,
// so without this a test could look at the log before they arrive.
func (m *Maddy) settle(before int) {
	deadline := time.Now().Add(10 * time.Second)
	for m.outcomes() <= before && time.Now().Before(deadline) {
		select {
		case <-m.done:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}
