// Package engine decides, for each outbound SMTP connection, what security
// the destination requires and whether the connection provides it. It
// combines the per-destination policy levels (levels.go), DANE (package
// dane) and the MTA-STS fallback (package mtastsfallback), with every DNS
// input behind the TTL-exact cache of package policycache (dns.go), and
// says what each verdict contributes to the TLS reports (report.go).
//
// This file is the whole decision and reads top to bottom:
//
//   - Prepare (or Destination, which also waits): the next-hop domain's
//     level and MX RRset (RFC 7672 §2.2.1) and its MTA-STS policy
//     (RFC 8461 §3), looked up in the background together with the
//     address and TLSA records of every MX host (prefetch.go);
//   - CheckMX, before connecting: lookup failures defer (RFC 7672 §2.1.2),
//     mandatory DANE needs a secure MX RRset and usable TLSA records
//     (§2.2.1, §6), then the MTA-STS MX check (RFC 8461 §4.1);
//   - CheckConn, on the established connection: DANE where a secure TLSA
//     RRset exists (RFC 7672 §2.2, §3, through dane.Decide; DANE takes
//     precedence over MTA-STS, RFC 8461 §2), else the level's own rule
//     (encrypt, verify, fingerprint), else MTA-STS (RFC 8461 §4.2, §5),
//     else opportunistic TLS;
//   - the SMTP reply of every refusal: always 451 (RFC 7672 §2.1.2, §2.2:
//     a failure means "try later", never a bounce) with an enhanced code
//     saying why (RFC 3463).
//
// The engine knows nothing about maddy: package service builds it and
// the repository root translates its verdicts into maddy's MX/TLS levels
// and SMTP errors; the operator's checker drives the very same code.
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
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// PolicyLookup returns the policy for a destination domain, or ok=false to
// use the default. An error defers delivery; it never weakens the policy.
type PolicyLookup func(ctx context.Context, domain string) (p DomainPolicy, ok bool, err error)

// STS is the MTA-STS component of the engine: it answers "which MTA-STS
// policy applies to this domain now". *mtastsfallback.Manager implements
// it; tests may substitute their own.
type STS interface {
	Policy(ctx context.Context, domain string) (*mtastsfallback.Result, error)
}

// Config configures an Engine.
type Config struct {
	// DNS answers every question the engine asks, with its DNSSEC status,
	// through the shared cache. Required.
	DNS *CachedQuerier
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
	// STS, if not nil, supplies MTA-STS policies for levels dane and
	// mtasts. It should share DNS (DNS.LookupTXT).
	STS STS
	// WarmDial, if not nil, is called for each MX host whose address
	// records are not in the cache when Prepare starts looking them up.
	// The MTA dials the host by name through the system resolver, which
	// asks A and AAAA, while the engine asks AAAA only for a host without
	// A records; WarmDial lets the glue put the AAAA answer into that
	// resolver's cache meanwhile. It must return at once and never
	// affects a verdict.
	WarmDial func(ctx context.Context, host string)
}

// Engine is safe for concurrent use by many deliveries.
type Engine struct {
	cfg  Config
	disc *dane.Discoverer
	// aheadDisc is disc with speculative TLSA queries, for Prepare;
	// coldDisc adds the CNAME probe, for a host whose address records
	// are not cached.
	aheadDisc *dane.Discoverer
	coldDisc  *dane.Discoverer
	now       func() time.Time
	roots     *x509.CertPool
	rootErr   error
}

