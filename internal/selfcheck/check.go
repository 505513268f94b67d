package selfcheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"slices"
	"strings"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	mtastsfallback "github.com/maddy-dane/daneguard/mtasts_fallback"
	"github.com/maddy-dane/daneguard/tlsrpt"
	"github.com/miekg/dns"
)

// Options are the inputs of Run. The command line fills them from
// maddy.conf; tests fill them from the test bed.
type Options struct {
	// Hostname is maddy's `hostname`; Domains its local domains. The MX
	// RRset of each (the hostname included) is checked.
	Hostname string
	Domains  []string
	// LocalAddrs are this server's addresses (listen addresses, interface
	// addresses). An MX host is this server when its name is Hostname or
	// one of its addresses is here.
	LocalAddrs []net.IP
	// Chain is the certificate chain maddy loads, leaf first; Source who
	// makes its next key; ChainPath where it came from (for the report).
	Chain     []*x509.Certificate
	Source    KeySource
	ChainPath string
	// Querier must validate (dane.Resolver on a trusted resolver).
	Querier dane.Querier
	// Resolvers are health-checked (CheckResolver) when set.
	Resolvers []string
	// Dial opens connections to port 25 and (through the MTA-STS
	// fetcher) 443. Nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Roots are the WebPKI roots for MTA-STS; nil means the system's.
	Roots *x509.CertPool
	// HeloName is sent in EHLO; default Hostname.
	HeloName string
	// Timeout bounds each SMTP probe. Default 20s.
	Timeout time.Duration
	// Days: also judge what still matches this many days from now; a
	// key change or expiry within Days is a warning.
	Days int
	// NoMTASTS skips the MTA-STS policy fetch.
	NoMTASTS bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Run checks the server as a DANE- and MTA-STS-aware sender would.
// Problems found are in the report; an error means the check itself
// could not run (bad options).
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Querier == nil {
		return nil, errors.New("selfcheck: no Querier")
	}
	if o.Hostname == "" {
		return nil, errors.New("selfcheck: no hostname")
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	if o.Dial == nil {
		d := &net.Dialer{}
		o.Dial = d.DialContext
	}
	if o.Timeout <= 0 {
		o.Timeout = 20 * time.Second
	}
	if o.HeloName == "" {
		o.HeloName = o.Hostname
	}
	c := &run{o: o, now: now(), disc: &dane.Discoverer{Q: o.Querier}, hosts: map[string]*HostInfo{}}
	c.r = &Report{Schema: Schema, CheckedAt: c.now, Hostname: trimDot(o.Hostname), Days: o.Days, Problems: []Problem{}}
	for _, srv := range o.Resolvers {
		h := CheckResolver(ctx, srv, HealthOptions{})
		c.r.Resolvers = append(c.r.Resolvers, h)
		if h.Problem != nil {
			c.r.Problems = append(c.r.Problems, *h.Problem)
		}
	}
	c.loaded()
	names := []string{trimDot(o.Hostname)}
	for _, d := range o.Domains {
		if d = trimDot(strings.ToLower(d)); d != "" && !slices.Contains(names, d) {
			names = append(names, d)
		}
	}
	for _, d := range names {
		c.domain(ctx, d)
	}
	if len(c.r.Hosts) == 0 {
		c.r.add(SevWarning, "no-own-mx", c.r.Hostname,
			"no MX host of "+strings.Join(names, ", ")+" is this server (by name or address)",
			"point the MX records of your domains at this host ("+c.r.Hostname+"), or tell the check this server's public addresses (--address)")
	}
	c.r.Domains = c.domains
	c.r.finish()
	return c.r, nil
}

type run struct {
	o       Options
	now     time.Time
	disc    *dane.Discoverer
	r       *Report
	domains []DomainInfo
	hosts   map[string]*HostInfo
}

func (c *run) loaded() {
	if len(c.o.Chain) == 0 {
		return
	}
	lc := &LoadedCert{Source: c.o.Source, Path: c.o.ChainPath}
	for _, cc := range c.o.Chain {
		lc.Chain = append(lc.Chain, certOf(cc))
	}
	leaf := c.o.Chain[0]
	lc.NextKeyChange = NextKeyChange(leaf, c.o.Source)
	lc.DaysToKeyChange = lc.NextKeyChange.Sub(c.now).Hours() / 24
	c.r.Certificate = lc
	if c.now.After(leaf.NotAfter) {
		c.r.add(SevError, "certificate-expired", c.o.ChainPath,
			"the certificate maddy loads expired on "+leaf.NotAfter.UTC().Format(time.DateOnly)+": MTA-STS senders and DANE-TA(2) checks refuse it",
			"renew the certificate")
	} else if c.o.Days > 0 && c.now.AddDate(0, 0, c.o.Days).After(leaf.NotAfter) {
		c.r.add(SevWarning, "certificate-expires", c.o.ChainPath,
			fmt.Sprintf("the certificate maddy loads expires on %s, within %d days", leaf.NotAfter.UTC().Format(time.DateOnly), c.o.Days),
			"renew it in time; with a new key, follow the next-key workflow (maddy nextkey, docs/own-domain.md)")
	}
}

func (c *run) domain(ctx context.Context, name string) {
	di := DomainInfo{Name: name}
	defer func() { c.domains = append(c.domains, di) }()
	set, err := c.disc.LookupMX(ctx, name)
	if err != nil {
		di.MXError = err.Error()
		c.r.add(SevError, "mx-lookup-failed", name, "the MX lookup fails: "+err.Error(),
			"fix the zone or its DNSSEC signatures: a sender cannot find your MX hosts and defers (RFC 7672 §2.1.2)")
		return
	}
	di.MXSecure, di.Implicit = set.Secure, set.Implicit
	for _, h := range set.Hosts {
		di.MX = append(di.MX, trimDot(h.Host))
	}
	if set.NullMX || len(set.Hosts) == 0 {
		return
	}
	for _, h := range set.Hosts {
		if hi := c.host(ctx, set, h.Host); hi != nil {
			di.Own = append(di.Own, hi.Name)
		}
	}
	if name == c.r.Hostname && len(di.Own) == 0 && set.Implicit {
		// The hostname itself need not receive mail; its A record is no
		// MX of a local domain.
		di.Own = nil
	}
	hasTLSA := false
	for _, o := range di.Own {
		if h := c.hosts[o]; h != nil && h.TLSAStatus == "tlsa" {
			hasTLSA = true
		}
	}
	if !set.Secure && len(di.Own) != 0 && name != c.r.Hostname {
		sev := SevInfo
		if hasTLSA {
			sev = SevWarning
		}
		c.r.add(sev, "mx-insecure", name, "the MX RRset is not DNSSEC-signed: senders may skip DANE for mail to "+name+" (RFC 7672 §2.2.1)",
			"sign the zone "+name+" and publish its DS at the parent")
	}
	if name != c.r.Hostname || len(c.o.Domains) == 0 {
		if !c.o.NoMTASTS {
			di.MTASTS = c.sts(ctx, name, set)
		}
		di.TLSRPT = c.rpt(ctx, name)
	}
}

// host checks one MX host if it is this server; nil if it is not.
func (c *run) host(ctx context.Context, set *dane.MXSet, mx string) *HostInfo {
	name := trimDot(mx)
	if hi, ok := c.hosts[name]; ok {
		return hi
	}
	addrs, addrSecure, err := c.addresses(ctx, mx)
	own := strings.EqualFold(name, c.r.Hostname)
	for _, a := range addrs {
		if c.isLocal(a) {
			own = true
		}
	}
	if !own {
		c.hosts[name] = nil
		return nil
	}
	hi := &HostInfo{Name: name, AddrSecure: addrSecure, Addresses: []AddrProbe{}}
	c.hosts[name] = hi
	c.r.Hosts = append(c.r.Hosts, HostInfo{}) // placeholder, replaced below
	idx := len(c.r.Hosts) - 1
	defer func() { c.r.Hosts[idx] = *hi }()
	if err != nil {
		hi.TLSAStatus = "lookup-failed"
		hi.TLSAError = err.Error()
		c.r.add(SevError, "address-lookup-failed", name, err.Error(), "publish A/AAAA records for "+name+" and check their signatures")
		return hi
	}
	h, err := c.disc.LookupHost(ctx, mx)
	var records []dane.Record
	switch {
	case err != nil:
		hi.TLSAStatus, hi.TLSAError = "lookup-failed", err.Error()
		var le *dane.LookupError
		fix := "check the zone serving _25._tcp." + name + ": senders treat this MX host as unreachable while its TLSA lookup fails (RFC 7672 §2.1.2)"
		if errors.As(err, &le) && (le.Kind == dane.ErrBogus || le.Kind == dane.ErrServFail) {
			fix = "re-sign the zone of _25._tcp." + name + " (expired or broken RRSIG?) and check the DS at the parent; " +
				"every DANE-aware sender treats this MX host as unreachable until the RRset validates again (RFC 7672 §2.1.1)"
		}
		c.r.add(SevError, "tlsa-lookup-failed", "_25._tcp."+name, "the TLSA lookup fails: "+err.Error(), fix)
	case h.Status != dane.HasTLSA:
		hi.TLSAStatus, hi.NoTLSAReason = "no-tlsa", h.NoTLSAReason
		c.r.add(SevInfo, "no-tlsa", name, "no secure TLSA RRset ("+h.NoTLSAReason+"): DANE does not protect mail to this host",
			"publish "+ZoneLineOrHint(name, c.o.Chain)+" in a signed zone")
	default:
		hi.TLSAStatus, hi.TLSAOwner = "tlsa", trimDot(h.TLSAOwner)
		hi.TLSATTL = int64(h.TTL / time.Second)
		for _, rr := range h.TLSA {
			r, err := dane.FromRR(rr)
			if err != nil {
				continue
			}
			records = append(records, r)
			hi.TLSA = append(hi.TLSA, r.String())
		}
		if usable, _ := dane.Classify(records); len(usable) == 0 {
			c.r.add(SevWarning, "tlsa-unusable", hi.TLSAOwner, "no TLSA record is usable: senders require TLS but authenticate nothing",
				"replace the records with "+ZoneLineOrHint(name, c.o.Chain))
		}
	}
	refs := []string{name}
	if h != nil {
		refs = dane.ReferenceNames(set, h)
	}
	if len(records) != 0 && len(c.o.Chain) != 0 {
		c.judgeLoaded(hi, records, refs)
	}
	for _, a := range addrs {
		hi.Addresses = append(hi.Addresses, c.probe(ctx, name, a, hi, records, refs))
	}
	return hi
}

func (c *run) judgeLoaded(hi *HostInfo, records []dane.Record, refs []string) {
	m, err := dane.Verify(c.o.Chain, records, dane.VerifyOptions{ReferenceNames: refs, Now: c.now})
	if err != nil {
		hi.LoadedMatch = "MISMATCH: " + err.Error()
		c.r.add(SevError, "loaded-mismatch", hi.TLSAOwner,
			"the certificate maddy loads ("+c.o.ChainPath+") does not match the TLSA RRset: "+err.Error(),
			"publish "+ZoneLine(hi.TLSAOwner, RecordFor(dane.DANEEE, c.o.Chain[0]))+
				" (keep the old record until maddy serves the new certificate on every address)")
	} else {
		hi.LoadedMatch = "match (" + m.Record.String() + ")"
	}
	ro := AssessRollover(hi.TLSAOwner, records, c.o.Chain, c.o.Source)
	hi.Rollover = &ro
	if err == nil {
		c.rollover(hi, ro)
	}
	if c.o.Days > 0 {
		ok := StillMatches(records, c.o.Chain, c.o.Source, refs, c.now.AddDate(0, 0, c.o.Days))
		hi.MatchesInDays = &ok
		if !ok {
			c.r.add(SevWarning, "will-not-match", hi.TLSAOwner,
				fmt.Sprintf("in %d days the TLSA RRset will no longer match the certificate (key change or expiry on %s)", c.o.Days, ro.NextKeyChange.UTC().Format(time.DateOnly)),
				fixFor(ro))
		}
	}
}

func (c *run) rollover(hi *HostInfo, ro Rollover) {
	if ro.SurvivesKeyChange {
		return
	}
	switch {
	case c.o.Source == SourceACME:
		c.r.add(SevWarning, "breaks-at-renewal", hi.TLSAOwner,
			fmt.Sprintf("maddy's ACME loader makes a new key at every renewal (next: %s); no record of this RRset survives it, so every DANE-aware sender will defer mail from then on",
				ro.NextKeyChange.UTC().Format(time.DateOnly)),
			fixFor(ro))
	case !ro.SurvivesRenewal:
		c.r.add(SevWarning, "breaks-at-renewal", hi.TLSAOwner,
			"only DANE-EE(3) Cert(0) records match: any renewal, even with the same key, breaks them",
			"publish "+ZoneLine(hi.TLSAOwner, RecordFor(dane.DANEEE, c.o.Chain[0]))+" (survives renewals with the same key)")
	default:
		c.r.add(SevInfo, "key-change-needs-next-key", hi.TLSAOwner,
			"the RRset pins the current key only: a renewal with the same key is safe; a new key must be published two TTLs before it is used (RFC 7671 §8.1)",
			"before changing the key run `maddy nextkey create`, publish the record it prints beside the current one, and switch only when `maddy nextkey status` says so")
	}
}

func fixFor(ro Rollover) string {
	if len(ro.Publish) == 0 {
		return "renew the certificate keeping its key, or follow the next-key workflow (maddy nextkey) before a key change"
	}
	return "publish this TLSA RRset now (RFC 7671 §8, RFC 7672 §3.1.2), then wait two TTLs before the next renewal:\n" + strings.Join(ro.Publish, "\n")
}

// ZoneLineOrHint is the 3 1 1 line for the loaded leaf, or a hint.
func ZoneLineOrHint(host string, chain []*x509.Certificate) string {
	if len(chain) == 0 {
		return "a 3 1 1 record of your certificate's key at _25._tcp." + host
	}
	return ZoneLine("_25._tcp."+host, RecordFor(dane.DANEEE, chain[0]))
}

// addresses returns the A and AAAA records of host.
func (c *run) addresses(ctx context.Context, host string) ([]net.IP, bool, error) {
	var ips []net.IP
	secure := true
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		ans, err := c.o.Querier.Query(ctx, host, t)
		if err != nil {
			return nil, false, err
		}
		if ans.Exists() {
			secure = secure && ans.Secure
		}
		for _, rr := range ans.Records {
			switch v := rr.(type) {
			case *dns.A:
				ips = append(ips, v.A)
			case *dns.AAAA:
				ips = append(ips, v.AAAA)
			}
		}
	}
	if len(ips) == 0 {
		return nil, false, dane.ErrNoAddress
	}
	return ips, secure, nil
}

