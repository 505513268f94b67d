// Package redisbed runs a real redis-server (the Debian package, installed
// by scripts/deps.sh) for tests: on a free loopback port, with its working
// directory in the test's temporary directory, and stopped when the test
// ends. A test can stop and restart the server to see what the code under
// test does while Redis is gone.
//
// By default the server persists nothing (no RDB snapshots, no AOF), so a
// restart starts empty; Options.AOF turns on the append-only file with
// fsync on every write, so that a restart keeps every acknowledged write.
//
// Tests that need the server call Start; when redis-server is not
// installed they are skipped with a message saying how to install it.
package redisbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binary is the server program looked up in PATH.
const Binary = "redis-server"

// Options configures a Server.
type Options struct {
	// AOF keeps an append-only file (appendfsync always) so that data
	// survives Restart.
	AOF bool
	// Password, if set, is required from clients (requirepass).
	Password string
}

// Server is one running (or stopped) redis-server.
type Server struct {
	t    testing.TB
	opts Options
	dir  string
	port int

	mu  sync.Mutex
	cmd *exec.Cmd
	out *syncBuf
}

// Start starts a server for t, or skips t when redis-server is absent. The
// server is stopped by t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		t.Skip("redis-server not installed: run scripts/deps.sh (apt-get install redis-server)")
	}
	s := &Server{t: t, opts: opts, dir: t.TempDir()}
	port, err := freePort()
	if err != nil {
		t.Fatalf("redisbed: %v", err)
	}
	s.port = port
	t.Cleanup(func() { s.Stop() })
	if err := s.start(); err != nil {
		t.Fatalf("redisbed: %v", err)
	}
	return s
}

// Addr is the server's host:port on loopback.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the redis:// URL of database db.
func (s *Server) URL(db int) string { return fmt.Sprintf("redis://%s/%d", s.Addr(), db) }

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) args() []string {
	a := []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(s.port),
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--protected-mode", "yes",
		"--logfile", "",
	}
	if s.opts.AOF {
		a = append(a, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		a = append(a, "--appendonly", "no")
	}
	if s.opts.Password != "" {
		a = append(a, "--requirepass", s.opts.Password)
	}
	return a
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	out := &syncBuf{}
	cmd := exec.Command(Binary, s.args()...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", Binary, err)
	}
	s.cmd, s.out = cmd, out
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(s.Addr(), s.opts.Password); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			s.cmd = nil
			return fmt.Errorf("%s did not answer on %s: %v; output:\n%s", Binary, s.Addr(), err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping sends a PING in the RESP protocol and waits for +PONG.
func ping(addr, password string) error {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	if password != "" {
		fmt.Fprintf(c, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(password), password)
		if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "+OK") {
			return fmt.Errorf("AUTH: %q %v", l, err)
		}
	}
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	l, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(l, "+PONG") {
		return fmt.Errorf("unexpected reply %q", l)
	}
	return nil
}

// Stop kills the server (SIGKILL: like a crash or a network cut, nothing
// is flushed beyond what AOF already synced) and waits for it. Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts a stopped server again on the same port and directory.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("redisbed: restart: %v", err)
	}
}

// Running reports whether the server process is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Do runs one command on the server through a fresh connection and
// returns the first line of the reply (e.g. "+OK", ":3", "$5"), for tests
// that want to look at the server without the client under test.
func (s *Server) Do(ctx context.Context, args ...string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	}
	var b strings.Builder
	if s.opts.Password != "" {
		args = append([]string{"AUTH", s.opts.Password}, args...)
		// AUTH is sent as its own command below.
	}
	write := func(cmd []string) {
		fmt.Fprintf(&b, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	n := 1
	if s.opts.Password != "" {
		write(args[:2])
		args = args[2:]
		n = 2
	}
	write(args)
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	var line string
	for range n {
		if line, err = r.ReadString('\n'); err != nil {
			return "", err
		}
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// Dir is the server's working directory (where the AOF lives).
func (s *Server) Dir() string { return filepath.Clean(s.dir) }

// Output is what the server printed so far, for failure messages.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// syncBuf collects the server output; exec writes it from its own
// goroutine.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
