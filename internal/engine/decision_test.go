package engine_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/miekg/dns"
)

// The decision table: every combination of level, MX RRset security, TLSA
// state, TLS outcome and MTA-STS mode, run through the engine with a
// map-backed DNS and synthetic connection states, against expectations
// computed by want below, a separate statement of the rules (RFC 7672
// §2-3, RFC 8461 §2, §4-5, the levels of docs/levels.md) that does not
// call the engine. No network, no root.

// Dimensions of the table.
type tlsaState string

const (
	tlsaNone     tlsaState = "none"            // secure denial: DANE does not apply
	tlsaUnusable tlsaState = "unusable"        // secure RRset, only unusable records
	tlsaMatch    tlsaState = "usable-match"    // a usable record matches the server
	tlsaMismatch tlsaState = "usable-mismatch" // usable records, none matches
	tlsaBogus    tlsaState = "bogus"           // validation failed
	tlsaServFail tlsaState = "servfail"        // lookup failed
)

type stsMode string

const (
	stsNone       stsMode = "none"
	stsTesting    stsMode = "testing"          // testing policy listing the MX
	stsEnforce    stsMode = "enforce-listed"   // enforce policy listing the MX
	stsEnforceOff stsMode = "enforce-unlisted" // enforce policy not listing it
)

var (
	levels     = engine.Levels
	tlsaStates = []tlsaState{tlsaNone, tlsaUnusable, tlsaMatch, tlsaMismatch, tlsaBogus, tlsaServFail}
	stsModes   = []stsMode{stsNone, stsTesting, stsEnforce, stsEnforceOff}
)

type row struct {
	level    engine.Level
	mxSecure bool
	tlsa     tlsaState
	tls      bool
	sts      stsMode
}

func (r row) String() string {
	return fmt.Sprintf("%s/mx-secure=%v/tlsa=%s/tls=%v/sts=%s", r.level, r.mxSecure, r.tlsa, r.tls, r.sts)
}

// outcome is what a row must produce: the verdict that ends the delivery
// attempt (CheckMX's refusal, else CheckConn's verdict).
type outcome struct {
	stage  string // "mx" or "conn"
	result engine.Result
	reason engine.Reason
	code   int
	enh    string
	report string // RFC 8460 result type, "" if none
}

func refuse(stage string, reason engine.Reason, enh, report string) outcome {
	return outcome{stage: stage, result: engine.Deferred, reason: reason, code: 451, enh: enh, report: report}
}

func pass(result engine.Result, reason engine.Reason) outcome {
	return outcome{stage: "conn", result: result, reason: reason}
}

func opportunistic(tlsOn bool, reason engine.Reason) outcome {
	if tlsOn {
		return pass(engine.Encrypted, reason)
	}
	return pass(engine.Plaintext, reason)
}