func (c *run) isLocal(ip net.IP) bool {
	for _, l := range c.o.LocalAddrs {
		if l.Equal(ip) {
			return true
		}
	}
	return false
}

// probe connects to addr:25 as a sender does, STARTTLS without WebPKI
// checks, and verifies the presented chain with dane.Verify.
func (c *run) probe(ctx context.Context, host string, ip net.IP, hi *HostInfo, records []dane.Record, refs []string) AddrProbe {
	addr := net.JoinHostPort(ip.String(), "25")
	ap := AddrProbe{Address: addr}
	state, err := c.starttls(ctx, host, addr)
	subject := host + " " + addr
	if err != nil {
		ap.Result, ap.Detail = err.kind, err.Error()
		if err.kind == "connect-failed" {
			c.r.add(SevError, "connect-failed", subject, "cannot connect to port 25: "+err.Error(),
				"check that maddy listens on "+addr+" (smtp tcp://0.0.0.0:25, and [::]:25 for IPv6) and that no firewall blocks it; senders cannot deliver there")
		} else {
			sev := SevWarning
			if len(records) != 0 {
				sev = SevError // RFC 7672 §2.2: TLSA makes TLS mandatory
			}
			c.r.add(sev, err.kind, subject, err.Error(), "enable TLS on the smtp endpoint on port 25 (tls file CERT KEY, or tls { loader acme ... })")
		}
		return ap
	}
	leaf := state.PeerCertificates[0]
	ci := certOf(leaf)
	ap.Leaf, ap.TLSVersion = &ci, tls.VersionName(state.Version)
	if len(c.o.Chain) != 0 {
		same := string(c.o.Chain[0].RawSubjectPublicKeyInfo) == string(leaf.RawSubjectPublicKeyInfo)
		ap.SameAsLoaded = &same
		if !same {
			c.r.add(SevWarning, "serves-other-key", subject,
				"this address serves a certificate with another key than the one maddy loads ("+c.o.ChainPath+")",
				"make every address of "+host+" (IPv4 and IPv6, every machine behind it) serve the same certificate, or publish a TLSA record for each key")
		}
	}
	if len(records) == 0 {
		ap.Result = "no-tlsa"
	} else if m, err := dane.Verify(state.PeerCertificates, records, dane.VerifyOptions{ReferenceNames: refs, Now: c.now}); err != nil {
		ap.Result, ap.Detail = "mismatch", err.Error()
		c.r.add(SevError, "served-mismatch", subject,
			"the certificate served here does not match "+hi.TLSAOwner+": DANE-aware senders defer mail to this address ("+err.Error()+")",
			"publish "+ZoneLine(hi.TLSAOwner, RecordFor(dane.DANEEE, leaf))+" for the key served here, or serve the certificate the RRset names")
	} else {
		ap.Result, ap.Record = "match", m.Record.String()
	}
	c.webpki(ctx, host, &ap, state)
	return ap
}

