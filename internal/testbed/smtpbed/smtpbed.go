package smtpbed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// DefaultHostname is the name a server uses in its greeting when
// Options.Hostname is empty.
const DefaultHostname = "smtpbed.test"

// DefaultAddr is the listening address used when Options.Addr is empty: an
// ephemeral port on 127.0.0.1.
const DefaultAddr = "127.0.0.1:0"

// shutdownGuard bounds how long Cleanup waits for connection handlers after
// closing every connection. Handlers return as soon as their socket is
// closed, so reaching it means a bug; it only keeps a broken test from
// hanging forever and is not a timing assertion.
const shutdownGuard = 30 * time.Second

// Reply is an SMTP reply a server sends instead of accepting a command.
type Reply struct {
	// Code is the three-digit reply code, 400-599 (RFC 5321 §4.2).
	Code int
	// EnhancedCode is the RFC 3463 status code, e.g. {4, 7, 0}. The zero
	// value sends the generic class code (Code/100).0.0.
	EnhancedCode [3]int
	// Message is the human-readable text. Empty means "Rejected by smtpbed".
	Message string
}

func (r *Reply) validate(stage string) error {
	if r == nil {
		return nil
	}
	if r.Code < 400 || r.Code > 599 {
		return fmt.Errorf("smtpbed: %s reply code %d is not a 4xx or 5xx failure code", stage, r.Code)
	}
	if r.EnhancedCode != [3]int{} && r.EnhancedCode[0] != r.Code/100 {
		return fmt.Errorf("smtpbed: %s enhanced code %v does not match reply class %d", stage, r.EnhancedCode, r.Code/100)
	}
	return nil
}

func (r *Reply) err() error {
	ec := smtp.EnhancedCode(r.EnhancedCode)
	if r.EnhancedCode == [3]int{} {
		ec = smtp.EnhancedCodeNotSet
	}
	msg := r.Message
	if msg == "" {
		msg = "Rejected by smtpbed"
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: ec, Message: msg}
}

// Faults makes a server misbehave. The zero value is a well-behaved server.
type Faults struct {
	// FailHandshake advertises STARTTLS (even without Options.TLS) and
	// aborts every TLS handshake after reading the client's ClientHello,
	// so the SNI is still recorded.
	FailHandshake bool
	// CloseAfterEHLO answers EHLO (or HELO) normally and then closes the
	// connection without replying to the client's next command.
	CloseAfterEHLO bool
	// RejectMail, RejectRcpt and RejectData, when set, are sent in reply to
	// MAIL FROM, to every RCPT TO, and after the message data has been
	// received, respectively. A rejected message is not recorded.
	RejectMail, RejectRcpt, RejectData *Reply
}

func (f Faults) validate() error {
	if err := f.RejectMail.validate("MAIL"); err != nil {
		return err
	}
	if err := f.RejectRcpt.validate("RCPT"); err != nil {
		return err
	}
	return f.RejectData.validate("DATA")
}

// Options configures a server started by Start.
type Options struct {
	// Addr is the TCP address to listen on. It must be a loopback IP
	// address with a port, e.g. "127.0.0.10:25" (inside a netns) or
	// "127.0.0.1:0". Empty means DefaultAddr.
	Addr string
	// Hostname is the name announced in the 220 greeting.
	Hostname string
	// TLS is the server-side TLS configuration used for STARTTLS. Nil means
	// STARTTLS is not advertised (unless Faults.FailHandshake is set). The
	// configuration is cloned; its GetConfigForClient and VerifyConnection
	// hooks, if any, keep working.
	TLS *tls.Config
	// EnableREQUIRETLS advertises the RFC 8689 REQUIRETLS extension on
	// TLS-protected connections and records the MAIL parameter.
	EnableREQUIRETLS bool
	// Faults selects the initial fault modes; see Server.SetFaults.
	Faults Faults
}

// TLSInfo describes the TLS state of a connection or message.
type TLSInfo struct {
	// Used reports whether a TLS handshake completed.
	Used bool
	// Version is the negotiated protocol version (tls.VersionTLS13, ...).
	Version uint16
	// CipherSuite is the negotiated cipher suite.
	CipherSuite uint16
	// ServerName is the SNI the client sent, "" if none.
	ServerName string
}

