package engine_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"testing"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
)

// TestCheckConnKeepsCheckMXRefusal: once CheckMX has refused a host, every
// CheckConn for it refuses too. It used to evaluate the connection as if
// nothing had been wrong: the second CheckConn on a destination whose
// policy table could not be read came back "encrypted" (or "plaintext"),
// letting mail out under no policy at all.
func TestCheckConnKeepsCheckMXRefusal(t *testing.T) {
	// The policy source fails, so the engine never asks DNS; the resolver
	// is real but is not reached.
	res, err := dane.NewResolver(dane.ResolverConfig{Servers: []string{"127.0.0.1:9"}})
	if err != nil {
		t.Fatal(err)
	}
	broken := func(context.Context, string) (engine.DomainPolicy, bool, error) {
		return engine.DomainPolicy{}, false, errors.New(`policy_table lookup of "d.example": connection refused`)
	}
	eng, err := engine.New(engine.Config{DNS: engine.NewCachedQuerier(res, policycache.Config{}, nil), Policies: broken})
	if err != nil {
		t.Fatal(err)
	}
	leaf := pki.SelfSigned(t, pki.LeafOptions{DNSNames: []string{"mx.d.example"}})
	conns := map[string]tls.ConnectionState{
		"plaintext": {},
		"tls":       {HandshakeComplete: true, Version: tls.VersionTLS13, PeerCertificates: []*x509.Certificate{leaf.Cert}},
	}
	wantRefused := func(what string, v *engine.Verdict) {
		t.Helper()
		if v.OK() || v.Reason != engine.ReasonPolicyLookup || v.Code != 451 || v.EnhancedCode != [3]int{4, 4, 3} {
			t.Fatalf("%s: %s (%d %v), want the policy-lookup-failure deferral", what, v, v.Code, v.EnhancedCode)
		}
	}
	ctx := context.Background()
	for name, st := range conns {
		// CheckConn without CheckMX (which the engine allows) ...
		dst := eng.Destination(ctx, "d.example")
		wantRefused(name+": first CheckConn", eng.CheckConn(ctx, dst, "mx.d.example", st))
		wantRefused(name+": second CheckConn", eng.CheckConn(ctx, dst, "mx.d.example", st))

		// ... and after a refusing CheckMX.
		dst = eng.Destination(ctx, "d.example")
		wantRefused(name+": CheckMX", eng.CheckMX(ctx, dst, "mx.d.example"))
		v := eng.CheckConn(ctx, dst, "MX.d.example.", st)
		wantRefused(name+": CheckConn after CheckMX", v)
		if want := map[string]string{"plaintext": "none", "tls": "TLS1.3"}[name]; v.TLSVersion != want {
			t.Fatalf("%s: tls_version %q, want %q", name, v.TLSVersion, want)
		}

		// A Destination the caller filled in itself (the fields are
		// exported) used to panic on its nil host map.
		dst = &engine.Destination{Domain: "d.example", PolicyErr: errors.New("policy source down")}
		wantRefused(name+": caller-built Destination", eng.CheckConn(ctx, dst, "mx.d.example", st))
		wantRefused(name+": caller-built Destination, again", eng.CheckConn(ctx, dst, "mx.d.example", st))
	}
}