// New builds an Engine.
func New(cfg Config) (*Engine, error) {
	if cfg.DNS == nil {
		return nil, errors.New("engine: no DNS querier configured")
	}
	if cfg.DefaultLevel == "" {
		cfg.DefaultLevel = LevelDANE
	}
	e := &Engine{cfg: cfg, now: cfg.Now, roots: cfg.Roots, disc: &dane.Discoverer{Q: cfg.DNS},
		// A delivery's MX hosts (Prepare) send their TLSA question
		// beside their address questions; dane.Discoverer uses the
		// answer only where RFC 7672 §2.2.2's order would have asked it
		// (docs/cache.md). Destination keeps the prescribed order.
		aheadDisc: &dane.Discoverer{Q: cfg.DNS, SpeculativeTLSA: true},
		// A cold host also has its CNAME record asked, outside the
		// cache, so that an alias's target has its TLSA question asked
		// beside the target's address records (docs/cache.md).
		coldDisc: &dane.Discoverer{Q: cfg.DNS, SpeculativeTLSA: true, CNAMEProbe: cfg.DNS.Uncached()}}
	if e.now == nil {
		e.now = time.Now
	}
	if e.roots == nil {
		e.roots, e.rootErr = x509.SystemCertPool()
	}
	return e, nil
}

// DNS returns the cached querier the engine uses, for components that
// share it (the checker's own lookups, reports).
func (e *Engine) DNS() *CachedQuerier { return e.cfg.DNS }

// STSEnabled reports whether the engine consults MTA-STS policies.
func (e *Engine) STSEnabled() bool { return e.cfg.STS != nil }

// Destination holds what one delivery learned about one next-hop domain.
// Create one per delivery and domain, with Prepare or Destination. A
// Destination from Prepare fills its fields in the background: read them
// only after Wait (CheckMX and CheckConn wait for what they need). The
// exported fields of a Destination built by the caller are taken as
// final.
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

	bg *prefetch // nil for a Destination built by the caller
}

// hostState is what CheckMX learned about one MX host, for CheckConn.
type hostState struct {
	host    *dane.Host
	tlsa    dane.TLSAState
	usable  []dane.Record
	checked *Verdict               // CheckMX's verdict, completed by CheckConn
	sts     *mtastsfallback.Policy // MTA-STS policy covering this host, when DANE does not govern
	// stsPending: CheckMX passed this DANE-governed host without waiting
	// for the MTA-STS policy; CheckConn applies it to the verdict's fields.
	stsPending bool
}

// usesDANE reports whether DNS lookups for DANE are done at this level.
func (l Level) usesDANE() bool {
	return l == LevelDANE || l == LevelDANEOnly || l == LevelMTASTS
}

// usesSTS reports whether the MTA-STS policy of a destination is consulted
// at this level. dane-only never uses it: the operator asked for DANE and
// nothing else.
func (l Level) usesSTS() bool {
	return l == LevelDANE || l == LevelMTASTS
}

// Destination evaluates a next-hop domain: its policy, where DANE may
// apply its MX RRset, and where MTA-STS may apply its MTA-STS policy. It
// makes Prepare's lookups under ctx and returns when they are done,
// except that the MX hosts are looked up only when CheckMX asks for them
// (the checker's way; a delivery uses Prepare).
func (e *Engine) Destination(ctx context.Context, domain string) *Destination {
	d := e.newDestination(ctx, domain)
	e.prefetch(d)
	if err := d.Wait(ctx); err != nil {
		// ctx ended before the MTA-STS lookup did. It still owns
		// d.STS: answer with a destination that defers, never one
		// that weakens the policy.
		d.Release()
		return &Destination{Domain: d.Domain, Policy: DomainPolicy{Level: e.cfg.DefaultLevel, Source: "default"},
			PolicyErr: fmt.Errorf("the lookups for %s did not finish: %w", d.Domain, err)}
	}
	return d
}

func (e *Engine) base(d *Destination, mx string) *Verdict {
	v := &Verdict{Domain: d.Domain, MX: strings.ToLower(strings.TrimSuffix(mx, ".")), Level: d.Policy.Level}
	v.MXSecure = d.MX.SecureFor(mx)
	return v
}

