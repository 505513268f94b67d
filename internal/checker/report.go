package checker

import (
	"fmt"
	"time"

	"github.com/maddy-dane/daneguard/internal/engine"
)

// Schema identifies the JSON document Run produces. It changes only when a
// field is removed or changes meaning; new fields may appear at any time.
// docs/checker.md documents every field.
const Schema = "daneguard-check/1"

// Exit statuses of `maddy check`, also in Report.ExitCode.
const (
	// ExitAuthenticated: with --connect, the MX host maddy would use
	// authenticated under the policy. Without --connect: at least one MX
	// host passes the checks made before connecting.
	ExitAuthenticated = 0
	// ExitUnauthenticated: with --connect, mail would be delivered, but
	// encrypted without authentication or in plaintext, as the policy
	// allows.
	ExitUnauthenticated = 1
	// ExitDeferred: mail would stay queued: every MX host is refused by
	// the policy or unreachable, the policy lookup or the MX lookup failed,
	// or the domain has no usable MX.
	ExitDeferred = 2
	// ExitUsage: bad command line or configuration.
	ExitUsage = 3
)

// Overall results (Report.Result) besides the engine's verdict results.
const (
	// ResultNotConnected: --connect was not given and some MX host passes
	// the checks made before connecting; what the connection would bring is
	// not known.
	ResultNotConnected = "not-connected"
)

// Report is the outcome of one check. It marshals to the JSON document of
// `maddy check --json`.
type Report struct {
	Schema    string    `json:"schema"`
	Domain    string    `json:"domain"`
	CheckedAt time.Time `json:"checked_at"`
	// Resolvers are the DNS resolvers the engine queried.
	Resolvers []string `json:"resolvers,omitempty"`
	Policy    Policy   `json:"policy"`
	MX        MX       `json:"mx"`
	// MTASTS is the domain's MTA-STS state; absent when not looked up.
	MTASTS *STS   `json:"mta_sts,omitempty"`
	Hosts  []Host `json:"hosts"`
	// Connected says whether --connect was given.
	Connected bool `json:"connected"`
	// Result is the outcome for the domain: the verdict result of the MX
	// host maddy would deliver to (authenticated, encrypted, plaintext),
	// "deferred" when no host would take the mail, or "not-connected".
	Result string `json:"result"`
	// SelectedMX is the host whose verdict gave Result.
	SelectedMX string `json:"selected_mx,omitempty"`
	ExitCode   int    `json:"exit_code"`
	Summary    string `json:"summary"`
}

// Policy is the security level that applies to the domain.
type Policy struct {
	Level string `json:"level,omitempty"`
	// Source is "default", "inline", "table" or "command-line".
	Source string `json:"source,omitempty"`
	// Key is the policy entry that matched: the domain or a ".parent".
	Key          string   `json:"key,omitempty"`
	Fingerprints []string `json:"fingerprints,omitempty"`
	// Error is set when the policy could not be read; mail is deferred.
	Error string `json:"error,omitempty"`
}

// MX is the DNSSEC-aware MX lookup of the domain.
type MX struct {
	Secure   bool   `json:"dnssec_secure"`
	Expanded string `json:"expanded,omitempty"`
	Implicit bool   `json:"implicit,omitempty"`
	NullMX   bool   `json:"null_mx,omitempty"`
	NXDomain bool   `json:"nxdomain,omitempty"`
	TTL      int64  `json:"ttl_seconds"`
	Error    string `json:"error,omitempty"`
}

// STS is the domain's MTA-STS state.
type STS struct {
	// From is "engine" when the engine's MTA-STS component looked the
	// policy up for its decision (levels dane and mtasts with MTA-STS on),
	// "lookup" for a one-shot lookup shown for information only.
	From string `json:"from"`
	// PolicySource is the engine's source of the policy: fetched, cache,
	// stale or none.
	PolicySource string `json:"policy_source,omitempty"`
	// ID is the id of the _mta-sts TXT record; empty when none.
	ID string `json:"id,omitempty"`
	// TXTError explains a missing or invalid TXT record.
	TXTError string `json:"txt_error,omitempty"`
	// Mode, MX and MaxAge come from the fetched policy.
	Mode   string   `json:"mode,omitempty"`
	MX     []string `json:"mx,omitempty"`
	MaxAge int64    `json:"max_age,omitempty"`
	// FetchError explains why the policy could not be fetched.
	FetchError string `json:"fetch_error,omitempty"`
}

