package selfcheck_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/selfcheck"
	"github.com/maddy-dane/daneguard/internal/testbed/dnsbed"
	"github.com/maddy-dane/daneguard/internal/testbed/maddybed"
	"github.com/maddy-dane/daneguard/internal/testbed/netns"
	"github.com/maddy-dane/daneguard/internal/testbed/pki"
	"github.com/maddy-dane/daneguard/internal/testbed/smtpbed"
	"github.com/maddy-dane/daneguard/internal/testbed/stsbed"
	"github.com/miekg/dns"
)

func TestMain(m *testing.M) { netns.Main(m) }

const (
	mxHost = "mx.own.example"
	mxIP   = "127.0.0.10"
	tlsa   = "_25._tcp." + mxHost + "."
)

// bed: own.example (signed, TTL 2 s) with MX mx.own.example at
// 127.0.0.10, where the real maddy listens on port 25 with `tls file`.
type bed struct {
	t     *testing.T
	dns   *dnsbed.Server
	zone  *dnsbed.Zone
	ub    *dnsbed.Unbound
	ca    *pki.CA
	dir   string
	cert  string
	key   string
	maddy *maddybed.Maddy
	q     dane.Querier
	// daneBlock is the mx_auth body maddy runs with; default "dane { }".
	daneBlock string
	// extra is added to maddy.conf at top level.
	extra string
	// more are further resolvers on the same zones, flushed by publish.
	more []*dnsbed.Unbound
}