type probeErr struct {
	kind string
	err  error
}

func (e *probeErr) Error() string { return e.err.Error() }

func (c *run) starttls(ctx context.Context, host, addr string) (*tls.ConnectionState, *probeErr) {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	conn, err := c.o.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, &probeErr{"connect-failed", err}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A cancelled run (maddy shutting down) ends the probe at once.
	defer context.AfterFunc(ctx, func() { _ = conn.Close() })()
	cl, err := smtp.NewClient(conn, host)
	if err != nil {
		return nil, &probeErr{"connect-failed", err}
	}
	defer cl.Close()
	if err := cl.Hello(c.o.HeloName); err != nil {
		return nil, &probeErr{"connect-failed", err}
	}
	if ok, _ := cl.Extension("STARTTLS"); !ok {
		return nil, &probeErr{"no-starttls", errors.New("the server does not offer STARTTLS")}
	}
	// Like a DANE sender: no WebPKI check here, the TLSA records decide
	// (RFC 7672 §3); SNI is the MX host name (RFC 7672 §8.1).
	if err := cl.StartTLS(&tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}); err != nil {
		return nil, &probeErr{"tls-failed", err}
	}
	st, ok := cl.TLSConnectionState()
	if !ok || len(st.PeerCertificates) == 0 {
		return nil, &probeErr{"tls-failed", errors.New("no certificate presented")}
	}
	_ = cl.Quit()
	return &st, nil
}