// VersionName returns the protocol version as text, e.g. "TLS 1.3", or ""
// if TLS was not used.
func (i TLSInfo) VersionName() string {
	if !i.Used {
		return ""
	}
	return tls.VersionName(i.Version)
}

// Message is a message a server accepted. Callers must not modify the
// slices it holds.
type Message struct {
	// ConnID is the ID of the connection the message arrived on (see
	// ConnInfo.ID).
	ConnID int
	// Helo is the name the client gave in its last EHLO or HELO.
	Helo string
	// From is the MAIL FROM address ("" for the null reverse-path).
	From string
	// To lists the RCPT TO addresses in the order given.
	To []string
	// Data is the message content as received, dot-unstuffed, with CRLF
	// line endings.
	Data []byte
	// RequireTLS reports whether MAIL FROM carried the REQUIRETLS
	// parameter (only possible with Options.EnableREQUIRETLS).
	RequireTLS bool
	// TLS is the TLS state of the transaction.
	TLS TLSInfo
	// Received is when the server accepted the message (the end of DATA,
	// just before its 250 reply).
	Received time.Time
}

// ConnInfo describes one accepted connection. Its fields are final once
// Closed is true; WaitConnections waits for that.
type ConnInfo struct {
	// ID numbers connections from 1 in the order they were accepted.
	ID int
	// RemoteAddr is the client's address.
	RemoteAddr string
	// Accepted is when the server accepted the TCP connection.
	Accepted time.Time
	// Helo is the name the client gave in its last EHLO or HELO.
	Helo string
	// StartTLS reports whether the client issued STARTTLS and began a
	// handshake (the server read its ClientHello).
	StartTLS bool
	// ServerName is the SNI from the ClientHello, "" if none was sent.
	ServerName string
	// HandshakeFailed reports that a handshake began but did not complete,
	// whether the server (Faults.FailHandshake, no usable certificate) or
	// the client (certificate rejected) aborted it.
	HandshakeFailed bool
	// TLS is the negotiated state; TLS.Used is true only if the handshake
	// completed.
	TLS TLSInfo
	// Messages counts the messages accepted on this connection.
	Messages int
	// Closed reports whether the connection has ended.
	Closed bool
	// Events is a short transcript of what happened, for test failure
	// messages: "EHLO x", "STARTTLS sni=x", "TLS TLS 1.3", "MAIL <a>", ...
	Events []string
}

// Server is a running SMTP server. Its methods are safe for concurrent use.
type Server struct {
	t        testing.TB
	opts     Options
	smtp     *smtp.Server
	ln       *listener
	userTLS  *tls.Config
	serveErr chan error

	logMu   sync.Mutex
	stopped bool // set at the end of shutdown; later log lines are dropped

	mu      sync.Mutex
	faults  Faults
	conns   []*connState
	msgs    []Message
	closing bool
	changed chan struct{} // closed and replaced whenever state changes
}

// Start starts a server and registers its shutdown with t.Cleanup. It fails
// the test if the options are invalid or the address cannot be bound.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := start(t, opts)
	if err != nil {
		t.Fatalf("smtpbed: %v", err)
	}
	t.Cleanup(s.shutdown)
	return s
}

func start(t testing.TB, opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.Hostname == "" {
		opts.Hostname = DefaultHostname
	}
	if err := checkLoopback(opts.Addr); err != nil {
		return nil, err
	}
	if err := opts.Faults.validate(); err != nil {
		return nil, err
	}
	nl, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		t:        t,
		opts:     opts,
		faults:   opts.Faults,
		changed:  make(chan struct{}),
		serveErr: make(chan error, 1),
	}
	if opts.TLS != nil {
		s.userTLS = opts.TLS.Clone()
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = opts.Hostname
	srv.EnableREQUIRETLS = opts.EnableREQUIRETLS
	srv.ErrorLog = tbLogger{s}
	if opts.TLS != nil || opts.Faults.FailHandshake {
		// go-smtp advertises STARTTLS whenever TLSConfig is non-nil. The
		// real configuration is chosen per handshake so that the SNI and
		// the connection can be recorded and faults applied.
		srv.TLSConfig = &tls.Config{GetConfigForClient: s.configForClient}
	}
	s.smtp = srv
	s.ln = &listener{Listener: nl, s: s}
	go func() { s.serveErr <- srv.Serve(s.ln) }()
	return s, nil
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %v", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("address %q: tests may listen only on a loopback IP address (127.0.0.0/8 or ::1)", addr)
	}
	return nil
}

