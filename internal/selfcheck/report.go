package selfcheck

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Schema identifies the JSON document of `maddy check --self --json`. It
// changes only when a field is removed
// or changes meaning; new fields may appear at any time.
const Schema = "daneguard-selfcheck/1"

// Exit statuses, in the style of `maddy check` (internal/checker): the
// worse the state, the higher the number.
const (
	// ExitOK: every check passed; nothing breaks within --days.
	ExitOK = 0
	// ExitWarning: mail flows today, but something will break (a key
	// change under records that do not survive it, a certificate about to
	// expire) or weakens protection (insecure MX RRset, MTA-STS testing).
	ExitWarning = 1
	// ExitBroken: a DANE-aware or MTA-STS sender defers mail to this
	// server now (mismatching TLSA, bogus TLSA, MX missing from the
	// policy, an address without STARTTLS), or the resolver is unhealthy.
	ExitBroken = 2
	// ExitUsage: bad command line or configuration.
	ExitUsage = 3
)

// Severity of a Problem.
type Severity string

const (
	SevError   Severity = "error"   // broken now: exit 2
	SevWarning Severity = "warning" // will break, or weaker than intended: exit 1
	SevInfo    Severity = "info"    // worth knowing; does not change the exit status
)

// Problem is one finding, with what to change.
type Problem struct {
	Severity Severity `json:"severity"`
	// Code is a stable identifier (docs/checker.md lists them).
	Code string `json:"code"`
	// Subject names what is wrong: a domain, a TLSA owner, an address.
	Subject string `json:"subject"`
	Message string `json:"message"`
	// Fix says what to change.
	Fix string `json:"fix"`
}

// Report is the outcome of Run.
type Report struct {
	Schema    string    `json:"schema"`
	CheckedAt time.Time `json:"checked_at"`
	Hostname  string    `json:"hostname"`
	// Days is --days: the report also says what still matches then.
	Days        int          `json:"days"`
	Resolvers   []Health     `json:"resolvers,omitempty"`
	Certificate *LoadedCert  `json:"certificate,omitempty"`
	Domains     []DomainInfo `json:"domains"`
	Hosts       []HostInfo   `json:"own_mx_hosts"`
	Problems    []Problem    `json:"problems"`
	ExitCode    int          `json:"exit_code"`
	Summary     string       `json:"summary"`
}

// LoadedCert is the chain maddy loads.
type LoadedCert struct {
	Source KeySource `json:"source"`
	Path   string    `json:"path,omitempty"`
	Chain  []Cert    `json:"chain,omitempty"`
	// NextKeyChange: see Rollover.NextKeyChange.
	NextKeyChange   time.Time `json:"next_key_change,omitzero"`
	DaysToKeyChange float64   `json:"days_to_key_change"`
}

// Cert describes one certificate.
type Cert struct {
	Subject    string    `json:"subject"`
	Issuer     string    `json:"issuer"`
	DNSNames   []string  `json:"dns_names,omitempty"`
	NotBefore  time.Time `json:"not_before"`
	NotAfter   time.Time `json:"not_after"`
	SPKISHA256 string    `json:"spki_sha256"`
}

// DomainInfo is one local domain (or the hostname).
type DomainInfo struct {
	Name     string   `json:"name"`
	MXSecure bool     `json:"mx_dnssec_secure"`
	MX       []string `json:"mx,omitempty"`
	Implicit bool     `json:"implicit_mx,omitempty"`
	MXError  string   `json:"mx_error,omitempty"`
	// Own are the MX hosts that are this server.
	Own    []string `json:"own_mx,omitempty"`
	MTASTS *STSInfo `json:"mta_sts,omitempty"`
	TLSRPT *RPTInfo `json:"tlsrpt,omitempty"`
}

// STSInfo is the domain's MTA-STS state as a sender sees it.
type STSInfo struct {
	// State: none (no TXT record), enforce, testing, mode-none,
	// txt-invalid, fetch-failed. The metric
	// maddy_daneguard_selfcheck_mtasts_state carries it.
	State      string   `json:"state"`
	ID         string   `json:"id,omitempty"`
	TXTError   string   `json:"txt_error,omitempty"`
	MX         []string `json:"mx_patterns,omitempty"`
	MaxAge     int64    `json:"max_age,omitempty"`
	FetchError string   `json:"fetch_error,omitempty"`
	// Unlisted are real MX hosts no mx pattern matches.
	Unlisted []string `json:"unlisted_mx,omitempty"`
}

