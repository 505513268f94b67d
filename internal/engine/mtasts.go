package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/maddy-dane/daneguard/dane"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	"github.com/miekg/dns"
)

// STS is the MTA-STS component of the engine: it answers "which MTA-STS
// policy applies to this domain now". *mtastsfallback.Manager implements
// it; tests may substitute their own.
type STS interface {
	Policy(ctx context.Context, domain string) (*mtastsfallback.Result, error)
}

// SetSTS installs the MTA-STS component after New, for callers whose
// component needs the engine's own cached querier (LookupTXT). It must be
// called before the engine is used; nil disables MTA-STS.
func (e *Engine) SetSTS(s STS) { e.cfg.STS = s }

// LookupTXT resolves TXT records through the engine's DNS cache, so that
// the MTA-STS discovery records (_mta-sts.<domain>) share the TTL-exact
// cache with the DANE lookups. It satisfies mtastsfallback.LookupTXTFunc:
// CNAMEs are followed by the resolver, the strings of each record are
// joined, and a missing record is reported as mtastsfallback.ErrNoRecord.
func (e *Engine) LookupTXT(ctx context.Context, name string) ([]string, error) {
	a, err := e.Querier().Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	if a.Rcode == dns.RcodeNameError || !a.Exists() {
		return nil, mtastsfallback.ErrNoRecord
	}
	var out []string
	for _, rr := range a.Records {
		if t, ok := rr.(*dns.TXT); ok {
			// RFC 8461 §3.1: the strings of one record are concatenated.
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}

// usesSTS reports whether the MTA-STS policy of a destination is consulted
// at this level. dane-only never uses it: the operator asked for DANE and
// nothing else.
func (l Level) usesSTS() bool {
	return l == LevelDANE || l == LevelMTASTS
}

// lookupSTS fetches (or finds cached) the destination's MTA-STS policy.
func (e *Engine) lookupSTS(ctx context.Context, d *Destination) {
	if e.cfg.STS == nil || d.PolicyErr != nil || !d.Policy.Level.usesSTS() {
		return
	}
	d.STS, d.STSErr = e.cfg.STS.Policy(ctx, d.Domain)
}

// stsPolicy returns the policy in force for d, nil if none.
func (d *Destination) stsPolicy() *mtastsfallback.Policy {
	if d.STS == nil {
		return nil
	}
	return d.STS.Policy
}

// stsErr returns what went wrong discovering d's policy, if anything.
func (d *Destination) stsErr() error {
	if d.STSErr != nil {
		return d.STSErr
	}
	if d.STS != nil {
		return d.STS.Err
	}
	return nil
}

// daneGoverns reports whether DANE decides for this host: it has usable
// records in a DNSSEC-validated TLSA RRset (RFC 8461 §2: DANE takes
// precedence). A secure RRset of unusable records only makes TLS mandatory
// (RFC 7672 §2.2) and authenticates nothing; an MTA-STS policy covering
// the host then decides the authentication.
func (hs *hostState) daneGoverns() bool {
	return hs.host != nil && hs.host.Status == dane.HasTLSA && len(hs.usable) > 0
}

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
func (e *Engine) checkMXSTS(v *Verdict, d *Destination, hs *hostState) *Verdict {
	lvl := d.Policy.Level
	if !lvl.usesSTS() {
		return v
	}
	p := d.stsPolicy()
	if p != nil {
		v.STSPolicyID, v.STSMode = p.ID, string(p.Mode)
	}
	daneHost := hs.daneGoverns()
	if lvl == LevelMTASTS && !daneHost {
		switch {
		case e.cfg.STS == nil:
			return defer4(v, ReasonSTSRequired, codePolicy, "", "MTA-STS is required for %s but MTA-STS support is disabled", d.Domain)
		case p == nil && d.stsErr() != nil:
			err := d.stsErr()
			v.Detail = err.Error()
			return defer4(v, ReasonSTSFetchFailure, codePolicy, stsReportType(err, "sts-policy-fetch-error"),
				"MTA-STS is required for %s but its policy could not be obtained, will retry", d.Domain)
		case p == nil || p.Mode != mtastsfallback.ModeEnforce:
			mode := "no policy"
			if p != nil {
				mode = "mode " + string(p.Mode)
			}
			v.Detail = "published MTA-STS: " + mode
			return defer4(v, ReasonSTSRequired, codePolicy, "", "MTA-STS is required for %s but it publishes no policy in enforce mode (%s)", d.Domain, mode)
		}
	}
	if p == nil || p.Mode == mtastsfallback.ModeNone {
		if err := d.stsErr(); p == nil && err != nil && v.Detail == "" {
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
	return defer4(v, ReasonSTSMXMismatch, codeMXNotOK, stsReportType(err, "validation-failure"),
		"MX host %s is not listed in the MTA-STS policy of %s", v.MX, d.Domain)
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
	report := stsReportType(err, "validation-failure")
	if mtastsfallback.IsReportOnly(err) {
		// §5 testing mode: deliver, record the failure for TLSRPT.
		v.Result, v.Reason, v.ReportType = resultFor(st.HandshakeComplete), ReasonSTSTestingFailure, report
		return v
	}
	var se *mtastsfallback.Error
	errors.As(err, &se)
	switch {
	case se != nil && se.Code == mtastsfallback.CodeNoTLS:
		return defer4(v, ReasonNoTLS, codeNoTLS, report, "The MTA-STS policy of %s requires TLS but MX host %s did not provide it", v.Domain, v.MX)
	case se != nil && se.Code == mtastsfallback.CodeTLSVersion:
		return defer4(v, ReasonSTSTLSVersion, codeAuth, report, "The MTA-STS policy of %s requires TLS 1.2 or later; MX host %s negotiated %s", v.Domain, v.MX, v.TLSVersion)
	case se != nil && se.Code == mtastsfallback.CodeMXNotInPolicy:
		// Cannot happen after CheckMX, kept for safety.
		return defer4(v, ReasonSTSMXMismatch, codeMXNotOK, report, "MX host %s is not listed in the MTA-STS policy of %s", v.MX, v.Domain)
	}
	return defer4(v, ReasonSTSCertInvalid, codeAuth, report, "The MTA-STS policy of %s requires a valid certificate; MX host %s failed: %s", v.Domain, v.MX, report)
}

// stsReportType returns the RFC 8460 result type of an MTA-STS error.
func stsReportType(err error, def string) string {
	if r := mtastsfallback.ReasonOf(err); r != "" {
		return string(r)
	}
	return def
}
