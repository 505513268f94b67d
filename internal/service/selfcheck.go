package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/maddy-dane/daneguard/internal/selfcheck"
)

// The background checks of the server's own health (docs/own-domain.md):
//
//   - the resolver health loop (resolver_check_interval) probes every
//     resolver the service queries with selfcheck.CheckResolver, exports
//     maddy_daneguard_resolver_*, and logs when a resolver turns bad and
//     when it recovers;
//   - the self-check loop (selfcheck_interval) runs selfcheck.Run as
//     `maddy check --self` does, with the server's hostname, local domains
//     and certificate, exports maddy_daneguard_selfcheck_*, and logs one
//     line per error or warning, naming the record or address and the fix.

// Log messages of the background checks (docs/logging.md).
const (
	msgResolverBad  = "resolver unhealthy"
	msgResolverGood = "resolver recovered"
	msgProblem      = "self-check problem"
	msgSelfcheck    = "self-check done"
	msgNoCert       = "self-check: no certificate to check"
)

// selfcheckRunTimeout bounds one self-check run (every probe has its own
// 20 s limit; a run checks a handful of addresses and one policy per
// domain).
const selfcheckRunTimeout = 5 * time.Minute

// runHealth probes the resolvers every interval until ctx ends.
func (s *Service) runHealth(ctx context.Context, every time.Duration) {
	registerOwnMetrics()
	healthy := map[string]bool{} // absent: not probed yet
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, srv := range s.resolver.Servers() {
			h := selfcheck.CheckResolver(ctx, srv, selfcheck.HealthOptions{Timeout: min(s.settings.ResolverTimeout, every)})
			if ctx.Err() != nil {
				return
			}
			own.setHealth(h)
			ok := h.Problem == nil
			was, known := healthy[h.Server]
			switch {
			case !ok && (was || !known):
				s.log.Msg(msgResolverBad, "server", h.Server, "code", h.Problem.Code, "error", h.Error, "fix", h.Problem.Fix)
			case ok && known && !was:
				s.log.Msg(msgResolverGood, "server", h.Server, "rtt_ms", h.RTT.Milliseconds())
			}
			healthy[h.Server] = ok
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// runSelfcheck runs the self-check every interval until ctx ends. The
// first run waits one interval, at most a minute: the service starts while
// maddy initializes, before its SMTP listeners accept connections.
func (s *Service) runSelfcheck(ctx context.Context, every time.Duration) {
	registerOwnMetrics()
	if !s.hasCertSource() {
		s.log.Msg(msgNoCert, "reason", "no selfcheck_cert and no global tls directive",
			"fix", "set selfcheck_cert to the certificate file of the port 25 endpoint (or selfcheck_cert acme); until then rollover readiness is not checked")
	}
	timer := time.NewTimer(min(every, time.Minute))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		rep := s.SelfcheckOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		own.setReport(rep)
		timer.Reset(every)
	}
}

// SelfcheckOnce runs the self-check once with the service's settings and
// logs its problems.
func (s *Service) SelfcheckOnce(ctx context.Context) *selfcheck.Report {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, selfcheckRunTimeout)
	defer cancel()
	o := s.selfcheckOptions()
	chain, src, path, certErr := s.loadedChain()
	o.Chain, o.Source, o.ChainPath = chain, src, path
	rep, err := selfcheck.Run(ctx, o)
	if err != nil {
		// Only bad options fail Run; New has checked them.
		s.log.Error("self-check cannot run", err)
		return nil
	}
	if certErr != nil {
		rep.Add(selfcheck.Problem{Severity: selfcheck.SevWarning, Code: "certificate-unreadable", Subject: path,
			Message: "cannot read the certificate maddy loads: " + certErr.Error(),
			Fix:     "point selfcheck_cert at the certificate file of the port 25 endpoint (selfcheck_cert acme for maddy's ACME loader)"})
	}
	errs, warns := 0, 0
	for _, p := range rep.Problems {
		switch p.Severity {
		case selfcheck.SevError:
			errs++
		case selfcheck.SevWarning:
			warns++
		default:
			s.log.DebugMsg(msgProblem, "severity", string(p.Severity), "code", p.Code, "subject", p.Subject, "problem", p.Message, "fix", p.Fix)
			continue
		}
		s.log.Msg(msgProblem, "severity", string(p.Severity), "code", p.Code, "subject", p.Subject, "problem", p.Message, "fix", p.Fix)
	}
	status := map[int]string{selfcheck.ExitOK: "ok", selfcheck.ExitWarning: "warning", selfcheck.ExitBroken: "broken"}[rep.ExitCode]
	s.log.Msg(msgSelfcheck, "status", status, "errors", errs, "warnings", warns, "own_mx", len(rep.Hosts),
		"duration_ms", time.Since(start).Milliseconds())
	return rep
}

