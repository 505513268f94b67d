package stsbed

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
)

func TestMain(m *testing.M) { netns.Main(m) }

// TestSites drives the server with the real policy fetcher, dialing the
// server's address whatever the host name (no DNS needed here).
func TestSites(t *testing.T) {
	netns.Required(t)
	ca := pki.NewCA(t, "stsbed test root")
	s := Start(t, "127.0.0.1:0", ca)
	f := &mtastsfallback.Fetcher{
		RootCAs: ca.Pool(),
		Timeout: 10 * time.Second,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, s.Addr())
		},
	}
	ctx := context.Background()
	code := func(err error) string {
		var e *mtastsfallback.Error
		if errors.As(err, &e) {
			return e.Code
		}
		return ""
	}

	a := s.Site("a.example")
	a.SetPolicy(Policy("enforce", 3600, "mx.a.example", "*.b.example"))
	p, err := f.Fetch(ctx, "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != mtastsfallback.ModeEnforce || p.MaxAge != 3600 || strings.Join(p.MX, ",") != "mx.a.example,*.b.example" {
		t.Fatalf("policy %+v", p)
	}

	// A second site on the same address, chosen by SNI, with its own
	// certificate and counter.
	b := s.Site("b.example")
	b.SetPolicy(Policy("testing", 60, "mx.b.example"))
	if p, err := f.Fetch(ctx, "b.example"); err != nil || p.Mode != mtastsfallback.ModeTesting {
		t.Fatalf("b.example: %+v, %v", p, err)
	}
	if a.Fetches() != 1 || b.Fetches() != 1 {
		t.Fatalf("fetches %d and %d, want 1 each", a.Fetches(), b.Fetches())
	}

	for _, tc := range []struct {
		resp Response
		code string
	}{
		{Response{Status: http.StatusFound, Location: "https://elsewhere.example/"}, mtastsfallback.CodeRedirect},
		{Response{Status: http.StatusNotFound}, mtastsfallback.CodeHTTPStatus},
		{Response{Body: []byte(Policy("enforce", 60, "mx.a.example")), ContentType: "text/html"}, mtastsfallback.CodeContentType},
		{Response{Body: []byte(strings.Repeat("x", 65<<10))}, mtastsfallback.CodeBodyTooLarge},
		{Response{Body: []byte("version: STSv1\r\n")}, mtastsfallback.CodePolicySyntax},
		{Response{Down: true}, mtastsfallback.CodeConnect},
	} {
		a.SetResponse(tc.resp)
		_, err := f.Fetch(ctx, "a.example")
		if got := code(err); got != tc.code {
			t.Errorf("response %+v: error %v (code %q), want code %q", tc.resp.Status, err, got, tc.code)
		}
	}
	a.SetResponse(Response{Body: []byte(Policy("none", 60))})
	a.SetDown(true)
	if _, err := f.Fetch(ctx, "a.example"); err == nil {
		t.Fatal("fetch from a down site succeeded")
	}
	a.SetDown(false)
	if p, err := f.Fetch(ctx, "a.example"); err != nil || p.Mode != mtastsfallback.ModeNone {
		t.Fatalf("after coming back up: %+v, %v", p, err)
	}

	// A certificate for another name: the fetcher refuses it.
	a.SetCertificate(ca.Leaf(t, pki.LeafOptions{DNSNames: []string{"mta-sts.other.example"}}))
	if _, err := f.Fetch(ctx, "a.example"); mtastsfallback.ReasonOf(err) != mtastsfallback.ReasonWebPKIInvalid {
		t.Fatalf("wrong-name certificate: %v", err)
	}
	if a.Fetches() != 9 {
		t.Fatalf("a.example counted %d requests, want 9 (the refused handshake never reaches HTTP)", a.Fetches())
	}
}
