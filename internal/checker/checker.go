// Package checker is the operator's view of the policy: for one destination
// domain it shows what the engine (internal/engine) sees and decides, MX
// host by MX host, and optionally connects like maddy's target.remote to
// show the verdict a delivery would get. `maddy check` is a thin command
// line wrapper around Run; docs/checker.md is its manual.
//
// The checker drives the same engine, with the same policy lookups and the
// same DNS code, as the running server. Everything else here (address
// lists, TLSA usability, certificate details, MTA-STS) is for display and
// never changes a verdict.
package checker

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	"github.com/miekg/dns"
)

// Options configures a check.
type Options struct {
	// Engine makes the decisions. Required.
	Engine *engine.Engine
	// Connect makes the checker connect to port 25 of every MX host that
	// passes the pre-connection check, do STARTTLS like maddy, and report
	// the engine's verdict on the connection.
	Connect bool
	// HeloName is the EHLO name sent with Connect. Default "localhost".
	HeloName string
	// Timeout bounds each SMTP connection. Default 30s.
	Timeout time.Duration
	// Dial opens TCP connections; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MTASTS enables the one-shot MTA-STS lookup: the _mta-sts TXT record
	// through the engine's resolver and, when one is published, the policy
	// fetch over HTTPS.
	MTASTS bool
	// Fetcher fetches MTA-STS policies; nil means a default Fetcher with
	// Roots.
	Fetcher *mtastsfallback.Fetcher
	// Roots are used for the informational MTA-STS connection check; nil
	// means the system roots.
	Roots *x509.CertPool
	// Resolvers are only reported.
	Resolvers []string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// smtpPort is where MX hosts are reached (RFC 5321 §4.5.4.2 via MX).
const smtpPort = "25"

// Run checks domain. The error is non-nil only for an invalid domain or
// missing options; everything the check finds, failures included, is in
// the Report.
func Run(ctx context.Context, opts Options, domain string) (*Report, error) {
	if opts.Engine == nil {
		return nil, errors.New("checker: no engine")
	}
	domain = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	if domain == "" || strings.ContainsAny(domain, "@ /") {
		return nil, fmt.Errorf("checker: %q is not a domain name", domain)
	}
	if _, ok := dns.IsDomainName(domain); !ok {
		return nil, fmt.Errorf("checker: %q is not a domain name", domain)
	}
	if opts.HeloName == "" {
		opts.HeloName = "localhost"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &run{opts: opts, eng: opts.Engine, q: opts.Engine.DNS()}
	c.disc = &dane.Discoverer{Q: c.q}
	return c.check(ctx, domain), nil
}

type run struct {
	opts Options
	eng  *engine.Engine
	q    dane.Querier
	disc *dane.Discoverer
	sts  *mtastsfallback.Policy
}

func (c *run) check(ctx context.Context, domain string) *Report {
	r := &Report{
		Schema:    Schema,
		Domain:    domain,
		CheckedAt: c.opts.Now().UTC().Truncate(time.Second),
		Resolvers: c.opts.Resolvers,
		Connected: c.opts.Connect,
		Hosts:     []Host{},
	}
	dst := c.eng.Destination(ctx, domain)
	if dst.PolicyErr != nil {
		r.Policy.Error = dst.PolicyErr.Error()
	} else {
		r.Policy = Policy{Level: string(dst.Policy.Level), Source: dst.Policy.Source, Key: dst.Policy.Key}
		for _, fp := range dst.Policy.Fingerprints {
			r.Policy.Fingerprints = append(r.Policy.Fingerprints, fp.String())
		}
	}

	// The engine looks the MX RRset up only for levels that use DANE; the
	// checker always shows it (through the same cached resolver).
	mx, mxErr := dst.MX, dst.MXErr
	if mx == nil && mxErr == nil {
		mx, mxErr = c.disc.LookupMX(ctx, domain)
	}
	if mxErr != nil {
		r.MX.Error = mxErr.Error()
	} else {
		r.MX = MX{
			Secure:   mx.Secure,
			Expanded: strings.TrimSuffix(mx.Expanded, "."),
			Implicit: mx.Implicit,
			NullMX:   mx.NullMX,
			NXDomain: len(mx.Hosts) == 0 && !mx.NullMX,
			TTL:      int64(mx.TTL / time.Second),
		}
	}

	if c.opts.MTASTS {
		if dst.STS != nil || dst.STSErr != nil {
			r.MTASTS = c.engineSTS(dst)
		} else {
			r.MTASTS = c.lookupSTS(ctx, domain)
		}
	}

	if mx != nil {
		for _, h := range mx.Hosts {
			r.Hosts = append(r.Hosts, c.host(ctx, dst, h))
		}
	}
	c.conclude(r)
	return r
}

func (c *run) host(ctx context.Context, dst *engine.Destination, mh dane.MXHost) Host {
	name := strings.TrimSuffix(mh.Host, ".")
	h := Host{Name: name, Preference: int(mh.Pref)}
	c.addresses(ctx, &h)

	dh, err := c.disc.LookupHost(ctx, mh.Host)
	switch {
	case errors.Is(err, dane.ErrNoAddress):
		h.DANE = DANE{Status: "lookup-failed", Error: "no address records"}
	case err != nil:
		h.DANE = DANE{Status: "lookup-failed", Error: err.Error()}
	default:
		h.DANE = daneInfo(dh)
	}
	if c.sts != nil {
		m := c.sts.MatchMX(name)
		h.MTASTSMatch = &m
	}

	v := c.eng.CheckMX(ctx, dst, name)
	h.MXCheck = verdictOf(v)
	if c.opts.Connect && v.OK() {
		h.Connection = c.connect(ctx, dst, name, h.Addresses)
	}
	return h
}

// addresses fills in the address records and the CNAME chain, from the
// same (cached) answers the DANE lookup uses.
func (c *run) addresses(ctx context.Context, h *Host) {
	var chainFrom *dane.Answer
	secure := true
	found := false
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		a, err := c.q.Query(ctx, h.Name, qt)
		if err != nil {
			continue
		}
		if chainFrom == nil || (len(chainFrom.Records) == 0 && len(a.Records) != 0) {
			chainFrom = a
		}
		for _, rr := range a.Records {
			switch rr := rr.(type) {
			case *dns.A:
				h.Addresses = append(h.Addresses, rr.A.String())
			case *dns.AAAA:
				h.Addresses = append(h.Addresses, rr.AAAA.String())
			}
		}
		if len(a.Records) != 0 {
			found = true
			secure = secure && a.Secure
		}
	}
	h.AddressSecure = found && secure
	if chainFrom != nil && len(chainFrom.CNAMEs) != 0 {
		h.CNAMEChain = []string{h.Name}
		for _, cn := range chainFrom.CNAMEs {
			h.CNAMEChain = append(h.CNAMEChain, strings.TrimSuffix(cn.Target, "."))
		}
	}
}

func daneInfo(dh *dane.Host) DANE {
	d := DANE{Status: dh.Status.String(), NoTLSAReason: dh.NoTLSAReason}
	if dh.Status != dane.HasTLSA {
		return d
	}
	d.BaseDomain = strings.TrimSuffix(dh.BaseDomain, ".")
	d.Owner = strings.TrimSuffix(dh.TLSAOwner, ".")
	usable, unusable := dane.ClassifyRRs(dh.TLSA)
	for _, u := range usable {
		d.Records = append(d.Records, TLSA{Record: u.String(), Mnemonic: u.Mnemonic(), Usable: true})
	}
	for _, u := range unusable {
		d.Records = append(d.Records, TLSA{Record: u.Record.String(), Mnemonic: u.Record.Mnemonic(), Reason: string(u.Reason), Detail: u.Detail})
	}
	return d
}

// engineSTS reports the MTA-STS policy the engine found for dst, the one
// its verdicts apply.
func (c *run) engineSTS(dst *engine.Destination) *STS {
	s := &STS{From: "engine"}
	err := dst.STSErr
	if dst.STS != nil {
		s.PolicySource = string(dst.STS.Source)
		if err == nil {
			err = dst.STS.Err
		}
		if p := dst.STS.Policy; p != nil {
			c.sts = p
			s.ID, s.Mode, s.MX, s.MaxAge = p.ID, string(p.Mode), p.MX, p.MaxAge
		}
	}
	var se *mtastsfallback.Error
	switch {
	case err == nil:
		if s.Mode == "" {
			s.TXTError = mtastsfallback.ErrNoRecord.Error()
		}
	case errors.As(err, &se) && (se.Code == mtastsfallback.CodeDNS || se.Code == mtastsfallback.CodeTXTInvalid):
		s.TXTError = err.Error()
	default:
		s.FetchError = err.Error()
	}
	return s
}

// lookupSTS does a one-shot MTA-STS discovery (RFC 8461 §3): the TXT
// record through the engine's resolver, then the policy over HTTPS.
func (c *run) lookupSTS(ctx context.Context, domain string) *STS {
	s := &STS{From: "lookup"}
	ans, err := c.q.Query(ctx, "_mta-sts."+domain, dns.TypeTXT)
	if err != nil {
		s.TXTError = err.Error()
		return s
	}
	var txts []string
	for _, rr := range ans.Records {
		if t, ok := rr.(*dns.TXT); ok {
			txts = append(txts, strings.Join(t.Txt, ""))
		}
	}
	id, err := mtastsfallback.ParseTXT(txts)
	if err != nil {
		s.TXTError = err.Error()
		return s
	}
	s.ID = id
	f := c.opts.Fetcher
	if f == nil {
		f = &mtastsfallback.Fetcher{RootCAs: c.opts.Roots}
	}
	p, err := f.Fetch(ctx, domain)
	if err != nil {
		s.FetchError = err.Error()
		return s
	}
	c.sts = p
	s.Mode, s.MX, s.MaxAge = string(p.Mode), p.MX, p.MaxAge
	return s
}

// connect reaches the host like maddy's target.remote does: EHLO, STARTTLS
// when offered (without certificate checks: the policy judges the
// certificate), and on a failed handshake a new connection in plaintext.
func (c *run) connect(ctx context.Context, dst *engine.Destination, host string, addrs []string) *Conn {
	out := &Conn{}
	if len(addrs) == 0 {
		out.Error = "no addresses to connect to"
		return out
	}
	cl, st, err := c.session(ctx, host, addrs, true, out)
	if err != nil && cl == nil && out.TLSError != "" {
		// The handshake failed: maddy retries without TLS.
		cl, st, err = c.session(ctx, host, addrs, false, out)
	}
	if err != nil {
		out.Error = err.Error()
		return out
	}
	defer func() {
		_ = cl.Quit()
		_ = cl.Close()
	}()
	if st.HandshakeComplete {
		out.TLSVersion = tls.VersionName(st.Version)
		out.CipherSuite = tls.CipherSuiteName(st.CipherSuite)
		for _, crt := range st.PeerCertificates {
			out.Certificates = append(out.Certificates, certInfo(crt))
		}
	}
	if c.sts != nil && c.sts.Mode != mtastsfallback.ModeNone {
		roots := c.opts.Roots
		if err := mtastsfallback.CheckConn(c.sts, host, st, roots, c.opts.Now()); err != nil {
			out.MTASTSCheck = err.Error()
		} else {
			out.MTASTSCheck = "ok"
		}
	}
	v := verdictOf(c.eng.CheckConn(ctx, dst, host, st))
	out.Verdict = &v
	return out
}

// session opens one SMTP session. With starttls, a failed STARTTLS is
// recorded in out.TLSError and returned with a nil client.
func (c *run) session(ctx context.Context, host string, addrs []string, starttls bool, out *Conn) (*smtp.Client, tls.ConnectionState, error) {
	var st tls.ConnectionState
	dial := c.opts.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: c.opts.Timeout}).DialContext
	}
	var conn net.Conn
	var err error
	for _, a := range addrs {
		conn, err = dial(ctx, "tcp", net.JoinHostPort(a, smtpPort))
		if err == nil {
			out.Address = net.JoinHostPort(a, smtpPort)
			break
		}
	}
	if err != nil {
		return nil, st, fmt.Errorf("connect: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(c.opts.Timeout))
	cl := smtp.NewClient(conn)
	if err := cl.Hello(c.opts.HeloName); err != nil {
		cl.Close()
		return nil, st, fmt.Errorf("EHLO: %w", err)
	}
	if ok, _ := cl.Extension("STARTTLS"); ok {
		out.STARTTLSOffered = true
		if starttls {
			// The policy, not the TLS library, judges the certificate
			// (like maddy, which retries with InsecureSkipVerify).
			err := cl.StartTLS(&tls.Config{ServerName: host, InsecureSkipVerify: true}) //nolint:gosec
			if err == nil {
				// The handshake happens with the EHLO that follows.
				err = cl.Hello(c.opts.HeloName)
			}
			if err != nil {
				cl.Close()
				out.TLSError = err.Error()
				return nil, st, err
			}
			st, _ = cl.TLSConnectionState()
		}
	}
	return cl, st, nil
}

func certInfo(c *x509.Certificate) Cert {
	sum := sha256.Sum256(c.Raw)
	spki := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return Cert{
		Subject:    c.Subject.String(),
		Issuer:     c.Issuer.String(),
		DNSNames:   c.DNSNames,
		NotBefore:  c.NotBefore.UTC(),
		NotAfter:   c.NotAfter.UTC(),
		SHA256:     hex.EncodeToString(sum[:]),
		SPKISHA256: hex.EncodeToString(spki[:]),
	}
}

// conclude sets the overall result: the first MX host, in preference
// order, that maddy would deliver to decides.
func (c *run) conclude(r *Report) {
	switch {
	case r.Policy.Error != "":
		r.Result, r.ExitCode = string(engine.Deferred), ExitDeferred
		r.Summary = "the policy for this domain cannot be read; mail is deferred until it can"
		return
	case r.MX.Error != "" && len(r.Hosts) == 0:
		r.Result, r.ExitCode = string(engine.Deferred), ExitDeferred
		r.Summary = "the MX lookup failed; mail is deferred"
		return
	case r.MX.NullMX && len(r.Hosts) == 0:
		r.Result, r.ExitCode = string(engine.Deferred), ExitDeferred
		r.Summary = "the domain publishes a null MX (RFC 7505): it accepts no mail"
		return
	case len(r.Hosts) == 0:
		r.Result, r.ExitCode = string(engine.Deferred), ExitDeferred
		r.Summary = "the domain does not exist"
		return
	}
	for _, h := range r.Hosts {
		if h.MXCheck.Result == string(engine.Deferred) {
			continue
		}
		if !c.opts.Connect {
			r.Result, r.ExitCode, r.SelectedMX = ResultNotConnected, ExitAuthenticated, h.Name
			r.Summary = fmt.Sprintf("%s passes the checks made before connecting; use --connect for the verdict", h.Name)
			return
		}
		if h.Connection == nil || h.Connection.Verdict == nil || h.Connection.Verdict.Result == string(engine.Deferred) {
			continue
		}
		v := h.Connection.Verdict
		r.Result, r.SelectedMX = v.Result, h.Name
		if v.Result == string(engine.Authenticated) {
			r.ExitCode = ExitAuthenticated
			r.Summary = fmt.Sprintf("mail would go to %s, authenticated (%s)", h.Name, v.Reason)
		} else {
			r.ExitCode = ExitUnauthenticated
			r.Summary = fmt.Sprintf("mail would go to %s %s, without authentication (%s)", h.Name, map[string]string{"encrypted": "encrypted", "plaintext": "in plaintext"}[v.Result], v.Reason)
		}
		return
	}
	r.Result, r.ExitCode = string(engine.Deferred), ExitDeferred
	r.Summary = "no MX host would take the mail under the policy; it stays queued (4xx)"
}
