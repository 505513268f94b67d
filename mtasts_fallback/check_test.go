package mtastsfallback

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// handshake runs a real TLS handshake on loopback against a server with
// cert, as an opportunistic SMTP client would after STARTTLS (no
// verification during the handshake), and returns the client's state.
func handshake(t *testing.T, cert tls.Certificate, serverName string, maxVersion uint16) tls.ConnectionState {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, MaxVersion: maxVersion}
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- tls.Server(c, srvCfg).Handshake()
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, &tls.Config{ServerName: serverName, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10})
	if err := c.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return c.ConnectionState()
}

func TestCheckConn(t *testing.T) {
	ca := newCA(t, "root")
	inter := ca.intermediate(t, "intermediate")
	constrained := ca.intermediate(t, "constrained", "example.org")
	other := newCA(t, "other root")
	now := time.Now()
	enforce := &Policy{Mode: ModeEnforce, MaxAge: 86400, MX: []string{"mx.example.com", "*.example.net"}, Domain: "example.com"}

	good := handshake(t, ca.leaf(t, []string{"mx.example.com"}, time.Time{}, time.Time{}), "mx.example.com", 0)
	viaInter := handshake(t, inter.leaf(t, []string{"mx.example.com"}, time.Time{}, time.Time{}), "mx.example.com", 0)
	wildcard := handshake(t, ca.leaf(t, []string{"*.example.net"}, time.Time{}, time.Time{}), "a.example.net", 0)
	wrongName := handshake(t, ca.leaf(t, []string{"other.example.com"}, time.Time{}, time.Time{}), "mx.example.com", 0)
	expired := handshake(t, ca.leaf(t, []string{"mx.example.com"}, now.Add(-48*time.Hour), now.Add(-time.Hour)), "mx.example.com", 0)
	untrusted := handshake(t, other.leaf(t, []string{"mx.example.com"}, time.Time{}, time.Time{}), "mx.example.com", 0)
	nameConstraint := handshake(t, constrained.leaf(t, []string{"mx.example.com"}, time.Time{}, time.Time{}), "mx.example.com", 0)
	tls13 := handshake(t, ca.leaf(t, []string{"mx.example.com"}, time.Time{}, time.Time{}), "mx.example.com", tls.VersionTLS13)
	tls12 := handshake(t, ca.leaf(t, []string{"mx.example.com"}, time.Time{}, time.Time{}), "mx.example.com", tls.VersionTLS12)
	tls11 := handshake(t, ca.leaf(t, []string{"mx.example.com"}, time.Time{}, time.Time{}), "mx.example.com", tls.VersionTLS11)
	if tls11.Version != tls.VersionTLS11 || tls12.Version != tls.VersionTLS12 || tls13.Version != tls.VersionTLS13 {
		t.Fatalf("negotiated versions %x %x %x", tls11.Version, tls12.Version, tls13.Version)
	}
	leafOnly := viaInter
	leafOnly.PeerCertificates = viaInter.PeerCertificates[:1]

	tests := []struct {
		name   string
		mx     string
		state  tls.ConnectionState
		at     time.Time
		reason Reason
		code   string
	}{
		{"valid", "mx.example.com", good, now, "", ""},
		{"valid, trailing dot", "mx.example.com.", good, now, "", ""},
		{"valid, zero time means now", "mx.example.com", good, time.Time{}, "", ""},
		{"valid via intermediate", "mx.example.com", viaInter, now, "", ""},
		{"valid wildcard cert and pattern", "a.example.net", wildcard, now, "", ""},
		{"TLS 1.2", "mx.example.com", tls12, now, "", ""},
		{"TLS 1.3", "mx.example.com", tls13, now, "", ""},
		{"MX not in policy", "mx.example.org", good, now, ReasonValidationFailure, CodeMXNotInPolicy},
		{"no STARTTLS", "mx.example.com", tls.ConnectionState{}, now, ReasonSTARTTLSNotSupported, CodeNoTLS},
		{"TLS 1.1", "mx.example.com", tls11, now, ReasonValidationFailure, CodeTLSVersion},
		{"wrong name", "mx.example.com", wrongName, now, ReasonCertHostMismatch, CodeHostMismatch},
		{"expired", "mx.example.com", expired, now, ReasonCertExpired, CodeExpired},
		{"expires later than now", "mx.example.com", good, now.Add(48 * time.Hour), ReasonCertExpired, CodeExpired},
		{"not yet valid", "mx.example.com", good, now.Add(-48 * time.Hour), ReasonCertExpired, CodeExpired},
		{"untrusted CA", "mx.example.com", untrusted, now, ReasonCertNotTrusted, CodeUnknownCA},
		{"intermediate not sent", "mx.example.com", leafOnly, now, ReasonCertNotTrusted, CodeUnknownCA},
		{"name constraints violated", "mx.example.com", nameConstraint, now, ReasonCertNotTrusted, CodeBadChain},
		{"no certificate", "mx.example.com", tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13}, now, ReasonCertNotTrusted, CodeNoCertificate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckConn(enforce, tc.mx, tc.state, ca.pool, tc.at)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("CheckConn: %v", err)
				}
				return
			}
			e := wantReason(t, err, tc.reason, tc.code)
			if e.ReportOnly {
				t.Fatal("enforce failure flagged report-only")
			}

			// The same failure in testing mode is report-only.
			testing := *enforce
			testing.Mode = ModeTesting
			err = CheckConn(&testing, tc.mx, tc.state, ca.pool, tc.at)
			e = wantReason(t, err, tc.reason, tc.code)
			if !e.ReportOnly || !IsReportOnly(err) {
				t.Fatal("testing-mode failure not flagged report-only")
			}

			// Mode none and no policy never fail.
			none := *enforce
			none.Mode = ModeNone
			if err := CheckConn(&none, tc.mx, tc.state, ca.pool, tc.at); err != nil {
				t.Fatalf("mode none: %v", err)
			}
			if err := CheckConn(nil, tc.mx, tc.state, ca.pool, tc.at); err != nil {
				t.Fatalf("nil policy: %v", err)
			}
		})
	}

	// Without the test root in the pool (nil = system roots) the
	// private CA is not trusted.
	err := CheckConn(enforce, "mx.example.com", good, nil, now)
	if ReasonOf(err) != ReasonCertNotTrusted {
		t.Fatalf("system roots: %v", err)
	}
	if errors.Unwrap(err) == nil {
		t.Fatal("no underlying x509 error")
	}
}
