package service

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"github.com/maddy-dane/daneguard/tlsrpt"
)

// ReceiverSettings is one `target.tlsrpt_receiver` block: the receiver of
// the TLS reports (RFC 8460) other MTAs send about the operator's own
// domains. Every directive is documented in docs/tlsrpt-receiver.md.
// Start from DefaultReceiverSettings, apply ReceiverDirectives, then call
// Validate.
type ReceiverSettings struct {
	Debug bool
	// StorePath is the bbolt file of received reports; default
	// DefaultReceivedStorePath(state directory).
	StorePath string
	KeepDays  int
	Limits    tlsrpt.Limits
	// RequireDKIM refuses report emails without a passing DKIM result.
	RequireDKIM bool
	// AuthservID is the authserv-id of the Authentication-Results fields
	// the MTA adds (maddy: the smtp endpoint's hostname); default the
	// global hostname.
	AuthservID string
	// Domains are the policy_domain label values of the metrics (the
	// operator's domains); empty: the first 20 seen.
	Domains          []string
	MaxOrganizations int
	// HTTPSListen, if set, serves POSTed reports (RFC 8460 §5.4) on this
	// host:port with the certificate and key files; HTTPSPath is the one
	// path served.
	HTTPSListen, HTTPSCert, HTTPSKey string
	HTTPSPath                        string
	// SharedStore, if set, is the fleet's shared store (shared_store,
	// the dane block's store syntax): received reports go there too, and
	// "maddy tlsrpt received" reads the fleet's.
	SharedStore *StoreSettings
}

// DefaultReceiverSettings returns the settings of an empty block.
func DefaultReceiverSettings() ReceiverSettings {
	return ReceiverSettings{
		KeepDays: 30,
		Limits: tlsrpt.Limits{
			MaxMessage: tlsrpt.DefaultMaxMessage,
			MaxBody:    tlsrpt.DefaultMaxBody,
			MaxJSON:    tlsrpt.DefaultMaxJSON,
		},
		MaxOrganizations: 20,
		HTTPSPath:        "/",
	}
}

// ReceiverStore is where one target.tlsrpt_receiver block keeps its
// reports, for `maddy tlsrpt received`: its local store and, with
// shared_store, the fleet's.
type ReceiverStore struct {
	Path   string
	Shared *StoreSettings // nil: none
}

// DefaultReceivedStorePath is where received reports are kept without a
// `store` directive: <state directory>/daneguard/tlsrpt_received.db.
func DefaultReceivedStorePath(stateDir string) string {
	return filepath.Join(stateDir, "daneguard", "tlsrpt_received.db")
}

// sharedStoreDirective is `shared_store redis://... { ... }`: the dane
// block's `store` directive under another name, because `store` of this
// block names its bbolt file (the node's own store, which stays the
// journal when a shared store is added).
var sharedStoreDirective = func() Directive[ReceiverSettings] {
	d := StoreDirective("shared_store", func(s *ReceiverSettings) **StoreSettings { return &s.SharedStore })
	done := d.Done
	d.Done = func(s *ReceiverSettings) error {
		if s.SharedStore.ClaimTTL != defaultClaimTTL {
			return errors.New("claim_ttl is the dane block's TLS report claim; it has no meaning in shared_store")
		}
		return done(s)
	}
	return d
}()

func init() { ReceiverDirectives = append(ReceiverDirectives, sharedStoreDirective) }

