package service

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/maddy-dane/daneguard/internal/engine"
)

// Settings is one `dane { }` block, parsed and validated. Every directive
// is documented in docs/configuration.md (and the tlsrpt block in
// docs/tlsrpt.md). Start from DefaultSettings, apply Directives, then
// call Validate.
type Settings struct {
	Debug               bool
	Resolvers           []string // empty: /etc/resolv.conf
	ResolverTimeout     time.Duration
	TrustRemoteResolver bool
	DefaultLevel        engine.Level
	// Policies are the inline `policy` entries by key (A-label domain or
	// ".parent"), each with Source "inline".
	Policies        map[string]engine.DomainPolicy
	CacheMaxEntries int
	CacheMaxTTL     time.Duration
	CacheFailureMin time.Duration
	CacheFailureMax time.Duration
	RootsPath       string
	Roots           *x509.CertPool // nil: the system's
	MTASTS          bool
	MTASTSDir       string // "": <state>/daneguard/mtasts
	// MetricsMaxDestinations bounds the destination label of
	// maddy_daneguard_deferrals_by_destination_total (per process: the
	// first block's value applies).
	MetricsMaxDestinations int
	// TLSRPT is the tlsrpt block; nil when there is none (nothing is
	// recorded then).
	TLSRPT *TLSRPTSettings
	// ResolverCheckInterval is how often the resolvers' health is probed
	// (selfcheck.CheckResolver); 0: never.
	ResolverCheckInterval time.Duration
	// Selfcheck is the background self-check of the server's own inbound
	// DANE and MTA-STS (docs/own-domain.md).
	Selfcheck SelfcheckSettings
	// Store is the shared store of a fleet (the store block, fleet.go);
	// nil: the embedded stores only.
	Store *StoreSettings
}

// SelfcheckSettings are the selfcheck_* directives.
type SelfcheckSettings struct {
	// Interval between runs; 0: the background self-check is off.
	Interval time.Duration
	// Days: a key change, expiry or mismatch within this many days is a
	// warning.
	Days int
	// CertPath is the certificate chain the port 25 endpoint loads
	// (`tls file CERT KEY`'s CERT); with ACME set, the ACME loader's store
	// directory ("" : <state_dir>/acme). Both empty: the chain of the
	// global `tls` directive (Deps.ServerTLS), if any.
	CertPath string
	ACME     bool
	// Domains to check besides the hostname; nil: the MTA's defaults
	// (Deps.Domains).
	Domains []string
	// Addresses are public addresses of this server the host cannot see
	// on its interfaces (NAT).
	Addresses []net.IP
}

// TLSRPTSettings is the `tlsrpt { }` block. deliver_to is the glue's
// (Deps.SubmitReport).
type TLSRPTSettings struct {
	Off           bool
	Organization  string // default: the global hostname
	Contact       string // default: postmaster@hostname
	From          string // default: Contact
	Dir           string // default: DefaultTLSRPTDir(state directory)
	SendHour      int
	HTTPTimeout   time.Duration
	HTTPRootsPath string
	HTTPRoots     *x509.CertPool
	RetryFor      time.Duration
	KeepDays      int
	PollInterval  time.Duration
	// SendingIP is the "sending-mta-ip" of failure details; empty means
	// the source address the system routes to the receiving IP from.
	SendingIP string
}

// DefaultSettings returns the settings of an empty dane block.
func DefaultSettings() Settings {
	return Settings{
		ResolverTimeout: 5 * time.Second,
		DefaultLevel:    engine.LevelDANE,
		Policies:        map[string]engine.DomainPolicy{},
		CacheMaxEntries: 100000,
		CacheMaxTTL:     time.Hour,
		CacheFailureMin: time.Second,
		CacheFailureMax: 5 * time.Minute,
		MTASTS:          true,
		// Cheap (one query to a local resolver) and it catches the outage
		// that makes maddy bounce mail (docs/resolver.md).
		ResolverCheckInterval: 30 * time.Second,
		Selfcheck:             SelfcheckSettings{Days: 14},

		MetricsMaxDestinations: 50,
	}
}