// CheckMX decides whether the MX host mx may be used for d, before any
// connection is made. A Deferred verdict means: skip this MX. It waits
// for the lookups the verdict needs, and for no others: the MTA-STS policy
// is not awaited for a host that DANE governs on a secure MX RRset.
func (e *Engine) CheckMX(ctx context.Context, d *Destination, mx string) *Verdict {
	if err := d.waitReady(ctx); err != nil {
		return e.checkMXGaveUp(d, mx, err)
	}
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
		return deferVerdict(v, ReasonPolicyLookup, codeDNS, "", "Cannot read the TLS policy for this destination, will retry")
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
	mandatory := lvl == LevelDANEOnly
	if mandatory && !v.MXSecure {
		// RFC 7672 §2.2.1, §6: insecure MX RRset and mandatory DANE: delay.
		v.Mechanism = MechDANE
		return deferVerdict(v, ReasonDANERequired, codePolicy, tlsrpt.ResultDANERequired, "DANE is required for this destination but its MX records are not DNSSEC-signed")
	}

	// RFC 7672 §2.2.2, §2.2.3: address records, then the TLSA RRset
	// (looked up since the MX RRset arrived, for every host at once).
	h, err := d.lookupHost(ctx, e, mx)
	if err != nil {
		// RFC 7672 §2.1.2: the server is unreachable; try the next one.
		if errors.Is(err, dane.ErrNoAddress) {
			return deferVerdict(v, ReasonNoAddress, codeDNS, "", "MX host %s has no address records", v.MX)
		}
		return deferDNS(v, err, "TLSA")
	}
	hs.host = h
	v.TLSABase = strings.TrimSuffix(h.BaseDomain, ".")
	hs.tlsa = dane.TLSANone
	if h.Status == dane.HasTLSA {
		// RFC 7672 §3.1, RFC 7671 §9: only usable records authenticate.
		hs.usable, _ = dane.ClassifyRRs(h.TLSA)
		hs.tlsa = dane.TLSAUnusable
		if len(hs.usable) != 0 {
			hs.tlsa = dane.TLSAUsable
		}
		v.Mechanism = MechDANE
		v.TLSARRset = h.TLSA
	}
	if mandatory && !daneCanSucceed(hs.tlsa) {
		// RFC 7672 §6: mandatory DANE authenticates with usable records
		// only; refuse the host before connecting when even a perfect
		// connection could not satisfy dane.Decide. A set of unusable
		// records gives encryption, not authentication (§2.2).
		v.Mechanism = MechDANE
		what := "has no DNSSEC-signed TLSA records"
		if hs.tlsa == dane.TLSAUnusable {
			what = "publishes no usable TLSA records"
		}
		return deferVerdict(v, ReasonDANERequired, codePolicy, tlsrpt.ResultDANERequired, "DANE is required for this destination but MX host %s %s", v.MX, what)
	}
	if lvl.usesSTS() && hs.daneGoverns() && v.MXSecure && !d.stsReady() {
		// DANE governs this host and nothing in the MTA-STS policy can
		// refuse it (checkMXSTS: a secure MX RRset and usable TLSA
		// records overrule the policy's MX list): do not wait for a
		// policy still being discovered or fetched. CheckConn completes
		// the verdict's MTA-STS fields.
		hs.stsPending = true
		return v
	}
	if err := d.waitSTS(ctx); err != nil {
		return e.checkMXSTS(v, d, hs, stsOutcome{err: err})
	}
	return e.checkMXSTS(v, d, hs, d.stsOutcome())
}

// checkMXGaveUp is CheckMX's verdict when ctx ended before the
// destination's policy or MX RRset was known: as if that lookup had
// failed (RFC 7672 §2.1.2).
func (e *Engine) checkMXGaveUp(d *Destination, mx string, err error) *Verdict {
	v := &Verdict{Domain: d.Domain, MX: strings.ToLower(strings.TrimSuffix(mx, ".")), Level: e.cfg.DefaultLevel}
	d.mu.Lock()
	if d.hosts == nil {
		d.hosts = map[string]*hostState{}
	}
	d.hosts[v.MX] = &hostState{checked: v}
	d.mu.Unlock()
	return deferDNS(v, err, "MX")
}

// daneCanSucceed asks dane.Decide about the best connection a server with
// this TLSA state could offer (TLS, a matching record) under mandatory
// DANE.
func daneCanSucceed(s dane.TLSAState) bool {
	return dane.Decide(dane.Observation{TLSA: s, TLS: true, Match: &dane.Match{}, Mandatory: true}).Verdict.Proceed()
}