// Addr returns the address the server listens on, "host:port".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port returns the TCP port the server listens on.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Hostname returns the name announced in the greeting.
func (s *Server) Hostname() string { return s.opts.Hostname }

// SetFaults replaces the fault modes for commands that arrive from now on.
// STARTTLS is advertised only if Options.TLS or Options.Faults.FailHandshake
// was set at Start; enabling FailHandshake later on a server without TLS
// has no effect. It returns an error, and changes nothing, if a Reply is
// invalid.
func (s *Server) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
	return nil
}

func (s *Server) currentFaults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Messages returns the messages accepted so far, in the order their DATA
// completed.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitMessages waits until at least n messages have been accepted and
// returns all accepted messages. If ctx ends first it returns those
// received so far and an error saying how many arrived.
func (s *Server) WaitMessages(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		msgs := append([]Message(nil), s.msgs...)
		ch := s.changed
		s.mu.Unlock()
		if len(msgs) >= n {
			return msgs, nil
		}
		select {
		case <-ctx.Done():
			return msgs, fmt.Errorf("smtpbed: %d of %d messages arrived at %s: %w", len(msgs), n, s.Addr(), ctx.Err())
		case <-ch:
		}
	}
}

// ConnectionCount returns the number of connections accepted so far.
func (s *Server) ConnectionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Connections returns a snapshot of every connection accepted so far, open
// or closed, in accept order.
func (s *Server) Connections() []ConnInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

// WaitConnections waits until at least n connections have been accepted
// and have ended, so that their ConnInfo is final, and returns a snapshot
// of all connections. If ctx ends first it returns the current snapshot and
// an error.
func (s *Server) WaitConnections(ctx context.Context, n int) ([]ConnInfo, error) {
	for {
		s.mu.Lock()
		closed := 0
		for _, c := range s.conns {
			if c.info.Closed {
				closed++
			}
		}
		snap := s.snapshotLocked()
		ch := s.changed
		s.mu.Unlock()
		if closed >= n {
			return snap, nil
		}
		select {
		case <-ctx.Done():
			return snap, fmt.Errorf("smtpbed: %d of %d connections to %s ended: %w", closed, n, s.Addr(), ctx.Err())
		case <-ch:
		}
	}
}

func (s *Server) snapshotLocked() []ConnInfo {
	out := make([]ConnInfo, len(s.conns))
	for i, c := range s.conns {
		out[i] = c.info
		out[i].Events = append([]string(nil), c.info.Events...)
	}
	return out
}

// notifyLocked wakes every waiter. s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// update runs f on a connection's state under the lock and wakes waiters.
func (s *Server) update(c *connState, f func(*ConnInfo)) {
	s.mu.Lock()
	f(&c.info)
	s.notifyLocked()
	s.mu.Unlock()
}

func (s *Server) event(c *connState, format string, args ...any) {
	s.update(c, func(i *ConnInfo) { i.Events = append(i.Events, fmt.Sprintf(format, args...)) })
}

// shutdown closes the listener and every connection, then waits for the
// server's goroutines so that nothing logs after the test ends.
func (s *Server) shutdown() {
	defer func() {
		s.logMu.Lock()
		s.stopped = true
		s.logMu.Unlock()
	}()
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()

	done := make(chan error, 1)
	go func() { done <- s.smtp.Shutdown(context.Background()) }()
	// Shutdown closes the listener only if Serve has registered it yet.
	s.ln.Close()

	s.mu.Lock()
	open := make([]*trackedConn, 0, len(s.conns))
	for _, c := range s.conns {
		open = append(open, c.conn)
	}
	s.mu.Unlock()
	for _, c := range open {
		c.Close()
	}

	guard := time.NewTimer(shutdownGuard)
	defer guard.Stop()
	select {
	case err := <-done:
		if err != nil {
			s.t.Errorf("smtpbed: shutting down %s: %v", s.Addr(), err)
		}
	case <-guard.C:
		s.t.Errorf("smtpbed: connection handlers of %s did not stop after their sockets were closed", s.Addr())
		return
	}
	select {
	case err := <-s.serveErr:
		// The accept loop may see the closed listener before go-smtp
		// notices the shutdown; that is the expected way for it to end.
		if err != nil && !errors.Is(err, net.ErrClosed) {
			s.t.Errorf("smtpbed: serving %s: %v", s.Addr(), err)
		}
	case <-guard.C:
		s.t.Errorf("smtpbed: accept loop of %s did not stop", s.Addr())
	}
}