// DefaultTLSRPTSettings returns the settings of an empty tlsrpt block,
// before Validate fills in the defaults that depend on the host.
func DefaultTLSRPTSettings() TLSRPTSettings {
	return TLSRPTSettings{
		SendHour:     1,
		HTTPTimeout:  30 * time.Second,
		RetryFor:     24 * time.Hour,
		KeepDays:     7,
		PollInterval: time.Minute,
	}
}

// Directive is one configuration directive: Set applies its arguments.
// Errors name neither the file nor the line; the glue adds them.
type Directive[T any] struct {
	Name string
	// Repeat: the directive may appear more than once (policy).
	Repeat bool
	Set    func(s *T, args []string) error
	// Block, if set, are the directives of the directive's { } block,
	// applied after Set; Done, if set, runs after them and checks the
	// block as a whole.
	Block []Directive[T]
	Done  func(s *T) error
}

// Directives are the directives of the dane block, except the two that
// need the MTA's own objects: policy_table (a table module) and tlsrpt
// (a block whose deliver_to names a delivery target); the glue parses
// those.
var Directives = []Directive[Settings]{
	{Name: "debug", Set: func(s *Settings, a []string) error { return setBool(&s.Debug, a) }},
	{Name: "resolver", Set: func(s *Settings, a []string) error {
		if len(a) == 0 {
			return errors.New("expected at least one argument")
		}
		s.Resolvers = append([]string(nil), a...)
		return nil
	}},
	{Name: "resolver_timeout", Set: func(s *Settings, a []string) error { return setDuration(&s.ResolverTimeout, a) }},
	{Name: "trust_remote_resolver", Set: func(s *Settings, a []string) error { return setBool(&s.TrustRemoteResolver, a) }},
	{Name: "default_level", Set: func(s *Settings, a []string) error {
		if len(a) != 1 {
			return errors.New("usage: default_level LEVEL")
		}
		lvl, err := engine.ParseLevel(a[0])
		if err != nil {
			return err
		}
		if lvl == engine.LevelFingerprint {
			return errors.New("fingerprint needs per-domain pins; use it in policy entries only")
		}
		s.DefaultLevel = lvl
		return nil
	}},
	{Name: "policy", Repeat: true, Set: addPolicy},
	{Name: "cache_max_entries", Set: func(s *Settings, a []string) error {
		return setIntIf(&s.CacheMaxEntries, a, func(n int) error {
			if n < 1 {
				return errors.New("cache_max_entries must be at least 1")
			}
			return nil
		})
	}},
	{Name: "cache_max_ttl", Set: bounded("cache_max_ttl", time.Second, 24*time.Hour, func(s *Settings) *time.Duration { return &s.CacheMaxTTL })},
	// RFC 9520 §3.2: failures are cached for at least 1 s, at most 5 min.
	{Name: "cache_failure_min", Set: bounded("cache_failure_min", time.Second, 5*time.Minute, func(s *Settings) *time.Duration { return &s.CacheFailureMin })},
	{Name: "cache_failure_max", Set: bounded("cache_failure_max", time.Second, 5*time.Minute, func(s *Settings) *time.Duration { return &s.CacheFailureMax })},
	{Name: "roots", Set: func(s *Settings, a []string) error {
		var path string
		if err := setString(&path, a); err != nil {
			return err
		}
		pool, err := ReadRootsPEM(path)
		if err != nil {
			return fmt.Errorf("roots: %w", err)
		}
		s.RootsPath, s.Roots = path, pool
		return nil
	}},
	{Name: "mtasts", Set: func(s *Settings, a []string) error { return setBool(&s.MTASTS, a) }},
	{Name: "mtasts_dir", Set: func(s *Settings, a []string) error { return setString(&s.MTASTSDir, a) }},
	{Name: "resolver_check_interval", Set: func(s *Settings, a []string) error {
		return setInterval("resolver_check_interval", &s.ResolverCheckInterval, a)
	}},
	{Name: "selfcheck_interval", Set: func(s *Settings, a []string) error {
		return setInterval("selfcheck_interval", &s.Selfcheck.Interval, a)
	}},
	{Name: "selfcheck_days", Set: func(s *Settings, a []string) error {
		if err := setInt(&s.Selfcheck.Days, a); err != nil {
			return err
		}
		if s.Selfcheck.Days < 0 || s.Selfcheck.Days > 366 {
			return errors.New("selfcheck_days must be between 0 and 366")
		}
		return nil
	}},
	{Name: "selfcheck_cert", Set: func(s *Settings, a []string) error {
		switch {
		case len(a) == 1 && a[0] != "acme":
			s.Selfcheck.CertPath, s.Selfcheck.ACME = a[0], false
		case len(a) >= 1 && len(a) <= 2 && a[0] == "acme":
			s.Selfcheck.ACME, s.Selfcheck.CertPath = true, ""
			if len(a) == 2 {
				s.Selfcheck.CertPath = a[1]
			}
		default:
			return errors.New("usage: selfcheck_cert CERT_FILE | selfcheck_cert acme [STORE_DIR]")
		}
		return nil
	}},
	{Name: "selfcheck_domains", Set: func(s *Settings, a []string) error {
		if len(a) == 0 {
			return errors.New("expected at least one domain")
		}
		s.Selfcheck.Domains = nil
		for _, d := range a {
			d = strings.ToLower(strings.TrimSuffix(d, "."))
			if d == "" || strings.ContainsAny(d, "@*/ ") {
				return fmt.Errorf("selfcheck_domains: %q is not a domain name", d)
			}
			s.Selfcheck.Domains = append(s.Selfcheck.Domains, d)
		}
		return nil
	}},
	{Name: "selfcheck_address", Set: func(s *Settings, a []string) error {
		if len(a) == 0 {
			return errors.New("expected at least one IP address")
		}
		s.Selfcheck.Addresses = nil
		for _, v := range a {
			ip := net.ParseIP(v)
			if ip == nil {
				return fmt.Errorf("selfcheck_address: %q is not an IP address", v)
			}
			s.Selfcheck.Addresses = append(s.Selfcheck.Addresses, ip)
		}
		return nil
	}},
	{Name: "metrics_max_destinations", Set: func(s *Settings, a []string) error {
		if err := setInt(&s.MetricsMaxDestinations, a); err != nil {
			return err
		}
		if s.MetricsMaxDestinations < 1 || s.MetricsMaxDestinations > 10000 {
			return errors.New("metrics_max_destinations must be between 1 and 10000")
		}
		return nil
	}},
}