// Host is one MX host, in preference order.
type Host struct {
	Name       string `json:"name"`
	Preference int    `json:"preference"`
	// Addresses are the A and AAAA records; CNAMEChain the aliases
	// followed, starting with Name.
	Addresses     []string `json:"addresses,omitempty"`
	CNAMEChain    []string `json:"cname_chain,omitempty"`
	AddressSecure bool     `json:"address_dnssec_secure"`
	DANE          DANE     `json:"dane"`
	// MTASTSMatch: whether the MTA-STS policy lists this host (absent
	// without a policy).
	MTASTSMatch *bool `json:"mta_sts_mx_match,omitempty"`
	// MXCheck is the engine's verdict before connecting: "deferred" means
	// maddy would skip this host.
	MXCheck    Verdict `json:"mx_check"`
	Connection *Conn   `json:"connection,omitempty"`
}

// DANE is what the TLSA search found for a host (RFC 7672 §2.2).
type DANE struct {
	// Status is "tlsa" (a secure TLSA RRset exists), "no-tlsa" or
	// "lookup-failed".
	Status string `json:"status"`
	// NoTLSAReason: insecure-mx-host, insecure-tlsa, no-tlsa-records.
	NoTLSAReason string `json:"no_tlsa_reason,omitempty"`
	BaseDomain   string `json:"tlsa_base,omitempty"`
	Owner        string `json:"tlsa_owner,omitempty"`
	Records      []TLSA `json:"records,omitempty"`
	Error        string `json:"error,omitempty"`
}

// TLSA is one record of a secure TLSA RRset and whether it can be used.
type TLSA struct {
	Record   string `json:"record"`
	Mnemonic string `json:"mnemonic"`
	Usable   bool   `json:"usable"`
	// Reason and Detail say why an unusable record is set aside.
	Reason string `json:"unusable_reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Conn is what --connect found on port 25 of a host.
type Conn struct {
	Address         string `json:"address,omitempty"`
	Error           string `json:"error,omitempty"`
	STARTTLSOffered bool   `json:"starttls_offered"`
	// TLSError is set when STARTTLS failed; the check then goes on in
	// plaintext, as maddy does.
	TLSError     string `json:"tls_error,omitempty"`
	TLSVersion   string `json:"tls_version,omitempty"`
	CipherSuite  string `json:"cipher_suite,omitempty"`
	Certificates []Cert `json:"certificates,omitempty"`
	// MTASTSCheck is "ok" or why the connection fails the MTA-STS policy
	// (informational: the engine's verdict decides).
	MTASTSCheck string   `json:"mta_sts_check,omitempty"`
	Verdict     *Verdict `json:"verdict,omitempty"`
}

// Cert describes one certificate the server presented.
type Cert struct {
	Subject    string    `json:"subject"`
	Issuer     string    `json:"issuer"`
	DNSNames   []string  `json:"dns_names,omitempty"`
	NotBefore  time.Time `json:"not_before"`
	NotAfter   time.Time `json:"not_after"`
	SHA256     string    `json:"sha256"`
	SPKISHA256 string    `json:"spki_sha256"`
}

// Verdict is an engine verdict, as logged in maddy's "verdict" line.
type Verdict struct {
	Result       string `json:"result"`
	Reason       string `json:"reason,omitempty"`
	Mechanism    string `json:"mechanism,omitempty"`
	Level        string `json:"level"`
	MXSecure     bool   `json:"mx_secure"`
	TLSA         string `json:"tlsa,omitempty"`
	TLSABase     string `json:"tlsa_base,omitempty"`
	TLSVersion   string `json:"tls_version,omitempty"`
	STSPolicyID  string `json:"sts_id,omitempty"`
	STSMode      string `json:"sts_mode,omitempty"`
	Detail       string `json:"detail,omitempty"`
	SMTPCode     int    `json:"smtp_code,omitempty"`
	EnhancedCode string `json:"smtp_enhanced_code,omitempty"`
	Message      string `json:"message,omitempty"`
	ReportType   string `json:"report_type,omitempty"`
}

func verdictOf(v *engine.Verdict) Verdict {
	out := Verdict{
		Result:      string(v.Result),
		Reason:      string(v.Reason),
		Mechanism:   string(v.Mechanism),
		Level:       string(v.Level),
		MXSecure:    v.MXSecure,
		TLSA:        v.TLSA,
		TLSABase:    v.TLSABase,
		TLSVersion:  v.TLSVersion,
		STSPolicyID: v.STSPolicyID,
		STSMode:     v.STSMode,
		Detail:      v.Detail,
		ReportType:  v.ReportType,
	}
	if out.Result == "" {
		// CheckMX leaves the result empty when nothing stops a
		// connection.
		out.Result = "ok"
	}
	if !v.OK() {
		out.SMTPCode = v.Code
		out.EnhancedCode = fmt.Sprintf("%d.%d.%d", v.EnhancedCode[0], v.EnhancedCode[1], v.EnhancedCode[2])
		out.Message = v.Message
	}
	return out
}
