package mtastsfallback

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const goodPolicy = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n"

// fetchFrom serves h as https://mta-sts.example.com with a certificate from
// a test CA and returns a Fetcher aimed at it.
func fetchFrom(t *testing.T, h http.HandlerFunc) (*Fetcher, *[]string) {
	t.Helper()
	ca := newCA(t, "root")
	srv := startTLSServer(t, ca.leaf(t, []string{"mta-sts.example.com"}, time.Time{}, time.Time{}), h)
	var (
		asked []string
		mu    sync.Mutex
	)
	return &Fetcher{RootCAs: ca.pool, DialContext: dialTo(srv.Listener.Addr().String(), &asked, &mu)}, &asked
}

func servePolicy(ct, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ct != "" {
			w.Header().Set("Content-Type", ct)
		} else {
			w.Header()["Content-Type"] = nil // no sniffing
		}
		io.WriteString(w, body)
	}
}

func TestFetchGood(t *testing.T) {
	var got struct {
		path, host, ua, sni, method, accept string
	}
	f, asked := fetchFrom(t, func(w http.ResponseWriter, r *http.Request) {
		got.path, got.host, got.ua, got.method = r.URL.Path, r.Host, r.UserAgent(), r.Method
		got.sni, got.accept = r.TLS.ServerName, r.Header.Get("Accept")
		servePolicy("text/plain; charset=utf-8", goodPolicy)(w, r)
	})
	fixed := time.Now().Truncate(time.Second)
	f.Now = func() time.Time { return fixed }
	p, err := f.Fetch(context.Background(), "Example.COM.")
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != ModeEnforce || p.MaxAge != 604800 || len(p.MX) != 3 || p.Domain != "example.com" || p.ID != "" {
		t.Fatalf("policy %#v", p)
	}
	if !p.FetchedAt.Equal(fixed) || !p.Expires.Equal(fixed.Add(604800*time.Second)) {
		t.Fatalf("times: fetched %v expires %v", p.FetchedAt, p.Expires)
	}
	if got.path != "/.well-known/mta-sts.txt" || got.host != "mta-sts.example.com" || got.method != "GET" {
		t.Fatalf("request: %+v", got)
	}
	if got.sni != "mta-sts.example.com" { // RFC 8461 §7.1
		t.Fatalf("SNI %q", got.sni)
	}
	if got.ua != DefaultUserAgent || got.accept != "text/plain" {
		t.Fatalf("headers: %+v", got)
	}
	if len(*asked) != 1 || (*asked)[0] != "mta-sts.example.com:443" {
		t.Fatalf("dialed %q", *asked)
	}
}

func TestFetchContentTypes(t *testing.T) {
	for ct, ok := range map[string]bool{
		"text/plain":                     true,
		"TEXT/PLAIN":                     true,
		"text/plain;charset=us-ascii":    true,
		"text/plain; charset=iso-8859-1": true, // parameters are ignored
		"text/plain; format=flowed":      true,
		"text/html":                      false,
		"application/octet-stream":       false,
		"text/plain-but-not":             false,
		"":                               false,
		"text/plain; charset":            false, // malformed
	} {
		t.Run(ct, func(t *testing.T) {
			f, _ := fetchFrom(t, servePolicy(ct, goodPolicy))
			p, err := f.Fetch(context.Background(), "example.com")
			if ok {
				if err != nil || p == nil {
					t.Fatalf("Content-Type %q refused: %v", ct, err)
				}
				return
			}
			wantReason(t, err, ReasonPolicyFetchError, CodeContentType)
		})
	}
}

func TestFetchRedirectRefused(t *testing.T) {
	var followed bool
	f, _ := fetchFrom(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed = true
			servePolicy("text/plain", goodPolicy)(w, r)
			return
		}
		http.Redirect(w, r, "https://mta-sts.example.com/elsewhere", http.StatusMovedPermanently)
	})
	_, err := f.Fetch(context.Background(), "example.com")
	e := wantReason(t, err, ReasonPolicyFetchError, CodeRedirect)
	if !strings.Contains(e.Error(), "/elsewhere") {
		t.Errorf("error does not name the target: %v", e)
	}
	if followed {
		t.Error("redirect was followed")
	}
}

