// Package stsbed is an MTA-STS policy server for tests: a real HTTPS server
// on a loopback address, port 443 by default, answering for
// mta-sts.<domain> of any number of domains (chosen by SNI), each with a
// certificate issued by a test CA (package pki).
//
// Each domain is a Site whose answer the test controls: a policy body, an
// HTTP status, a redirect, a wrong media type, an oversized body, or
// "down" (the connection is dropped without an answer). Every request for
// the policy is counted, so tests can tell a cached policy from a fetch.
//
// Point DNS (dnsbed) at the server with an A record for mta-sts.<domain>;
// the fetcher under test then reaches it by name, exactly as in
// production. Tests listen only on 127.0.0.0/8 (inside netns).
package stsbed

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/pki"
)

// WellKnownPath is where RFC 8461 §3.2 puts the policy.
const WellKnownPath = "/.well-known/mta-sts.txt"

// Policy renders a policy body (RFC 8461 §3.2) with CRLF line ends.
func Policy(mode string, maxAge int, mx ...string) string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: " + mode + "\r\n")
	for _, m := range mx {
		b.WriteString("mx: " + m + "\r\n")
	}
	fmt.Fprintf(&b, "max_age: %d\r\n", maxAge)
	return b.String()
}

// Response is what a Site answers.
type Response struct {
	// Status is the HTTP status; 0 means 200.
	Status int
	// ContentType; "" means "text/plain; charset=utf-8".
	ContentType string
	// Location is sent with 3xx statuses.
	Location string
	// Body is the response body.
	Body []byte
	// Down drops the connection without any answer.
	Down bool
}

// Server is a running policy server.
type Server struct {
	t     testing.TB
	ca    *pki.CA
	ln    net.Listener
	srv   *http.Server
	mu    sync.Mutex
	sites map[string]*Site // by policy host name, mta-sts.<domain>
	done  chan struct{}
}

// Site is the policy host of one domain.
type Site struct {
	Domain string
	Host   string // mta-sts.<domain>
	Leaf   *pki.Leaf
	mu     sync.Mutex
	resp   Response
	hits   atomic.Int64
}

// Start listens on addr (e.g. "127.0.0.5:443") and serves until the test
// ends. Certificates for the sites are issued by ca.
func Start(t testing.TB, addr string, ca *pki.CA) *Server {
	t.Helper()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Fatalf("stsbed: %s is not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("stsbed: %v", err)
	}
	s := &Server{t: t, ca: ca, ln: ln, sites: map[string]*Site{}, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serve),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
		// HTTP/1.1 only: "down" hijacks the connection.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: s.certificate,
		},
	}
	go func() {
		defer close(s.done)
		_ = s.srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		_ = s.srv.Close()
		<-s.done
	})
	return s
}

// Addr returns the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// IP returns the listening IP address, for A records.
func (s *Server) IP() string { return s.ln.Addr().(*net.TCPAddr).IP.String() }

// Site returns the site of domain, creating it (with a certificate for
// mta-sts.<domain> from the server's CA, and a 404 answer) if needed.
func (s *Server) Site(domain string) *Site {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	host := "mta-sts." + domain
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.sites[host]; ok {
		return st
	}
	st := &Site{Domain: domain, Host: host, resp: Response{Status: http.StatusNotFound}}
	st.Leaf = s.ca.Leaf(s.t, pki.LeafOptions{DNSNames: []string{host}})
	s.sites[host] = st
	return st
}

// SetCertificate replaces the site's certificate (e.g. with one for another
// name or from another CA).
func (st *Site) SetCertificate(l *pki.Leaf) {
	st.mu.Lock()
	st.Leaf = l
	st.mu.Unlock()
}

// SetPolicy makes the site serve body as a valid policy answer.
func (st *Site) SetPolicy(body string) { st.SetResponse(Response{Body: []byte(body)}) }

// SetResponse sets the site's answer.
func (st *Site) SetResponse(r Response) {
	st.mu.Lock()
	st.resp = r
	st.mu.Unlock()
}

// SetDown makes the site drop connections (true) or answer again (false,
// with the last response set).
func (st *Site) SetDown(down bool) {
	st.mu.Lock()
	st.resp.Down = down
	st.mu.Unlock()
}

// Fetches returns how many policy requests the site received (answered or
// dropped).
func (st *Site) Fetches() int { return int(st.hits.Load()) }

func (s *Server) site(host string) *Site {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sites[strings.ToLower(host)]
}

func (s *Server) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	st := s.site(hello.ServerName)
	if st == nil {
		return nil, fmt.Errorf("stsbed: no site for SNI %q", hello.ServerName)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.Leaf.TLSCertificate()
	return &c, nil
}

var errDown = errors.New("stsbed: site is down")

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	st := s.site(host)
	if st == nil || r.URL.Path != WellKnownPath {
		http.NotFound(w, r)
		return
	}
	st.hits.Add(1)
	st.mu.Lock()
	resp := st.resp
	st.mu.Unlock()
	if resp.Down {
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic(errDown)
		}
		c, _, err := hj.Hijack()
		if err == nil {
			_ = c.Close()
		}
		return
	}
	ct := resp.ContentType
	if ct == "" {
		ct = "text/plain; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	if resp.Location != "" {
		w.Header().Set("Location", resp.Location)
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write(resp.Body)
}