// selfcheckOptions are the inputs of a run except the certificate.
func (s *Service) selfcheckOptions() selfcheck.Options {
	sc := s.settings.Selfcheck
	domains := sc.Domains
	if domains == nil {
		domains = s.deps.Domains
	}
	o := selfcheck.Options{
		Hostname: s.deps.Hostname,
		Domains:  domains,
		// The resolver itself, not the cache: the check must see what
		// the DNS says now, as a sender with a cold cache does.
		Querier: s.resolver,
		Roots:   s.settings.Roots,
		Days:    sc.Days,
	}
	if ifs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifs {
			if n, ok := a.(*net.IPNet); ok {
				o.LocalAddrs = append(o.LocalAddrs, n.IP)
			}
		}
	}
	o.LocalAddrs = append(o.LocalAddrs, sc.Addresses...)
	return o
}

func (s *Service) hasCertSource() bool {
	sc := s.settings.Selfcheck
	return sc.ACME || sc.CertPath != "" || s.deps.ServerTLS != nil
}

// loadedChain reads the certificate chain the server loads, afresh on
// every run (a renewal replaces it): selfcheck_cert's file, the ACME
// loader's newest certificate for the hostname, or what the global tls
// directive serves for the hostname. No source: nil and no error.
func (s *Service) loadedChain() (chain []*x509.Certificate, src selfcheck.KeySource, path string, err error) {
	sc := s.settings.Selfcheck
	switch {
	case sc.ACME:
		store := sc.CertPath
		if store == "" {
			store = filepath.Join(s.deps.StateDir, "acme")
		}
		path, err = selfcheck.ACMECertPath(store, s.deps.Hostname)
		if err != nil {
			return nil, selfcheck.SourceACME, store, err
		}
		chain, err = selfcheck.ReadChain(path)
		return chain, selfcheck.SourceACME, path, err
	case sc.CertPath != "":
		chain, err = selfcheck.ReadChain(sc.CertPath)
		return chain, selfcheck.SourceFile, sc.CertPath, err
	case s.deps.ServerTLS != nil:
		chain, err = servedChain(s.deps.ServerTLS, s.deps.Hostname)
		return chain, selfcheck.SourceFile, "global tls directive", err
	}
	return nil, selfcheck.SourceFile, "", nil
}

// servedChain asks a server TLS configuration for the certificate it would
// present to a client asking for host (SNI).
func servedChain(cfg *tls.Config, host string) (chain []*x509.Certificate, err error) {
	defer func() {
		// A loader's callback may expect a real handshake.
		if r := recover(); r != nil {
			chain, err = nil, fmt.Errorf("the tls configuration's certificate callback failed: %v", r)
		}
	}()
	hello := &tls.ClientHelloInfo{ServerName: host, SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12}}
	if cfg.GetConfigForClient != nil {
		c, err := cfg.GetConfigForClient(hello)
		if err != nil {
			return nil, err
		}
		if c != nil {
			cfg = c
		}
	}
	var cert *tls.Certificate
	switch {
	case cfg.GetCertificate != nil:
		if cert, err = cfg.GetCertificate(hello); err != nil {
			return nil, err
		}
	case len(cfg.Certificates) != 0:
		cert = &cfg.Certificates[0]
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("the tls configuration has no certificate")
	}
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		chain = append(chain, c)
	}
	return chain, nil
}