func TestFetchStatus(t *testing.T) {
	for _, code := range []int{http.StatusNotFound, http.StatusInternalServerError, http.StatusNoContent, http.StatusPartialContent} {
		f, _ := fetchFrom(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(code)
			io.WriteString(w, goodPolicy)
		})
		_, err := f.Fetch(context.Background(), "example.com")
		wantReason(t, err, ReasonPolicyFetchError, CodeHTTPStatus)
	}
}

func TestFetchOversized(t *testing.T) {
	big := goodPolicy + strings.Repeat("x-pad: "+strings.Repeat("p", 100)+"\n", 2000) // ~200 KB
	t.Run("content-length", func(t *testing.T) {
		f, _ := fetchFrom(t, servePolicy("text/plain", big))
		_, err := f.Fetch(context.Background(), "example.com")
		e := wantReason(t, err, ReasonPolicyFetchError, CodeBodyTooLarge)
		if !strings.Contains(e.Error(), "65536") {
			t.Errorf("error does not name the default limit: %v", e)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		f, _ := fetchFrom(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			for i := 0; i < 100; i++ { // no Content-Length: chunked
				if _, err := io.WriteString(w, big[:2048]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		})
		f.MaxBodySize = 4096
		_, err := f.Fetch(context.Background(), "example.com")
		wantReason(t, err, ReasonPolicyFetchError, CodeBodyTooLarge)
	})
	t.Run("exactly at the limit", func(t *testing.T) {
		body := goodPolicy + strings.Repeat("\n", 1000-len(goodPolicy))
		f, _ := fetchFrom(t, servePolicy("text/plain", body))
		f.MaxBodySize = 1000
		if _, err := f.Fetch(context.Background(), "example.com"); err != nil {
			t.Fatalf("body of exactly MaxBodySize refused: %v", err)
		}
	})
}

func TestFetchMalformedPolicy(t *testing.T) {
	f, _ := fetchFrom(t, servePolicy("text/plain", "version: STSv1\nmode: enforce\nmax_age: 86400\n"))
	_, err := f.Fetch(context.Background(), "example.com")
	wantReason(t, err, ReasonPolicyInvalid, CodePolicySyntax)
	if !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("%v does not wrap ErrInvalidPolicy", err)
	}
}

func TestFetchCertificateProblems(t *testing.T) {
	ca := newCA(t, "trusted root")
	other := newCA(t, "someone else's root")
	inter := ca.intermediate(t, "intermediate")
	handler := servePolicy("text/plain", goodPolicy)
	tests := []struct {
		name string
		cert func() ([][]byte, any)
		code string
	}{
		{"wrong name", func() ([][]byte, any) {
			c := ca.leaf(t, []string{"mta-sts.example.org"}, time.Time{}, time.Time{})
			return c.Certificate, c.PrivateKey
		}, CodeHostMismatch},
		{"parent domain name only", func() ([][]byte, any) {
			c := ca.leaf(t, []string{"example.com"}, time.Time{}, time.Time{})
			return c.Certificate, c.PrivateKey
		}, CodeHostMismatch},
		{"untrusted CA", func() ([][]byte, any) {
			c := other.leaf(t, []string{"mta-sts.example.com"}, time.Time{}, time.Time{})
			return c.Certificate, c.PrivateKey
		}, CodeUnknownCA},
		{"expired", func() ([][]byte, any) {
			c := ca.leaf(t, []string{"mta-sts.example.com"}, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
			return c.Certificate, c.PrivateKey
		}, CodeExpired},
		{"intermediate missing from chain", func() ([][]byte, any) {
			c := inter.leaf(t, []string{"mta-sts.example.com"}, time.Time{}, time.Time{})
			return c.Certificate[:1], c.PrivateKey
		}, CodeUnknownCA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chain, key := tc.cert()
			srv := startTLSServer(t, tlsCert(chain, key), handler)
			f := &Fetcher{RootCAs: ca.pool, DialContext: dialTo(srv.Listener.Addr().String(), nil, nil)}
			_, err := f.Fetch(context.Background(), "example.com")
			wantReason(t, err, ReasonWebPKIInvalid, tc.code)
		})
	}
	t.Run("good chain with intermediate", func(t *testing.T) {
		srv := startTLSServer(t, inter.leaf(t, []string{"mta-sts.example.com"}, time.Time{}, time.Time{}), handler)
		f := &Fetcher{RootCAs: ca.pool, DialContext: dialTo(srv.Listener.Addr().String(), nil, nil)}
		if _, err := f.Fetch(context.Background(), "example.com"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wildcard certificate", func(t *testing.T) {
		srv := startTLSServer(t, ca.leaf(t, []string{"*.example.com"}, time.Time{}, time.Time{}), handler)
		f := &Fetcher{RootCAs: ca.pool, DialContext: dialTo(srv.Listener.Addr().String(), nil, nil)}
		if _, err := f.Fetch(context.Background(), "example.com"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("clock beyond expiry", func(t *testing.T) {
		srv := startTLSServer(t, ca.leaf(t, []string{"mta-sts.example.com"}, time.Time{}, time.Time{}), handler)
		f := &Fetcher{RootCAs: ca.pool, DialContext: dialTo(srv.Listener.Addr().String(), nil, nil),
			Now: func() time.Time { return time.Now().Add(72 * time.Hour) }}
		_, err := f.Fetch(context.Background(), "example.com")
		wantReason(t, err, ReasonWebPKIInvalid, CodeExpired)
	})
}

func TestFetchServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := &Fetcher{DialContext: dialTo(addr, nil, nil)}
	_, err = f.Fetch(context.Background(), "example.com")
	wantReason(t, err, ReasonPolicyFetchError, CodeConnect)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("%v is not ECONNREFUSED", err)
	}
}

func TestFetchTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Run("no response", func(t *testing.T) {
		f, _ := fetchFrom(t, func(w http.ResponseWriter, r *http.Request) {
			waitOrAbort(r, release)
		})
		f.Timeout = 100 * time.Millisecond
		_, err := f.Fetch(context.Background(), "example.com")
		wantReason(t, err, ReasonPolicyFetchError, CodeTimeout)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%v is not a deadline error", err)
		}
	})
	t.Run("body stalls", func(t *testing.T) {
		f, _ := fetchFrom(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", "1000")
			io.WriteString(w, "version: STSv1\n")
			w.(http.Flusher).Flush()
			waitOrAbort(r, release)
		})
		f.Timeout = 100 * time.Millisecond
		_, err := f.Fetch(context.Background(), "example.com")
		wantReason(t, err, ReasonPolicyFetchError, CodeTimeout)
	})
	t.Run("caller cancels", func(t *testing.T) {
		entered := make(chan struct{})
		f, _ := fetchFrom(t, func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			waitOrAbort(r, release)
		})
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-entered; cancel() }()
		_, err := f.Fetch(ctx, "example.com")
		wantReason(t, err, ReasonPolicyFetchError, "")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%v is not context.Canceled", err)
		}
	})
	close(release)
}

// waitOrAbort blocks until release is closed or the client goes away; in
// the latter case it aborts the connection without a response, so that a
// response cannot race with the client's own timeout.
func waitOrAbort(r *http.Request, release chan struct{}) {
	select {
	case <-release:
	case <-r.Context().Done():
		panic(http.ErrAbortHandler)
	}
}

func TestFetchInvalidDomain(t *testing.T) {
	f := &Fetcher{DialContext: func(context.Context, string, string) (net.Conn, error) {
		t.Fatal("dialed for an invalid domain")
		return nil, nil
	}}
	for _, d := range []string{"münchen.de", "1.2.3.4", "", "a..b", strings.Repeat("a.", 123) + "com"} {
		_, err := f.Fetch(context.Background(), d)
		wantReason(t, err, ReasonPolicyFetchError, CodeInvalidDomain)
		if !errors.Is(err, ErrInvalidDomain) {
			t.Errorf("%q: %v does not wrap ErrInvalidDomain", d, err)
		}
	}
}

func TestPolicyURL(t *testing.T) {
	if got := PolicyURL("example.com"); got != "https://mta-sts.example.com/.well-known/mta-sts.txt" {
		t.Fatal(got)
	}
}