// webpki records whether the served chain is valid for host under WebPKI,
// as MTA-STS senders require (RFC 8461 §4.2).
func (c *run) webpki(ctx context.Context, host string, ap *AddrProbe, st *tls.ConnectionState) {
	inter := x509.NewCertPool()
	for _, cc := range st.PeerCertificates[1:] {
		inter.AddCert(cc)
	}
	_, err := st.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: host, Roots: c.o.Roots, Intermediates: inter, CurrentTime: c.now})
	if err != nil {
		ap.WebPKI = err.Error()
		return
	}
	ap.WebPKI = "ok"
}

func (c *run) lookupTXT(ctx context.Context, name string) ([]string, error) {
	return dane.LookupTXT(ctx, c.o.Querier, name)
}

// sts fetches the domain's MTA-STS policy as a sender does (RFC 8461 §3)
// and compares it with the real MX hosts and what they serve.
func (c *run) sts(ctx context.Context, domain string, set *dane.MXSet) *STSInfo {
	si := &STSInfo{State: "none"}
	txts, err := c.lookupTXT(ctx, "_mta-sts."+domain+".")
	if err != nil {
		si.State, si.TXTError = "txt-invalid", err.Error()
		c.r.add(SevWarning, "sts-txt-lookup-failed", "_mta-sts."+domain, err.Error(), "check the zone of "+domain)
		return si
	}
	id, err := mtastsfallback.ParseTXT(txts)
	switch {
	case errors.Is(err, mtastsfallback.ErrNoRecord):
		return si
	case err != nil:
		si.State, si.TXTError = "txt-invalid", err.Error()
		c.r.add(SevWarning, "sts-txt-invalid", "_mta-sts."+domain, err.Error(),
			`publish exactly one record: _mta-sts.`+domain+`. IN TXT "v=STSv1; id=YYYYMMDDNN"`)
		return si
	}
	si.ID = id
	f := &mtastsfallback.Fetcher{RootCAs: c.o.Roots, DialContext: c.o.Dial, Now: func() time.Time { return c.now }}
	pol, err := f.Fetch(ctx, domain)
	if err != nil {
		si.State, si.FetchError = "fetch-failed", err.Error()
		c.r.add(SevError, "sts-fetch-failed", mtastsfallback.PolicyURL(domain), err.Error(),
			"serve the policy at "+mtastsfallback.PolicyURL(domain)+" with a WebPKI-valid certificate for mta-sts."+domain+
				", or remove the _mta-sts TXT record; senders with a cached policy keep enforcing it")
		return si
	}
	si.MX, si.MaxAge = pol.MX, pol.MaxAge
	switch pol.Mode {
	case mtastsfallback.ModeNone:
		si.State = "mode-none"
		return si
	case mtastsfallback.ModeTesting:
		si.State = "testing"
	default:
		si.State = "enforce"
	}
	for _, h := range set.Hosts {
		if !pol.MatchMX(h.Host) {
			si.Unlisted = append(si.Unlisted, trimDot(h.Host))
		}
	}
	sev := SevError
	if pol.Mode == mtastsfallback.ModeTesting {
		sev = SevWarning
	}
	for _, u := range si.Unlisted {
		c.r.add(sev, "sts-mx-missing", domain,
			"the MTA-STS policy ("+string(pol.Mode)+") lists no pattern matching the MX host "+u+": MTA-STS senders refuse to deliver to it (RFC 8461 §4.1)",
			"add \"mx: "+u+"\" to "+mtastsfallback.PolicyURL(domain)+" and change the id of the _mta-sts TXT record")
	}
	for _, name := range set.Hosts {
		hi := c.hosts[trimDot(name.Host)]
		if hi == nil {
			continue
		}
		for _, a := range hi.Addresses {
			if a.WebPKI != "" && a.WebPKI != "ok" {
				c.r.add(sev, "sts-webpki-invalid", hi.Name+" "+a.Address,
					"the certificate served is not WebPKI-valid for "+hi.Name+" ("+a.WebPKI+"): MTA-STS senders refuse it (RFC 8461 §4.2)",
					"serve a certificate from a public CA naming "+hi.Name+" (maddy's ACME loader, or tls file with such a certificate)")
			}
		}
	}
	return si
}