// tbLogger forwards go-smtp's internal error log to the test log while the
// server runs.
type tbLogger struct{ s *Server }

func (l tbLogger) Printf(format string, v ...any) {
	l.log(fmt.Sprintf(format, v...))
}

func (l tbLogger) Println(v ...any) {
	l.log(fmt.Sprint(v...))
}

func (l tbLogger) log(msg string) {
	l.s.logMu.Lock()
	defer l.s.logMu.Unlock()
	// A handler may still be unwinding when the test has ended; testing
	// forbids logging then.
	if !l.s.stopped {
		l.s.t.Logf("smtpbed %s: %s", l.s.Addr(), msg)
	}
}

// connState is the server's record of one connection.
type connState struct {
	conn *trackedConn
	info ConnInfo // guarded by Server.mu
}

// listener wraps the accepted connections so the server can observe them.
type listener struct {
	net.Listener
	s *Server

	closeOnce sync.Once
	closeErr  error
}

// Close closes the listener once; both go-smtp's Shutdown and the server's
// own cleanup call it.
func (l *listener) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.Listener.Close() })
	return l.closeErr
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		s := l.s
		tc := &trackedConn{Conn: c, s: s}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			continue
		}
		tc.st = &connState{conn: tc, info: ConnInfo{ID: len(s.conns) + 1, RemoteAddr: c.RemoteAddr().String(), Accepted: time.Now()}}
		s.conns = append(s.conns, tc.st)
		s.notifyLocked()
		s.mu.Unlock()
		return tc, nil
	}
}

// trackedConn is the raw TCP connection as go-smtp sees it. After STARTTLS
// go-smtp wraps it in a *tls.Conn, so reads and writes of TLS records pass
// through it too.
type trackedConn struct {
	net.Conn
	s  *Server
	st *connState

	// dropOnRead makes the next Read close the connection
	// (Faults.CloseAfterEHLO).
	dropOnRead atomic.Bool
	// handshaking is set when a ClientHello was read and cleared when the
	// handshake is known to have failed.
	handshaking atomic.Bool
	closeOnce   sync.Once
}

func (c *trackedConn) Read(p []byte) (int, error) {
	if c.dropOnRead.Load() {
		c.Close()
		return 0, io.EOF
	}
	return c.Conn.Read(p)
}

func (c *trackedConn) Write(p []byte) (int, error) {
	// Once a handshake has started, everything the server writes on the
	// raw connection is a TLS record (content types 20-23) unless the
	// handshake failed: go-smtp then answers in plaintext, with a 5xx
	// reply, on the unencrypted connection.
	if len(p) > 0 && (p[0] < 20 || p[0] > 23) && c.handshaking.CompareAndSwap(true, false) {
		c.s.update(c.st, func(i *ConnInfo) {
			i.HandshakeFailed = true
			i.TLS.Used = false
			i.Events = append(i.Events, "TLS handshake failed")
		})
	}
	return c.Conn.Write(p)
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.s.update(c.st, func(i *ConnInfo) { i.Closed = true })
	})
	return err
}

var errInjectedHandshakeFailure = errors.New("smtpbed: TLS handshake failure injected by Faults.FailHandshake")