// setInterval parses `off` (0) or a duration of at least a second for
// the background checks.
func setInterval(name string, d *time.Duration, a []string) error {
	if len(a) == 1 && (a[0] == "off" || a[0] == "0") {
		*d = 0
		return nil
	}
	if len(a) != 1 {
		return fmt.Errorf("usage: %s off|DURATION", name)
	}
	v, err := time.ParseDuration(a[0])
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	if v < time.Second {
		return fmt.Errorf("%s must be off or at least 1s", name)
	}
	*d = v
	return nil
}

// TLSRPTDirectives are the directives of the tlsrpt block, except
// deliver_to (the glue's).
var TLSRPTDirectives = []Directive[TLSRPTSettings]{
	{Name: "organization", Set: func(t *TLSRPTSettings, a []string) error { return setString(&t.Organization, a) }},
	{Name: "contact", Set: func(t *TLSRPTSettings, a []string) error { return setString(&t.Contact, a) }},
	{Name: "from", Set: func(t *TLSRPTSettings, a []string) error { return setString(&t.From, a) }},
	{Name: "dir", Set: func(t *TLSRPTSettings, a []string) error { return setString(&t.Dir, a) }},
	{Name: "send_hour", Set: func(t *TLSRPTSettings, a []string) error {
		return setIntIf(&t.SendHour, a, func(n int) error {
			if n < 0 || n > 23 {
				return errors.New("send_hour must be between 0 and 23")
			}
			return nil
		})
	}},
	{Name: "https_timeout", Set: func(t *TLSRPTSettings, a []string) error {
		return setDurationIf(&t.HTTPTimeout, a, func(d time.Duration) error {
			if d <= 0 {
				// 0 would make the HTTP client wait forever for a stalled
				// collector, and the one sender goroutine with it.
				return errors.New("https_timeout must be more than 0s")
			}
			return nil
		})
	}},
	{Name: "https_roots", Set: func(t *TLSRPTSettings, a []string) error {
		var path string
		if err := setString(&path, a); err != nil {
			return err
		}
		pool, err := ReadRootsPEM(path)
		if err != nil {
			return fmt.Errorf("https_roots: %w", err)
		}
		t.HTTPRootsPath, t.HTTPRoots = path, pool
		return nil
	}},
	{Name: "retry_for", Set: func(t *TLSRPTSettings, a []string) error { return setDuration(&t.RetryFor, a) }},
	{Name: "keep_days", Set: func(t *TLSRPTSettings, a []string) error {
		return setIntIf(&t.KeepDays, a, func(n int) error {
			if n < 1 {
				return errors.New("keep_days must be at least 1")
			}
			return nil
		})
	}},
	{Name: "poll_interval", Set: func(t *TLSRPTSettings, a []string) error {
		return setDurationIf(&t.PollInterval, a, func(d time.Duration) error {
			if d < 10*time.Millisecond {
				return errors.New("poll_interval is too small")
			}
			return nil
		})
	}},
	{Name: "sending_ip", Set: func(t *TLSRPTSettings, a []string) error {
		var ip string
		if err := setString(&ip, a); err != nil {
			return err
		}
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("sending_ip %q is not an IP address", ip)
		}
		t.SendingIP = ip
		return nil
	}},
}

