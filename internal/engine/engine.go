// Package engine decides, for each outbound SMTP connection, what security
// the destination requires and whether the connection provides it. It
// combines the per-destination policy levels, DANE (package dane) and the
// MTA-STS fallback (package mtastsfallback), with every DNS input behind the
// TTL-exact cache of package policycache.
//
// The engine knows nothing about maddy: module.go at the repository root
// translates its verdicts into maddy's MX/TLS levels, SMTP errors and log
// lines, and the operator's checker command drives the very same code.
package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/miekg/dns"
)

// PolicyLookup returns the policy for a destination domain, or ok=false to
// use the default. An error defers delivery; it never weakens the policy.
type PolicyLookup func(ctx context.Context, domain string) (p DomainPolicy, ok bool, err error)

// Config configures an Engine.
type Config struct {
	// Querier answers DNS questions with their DNSSEC status; normally a
	// *dane.Resolver. The engine puts a cache in front of it.
	Querier dane.Querier
	// Cache configures the DNS answer cache.
	Cache policycache.Config
	// DefaultLevel applies to domains without a policy entry. Default
	// LevelDANE.
	DefaultLevel Level
	// Policies looks up per-domain policies; nil means none.
	Policies PolicyLookup
	// Roots are the WebPKI roots for the verify level and MTA-STS; nil
	// means the system roots.
	Roots *x509.CertPool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnQuery, if not nil, is told of every question that reached the
	// resolver (cache misses only), for debug logging.
	OnQuery func(name string, qtype uint16, a *dane.Answer, err error, took time.Duration)
	// STS, if not nil, supplies MTA-STS policies for levels dane and
	// mtasts (mtasts.go). See also SetSTS.
	STS STS
}

// Engine is safe for concurrent use by many deliveries.
type Engine struct {
	cfg     Config
	cache   *policycache.Cache[qkey, *dane.Answer]
	disc    *dane.Discoverer
	now     func() time.Time
	roots   *x509.CertPool
	rootErr error
}

type qkey struct {
	name  string
	qtype uint16
}

// New builds an Engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Querier == nil {
		return nil, errors.New("engine: no DNS querier configured")
	}
	if cfg.DefaultLevel == "" {
		cfg.DefaultLevel = LevelDANE
	}
	e := &Engine{cfg: cfg, now: cfg.Now, roots: cfg.Roots}
	if e.now == nil {
		e.now = time.Now
	}
	if cfg.Cache.Now == nil {
		cfg.Cache.Now = e.now
	}
	e.cache = policycache.New[qkey, *dane.Answer](cfg.Cache)
	e.disc = &dane.Discoverer{Q: cachedQuerier{e}}
	if e.roots == nil {
		e.roots, e.rootErr = x509.SystemCertPool()
	}
	return e, nil
}

// Cache exposes the DNS cache, for metrics.
func (e *Engine) Cache() *policycache.Cache[qkey, *dane.Answer] { return e.cache }

// Querier returns the cached querier the engine uses, so that other
// components (the MTA-STS TXT lookups) share the cache.
func (e *Engine) Querier() dane.Querier { return cachedQuerier{e} }

type cachedQuerier struct{ e *Engine }

func (c cachedQuerier) Query(ctx context.Context, name string, qtype uint16) (*dane.Answer, error) {
	key := qkey{strings.ToLower(dns.Fqdn(name)), qtype}
	return c.e.cache.Get(ctx, key, func(ctx context.Context) (*dane.Answer, time.Duration, error) {
		start := time.Now()
		a, err := c.e.cfg.Querier.Query(ctx, key.name, key.qtype)
		if c.e.cfg.OnQuery != nil {
			c.e.cfg.OnQuery(key.name, key.qtype, a, err, time.Since(start))
		}
		if err != nil {
			return nil, 0, err
		}
		return a, a.TTL, nil
	})
}

// Destination holds what one delivery learned about one next-hop domain.
// It is not safe for concurrent use; create one per delivery and domain.
type Destination struct {
	Domain    string
	Policy    DomainPolicy
	PolicyErr error
	// MX is our own DNSSEC-aware MX lookup (only for levels that use DANE).
	MX    *dane.MXSet
	MXErr error
	// STS is the MTA-STS policy lookup (levels dane and mtasts, when
	// MTA-STS is enabled); STSErr is set only for an invalid domain or an
	// expired context.
	STS    *mtastsfallback.Result
	STSErr error

	mu    sync.Mutex
	hosts map[string]*hostState
}