// configForClient runs for every ClientHello. It records the attempt and the
// SNI, applies FailHandshake, and returns the configuration to use with a
// hook that records the negotiated parameters.
func (s *Server) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	tc, ok := hello.Conn.(*trackedConn)
	if !ok {
		// Cannot happen: go-smtp hands the accepted connection to
		// tls.Server unchanged.
		return nil, fmt.Errorf("smtpbed: unexpected connection type %T", hello.Conn)
	}
	tc.handshaking.Store(true)
	s.update(tc.st, func(i *ConnInfo) {
		i.StartTLS = true
		i.ServerName = hello.ServerName
		i.Events = append(i.Events, fmt.Sprintf("STARTTLS sni=%q", hello.ServerName))
	})
	if s.currentFaults().FailHandshake {
		return nil, errInjectedHandshakeFailure
	}
	if s.userTLS == nil {
		return nil, errors.New("smtpbed: no TLS configuration")
	}
	cfg := s.userTLS
	if cfg.GetConfigForClient != nil {
		c, err := cfg.GetConfigForClient(hello)
		if err != nil {
			return nil, err
		}
		if c != nil {
			cfg = c
		}
	}
	cfg = cfg.Clone()
	cfg.GetConfigForClient = nil
	userVerify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if userVerify != nil {
			if err := userVerify(cs); err != nil {
				return err
			}
		}
		s.update(tc.st, func(i *ConnInfo) {
			i.TLS = TLSInfo{Used: true, Version: cs.Version, CipherSuite: cs.CipherSuite, ServerName: cs.ServerName}
			i.Events = append(i.Events, "TLS "+tls.VersionName(cs.Version))
		})
		return nil
	}
	return cfg, nil
}

func connOf(c *smtp.Conn) *trackedConn {
	nc := c.Conn()
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	tc, _ := nc.(*trackedConn)
	return tc
}

// newSession runs for every EHLO/HELO.
func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	tc := connOf(c)
	if tc == nil {
		return nil, fmt.Errorf("smtpbed: unexpected connection type %T", c.Conn())
	}
	var ti TLSInfo
	if cs, ok := c.TLSConnectionState(); ok {
		ti = TLSInfo{Used: true, Version: cs.Version, CipherSuite: cs.CipherSuite, ServerName: cs.ServerName}
	}
	helo := c.Hostname()
	closeAfter := s.currentFaults().CloseAfterEHLO
	s.update(tc.st, func(i *ConnInfo) {
		i.Helo = helo
		i.Events = append(i.Events, "EHLO "+helo)
		if closeAfter {
			i.Events = append(i.Events, "closing after EHLO")
		}
	})
	if closeAfter {
		tc.dropOnRead.Store(true)
	}
	return &session{s: s, conn: tc.st, helo: helo, tls: ti}, nil
}

// session holds one mail transaction. go-smtp calls it from the
// connection's goroutine only.
type session struct {
	s    *Server
	conn *connState
	helo string
	tls  TLSInfo

	from       string
	requireTLS bool
	to         []string
}

func (ss *session) Reset() {
	ss.from, ss.requireTLS, ss.to = "", false, nil
}

func (ss *session) Logout() error { return nil }

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if r := ss.s.currentFaults().RejectMail; r != nil {
		ss.s.event(ss.conn, "MAIL <%s> rejected %d", from, r.Code)
		return r.err()
	}
	ss.s.event(ss.conn, "MAIL <%s>", from)
	ss.from, ss.to = from, nil
	ss.requireTLS = opts != nil && opts.RequireTLS
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if r := ss.s.currentFaults().RejectRcpt; r != nil {
		ss.s.event(ss.conn, "RCPT <%s> rejected %d", to, r.Code)
		return r.err()
	}
	ss.s.event(ss.conn, "RCPT <%s>", to)
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		ss.s.event(ss.conn, "DATA failed: %v", err)
		return err
	}
	if rep := ss.s.currentFaults().RejectData; rep != nil {
		ss.s.event(ss.conn, "DATA %d bytes rejected %d", len(data), rep.Code)
		return rep.err()
	}
	m := Message{
		Helo:       ss.helo,
		From:       ss.from,
		To:         append([]string(nil), ss.to...),
		Data:       data,
		RequireTLS: ss.requireTLS,
		TLS:        ss.tls,
		Received:   time.Now(),
	}
	s := ss.s
	s.mu.Lock()
	m.ConnID = ss.conn.info.ID
	ss.conn.info.Messages++
	ss.conn.info.Events = append(ss.conn.info.Events, fmt.Sprintf("DATA %d bytes accepted", len(data)))
	s.msgs = append(s.msgs, m)
	s.notifyLocked()
	s.mu.Unlock()
	return nil
}