// deferDNS defers a host whose lookups failed (RFC 7672 §2.1.2); a
// validation failure is reported as dnssec-invalid (RFC 8460 §4.3.2.1).
func deferDNS(v *Verdict, err error, what string) *Verdict {
	v.Detail = err.Error()
	var le *dane.LookupError
	if errors.As(err, &le) && le.DNSSECFailure() {
		return deferVerdict(v, ReasonDNSSECBogus, codeDNS, tlsrpt.ResultDNSSECInvalid, "DNSSEC validation failed for the %s lookup, will retry", what)
	}
	return deferVerdict(v, ReasonDNSFailure, codeDNS, "", "DNS %s lookup failed, will retry", what)
}

// daneGoverns reports whether DANE decides for this host: it has usable
// records in a DNSSEC-validated TLSA RRset (RFC 8461 §2: DANE takes
// precedence). A secure RRset of unusable records only makes TLS mandatory
// (RFC 7672 §2.2) and authenticates nothing; an MTA-STS policy covering
// the host then decides the authentication.
func (hs *hostState) daneGoverns() bool { return hs.tlsa == dane.TLSAUsable }

// checkMXSTS applies the MTA-STS part of CheckMX (RFC 8461 §4.1, §5) to an
// MX host whose DANE lookups are done. It returns v, possibly deferred.
//
// Precedence, documented in docs/mtasts.md:
//   - a host with usable records in a secure TLSA RRset is DANE's: a
//     missing or failed MTA-STS policy changes nothing for it;
//   - an enforce policy that does not list the host refuses it, except
//     when the MX RRset is DNSSEC-secure and the host has usable TLSA
//     records: then the host is authenticated by DNSSEC alone, as
//     strongly as the policy could, and DANE governs (the verdict's
//     detail says the policy was overruled). With an insecure MX RRset
//     the pattern check is the only protection against a forged MX
//     answer, so it stands even for hosts with TLSA records.
func (e *Engine) checkMXSTS(v *Verdict, d *Destination, hs *hostState, so stsOutcome) *Verdict {
	lvl := d.Policy.Level
	if !lvl.usesSTS() {
		return v
	}
	v.STS = so.res
	p := so.policy()
	if p != nil {
		v.STSPolicyID, v.STSMode = p.ID, string(p.Mode)
	}
	daneHost := hs.daneGoverns()
	if lvl == LevelMTASTS && !daneHost {
		switch {
		case e.cfg.STS == nil:
			return deferVerdict(v, ReasonSTSRequired, codePolicy, "", "MTA-STS is required for %s but MTA-STS support is disabled", d.Domain)
		case p == nil && so.failure() != nil:
			err := so.failure()
			v.Detail = err.Error()
			return deferVerdict(v, ReasonSTSFetchFailure, codePolicy, stsResultType(err, tlsrpt.ResultSTSPolicyFetchError),
				"MTA-STS is required for %s but its policy could not be obtained, will retry", d.Domain)
		case p == nil || p.Mode != mtastsfallback.ModeEnforce:
			mode := "no policy"
			if p != nil {
				mode = "mode " + string(p.Mode)
			}
			v.Detail = "published MTA-STS: " + mode
			return deferVerdict(v, ReasonSTSRequired, codePolicy, "", "MTA-STS is required for %s but it publishes no policy in enforce mode (%s)", d.Domain, mode)
		}
	}
	if p == nil || p.Mode == mtastsfallback.ModeNone {
		if err := so.failure(); p == nil && err != nil && v.Detail == "" {
			// Opportunistic delivery goes on; say why MTA-STS did not
			// apply (the manager logs the failure itself too).
			v.Detail = err.Error()
		}
		return v
	}
	err := p.CheckMX(v.MX)
	switch {
	case err == nil:
		hs.sts = p
		if p.Mode == mtastsfallback.ModeEnforce {
			v.STSMXMatched = true
		}
		if !daneHost {
			v.Mechanism = MechMTASTS
		}
		return v
	case mtastsfallback.IsReportOnly(err):
		// Testing mode: go on; CheckConn records the failure.
		if !daneHost {
			hs.sts = p
			v.Mechanism = MechMTASTS
		}
		return v
	case daneHost && v.MXSecure:
		// The decision above: DNSSEC authenticated this MX host.
		v.Detail = fmt.Sprintf("%s not listed in the MTA-STS policy (id %s); DANE governs: secure MX RRset and usable TLSA records", v.MX, p.ID)
		return v
	}
	v.Mechanism = MechMTASTS
	v.Detail = err.Error()
	// RFC 8461 §4.1, §5: do not use this MX. The failure is temporary
	// (§5.1: a fresh policy must be checked before any permanent failure),
	// and maddy tries the next MX.
	return deferVerdict(v, ReasonSTSMXMismatch, codeMXNotOK, stsResultType(err, tlsrpt.ResultValidationFailure),
		"MX host %s is not listed in the MTA-STS policy of %s", v.MX, d.Domain)
}