type hostState struct {
	host     *dane.Host
	err      error
	usable   []dane.Record
	unusable int
	checked  *Verdict               // CheckMX's verdict, completed by CheckConn
	sts      *mtastsfallback.Policy // MTA-STS policy covering this host, when DANE does not govern
}

// Destination starts the evaluation of a next-hop domain: its policy and,
// where DANE may apply, its MX RRset.
func (e *Engine) Destination(ctx context.Context, domain string) *Destination {
	domain = CanonicalDomain(domain)
	d := &Destination{Domain: domain, hosts: map[string]*hostState{}}
	d.Policy = DomainPolicy{Level: e.cfg.DefaultLevel, Source: "default"}
	if e.cfg.Policies != nil {
		p, ok, err := e.cfg.Policies(ctx, domain)
		switch {
		case err != nil:
			d.PolicyErr = err
		case ok:
			d.Policy = p
		}
	}
	if d.PolicyErr == nil && d.Policy.Level.usesDANE() {
		d.MX, d.MXErr = e.disc.LookupMX(ctx, domain)
	}
	e.lookupSTS(ctx, d)
	return d
}

func (e *Engine) base(d *Destination, mx string) *Verdict {
	v := &Verdict{Domain: d.Domain, MX: strings.ToLower(strings.TrimSuffix(mx, ".")), Level: d.Policy.Level, STS: d.STS}
	if d.MX != nil {
		v.MXSecure = d.MX.Secure && d.MX.Has(mx)
	}
	return v
}

// CheckMX decides whether the MX host mx may be used for d, before any
// connection is made. A Deferred verdict means: skip this MX.
func (e *Engine) CheckMX(ctx context.Context, d *Destination, mx string) *Verdict {
	v := e.base(d, mx)
	hs := &hostState{checked: v}
	d.mu.Lock()
	if d.hosts == nil {
		// A Destination built by the caller rather than by
		// Engine.Destination (its fields are exported).
		d.hosts = map[string]*hostState{}
	}
	d.hosts[v.MX] = hs
	d.mu.Unlock()

	if d.PolicyErr != nil {
		// A broken policy source never weakens the policy: wait for it.
		v.Detail = d.PolicyErr.Error()
		return defer4(v, ReasonPolicyLookup, codeDNS, "", "Cannot read the TLS policy for this destination, will retry")
	}
	lvl := d.Policy.Level
	if !lvl.usesDANE() {
		return v
	}
	if d.MXErr != nil {
		// RFC 7672 §2.1.2: when a lookup failure prevents knowing which
		// servers to use, delivery must be delayed.
		return deferDNS(v, d.MXErr, "MX")
	}
	if lvl == LevelDANEOnly && !v.MXSecure {
		// RFC 7672 §2.2.1: insecure MX RRset and mandatory DANE: delay.
		v.Mechanism = MechDANE
		return defer4(v, ReasonDANERequired, codePolicy, "dane-required", "DANE is required for this destination but its MX records are not DNSSEC-signed")
	}

	h, err := e.disc.LookupHost(ctx, mx)
	if err != nil {
		// RFC 7672 §2.1.2: the server is unreachable; try the next one.
		if errors.Is(err, dane.ErrNoAddress) {
			return defer4(v, ReasonNoAddress, codeDNS, "", "MX host %s has no address records", v.MX)
		}
		return deferDNS(v, err, "TLSA")
	}
	hs.host = h
	v.TLSABase = strings.TrimSuffix(h.BaseDomain, ".")
	if h.Status == dane.HasTLSA {
		hs.usable, hs.unusable = classify(h.TLSA)
		v.Mechanism = MechDANE
		v.TLSARRset = h.TLSA
		if lvl == LevelDANEOnly && len(hs.usable) == 0 {
			// Mandatory DANE authenticates with usable records only; a
			// set of unusable ones gives encryption, not authentication
			// (RFC 7672 §2.2), which dane-only does not settle for.
			return defer4(v, ReasonDANERequired, codePolicy, "dane-required", "DANE is required for this destination but MX host %s publishes no usable TLSA records", v.MX)
		}
		return e.checkMXSTS(v, d, hs)
	}
	if lvl == LevelDANEOnly {
		v.Mechanism = MechDANE
		return defer4(v, ReasonDANERequired, codePolicy, "dane-required", "DANE is required for this destination but MX host %s has no DNSSEC-signed TLSA records", v.MX)
	}
	return e.checkMXSTS(v, d, hs)
}