// Validate checks what no single directive can: the relations between
// them.
func (s *Settings) Validate() error {
	if s.CacheFailureMin > s.CacheFailureMax {
		return fmt.Errorf("cache_failure_min (%v) is larger than cache_failure_max (%v)", s.CacheFailureMin, s.CacheFailureMax)
	}
	if s.DefaultLevel == "" {
		s.DefaultLevel = engine.LevelDANE
	}
	return nil
}

// Validate fills in the defaults that depend on the host (hostname: the
// MTA's global hostname; stateDir: its state directory) and checks the
// addresses.
func (t *TLSRPTSettings) Validate(hostname, stateDir string) error {
	if t.Off {
		return nil
	}
	if t.Organization == "" {
		t.Organization = hostname
	}
	if t.Contact == "" {
		if hostname == "" {
			return errors.New("contact is required (no global hostname to default to postmaster@hostname)")
		}
		t.Contact = "postmaster@" + hostname
	}
	if a, err := mail.ParseAddress(t.Contact); err != nil || a.Name != "" || !strings.Contains(a.Address, "@") {
		return fmt.Errorf("contact %q is not an email address", t.Contact)
	}
	if t.From == "" {
		t.From = t.Contact
	}
	if a, err := mail.ParseAddress(t.From); err != nil || a.Name != "" {
		return fmt.Errorf("from %q is not an email address", t.From)
	}
	if t.Organization == "" {
		return errors.New("organization is required (no global hostname to default to)")
	}
	if t.Dir == "" {
		t.Dir = DefaultTLSRPTDir(stateDir)
	}
	return nil
}

// DefaultTLSRPTDir is where TLS report data is kept without a `dir`
// directive: <state directory>/daneguard/tlsrpt.
func DefaultTLSRPTDir(stateDir string) string {
	return filepath.Join(stateDir, "daneguard", "tlsrpt")
}

// DefaultMTASTSDir is where MTA-STS policies are kept without an
// `mtasts_dir` directive: <state directory>/daneguard/mtasts.
func DefaultMTASTSDir(stateDir string) string {
	return filepath.Join(stateDir, "daneguard", "mtasts")
}

// TLSRPTStorePath is the database file in a tlsrpt dir.
func TLSRPTStorePath(dir string) string { return filepath.Join(dir, "tlsrpt.db") }

// addPolicy handles `policy DOMAIN LEVEL [pins...]`.
func addPolicy(s *Settings, a []string) error {
	if len(a) < 2 {
		return errors.New("usage: policy DOMAIN LEVEL [fingerprints...]")
	}
	raw := strings.ToLower(strings.TrimSuffix(a[0], "."))
	if err := checkPolicyKey(raw); err != nil {
		return fmt.Errorf("policy %s: %v", a[0], err)
	}
	// Keys are stored as the engine looks them up: A-labels for
	// internationalized names, so either form may be written.
	key := engine.CanonicalDomain(strings.TrimPrefix(raw, "."))
	if strings.HasPrefix(raw, ".") {
		key = "." + key
	}
	pol, err := engine.ParsePolicySpec(strings.Join(a[1:], " "))
	if err != nil {
		return fmt.Errorf("policy %s: %v", a[0], err)
	}
	if s.Policies == nil {
		s.Policies = map[string]engine.DomainPolicy{}
	}
	if _, dup := s.Policies[key]; dup {
		return fmt.Errorf("duplicate policy for %s", key)
	}
	pol.Source, pol.Key = "inline", key
	s.Policies[key] = pol
	return nil
}