// want states the rules.
func want(r row) outcome {
	noTLS := refuse("conn", engine.ReasonNoTLS, "4.7.4", "starttls-not-supported")
	switch r.level {
	case engine.LevelNone, engine.LevelMay:
		// Nothing is required or looked up.
		return opportunistic(r.tls, engine.ReasonPolicyNone)
	case engine.LevelEncrypt:
		if !r.tls {
			return noTLS
		}
		return pass(engine.Encrypted, engine.ReasonEncryptRequired)
	case engine.LevelVerify:
		if !r.tls {
			return noTLS
		}
		return pass(engine.Authenticated, engine.ReasonVerifyValid) // the test certificate is WebPKI-valid
	case engine.LevelFingerprint:
		if !r.tls {
			return noTLS
		}
		return pass(engine.Authenticated, engine.ReasonFingerprintMatch) // pinned
	}

	// dane, dane-only, mtasts: the MX RRset and the TLSA records count.
	mandatory := r.level == engine.LevelDANEOnly
	// RFC 7672 §2.2.1, §6: mandatory DANE needs a secure MX RRset.
	if mandatory && !r.mxSecure {
		return refuse("mx", engine.ReasonDANERequired, "4.7.5", "dane-required")
	}
	// RFC 7672 §2.1.2: a failed TLSA lookup makes the host unusable.
	switch r.tlsa {
	case tlsaBogus:
		return refuse("mx", engine.ReasonDNSSECBogus, "4.4.3", "dnssec-invalid")
	case tlsaServFail:
		return refuse("mx", engine.ReasonDNSFailure, "4.4.3", "") // transient: not reported (RFC 8460 §4.3.4)
	}
	usable := r.tlsa == tlsaMatch || r.tlsa == tlsaMismatch
	// RFC 7672 §6: mandatory DANE authenticates with usable records only.
	if mandatory && !usable {
		return refuse("mx", engine.ReasonDANERequired, "4.7.5", "dane-required")
	}

	// MTA-STS (levels dane and mtasts), where DANE does not govern the host
	// (RFC 8461 §2: usable TLSA records take precedence).
	sts := r.sts
	if mandatory {
		sts = stsNone // dane-only never consults MTA-STS
	}
	if r.level == engine.LevelMTASTS && !usable && sts != stsEnforce && sts != stsEnforceOff {
		return refuse("mx", engine.ReasonSTSRequired, "4.7.5", "")
	}
	if sts == stsEnforceOff && !(usable && r.mxSecure) {
		// RFC 8461 §4.1: an enforce policy that does not list the MX
		// refuses it, unless DNSSEC authenticated the MX host and DANE
		// governs it (docs/mtasts.md).
		return refuse("mx", engine.ReasonSTSMXMismatch, "4.7.4", "validation-failure")
	}
	covered := sts == stsTesting || sts == stsEnforce // a policy lists the host

	// The connection. RFC 7672 §2.2: any secure TLSA RRset makes TLS
	// mandatory; usable records make DANE authentication mandatory.
	switch r.tlsa {
	case tlsaMatch, tlsaMismatch:
		if !r.tls {
			return noTLS
		}
		if r.tlsa == tlsaMismatch {
			return refuse("conn", engine.ReasonDANEMismatch, "4.7.5", "certificate-host-mismatch")
		}
		if !r.mxSecure {
			return pass(engine.Authenticated, engine.ReasonDANEMatchInsecure) // §2.2.1
		}
		return pass(engine.Authenticated, engine.ReasonDANEMatch)
	case tlsaUnusable:
		if !r.tls {
			return noTLS
		}
		if covered {
			// TLS is there; the MTA-STS policy decides authentication.
			return pass(engine.Authenticated, engine.ReasonSTSValid)
		}
		return pass(engine.Encrypted, engine.ReasonDANEUnusable)
	}
	// No TLSA: MTA-STS where a policy covers the host (RFC 8461 §4.2, §5).
	if covered {
		switch {
		case r.tls:
			return pass(engine.Authenticated, engine.ReasonSTSValid)
		case sts == stsTesting:
			o := pass(engine.Plaintext, engine.ReasonSTSTestingFailure) // §5: deliver, report
			o.report = "starttls-not-supported"
			return o
		}
		return noTLS
	}
	return opportunistic(r.tls, engine.ReasonNoTLSA)
}

// mapQuerier answers from a map, like a validating resolver would.
type mapQuerier map[engine.QueryKey]any // *dane.Answer or error

func (m mapQuerier) Query(_ context.Context, name string, qtype uint16) (*dane.Answer, error) {
	switch a := m[engine.QueryKey{Name: dns.Fqdn(name), Qtype: qtype}].(type) {
	case *dane.Answer:
		return a, nil
	case error:
		return nil, a
	}
	return nil, fmt.Errorf("mapQuerier: no answer for %s/%s", name, dns.TypeToString[qtype])
}

func answer(name string, qtype uint16, secure bool, rrs ...dns.RR) *dane.Answer {
	return &dane.Answer{Name: name, Type: qtype, Secure: secure, Target: name, Records: rrs, TTL: time.Hour}
}

// fixedSTS is an MTA-STS component that always returns one policy.
type fixedSTS struct{ res *mtastsfallback.Result }

func (f fixedSTS) Policy(context.Context, string) (*mtastsfallback.Result, error) { return f.res, nil }

const (
	domain = "d.example"
	mxHost = "mx.d.example"
)