func deferDNS(v *Verdict, err error, what string) *Verdict {
	v.Detail = err.Error()
	var le *dane.LookupError
	if errors.As(err, &le) && le.DNSSECFailure() {
		return defer4(v, ReasonDNSSECBogus, codeDNS, "dnssec-invalid", "DNSSEC validation failed for the %s lookup, will retry", what)
	}
	return defer4(v, ReasonDNSFailure, codeDNS, "", "DNS %s lookup failed, will retry", what)
}

// CheckConn decides whether the connection to mx, described by st, may be
// used for d. It must follow CheckMX for the same MX host.
func (e *Engine) CheckConn(ctx context.Context, d *Destination, mx string, st tls.ConnectionState) *Verdict {
	key := strings.ToLower(strings.TrimSuffix(mx, "."))
	d.mu.Lock()
	hs := d.hosts[key]
	d.mu.Unlock()
	if hs == nil {
		// CheckMX was not called for this host (cannot happen with
		// maddy's target.remote); evaluate it now rather than guess.
		if v := e.CheckMX(ctx, d, mx); !v.OK() {
			return v
		}
		d.mu.Lock()
		hs = d.hosts[key]
		d.mu.Unlock()
	}
	v := *hs.checked
	v.TLSVersion = tlsVersionName(st)
	if !v.OK() {
		// CheckMX refused this host: no connection to it can be
		// acceptable, whatever it offers. (A caller that connects anyway,
		// like the report bypass in module_tlsrpt.go, gets the refusal
		// again, never a verdict that lets mail through.)
		return &v
	}
	tlsOn := st.HandshakeComplete

	// DANE first: where a secure TLSA RRset exists it governs the
	// connection, and nothing else can rescue a failing DANE check
	// (RFC 8461 §2).
	if hs.host != nil && hs.host.Status == dane.HasTLSA {
		if len(hs.usable) == 0 && hs.sts != nil && st.HandshakeComplete {
			// Only unusable TLSA records: TLS was mandatory and is
			// there; MTA-STS decides the authentication (mtasts.go).
			return e.checkConnSTS(&v, hs, st)
		}
		return e.checkDANE(&v, d, hs, st)
	}

	switch d.Policy.Level {
	case LevelNone, LevelMay:
		v.Mechanism = MechNone
		v.Reason = ReasonPolicyNone
		v.Result = resultFor(tlsOn)
		return &v
	case LevelEncrypt:
		v.Mechanism = MechEncrypt
		if !tlsOn {
			return defer4(&v, ReasonNoTLS, codeNoTLS, "starttls-not-supported", "TLS is required for this destination but was not available")
		}
		v.Result, v.Reason = Encrypted, ReasonEncryptRequired
		return &v
	case LevelVerify:
		return e.checkVerify(&v, d, st)
	case LevelFingerprint:
		return checkFingerprint(&v, d, st)
	}

	// dane / mtasts with no TLSA for this host: MTA-STS where a policy
	// covers it (mtasts.go).
	if hs.sts != nil {
		return e.checkConnSTS(&v, hs, st)
	}
	v.Mechanism = MechNone
	v.Reason = ReasonNoTLSA
	if hs.host != nil && !hs.host.AddrSecure {
		v.Reason = ReasonInsecureMX
	}
	v.Result = resultFor(tlsOn)
	return &v
}

func resultFor(tlsOn bool) Result {
	if tlsOn {
		return Encrypted
	}
	return Plaintext
}