// stsOutcome is the MTA-STS lookup a decision is made with.
type stsOutcome struct {
	res *mtastsfallback.Result
	err error // invalid domain, or the wait for the lookup ended
}

// policy returns the policy in force, nil if none.
func (so stsOutcome) policy() *mtastsfallback.Policy {
	if so.res == nil {
		return nil
	}
	return so.res.Policy
}

// failure returns what went wrong discovering the policy, if anything.
func (so stsOutcome) failure() error {
	if so.err != nil {
		return so.err
	}
	if so.res != nil {
		return so.res.Err
	}
	return nil
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
	if hs.stsPending && v.OK() {
		// CheckMX did not wait for the MTA-STS policy of this
		// DANE-governed host; the connection's verdict names it, as it
		// would have. checkMXSTS cannot refuse such a host.
		so := stsOutcome{err: d.waitSTS(ctx)}
		if so.err == nil {
			so = d.stsOutcome()
		}
		e.checkMXSTS(&v, d, hs, so)
	}
	if !v.OK() {
		// CheckMX refused this host: no connection to it can be
		// acceptable, whatever it offers. (A caller that connects anyway,
		// like the TLS report bypass, gets the refusal again, never a
		// verdict that lets mail through.)
		return &v
	}
	tlsOn := st.HandshakeComplete

	// DANE first: where a secure TLSA RRset exists it governs the
	// connection, and nothing else can rescue a failing DANE check
	// (RFC 8461 §2).
	if hs.tlsa != dane.TLSANone {
		if hs.tlsa == dane.TLSAUnusable && hs.sts != nil && tlsOn {
			// Only unusable TLSA records: TLS was mandatory and is
			// there; MTA-STS decides the authentication.
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
			return deferVerdict(&v, ReasonNoTLS, codeNoTLS, tlsrpt.ResultSTARTTLSNotSupported, "TLS is required for this destination but was not available")
		}
		v.Result, v.Reason = Encrypted, ReasonEncryptRequired
		return &v
	case LevelVerify:
		return e.checkVerify(&v, d, st)
	case LevelFingerprint:
		return checkFingerprint(&v, d, st)
	}

	// dane / mtasts with no TLSA for this host: MTA-STS where a policy
	// covers it.
	if hs.sts != nil {
		return e.checkConnSTS(&v, hs, st)
	}
	// RFC 7672 §2.2: DANE does not apply; opportunistic TLS.
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
// RRset: dane.Decide is the decision table, this function only runs the
// verification it needs and words the outcome.
func (e *Engine) checkDANE(v *Verdict, d *Destination, hs *hostState, st tls.ConnectionState) *Verdict {
	v.Mechanism = MechDANE
	o := dane.Observation{TLSA: hs.tlsa, TLS: st.HandshakeComplete, Mandatory: d.Policy.Level == LevelDANEOnly}
	if o.TLS && o.TLSA == dane.TLSAUsable {
		// RFC 7672 §3.2.2: the reference identifiers depend on the
		// security of the MX RRset; dane.ReferenceNames decides.
		o.Match, o.VerifyErr = dane.Verify(st.PeerCertificates, hs.usable, dane.VerifyOptions{
			ReferenceNames: dane.ReferenceNames(d.MX, hs.host), Now: e.now(),
		})
	}
	dec := dane.Decide(o)
	switch {
	case dec.Verdict == dane.Authenticated:
		r := dec.Match.Record
		v.TLSA = fmt.Sprintf("%d %d %d", r.Usage, r.Selector, r.MatchingType)
		v.Result = Authenticated
		v.Reason = ReasonDANEMatch
		if !v.MXSecure {
			// RFC 7672 §2.2.1: never present this as secure delivery to
			// the next-hop domain.
			v.Reason = ReasonDANEMatchInsecure
		}
		return v
	case dec.Verdict == dane.EncryptedOnly:
		// RFC 7672 §2.2: all records unusable: TLS mandatory, no
		// authentication.
		v.Result, v.Reason = Encrypted, ReasonDANEUnusable
		return v
	case dec.Reason == dane.ReasonTLSRequired:
		// RFC 7672 §2.2: TLSA records are a commitment to STARTTLS; never
		// fall back to plaintext.
		return deferVerdict(v, ReasonNoTLS, codeNoTLS, tlsrpt.ResultSTARTTLSNotSupported, "MX host %s publishes TLSA records but TLS could not be established", v.MX)
	case dec.Reason == dane.ReasonNoUsableRecords || dec.Reason == dane.ReasonDANERequired:
		// Mandatory DANE without usable records; CheckMX refuses such
		// hosts already, so this is only reached by a caller that
		// connects anyway.
		return deferVerdict(v, ReasonDANERequired, codePolicy, tlsrpt.ResultDANERequired, "DANE is required for this destination but MX host %s publishes no usable TLSA records", v.MX)
	}
	// RFC 7672 §3.2: usable records, and none authenticated the server.
	err := dec.Err
	if err == nil {
		err = errors.New(string(dec.Reason))
	}
	v.Detail = err.Error()
	return deferVerdict(v, ReasonDANEMismatch, codeAuth, dec.Reason.ResultType(), "MX host %s failed DANE authentication: %s", v.MX, err.Error())
}

func (e *Engine) checkVerify(v *Verdict, d *Destination, st tls.ConnectionState) *Verdict {
	v.Mechanism = MechVerify
	if !st.HandshakeComplete {
		return deferVerdict(v, ReasonNoTLS, codeNoTLS, tlsrpt.ResultSTARTTLSNotSupported, "TLS is required for this destination but was not available")
	}
	if e.rootErr != nil {
		return deferVerdict(v, ReasonVerifyFailed, codeAuth, tlsrpt.ResultCertificateNotTrusted, "No trusted root certificates available: %v", e.rootErr)
	}
	err := verifyWebPKI(st.PeerCertificates, e.roots, []string{v.MX, d.Domain}, e.now())
	if err != nil {
		v.Detail = err.Error()
		return deferVerdict(v, ReasonVerifyFailed, codeAuth, webPKIResultType(err), "Certificate of MX host %s is not valid for it: %v", v.MX, err)
	}
	v.Result, v.Reason = Authenticated, ReasonVerifyValid
	return v
}

func checkFingerprint(v *Verdict, d *Destination, st tls.ConnectionState) *Verdict {
	v.Mechanism = MechFingerprint
	if !st.HandshakeComplete {
		return deferVerdict(v, ReasonNoTLS, codeNoTLS, tlsrpt.ResultSTARTTLSNotSupported, "TLS is required for this destination but was not available")
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
	return deferVerdict(v, ReasonFingerprintMissing, codeAuth, tlsrpt.ResultCertificateNotTrusted, "Certificate of MX host %s matches no configured fingerprint", v.MX)
}

// checkConnSTS applies RFC 8461 §4.2 and §5 to a connection with a host
// that DANE does not govern and that an MTA-STS policy (enforce or
// testing) covers.
func (e *Engine) checkConnSTS(v *Verdict, hs *hostState, st tls.ConnectionState) *Verdict {
	p := hs.sts
	v.Mechanism = MechMTASTS
	// §4.2, §7.2: TLS 1.2 or later, a certificate valid under WebPKI for
	// the MX host name.
	err := mtastsfallback.CheckConn(p, v.MX, st, e.roots, e.now())
	if err == nil {
		v.Result, v.Reason = Authenticated, ReasonSTSValid
		return v
	}
	v.Detail = err.Error()
	report := stsResultType(err, tlsrpt.ResultValidationFailure)
	if mtastsfallback.IsReportOnly(err) {
		// §5 testing mode: deliver, record the failure for TLSRPT.
		v.Result, v.Reason, v.ReportType = resultFor(st.HandshakeComplete), ReasonSTSTestingFailure, report
		return v
	}
	var se *mtastsfallback.Error
	errors.As(err, &se)
	switch {
	case se != nil && se.Code == mtastsfallback.CodeNoTLS:
		return deferVerdict(v, ReasonNoTLS, codeNoTLS, report, "The MTA-STS policy of %s requires TLS but MX host %s did not provide it", v.Domain, v.MX)
	case se != nil && se.Code == mtastsfallback.CodeTLSVersion:
		return deferVerdict(v, ReasonSTSTLSVersion, codeAuth, report, "The MTA-STS policy of %s requires TLS 1.2 or later; MX host %s negotiated %s", v.Domain, v.MX, v.TLSVersion)
	case se != nil && se.Code == mtastsfallback.CodeMXNotInPolicy:
		// Cannot happen after CheckMX, kept for safety.
		return deferVerdict(v, ReasonSTSMXMismatch, codeMXNotOK, report, "MX host %s is not listed in the MTA-STS policy of %s", v.MX, v.Domain)
	}
	return deferVerdict(v, ReasonSTSCertInvalid, codeAuth, report, "The MTA-STS policy of %s requires a valid certificate; MX host %s failed: %s", v.Domain, v.MX, report)
}

// SMTP replies of refusals. RFC 7672 §2.1.2 and §2.2 make every DANE
// failure a "try later", and RFC 8461 §5.1 every MTA-STS failure before a
// policy refresh: all are 451, none bounces mail. The enhanced codes
// (RFC 3463) say why.
const replyCode = 451

var (
	codeDNS     = [3]int{4, 4, 3} // directory server failure: DNS trouble, unreadable policy
	codeAuth    = [3]int{4, 7, 5} // cryptographic failure: certificate not authenticated
	codeNoTLS   = [3]int{4, 7, 4} // security features not supported: TLS required, not offered
	codePolicy  = [3]int{4, 7, 5} // the level demands what this MX cannot give
	codeMXNotOK = [3]int{4, 7, 4} // MTA-STS: the MX host is not in the policy
)

// deferVerdict makes v a refusal with its reason, SMTP reply and RFC 8460
// result type ("" for failures that are not reported, RFC 8460 §4.3.4).
func deferVerdict(v *Verdict, reason Reason, code [3]int, report, msg string, args ...any) *Verdict {
	v.Result = Deferred
	v.Reason = reason
	v.Code = replyCode
	v.EnhancedCode = code
	v.ReportType = report
	v.Message = fmt.Sprintf(msg, args...)
	return v
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

// webPKIResultType maps an x509 error to an RFC 8460 §4.3 result type.
func webPKIResultType(err error) string {
	var hn x509.HostnameError
	var inv x509.CertificateInvalidError
	switch {
	case errors.As(err, &hn):
		return tlsrpt.ResultCertificateHostMismatch
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return tlsrpt.ResultCertificateExpired
	default:
		return tlsrpt.ResultCertificateNotTrusted
	}
}

// stsResultType returns the RFC 8460 result type of an MTA-STS error.
func stsResultType(err error, def string) string {
	if r := mtastsfallback.ReasonOf(err); r != "" {
		return string(r)
	}
	return def
}