func TestDecisionTable(t *testing.T) {
	ca := pki.NewCA(t, "decision table root")
	leaf := ca.Leaf(t, pki.LeafOptions{DNSNames: []string{mxHost}})
	other := ca.Leaf(t, pki.LeafOptions{DNSNames: []string{mxHost}})
	sum := sha256.Sum256(leaf.Cert.Raw)
	pin, err := engine.ParseFingerprint("sha256:" + hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	owner := "_25._tcp." + mxHost + "."
	tlsaAnswers := map[tlsaState]any{
		tlsaNone: answer(owner, dns.TypeTLSA, true),
		// PKIX-EE(1) is unusable for SMTP (RFC 7672 §3.1.3).
		tlsaUnusable: answer(owner, dns.TypeTLSA, true, pki.TLSARR(t, owner, 1, 1, 1, leaf.Cert)),
		tlsaMatch:    answer(owner, dns.TypeTLSA, true, pki.TLSARR(t, owner, 3, 1, 1, leaf.Cert)),
		tlsaMismatch: answer(owner, dns.TypeTLSA, true, pki.TLSARR(t, owner, 3, 1, 1, other.Cert)),
		tlsaBogus:    &dane.LookupError{Name: owner, Type: dns.TypeTLSA, Kind: dane.ErrBogus, Rcode: dns.RcodeServerFailure, EDE: 6},
		tlsaServFail: &dane.LookupError{Name: owner, Type: dns.TypeTLSA, Kind: dane.ErrServFail, Rcode: dns.RcodeServerFailure, EDE: -1},
	}
	now := time.Now()
	policy := func(mode mtastsfallback.Mode, mx string) *mtastsfallback.Result {
		return &mtastsfallback.Result{Domain: domain, Source: mtastsfallback.SourceCache, Policy: &mtastsfallback.Policy{
			Mode: mode, MaxAge: 86400, MX: []string{mx}, Domain: domain, ID: "t1", FetchedAt: now, Expires: now.Add(24 * time.Hour),
		}}
	}
	stsResults := map[stsMode]*mtastsfallback.Result{
		stsNone:       {Domain: domain, Source: mtastsfallback.SourceNone},
		stsTesting:    policy(mtastsfallback.ModeTesting, mxHost),
		stsEnforce:    policy(mtastsfallback.ModeEnforce, mxHost),
		stsEnforceOff: policy(mtastsfallback.ModeEnforce, "other.d.example"),
	}
	connections := map[bool]tls.ConnectionState{
		false: {},
		true:  {HandshakeComplete: true, Version: tls.VersionTLS13, PeerCertificates: []*x509.Certificate{leaf.Cert}},
	}

	n := 0
	for _, lvl := range levels {
		for _, mxSecure := range []bool{true, false} {
			for _, ts := range tlsaStates {
				for _, tlsOn := range []bool{false, true} {
					for _, sm := range stsModes {
						r := row{lvl, mxSecure, ts, tlsOn, sm}
						n++
						q := mapQuerier{
							{Name: domain + ".", Qtype: dns.TypeMX}: answer(domain+".", dns.TypeMX, mxSecure, &dns.MX{Hdr: dns.RR_Header{Name: domain + ".", Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 3600}, Preference: 10, Mx: mxHost + "."}),
							{Name: mxHost + ".", Qtype: dns.TypeA}:  answer(mxHost+".", dns.TypeA, true, &dns.A{Hdr: dns.RR_Header{Name: mxHost + ".", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: net.IPv4(192, 0, 2, 1)}),
							{Name: owner, Qtype: dns.TypeTLSA}:      tlsaAnswers[ts],
						}
						pol := engine.DomainPolicy{Level: lvl, Source: "test"}
						if lvl == engine.LevelFingerprint {
							pol.Fingerprints = []engine.Fingerprint{pin}
						}
						eng, err := engine.New(engine.Config{
							DNS:      engine.NewCachedQuerier(q, policycache.Config{}, nil),
							Policies: func(context.Context, string) (engine.DomainPolicy, bool, error) { return pol, true, nil },
							Roots:    ca.Pool(),
							STS:      fixedSTS{stsResults[sm]},
						})
						if err != nil {
							t.Fatal(err)
						}
						ctx := context.Background()
						dst := eng.Destination(ctx, domain)
						stage, v := "mx", eng.CheckMX(ctx, dst, mxHost)
						if v.OK() {
							stage, v = "conn", eng.CheckConn(ctx, dst, mxHost, connections[tlsOn])
						}
						got := outcome{stage: stage, result: v.Result, reason: v.Reason, code: v.Code, report: v.ReportType}
						if v.Code != 0 {
							got.enh = fmt.Sprintf("%d.%d.%d", v.EnhancedCode[0], v.EnhancedCode[1], v.EnhancedCode[2])
						}
						if w := want(r); got != w {
							t.Errorf("%s:\n got %+v (%s)\nwant %+v", r, got, v.Detail, w)
						}
						// The delivery path (Prepare: everything looked
						// up in the background, TLSA beside the address)
						// reaches the same verdict, field for field.
						pdst := eng.Prepare(ctx, domain)
						pv := eng.CheckMX(ctx, pdst, mxHost)
						if pv.OK() {
							pv = eng.CheckConn(ctx, pdst, mxHost, connections[tlsOn])
						}
						if !reflect.DeepEqual(pv, v) {
							t.Errorf("%s: Prepare's verdict differs:\n got %+v\nwant %+v", r, pv, v)
						}
						// A refusal always carries a 4xx reply, an accepted
						// verdict none (RFC 7672 §2.1.2: defer, never bounce).
						if v.OK() != (v.Code == 0) || (!v.OK() && v.Message == "") {
							t.Errorf("%s: verdict %s with reply %d %q", r, v.Result, v.Code, v.Message)
						}
					}
				}
			}
		}
	}
	if n != len(levels)*2*len(tlsaStates)*2*len(stsModes) || n < 700 {
		t.Fatalf("%d rows", n)
	}
	t.Logf("%d rows", n)
}