func newBed(t *testing.T) *bed {
	netns.Required(t)
	b := &bed{t: t, dns: dnsbed.NewServer(), ca: pki.NewCA(t, "selfcheck root").Intermediate(t, "selfcheck issuer"), dir: t.TempDir()}
	b.zone = b.dns.Zone(t, "own.example.", dnsbed.TTL(2), dnsbed.NegativeTTL(2))
	b.zone.Add(t, "@ MX 10 mx", "mx A "+mxIP)
	b.dns.Start(t, "127.0.0.2:53")
	b.ub = dnsbed.StartUnbound(t, b.dns, dnsbed.UnboundOptions{})
	res, err := dane.NewResolver(dane.ResolverConfig{Servers: []string{b.ub.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	b.q = res
	b.cert, b.key = filepath.Join(b.dir, "cert.pem"), filepath.Join(b.dir, "key.pem")
	return b
}

// leaf issues a certificate for the MX host (new key each time).
func (b *bed) leaf() *pki.Leaf {
	return b.ca.Leaf(b.t, pki.LeafOptions{DNSNames: []string{mxHost}})
}

// install writes l as maddy's tls file pair and (re)starts maddy on it.
func (b *bed) install(l *pki.Leaf) {
	b.t.Helper()
	c, k := l.WriteFiles(b.t, b.t.TempDir())
	for src, dst := range map[string]string{c: b.cert, k: b.key} {
		data, err := os.ReadFile(src)
		if err != nil {
			b.t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			b.t.Fatal(err)
		}
	}
	if b.maddy != nil {
		b.maddy.Stop()
	}
	mxAuth := b.daneBlock
	if mxAuth == "" {
		mxAuth = "dane { }"
	}
	b.maddy = maddybed.Start(b.t, maddybed.Options{
		Hostname:   mxHost,
		SubmitAddr: "127.0.0.1:2525",
		MXAuth:     mxAuth,
		Extra: fmt.Sprintf(`smtp tcp://%s:25 {
    hostname %s
    tls file %s %s
    deliver_to &remote
}
%s`, mxIP, mxHost, b.cert, b.key, b.extra),
	})
	waitListen(b.t, mxIP+":25")
}

func waitListen(t *testing.T, addr string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

func (b *bed) publish(records ...string) {
	b.zone.Replace(b.t, records...)
	b.ub.Flush(b.t)
	for _, u := range b.more {
		u.Flush(b.t)
	}
}

func (b *bed) run(mod func(*selfcheck.Options)) *selfcheck.Report {
	b.t.Helper()
	chain, err := selfcheck.ReadChain(b.cert)
	if err != nil {
		b.t.Fatal(err)
	}
	o := selfcheck.Options{
		Hostname: mxHost, Domains: []string{"own.example"},
		LocalAddrs: []net.IP{net.ParseIP(mxIP), net.ParseIP("::1")},
		Chain:      chain, Source: selfcheck.SourceFile, ChainPath: b.cert,
		Querier: b.q, Roots: b.ca.Root().Pool(), Timeout: 10 * time.Second,
	}
	if mod != nil {
		mod(&o)
	}
	rep, err := selfcheck.Run(context.Background(), o)
	if err != nil {
		b.t.Fatal(err)
	}
	if b.t.Failed() {
		var sb strings.Builder
		_ = rep.WriteText(&sb)
		b.t.Log(sb.String())
	}
	return rep
}

func hasProblem(rep *selfcheck.Report, sev selfcheck.Severity, code, subject string) bool {
	for _, p := range rep.Problems {
		if p.Severity == sev && p.Code == code && strings.Contains(p.Subject, subject) && p.Fix != "" {
			return true
		}
	}
	return false
}

func addr(rep *selfcheck.Report, host, address string) *selfcheck.AddrProbe {
	for _, h := range rep.Hosts {
		if h.Name != host {
			continue
		}
		for i := range h.Addresses {
			if h.Addresses[i].Address == address {
				return &h.Addresses[i]
			}
		}
	}
	return nil
}

func text(rep *selfcheck.Report) string {
	var sb strings.Builder
	_ = rep.WriteText(&sb)
	return sb.String()
}

// rec is a TLSA record of c at the MX host with the zone's 2 s TTL.
func rec(t *testing.T, u, s uint8, c *x509.Certificate) string {
	rr := pki.TLSARR(t, tlsa, u, s, 1, c)
	rr.Hdr.Ttl = 2
	return rr.String()
}

// The inbound DANE cases on the real maddy, in order: a matching 3 1 1; a
// second address serving another key; the certificate replaced with a new
// key; 3 1 1 + 2 1 1 surviving the key change.
func TestSelfcheckDANE(t *testing.T) {
	b := newBed(t)
	l1 := b.leaf()
	b.install(l1)
	base := []string{"@ MX 10 mx", "mx A " + mxIP}

	// 1. 3 1 1 of the served key: everything matches.
	b.publish(append(base, rec(t, 3, 1, l1.Cert))...)
	rep := b.run(nil)
	if a := addr(rep, mxHost, mxIP+":25"); a == nil || a.Result != "match" || a.Record == "" || a.SameAsLoaded == nil || !*a.SameAsLoaded {
		t.Fatalf("3 1 1: probe %+v\n%s", a, text(rep))
	}
	if rep.ExitCode != selfcheck.ExitOK || !strings.HasPrefix(rep.Hosts[0].LoadedMatch, "match") {
		t.Fatalf("3 1 1: exit %d, loaded %q\n%s", rep.ExitCode, rep.Hosts[0].LoadedMatch, text(rep))
	}
	if !hasProblem(rep, selfcheck.SevInfo, "key-change-needs-next-key", tlsa[:len(tlsa)-1]) {
		t.Errorf("3 1 1 under tls file: no next-key advice\n%s", text(rep))
	}
	// --days 400: DANE-EE ignores dates and a file key does not change by
	// itself, so the RRset still matches; the 90-day certificate expiring
	// within 400 days is a warning.
	rep = b.run(func(o *selfcheck.Options) { o.Days = 400 })
	if h := rep.Hosts[0]; h.MatchesInDays == nil || !*h.MatchesInDays || !hasProblem(rep, selfcheck.SevWarning, "certificate-expires", b.cert) {
		t.Errorf("--days 400 under tls file: %+v\n%s", h.MatchesInDays, text(rep))
	}

	// 2. A second address (IPv6) served by another server with another key.
	other := b.leaf()
	smtpbed.Start(t, smtpbed.Options{Addr: "[::1]:25", Hostname: mxHost,
		TLS: &tls.Config{Certificates: []tls.Certificate{other.TLSCertificate()}}})
	b.publish(append(base, "mx AAAA ::1", rec(t, 3, 1, l1.Cert))...)
	rep = b.run(nil)
	if a := addr(rep, mxHost, mxIP+":25"); a == nil || a.Result != "match" {
		t.Errorf("two addresses: IPv4 %+v", a)
	}
	if a := addr(rep, mxHost, "[::1]:25"); a == nil || a.Result != "mismatch" || a.SameAsLoaded == nil || *a.SameAsLoaded {
		t.Errorf("two addresses: IPv6 %+v", a)
	}
	if rep.ExitCode != selfcheck.ExitBroken || !hasProblem(rep, selfcheck.SevError, "served-mismatch", "[::1]:25") ||
		!hasProblem(rep, selfcheck.SevWarning, "serves-other-key", "[::1]:25") {
		t.Errorf("two addresses: exit %d\n%s", rep.ExitCode, text(rep))
	}
	b.zone.Remove(t, "mx.own.example.", dns.TypeAAAA)
	b.publish(append(base, rec(t, 3, 1, l1.Cert))...)

	// 3. The certificate replaced by one with a new key, the RRset not.
	l2 := b.leaf()
	b.install(l2)
	rep = b.run(nil)
	if a := addr(rep, mxHost, mxIP+":25"); a == nil || a.Result != "mismatch" {
		t.Errorf("new key: probe %+v", a)
	}
	if rep.ExitCode != selfcheck.ExitBroken || !hasProblem(rep, selfcheck.SevError, "loaded-mismatch", tlsa[:len(tlsa)-1]) ||
		!hasProblem(rep, selfcheck.SevError, "served-mismatch", mxIP) {
		t.Errorf("new key: exit %d\n%s", rep.ExitCode, text(rep))
	}
	// The fix names the record of the new key.
	want := selfcheck.ZoneLine(tlsa, selfcheck.RecordFor(dane.DANEEE, l2.Cert))
	if !strings.Contains(text(rep), want) {
		t.Errorf("new key: the fix does not name %q\n%s", want, text(rep))
	}

	// 4. 3 1 1 + 2 1 1 of the issuer: survives the next key change. As the
	// ACME loader (new key at each renewal) it needs nothing added.
	b.publish(append(base, rec(t, 3, 1, l2.Cert), rec(t, 2, 1, l2.Chain[0]))...)
	acme := func(o *selfcheck.Options) { o.Source = selfcheck.SourceACME; o.Days = 80 }
	rep = b.run(acme)
	if ro := rep.Hosts[0].Rollover; ro == nil || !ro.SurvivesKeyChange || len(ro.Publish) != 0 || rep.ExitCode != selfcheck.ExitOK {
		t.Errorf("3 1 1 + 2 1 1: %+v exit %d\n%s", ro, rep.ExitCode, text(rep))
	}
	if h := rep.Hosts[0]; h.MatchesInDays == nil || !*h.MatchesInDays {
		t.Errorf("3 1 1 + 2 1 1 in 80 days: %+v", h.MatchesInDays)
	}
	l3 := b.leaf()
	b.install(l3)
	rep = b.run(acme)
	if a := addr(rep, mxHost, mxIP+":25"); a == nil || a.Result != "match" || !strings.HasPrefix(a.Record, "2 1 1 ") || rep.ExitCode != selfcheck.ExitOK {
		t.Errorf("after the key change: %+v exit %d\n%s", a, rep.ExitCode, text(rep))
	}

	// 5. 3 1 1 only, as the ACME loader: breaks at the renewal; the report
	// prints the 2 1 1 to add.
	b.publish(append(base, rec(t, 3, 1, l3.Cert))...)
	rep = b.run(acme)
	if rep.ExitCode != selfcheck.ExitWarning || !hasProblem(rep, selfcheck.SevWarning, "breaks-at-renewal", tlsa[:len(tlsa)-1]) ||
		!hasProblem(rep, selfcheck.SevWarning, "will-not-match", tlsa[:len(tlsa)-1]) {
		t.Errorf("ACME 3 1 1 only: exit %d\n%s", rep.ExitCode, text(rep))
	}
	issuer := selfcheck.ZoneLine(tlsa, selfcheck.RecordFor(dane.DANETA, l3.Chain[0]))
	if !strings.Contains(text(rep), issuer) {
		t.Errorf("ACME 3 1 1 only: %q not printed\n%s", issuer, text(rep))
	}
}

// An expired signature on the TLSA RRset, an MTA-STS policy without the
// MX, and the resolver stopped.
func TestSelfcheckDNSAndSTS(t *testing.T) {
	b := newBed(t)
	l := b.leaf()
	b.install(l)
	// The TLSA owner in a zone of its own whose signatures expired.
	stale := b.dns.Zone(t, "_tcp.mx.own.example.", dnsbed.ExpiredSignatures(), dnsbed.TTL(2))
	stale.Add(t, rec(t, 3, 1, l.Cert))
	web := stsbed.Start(t, "127.0.0.20:443", b.ca.Root())
	web.Site("own.example").SetPolicy(stsbed.Policy("enforce", 86400, "mx.elsewhere.example"))
	b.publish("@ MX 10 mx", "mx A "+mxIP, "mta-sts A 127.0.0.20",
		`_mta-sts TXT "v=STSv1; id=20260101T1;"`, `_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tlsrpt@own.example"`)

	rep := b.run(func(o *selfcheck.Options) { o.Resolvers = []string{b.ub.Addr()} })
	if !hasProblem(rep, selfcheck.SevError, "tlsa-lookup-failed", "_25._tcp."+mxHost) || rep.Hosts[0].TLSAStatus != "lookup-failed" {
		t.Errorf("expired RRSIG: \n%s", text(rep))
	}
	if !hasProblem(rep, selfcheck.SevError, "sts-mx-missing", "own.example") {
		t.Errorf("MTA-STS without the MX:\n%s", text(rep))
	}
	d := rep.Domains[len(rep.Domains)-1]
	if d.Name != "own.example" || d.MTASTS == nil || d.MTASTS.State != "enforce" || len(d.MTASTS.Unlisted) != 1 || d.TLSRPT == nil || !d.TLSRPT.Present {
		t.Errorf("domain info %+v sts %+v rpt %+v", d, d.MTASTS, d.TLSRPT)
	}
	if len(rep.Resolvers) != 1 || !rep.Resolvers[0].Up || !rep.Resolvers[0].Validating {
		t.Errorf("resolver health while up: %+v", rep.Resolvers)
	}
	if a := addr(rep, mxHost, mxIP+":25"); a == nil || a.WebPKI != "ok" {
		t.Errorf("WebPKI of the MX certificate: %+v", a)
	}
	if rep.ExitCode != selfcheck.ExitBroken {
		t.Errorf("exit %d", rep.ExitCode)
	}

	// The resolver stopped: the health check says so, with what to do.
	b.ub.Stop()
	h := selfcheck.CheckResolver(context.Background(), b.ub.Addr(), selfcheck.HealthOptions{Timeout: time.Second})
	if h.Up || h.Validating || h.Problem == nil || h.Problem.Code != "resolver-down" || h.Problem.Fix == "" {
		t.Errorf("resolver stopped: %+v", h)
	}
}

// A resolver that answers but does not validate is reported as such.
func TestCheckResolverNotValidating(t *testing.T) {
	netns.Required(t)
	srv := dnsbed.NewServer()
	srv.Zone(t, "plain.example.", dnsbed.Unsigned())
	srv.Start(t, "127.0.0.3:53")
	// The authoritative server answers without AD: not a validator.
	h := selfcheck.CheckResolver(context.Background(), "127.0.0.3:53", selfcheck.HealthOptions{})
	if !h.Up || h.Validating || h.Problem == nil || h.Problem.Code != "resolver-not-validating" {
		t.Errorf("authoritative server as resolver: %+v", h)
	}
}

// The CLI on maddy's real configuration, and the next-key workflow end to
// end: switching before two TTLs is refused, after is allowed.
func TestSelfcheckCLIAndNextKey(t *testing.T) {
	b := newBed(t)
	// The dane block's resolver, not /etc/resolv.conf's (127.0.0.1:53),
	// is the one check --self asks.
	ub2 := dnsbed.StartUnbound(t, b.dns, dnsbed.UnboundOptions{Addr: "127.0.0.5:53"})
	b.daneBlock = "dane {\n resolver " + ub2.Addr() + "\n }"
	b.more = append(b.more, ub2)
	l := b.leaf()
	b.install(l)
	base := []string{"@ MX 10 mx", "mx A " + mxIP}
	b.publish(append(base, rec(t, 3, 1, l.Cert))...)
	bin := maddybed.Binary(t)
	roots := b.ca.Root().WritePEM(t, t.TempDir())

	cmd := exec.Command(bin, "--config", b.maddy.Config, "check", "--self", "--json", "--domain", "own.example", "--roots", roots)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("check --self: %v\n%s", err, out)
	}
	var rep selfcheck.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.Schema != selfcheck.Schema || rep.Certificate == nil || rep.Certificate.Path != b.cert || len(rep.Hosts) != 1 ||
		len(rep.Hosts[0].Addresses) != 1 || rep.Hosts[0].Addresses[0].Result != "match" {
		t.Fatalf("check --self --json from maddy.conf:\n%s", out)
	}
	if len(rep.Resolvers) != 1 || rep.Resolvers[0].Server != ub2.Addr() || !rep.Resolvers[0].Up || !rep.Resolvers[0].Validating {
		t.Errorf("check --self: resolver health %+v", rep.Resolvers)
	}
	// --self takes no DOMAIN; --days without --self is a usage error.
	for _, args := range [][]string{{"check", "--self", "own.example"}, {"check", "--days", "3", "own.example"}} {
		err := exec.Command(bin, append([]string{"--config", b.maddy.Config}, args...)...).Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != selfcheck.ExitUsage {
			t.Errorf("%v: %v, want exit %d", args, err, selfcheck.ExitUsage)
		}
	}

	nk := func(args ...string) (string, int) {
		cmd := exec.Command(bin, append([]string{"--config", b.maddy.Config, "nextkey"}, args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out2, code := nk("create")
	next := b.key + ".next"
	if code != 0 {
		t.Fatalf("create: %d %s", code, out2)
	}
	if st, err := os.Stat(next); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("next key: %v %v", st, err)
	}
	if _, code := nk("create"); code == 0 {
		t.Fatal("a second create overwrote the next key")
	}
	m := regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(tlsa)+` IN TLSA (3 1 1 [0-9a-f]{64})$`).FindAllStringSubmatch(out2, -1)
	if len(m) != 2 {
		t.Fatalf("create did not print the current and next records:\n%s", out2)
	}
	nextRec := m[1][1]
	if !strings.Contains(out2, "openssl req -new -key "+next) {
		t.Errorf("create does not explain the CSR:\n%s", out2)
	}
	// Not published yet.
	if out, code := nk("status"); code != 2 || !strings.Contains(out, "NOT PUBLISHED") {
		t.Errorf("status before publishing: %d %s", code, out)
	}
	// Both records with a TTL of 300 s: two TTLs are ten minutes, so a
	// switch right after the first sighting is refused whatever the speed
	// of the machine. The time that must pass is then made to pass in the
	// workflow's own clock, its state file (first_seen), instead of
	// sleeping.
	cur := pki.TLSARR(t, tlsa, 3, 1, 1, l.Cert)
	cur.Hdr.Ttl = 300
	b.publish(append(base, cur.String(), tlsa+" 300 IN TLSA "+nextRec)...)

	// A certificate for the next key, as the operator's CA would issue.
	nextKey, err := selfcheck.ReadPrivateKey(next)
	if err != nil {
		t.Fatal(err)
	}
	newLeaf := b.ca.Leaf(t, pki.LeafOptions{DNSNames: []string{mxHost}, Key: nextKey})
	newCert, _ := newLeaf.WriteFiles(t, t.TempDir())

	out3, code := nk("switch", "--new-cert", newCert)
	if code != 1 || !strings.Contains(out3, "WAIT") || !strings.Contains(out3, "switch refused") {
		t.Fatalf("switch right after publishing: %d %s", code, out3)
	}
	if data, _ := os.ReadFile(b.key); string(data) == string(newLeaf.KeyPEM(t)) {
		t.Fatal("a refused switch replaced the key")
	}
	statePath := selfcheck.StatePath(next)
	st := readState(t, statePath)
	if st.FirstSeen.IsZero() || st.MaxTTL < 200 || st.MaxTTL > 300 {
		t.Fatalf("state after the first sighting: %+v", st)
	}
	// Just short of two TTLs since the first sighting: still refused.
	st.FirstSeen = time.Now().Add(-2*time.Duration(st.MaxTTL)*time.Second + time.Minute)
	writeState(t, statePath, st)
	if out, code := nk("switch", "--new-cert", newCert); code != 1 || !strings.Contains(out, "switch refused") {
		t.Fatalf("switch a minute before two TTLs: %d %s", code, out)
	}
	// Two TTLs and a second later: allowed.
	st = readState(t, statePath)
	st.FirstSeen = time.Now().Add(-2*time.Duration(st.MaxTTL)*time.Second - time.Second)
	writeState(t, statePath, st)
	if out, code := nk("status"); code != 0 || !strings.Contains(out, "SAFE") {
		t.Fatalf("status after two TTLs: %d %s", code, out)
	}
	if out, code := nk("switch", "--new-cert", newCert); code != 0 {
		t.Fatalf("switch after two TTLs: %d %s", code, out)
	}
	chain, err := selfcheck.ReadChain(b.cert)
	if err != nil || selfcheck.CertMatchesKey(chain, nextKey) != nil {
		t.Fatalf("after the switch the certificate file does not hold the next key: %v", err)
	}
	if _, err := os.Stat(b.key + ".prev"); err != nil {
		t.Errorf("old key not kept: %v", err)
	}
}

func readState(t *testing.T, path string) selfcheck.NextKeyState {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st selfcheck.NextKeyState
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func writeState(t *testing.T, path string, st selfcheck.NextKeyState) {
	t.Helper()
	if err := selfcheck.SaveState(path, st); err != nil {
		t.Fatal(err)
	}
}