// ReceiverDirectives are the directives of the block.
var ReceiverDirectives = []Directive[ReceiverSettings]{
	{Name: "debug", Set: func(s *ReceiverSettings, a []string) error { return setBool(&s.Debug, a) }},
	{Name: "store", Set: func(s *ReceiverSettings, a []string) error { return setString(&s.StorePath, a) }},
	{Name: "keep_days", Set: func(s *ReceiverSettings, a []string) error {
		if err := setInt(&s.KeepDays, a); err != nil {
			return err
		}
		if s.KeepDays < 1 {
			return errors.New("keep_days must be at least 1")
		}
		return nil
	}},
	{Name: "max_message_size", Set: func(s *ReceiverSettings, a []string) error { return setSize(&s.Limits.MaxMessage, a) }},
	{Name: "max_report_size", Set: func(s *ReceiverSettings, a []string) error { return setSize(&s.Limits.MaxBody, a) }},
	{Name: "max_json_size", Set: func(s *ReceiverSettings, a []string) error { return setSize(&s.Limits.MaxJSON, a) }},
	{Name: "require_dkim", Set: func(s *ReceiverSettings, a []string) error { return setBool(&s.RequireDKIM, a) }},
	{Name: "authserv_id", Set: func(s *ReceiverSettings, a []string) error { return setString(&s.AuthservID, a) }},
	{Name: "domains", Set: func(s *ReceiverSettings, a []string) error {
		if len(a) == 0 {
			return errors.New("expected at least one domain")
		}
		s.Domains = nil
		for _, d := range a {
			if strings.ContainsAny(d, "@/ ") || strings.Trim(d, ".") == "" {
				return fmt.Errorf("domains: %q is not a domain name", d)
			}
			s.Domains = append(s.Domains, strings.ToLower(strings.TrimSuffix(d, ".")))
		}
		return nil
	}},
	{Name: "metrics_max_organizations", Set: func(s *ReceiverSettings, a []string) error {
		if err := setInt(&s.MaxOrganizations, a); err != nil {
			return err
		}
		if s.MaxOrganizations < 1 || s.MaxOrganizations > 1000 {
			return errors.New("metrics_max_organizations must be between 1 and 1000")
		}
		return nil
	}},
	{Name: "https_listen", Set: func(s *ReceiverSettings, a []string) error {
		if err := setString(&s.HTTPSListen, a); err != nil {
			return err
		}
		if _, _, err := net.SplitHostPort(s.HTTPSListen); err != nil {
			return fmt.Errorf("https_listen: want HOST:PORT: %v", err)
		}
		return nil
	}},
	{Name: "https_cert", Set: func(s *ReceiverSettings, a []string) error { return setString(&s.HTTPSCert, a) }},
	{Name: "https_key", Set: func(s *ReceiverSettings, a []string) error { return setString(&s.HTTPSKey, a) }},
	{Name: "https_path", Set: func(s *ReceiverSettings, a []string) error {
		if err := setString(&s.HTTPSPath, a); err != nil {
			return err
		}
		if !strings.HasPrefix(s.HTTPSPath, "/") {
			return errors.New("https_path must start with /")
		}
		return nil
	}},
}

// Validate fills in the defaults that depend on the host and checks the
// relations between directives.
func (s *ReceiverSettings) Validate(hostname, stateDir string) error {
	if s.StorePath == "" {
		if stateDir == "" {
			return errors.New("store is required (the state directory is not known)")
		}
		s.StorePath = DefaultReceivedStorePath(stateDir)
	} else if !filepath.IsAbs(s.StorePath) && stateDir != "" {
		s.StorePath = filepath.Join(stateDir, s.StorePath)
	}
	if s.AuthservID == "" {
		s.AuthservID = hostname
	}
	if s.AuthservID == "" {
		return errors.New("authserv_id is required (no global hostname to default to)")
	}
	if s.Limits.MaxBody > s.Limits.MaxMessage {
		return fmt.Errorf("max_report_size (%d) is larger than max_message_size (%d)", s.Limits.MaxBody, s.Limits.MaxMessage)
	}
	switch {
	case s.HTTPSListen != "" && (s.HTTPSCert == "" || s.HTTPSKey == ""):
		return errors.New("https_listen needs https_cert and https_key")
	case s.HTTPSListen == "" && (s.HTTPSCert != "" || s.HTTPSKey != ""):
		return errors.New("https_cert and https_key need https_listen")
	}
	return nil
}

// setSize parses a data size as maddy does: a number with a unit suffix
// K, M, G or B, several adding up ("1M 512K").
func setSize(n *int64, a []string) error {
	if len(a) == 0 {
		return errors.New("expected a size, e.g. 10M")
	}
	var total int64
	for _, arg := range a {
		i := strings.IndexFunc(arg, func(r rune) bool { return !unicode.IsDigit(r) })
		if i <= 0 {
			return fmt.Errorf("size %q: want a number with a unit (K, M, G or B)", arg)
		}
		v, err := strconv.ParseInt(arg[:i], 10, 64)
		if err != nil {
			return fmt.Errorf("size %q: %v", arg, err)
		}
		mult := map[string]int64{"B": 1, "b": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[arg[i:]]
		if mult == 0 {
			return fmt.Errorf("size %q: unknown unit suffix %q", arg, arg[i:])
		}
		total += v * mult
	}
	if total < 1024 {
		return fmt.Errorf("size %d bytes is too small", total)
	}
	*n = total
	return nil
}