// checkPolicyKey rejects an inline `policy` key that no destination could
// ever match. Such an entry would be accepted and silently never apply,
// leaving the domain at default_level while the operator believes it is
// covered: a weaker policy than configured.
func checkPolicyKey(key string) error {
	name := strings.TrimPrefix(key, ".")
	switch {
	case name == "":
		return errors.New("not a domain name")
	case strings.Contains(name, "*"):
		parent := strings.TrimLeft(name, "*.")
		if parent == "" || strings.Contains(parent, "*") {
			return errors.New("wildcards are not supported")
		}
		return fmt.Errorf("wildcards are not supported; write .%s for every domain below %s", parent, parent)
	case strings.Contains(name, "@"):
		return errors.New("not a domain name (an address?); keys are destination domains")
	case strings.HasPrefix(name, ".") || strings.Contains(name, ".."):
		return errors.New("not a domain name (empty label)")
	}
	return nil
}

// ReadRootsPEM reads a PEM file of root certificates.
func ReadRootsPEM(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificates in %s", path)
	}
	return pool, nil
}

// The argument parsers below accept what maddy's config.Map accepts for
// the same kinds of directive, with the same messages. A refused value
// leaves the setting as it was.

func setBool(b *bool, a []string) error {
	switch {
	case len(a) == 0:
		*b = true
		return nil
	case len(a) != 1:
		return errors.New("expected exactly 1 argument")
	}
	switch strings.ToLower(a[0]) {
	case "1", "true", "on", "yes":
		*b = true
	case "0", "false", "off", "no":
		*b = false
	default:
		return errors.New("bool argument should be 'yes' or 'no'")
	}
	return nil
}

func setString(s *string, a []string) error {
	if len(a) != 1 {
		return errors.New("expected 1 argument")
	}
	*s = a[0]
	return nil
}

func setInt(i *int, a []string) error {
	if len(a) != 1 {
		return errors.New("expected 1 argument")
	}
	n, err := strconv.Atoi(a[0])
	if err != nil {
		return fmt.Errorf("invalid integer: %s", a[0])
	}
	*i = n
	return nil
}

// setIntIf sets *i to the argument if check accepts it.
func setIntIf(i *int, a []string, check func(int) error) error {
	var n int
	if err := setInt(&n, a); err != nil {
		return err
	}
	if err := check(n); err != nil {
		return err
	}
	*i = n
	return nil
}

// setDurationIf sets *d to the argument if check accepts it.
func setDurationIf(d *time.Duration, a []string, check func(time.Duration) error) error {
	var v time.Duration
	if err := setDuration(&v, a); err != nil {
		return err
	}
	if err := check(v); err != nil {
		return err
	}
	*d = v
	return nil
}

func setDuration(d *time.Duration, a []string) error {
	if len(a) == 0 {
		return errors.New("at least one argument is required")
	}
	v, err := time.ParseDuration(strings.Join(a, ""))
	if err != nil {
		return err
	}
	if v < 0 {
		return errors.New("duration must not be negative")
	}
	*d = v
	return nil
}

// bounded is a duration directive whose value must lie in [lo, hi].
func bounded(name string, lo, hi time.Duration, field func(*Settings) *time.Duration) func(*Settings, []string) error {
	return func(s *Settings, a []string) error {
		if len(a) != 1 {
			return fmt.Errorf("usage: %s DURATION", name)
		}
		d, err := time.ParseDuration(a[0])
		if err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		if d < lo || d > hi {
			return fmt.Errorf("%s must be between %v and %v", name, lo, hi)
		}
		*field(s) = d
		return nil
	}
}