// checkDANE applies RFC 7672 §2.2 and §3 to a server with a secure TLSA
// RRset.
func (e *Engine) checkDANE(v *Verdict, d *Destination, hs *hostState, st tls.ConnectionState) *Verdict {
	v.Mechanism = MechDANE
	if !st.HandshakeComplete {
		// RFC 7672 §2.2: TLSA records are a commitment to STARTTLS; never
		// fall back to plaintext.
		return defer4(v, ReasonNoTLS, codeNoTLS, "starttls-not-supported", "MX host %s publishes TLSA records but TLS could not be established", v.MX)
	}
	if len(hs.usable) == 0 {
		// RFC 7672 §2.2: all records unusable: TLS mandatory, no
		// authentication.
		v.Result, v.Reason = Encrypted, ReasonDANEUnusable
		return v
	}
	names := dane.ReferenceNames(d.MX, hs.host)
	if !v.MXSecure {
		// RFC 7672 §3.2.2: with an insecure MX RRset the next-hop domain
		// is never a reference identifier (see dane.ReferenceNames).
		names = dane.ReferenceNames(nil, hs.host)
	}
	match, err := daneVerify(st.PeerCertificates, hs.usable, names, e.now())
	if err != nil {
		v.Detail = err.Error()
		return defer4(v, ReasonDANEMismatch, codeAuth, reportTypeFor(err), "MX host %s failed DANE authentication: %s", v.MX, err.Error())
	}
	v.TLSA = match
	v.Result = Authenticated
	v.Reason = ReasonDANEMatch
	if !v.MXSecure {
		// RFC 7672 §2.2.1: never present this as secure delivery to the
		// next-hop domain.
		v.Reason = ReasonDANEMatchInsecure
	}
	return v
}

func (e *Engine) checkVerify(v *Verdict, d *Destination, st tls.ConnectionState) *Verdict {
	v.Mechanism = MechVerify
	if !st.HandshakeComplete {
		return defer4(v, ReasonNoTLS, codeNoTLS, "starttls-not-supported", "TLS is required for this destination but was not available")
	}
	if e.rootErr != nil {
		return defer4(v, ReasonVerifyFailed, codeAuth, "certificate-not-trusted", "No trusted root certificates available: %v", e.rootErr)
	}
	err := verifyWebPKI(st.PeerCertificates, e.roots, []string{v.MX, d.Domain}, e.now())
	if err != nil {
		v.Detail = err.Error()
		return defer4(v, ReasonVerifyFailed, codeAuth, webPKIReportType(err), "Certificate of MX host %s is not valid for it: %v", v.MX, err)
	}
	v.Result, v.Reason = Authenticated, ReasonVerifyValid
	return v
}

func checkFingerprint(v *Verdict, d *Destination, st tls.ConnectionState) *Verdict {
	v.Mechanism = MechFingerprint
	if !st.HandshakeComplete {
		return defer4(v, ReasonNoTLS, codeNoTLS, "starttls-not-supported", "TLS is required for this destination but was not available")
	}
	if len(st.PeerCertificates) != 0 {
		leaf := st.PeerCertificates[0]
		for _, fp := range d.Policy.Fingerprints {
			if fp.Matches(leaf) {
				v.Result, v.Reason = Authenticated, ReasonFingerprintMatch
				v.Detail = fp.String()
				return v
			}
		}
	}
	return defer4(v, ReasonFingerprintMissing, codeAuth, "certificate-not-trusted", "Certificate of MX host %s matches no configured fingerprint", v.MX)
}

// verifyWebPKI checks a presented chain against roots for any of names.
func verifyWebPKI(chain []*x509.Certificate, roots *x509.CertPool, names []string, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	var firstErr error
	for _, n := range names {
		_, err := chain[0].Verify(x509.VerifyOptions{
			DNSName:       n,
			Roots:         roots,
			Intermediates: inter,
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err == nil {
			return nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// webPKIReportType maps an x509 error to an RFC 8460 §4.3 result type.
func webPKIReportType(err error) string {
	var hn x509.HostnameError
	var inv x509.CertificateInvalidError
	switch {
	case errors.As(err, &hn):
		return "certificate-host-mismatch"
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return "certificate-expired"
	default:
		return "certificate-not-trusted"
	}
}

// String renders a verdict for debugging.
func (v *Verdict) String() string {
	return fmt.Sprintf("%s via %s: %s (%s)", v.Result, v.Mechanism, v.Reason, v.Detail)
}
