package checker

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteJSON writes the report as the indented JSON document of
// `maddy check --json`.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for a human, MX hosts in preference order.
func (r *Report) WriteText(w io.Writer) error {
	b := &strings.Builder{}
	p := func(indent int, format string, args ...any) {
		b.WriteString(strings.Repeat("  ", indent))
		fmt.Fprintf(b, format, args...)
		b.WriteByte('\n')
	}
	p(0, "Domain %s (checked %s)", r.Domain, r.CheckedAt.Format("2006-01-02 15:04:05 UTC"))
	if len(r.Resolvers) != 0 {
		p(1, "resolvers:  %s", strings.Join(r.Resolvers, ", "))
	}
	if r.Policy.Error != "" {
		p(1, "policy:     CANNOT BE READ: %s", r.Policy.Error)
	} else {
		src := r.Policy.Source
		if r.Policy.Key != "" {
			src += " entry " + r.Policy.Key
		}
		p(1, "policy:     level %s (%s)", r.Policy.Level, src)
		for _, fp := range r.Policy.Fingerprints {
			p(2, "pin %s", fp)
		}
	}
	switch {
	case r.MX.Error != "":
		p(1, "MX RRset:   LOOKUP FAILED: %s", r.MX.Error)
	case r.MX.NullMX:
		p(1, "MX RRset:   null MX (accepts no mail), %s", secure(r.MX.Secure))
	case r.MX.NXDomain:
		p(1, "MX RRset:   domain does not exist (NXDOMAIN), %s", secure(r.MX.Secure))
	case r.MX.Implicit:
		p(1, "MX RRset:   none, the domain is its own mail server (implicit MX), %s", secure(r.MX.Secure))
	default:
		exp := ""
		if r.MX.Expanded != "" && r.MX.Expanded != r.Domain {
			exp = " via CNAME " + r.MX.Expanded
		}
		p(1, "MX RRset:   %d host(s), %s%s, TTL %ds", len(r.Hosts), secure(r.MX.Secure), exp, r.MX.TTL)
	}
	if s := r.MTASTS; s != nil {
		from := " [looked up for information; not applied at this level]"
		if s.From == "engine" {
			from = " [applied; policy source " + s.PolicySource + "]"
		}
		switch {
		case s.Mode != "":
			p(1, "MTA-STS:    id %s, mode %s, max_age %d, mx %s%s", s.ID, s.Mode, s.MaxAge, strings.Join(s.MX, " "), from)
			if s.FetchError != "" || s.TXTError != "" {
				p(2, "refresh failed: %s%s", s.TXTError, s.FetchError)
			}
		case s.FetchError != "":
			p(1, "MTA-STS:    TXT id %s, policy fetch FAILED: %s%s", s.ID, s.FetchError, from)
		default:
			p(1, "MTA-STS:    none published (%s)%s", s.TXTError, from)
		}
	}
	for _, h := range r.Hosts {
		b.WriteByte('\n')
		p(0, "MX %d %s", h.Preference, h.Name)
		if len(h.Addresses) == 0 {
			p(1, "addresses:  none")
		} else {
			p(1, "addresses:  %s (%s)", strings.Join(h.Addresses, " "), secure(h.AddressSecure))
		}
		if len(h.CNAMEChain) != 0 {
			p(1, "CNAME:      %s", strings.Join(h.CNAMEChain, " -> "))
		}
		switch h.DANE.Status {
		case "tlsa":
			p(1, "TLSA base:  %s (records at %s)", h.DANE.BaseDomain, h.DANE.Owner)
			for _, t := range h.DANE.Records {
				if t.Usable {
					p(2, "usable    %s  %s", t.Record, t.Mnemonic)
				} else {
					p(2, "unusable  %s  %s: %s", t.Record, t.Mnemonic, t.Reason)
				}
			}
		case "no-tlsa":
			p(1, "DANE:       does not apply (%s)", h.DANE.NoTLSAReason)
		default:
			p(1, "DANE:       LOOKUP FAILED: %s", h.DANE.Error)
		}
		if h.MTASTSMatch != nil {
			p(1, "MTA-STS:    host listed in policy: %v", *h.MTASTSMatch)
		}
		if h.MXCheck.Result == "deferred" {
			p(1, "before connecting: REFUSED %s", verdictText(h.MXCheck))
		} else {
			p(1, "before connecting: ok")
		}
		if c := h.Connection; c != nil {
			if c.Error != "" {
				p(1, "connection: FAILED: %s", c.Error)
				continue
			}
			tlsDesc := "no STARTTLS offered"
			switch {
			case c.TLSVersion != "":
				tlsDesc = c.TLSVersion + " " + c.CipherSuite
			case c.TLSError != "":
				tlsDesc = "STARTTLS failed (" + c.TLSError + "), continued in plaintext"
			}
			p(1, "connection: %s, %s", c.Address, tlsDesc)
			for i, crt := range c.Certificates {
				p(2, "cert[%d] subject %s, issuer %s", i, crt.Subject, crt.Issuer)
				if len(crt.DNSNames) != 0 {
					p(3, "names %s", strings.Join(crt.DNSNames, " "))
				}
				p(3, "valid %s to %s", crt.NotBefore.Format("2006-01-02"), crt.NotAfter.Format("2006-01-02"))
				p(3, "sha256:%s", crt.SHA256)
				p(3, "spki-sha256:%s", crt.SPKISHA256)
			}
			if c.MTASTSCheck != "" {
				p(1, "MTA-STS check: %s", c.MTASTSCheck)
			}
			if c.Verdict != nil {
				p(1, "verdict:    %s", verdictText(*c.Verdict))
			}
		}
	}
	b.WriteByte('\n')
	p(0, "Result: %s: %s (exit status %d)", r.Result, r.Summary, r.ExitCode)
	_, err := io.WriteString(w, b.String())
	return err
}

func secure(s bool) string {
	if s {
		return "DNSSEC secure"
	}
	return "insecure, not DNSSEC-validated"
}

func verdictText(v Verdict) string {
	s := v.Result
	var parts []string
	if v.Reason != "" {
		parts = append(parts, v.Reason)
	}
	if v.Mechanism != "" {
		parts = append(parts, "via "+v.Mechanism)
	}
	if v.TLSA != "" {
		parts = append(parts, "TLSA "+v.TLSA)
	}
	if len(parts) != 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	if v.SMTPCode != 0 {
		s += fmt.Sprintf(": %d %s %s", v.SMTPCode, v.EnhancedCode, v.Message)
	}
	if v.Detail != "" && !strings.Contains(v.Message, v.Detail) {
		s += "; detail: " + v.Detail
	}
	return s
}