func (c *run) rpt(ctx context.Context, domain string) *RPTInfo {
	ri := &RPTInfo{}
	pol, err := tlsrpt.Discover(ctx, c.lookupTXT, domain)
	if err != nil {
		ri.Error = err.Error()
		sev := SevInfo
		if !errors.Is(err, tlsrpt.ErrNoPolicy) || !strings.Contains(err.Error(), ": 0 TLSRPTv1") {
			sev = SevWarning
		}
		c.r.add(sev, "tlsrpt-missing", "_smtp._tls."+domain, err.Error(),
			`publish _smtp._tls.`+domain+`. IN TXT "v=TLSRPTv1; rua=mailto:tls-reports@`+domain+`" to learn from senders when their TLS to you fails (RFC 8460 §3)`)
		return ri
	}
	ri.Present = true
	for _, u := range pol.RUA {
		ri.RUA = append(ri.RUA, u.String())
	}
	return ri
}

func trimDot(s string) string { return strings.TrimSuffix(strings.ToLower(s), ".") }

// ServerConf is what the self-check needs from the MTA's configuration
// (for maddy: internal/maddyconf.ServerConf reads it from maddy.conf).
type ServerConf struct {
	Hostname string
	StateDir string
	// Domains are the destination domains of the port 25 endpoints.
	Domains []string
	// Listen are the specific addresses the port 25 endpoints listen on.
	Listen []net.IP
	Source KeySource
	// CertPath and KeyPath are the files the port 25 endpoint's tls
	// directive loads; CertErr says why they are not known.
	CertPath string
	KeyPath  string
	CertErr  error
}