// RPTInfo is the domain's TLS-RPT record.
type RPTInfo struct {
	Present bool     `json:"present"`
	RUA     []string `json:"rua,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// HostInfo is one MX host that is this server.
type HostInfo struct {
	Name       string `json:"name"`
	AddrSecure bool   `json:"address_dnssec_secure"`
	// TLSAStatus: tlsa, no-tlsa, lookup-failed.
	TLSAStatus   string   `json:"tlsa_status"`
	TLSAOwner    string   `json:"tlsa_owner,omitempty"`
	NoTLSAReason string   `json:"no_tlsa_reason,omitempty"`
	TLSA         []string `json:"tlsa,omitempty"`
	TLSATTL      int64    `json:"tlsa_ttl_seconds,omitempty"`
	TLSAError    string   `json:"tlsa_error,omitempty"`
	// LoadedMatch: dane.Verify of the loaded chain against the RRset
	// ("match" with the record, or the failure reason).
	LoadedMatch string `json:"loaded_match,omitempty"`
	// MatchesInDays: whether the RRset still authenticates the server
	// Days from now (absent without --days or without TLSA).
	MatchesInDays *bool       `json:"matches_in_days,omitempty"`
	Rollover      *Rollover   `json:"rollover,omitempty"`
	Addresses     []AddrProbe `json:"addresses"`
}

// AddrProbe is what one address of the host serves on port 25.
type AddrProbe struct {
	Address string `json:"address"`
	// Result: match, mismatch, no-tlsa (TLS fine, nothing to match),
	// no-starttls, tls-failed, connect-failed. The metric
	// maddy_daneguard_selfcheck_match is 1 for match and no-tlsa.
	Result string `json:"result"`
	// Record is the TLSA record that matched, Detail why none did.
	Record     string `json:"record,omitempty"`
	Detail     string `json:"detail,omitempty"`
	TLSVersion string `json:"tls_version,omitempty"`
	Leaf       *Cert  `json:"leaf,omitempty"`
	// SameAsLoaded: the leaf key is the key maddy loads.
	SameAsLoaded *bool `json:"same_key_as_loaded,omitempty"`
	// WebPKI is "ok" or why the certificate fails MTA-STS validation
	// (RFC 8461 §4.2) for the host name. MTA-STS senders require "ok";
	// DANE senders ignore it.
	WebPKI string `json:"webpki,omitempty"`
}

// add records a problem.
func (r *Report) add(sev Severity, code, subject, msg, fix string) {
	r.Problems = append(r.Problems, Problem{Severity: sev, Code: code, Subject: subject, Message: msg, Fix: fix})
}

// Add records a problem found outside Run (the caller's own checks, such
// as a certificate file it cannot read) and updates ExitCode and Summary.
func (r *Report) Add(p Problem) {
	r.Problems = append(r.Problems, p)
	r.finish()
}

// finish sets ExitCode and Summary.
func (r *Report) finish() {
	var errs, warns int
	for _, p := range r.Problems {
		switch p.Severity {
		case SevError:
			errs++
		case SevWarning:
			warns++
		}
	}
	switch {
	case errs > 0:
		r.ExitCode = ExitBroken
		r.Summary = fmt.Sprintf("BROKEN: %d error(s), %d warning(s): senders defer or refuse mail to this server now", errs, warns)
	case warns > 0:
		r.ExitCode = ExitWarning
		r.Summary = fmt.Sprintf("%d warning(s): mail flows now, but see what to change", warns)
	default:
		r.ExitCode = ExitOK
		r.Summary = "OK: inbound DANE and MTA-STS work as a sender checks them"
		if r.Days > 0 {
			r.Summary += fmt.Sprintf(", and still will in %d days", r.Days)
		}
	}
}

// WriteJSON writes the indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for a human.
func (r *Report) WriteText(w io.Writer) error {
	b := &strings.Builder{}
	p := func(indent int, format string, args ...any) {
		b.WriteString(strings.Repeat("  ", indent))
		fmt.Fprintf(b, format, args...)
		b.WriteByte('\n')
	}
	p(0, "Self-check of %s (checked %s)", r.Hostname, r.CheckedAt.UTC().Format("2006-01-02 15:04:05 UTC"))
	for _, h := range r.Resolvers {
		state := "DOWN"
		switch {
		case h.Up && h.Validating:
			state = fmt.Sprintf("up, validating, %s", h.RTT.Round(time.Millisecond))
		case h.Up:
			state = "up, NOT VALIDATING"
		}
		p(1, "resolver %s: %s", h.Server, state)
	}
	if c := r.Certificate; c != nil {
		p(1, "certificate (%s %s):", c.Source, c.Path)
		for i, cc := range c.Chain {
			p(2, "[%d] %s, issuer %s, %s to %s, spki sha256 %s", i, cc.Subject, cc.Issuer,
				cc.NotBefore.UTC().Format("2006-01-02"), cc.NotAfter.UTC().Format("2006-01-02"), cc.SPKISHA256)
		}
		if !c.NextKeyChange.IsZero() {
			what := "certificate expiry (the key changes when you replace it)"
			if c.Source == SourceACME {
				what = "ACME renewal with a new key"
			}
			p(2, "next key change: %s, in %.0f days (%s)", c.NextKeyChange.UTC().Format("2006-01-02"), c.DaysToKeyChange, what)
		}
	}
	for _, d := range r.Domains {
		switch {
		case d.MXError != "":
			p(1, "domain %s: MX LOOKUP FAILED: %s", d.Name, d.MXError)
		default:
			p(1, "domain %s: MX %s (%s), this server: %s", d.Name, strings.Join(d.MX, ", "), secure(d.MXSecure), orNone(d.Own))
		}
		if s := d.MTASTS; s != nil {
			line := "MTA-STS: " + s.State
			if s.ID != "" {
				line += " (id " + s.ID + ")"
			}
			if len(s.MX) != 0 {
				line += ", mx " + strings.Join(s.MX, " ")
			}
			p(2, "%s", line)
		}
		if t := d.TLSRPT; t != nil {
			if t.Present {
				p(2, "TLS-RPT: %s", strings.Join(t.RUA, ", "))
			} else {
				p(2, "TLS-RPT: none (%s)", t.Error)
			}
		}
	}
	for _, h := range r.Hosts {
		p(1, "MX host %s (addresses %s)", h.Name, secure(h.AddrSecure))
		switch h.TLSAStatus {
		case "tlsa":
			p(2, "TLSA %s (secure, TTL %ds):", h.TLSAOwner, h.TLSATTL)
			for _, t := range h.TLSA {
				p(3, "%s", t)
			}
		case "lookup-failed":
			p(2, "TLSA LOOKUP FAILED: %s", h.TLSAError)
		default:
			p(2, "no TLSA (%s)", h.NoTLSAReason)
		}
		if h.LoadedMatch != "" {
			p(2, "loaded certificate: %s", h.LoadedMatch)
		}
		for _, a := range h.Addresses {
			line := fmt.Sprintf("%s: %s", a.Address, a.Result)
			if a.Record != "" {
				line += " (" + a.Record + ")"
			}
			if a.Detail != "" {
				line += ": " + a.Detail
			}
			if a.WebPKI != "" {
				line += "; WebPKI: " + a.WebPKI
			}
			p(2, "%s", line)
		}
		if ro := h.Rollover; ro != nil {
			for _, f := range ro.Fates {
				p(2, "record %s: %s", f.Record, f.Fate)
			}
		}
		if h.MatchesInDays != nil {
			p(2, "in %d days: %s", r.Days, map[bool]string{true: "still matches", false: "WILL NOT MATCH"}[*h.MatchesInDays])
		}
	}
	if len(r.Problems) != 0 {
		p(0, "")
		p(0, "Problems:")
		for _, pr := range r.Problems {
			p(1, "%s [%s] %s: %s", strings.ToUpper(string(pr.Severity)), pr.Code, pr.Subject, pr.Message)
			for _, l := range strings.Split(pr.Fix, "\n") {
				p(2, "-> %s", l)
			}
		}
	}
	p(0, "")
	p(0, "%s", r.Summary)
	_, err := io.WriteString(w, b.String())
	return err
}

func secure(s bool) string {
	if s {
		return "DNSSEC-secure"
	}
	return "insecure"
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
