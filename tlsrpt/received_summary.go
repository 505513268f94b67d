package tlsrpt

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// ReceivedDay sums the reports received about one policy domain for one
// day: what "maddy tlsrpt received" prints.
type ReceivedDay struct {
	Day          string `json:"day"`
	PolicyDomain string `json:"policy_domain"`
	Reports      int    `json:"reports"`
	Successful   uint64 `json:"successful_sessions"`
	Failed       uint64 `json:"failed_sessions"`
	// ByResultType counts failed sessions per result type.
	ByResultType  map[string]uint64   `json:"failures_by_result_type"`
	Organizations []ReceivedOrg       `json:"organizations"`
	Failures      []ReceivedFailure   `json:"failures"`
	Unsigned      int                 `json:"reports_without_dkim_pass"`
	dedup         map[string]struct{} `json:"-"`
}

// ReceivedOrg is one reporting organization's part of a ReceivedDay.
type ReceivedOrg struct {
	Name       string `json:"organization"`
	Reports    int    `json:"reports"`
	Successful uint64 `json:"successful_sessions"`
	Failed     uint64 `json:"failed_sessions"`
}

// ReceivedFailure is a group of failed sessions: same result type,
// receiving IP, MX host name and reporting organization.
type ReceivedFailure struct {
	ResultType   string `json:"result_type"`
	ReceivingIP  string `json:"receiving_ip,omitempty"`
	MXHost       string `json:"receiving_mx_hostname,omitempty"`
	Organization string `json:"organization"`
	Sessions     uint64 `json:"sessions"`
	// Reasons are up to three distinct failure-reason-codes, as sent.
	Reasons []string `json:"failure_reason_codes,omitempty"`
	// LikelyCause is what SummaryOptions.Explain said.
	LikelyCause string `json:"likely_cause,omitempty"`
}

// SummaryOptions configures SummarizeReceived.
type SummaryOptions struct {
	// Explain, if set, is asked for the likely cause of each failure
	// group (issue 14's self-check: "the address whose certificate does
	// not match"); "" means unknown.
	Explain func(policyDomain string, f ReceivedFailure) string
}

const maxReasons = 3

// SummarizeReceived aggregates entries per day and policy domain (normalised:
// lower case, no trailing dot), oldest day first, then by domain.
// Organizations are sorted by name, failures by sessions (most first).
func SummarizeReceived(entries []ReceivedEntry, opts SummaryOptions) []ReceivedDay {
	idx := map[[2]string]*ReceivedDay{}
	type fkey struct{ rt, ip, mx, org string }
	fidx := map[[2]string]map[fkey]*ReceivedFailure{}
	oidx := map[[2]string]map[string]*ReceivedOrg{}
	for _, e := range entries {
		org := e.Report.OrganizationName
		for _, p := range e.Report.Policies {
			k := [2]string{e.Day(), normDomain(p.Policy.PolicyDomain)}
			d := idx[k]
			if d == nil {
				d = &ReceivedDay{Day: k[0], PolicyDomain: k[1], ByResultType: map[string]uint64{}, dedup: map[string]struct{}{}}
				idx[k] = d
				fidx[k] = map[fkey]*ReceivedFailure{}
				oidx[k] = map[string]*ReceivedOrg{}
			}
			o := oidx[k][org]
			if o == nil {
				o = &ReceivedOrg{Name: org}
				oidx[k][org] = o
			}
			if _, seen := d.dedup[e.Report.ReportID]; !seen {
				d.dedup[e.Report.ReportID] = struct{}{}
				d.Reports++
				o.Reports++
				if e.DKIM != "pass" && e.Transport != "https" {
					d.Unsigned++
				}
			}
			d.Successful += p.Summary.TotalSuccessful
			d.Failed += p.Summary.TotalFailure
			o.Successful += p.Summary.TotalSuccessful
			o.Failed += p.Summary.TotalFailure
			var detailed uint64
			for _, fd := range p.FailureDetails {
				detailed += fd.FailedSessionCount
				fk := fkey{fd.ResultType, fd.ReceivingIP, normDomain(fd.ReceivingMXHostname), org}
				f := fidx[k][fk]
				if f == nil {
					f = &ReceivedFailure{ResultType: fk.rt, ReceivingIP: fk.ip, MXHost: fk.mx, Organization: org}
					fidx[k][fk] = f
				}
				f.Sessions += fd.FailedSessionCount
				d.ByResultType[fd.ResultType] += fd.FailedSessionCount
				if r := fd.FailureReasonCode; r != "" && len(f.Reasons) < maxReasons && !contains(f.Reasons, r) {
					f.Reasons = append(f.Reasons, r)
				}
			}
			// Failures the summary counts but no detail explains.
			if p.Summary.TotalFailure > detailed {
				n := p.Summary.TotalFailure - detailed
				fk := fkey{"unspecified", "", "", org}
				f := fidx[k][fk]
				if f == nil {
					f = &ReceivedFailure{ResultType: fk.rt, Organization: org}
					fidx[k][fk] = f
				}
				f.Sessions += n
				d.ByResultType[fk.rt] += n
			}
		}
	}
	out := make([]ReceivedDay, 0, len(idx))
	for k, d := range idx {
		for _, o := range oidx[k] {
			d.Organizations = append(d.Organizations, *o)
		}
		sort.Slice(d.Organizations, func(i, j int) bool { return d.Organizations[i].Name < d.Organizations[j].Name })
		d.Failures = []ReceivedFailure{}
		for _, f := range fidx[k] {
			if opts.Explain != nil {
				f.LikelyCause = opts.Explain(d.PolicyDomain, *f)
			}
			d.Failures = append(d.Failures, *f)
		}
		sort.Slice(d.Failures, func(i, j int) bool {
			a, b := d.Failures[i], d.Failures[j]
			if a.Sessions != b.Sessions {
				return a.Sessions > b.Sessions
			}
			return fmt.Sprint(a.ResultType, a.ReceivingIP, a.MXHost, a.Organization) < fmt.Sprint(b.ResultType, b.ReceivingIP, b.MXHost, b.Organization)
		})
		d.dedup = nil
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Day != out[j].Day {
			return out[i].Day < out[j].Day
		}
		return out[i].PolicyDomain < out[j].PolicyDomain
	})
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// WriteReceivedJSON writes days as an indented JSON array.
func WriteReceivedJSON(w io.Writer, days []ReceivedDay) error {
	if days == nil {
		days = []ReceivedDay{}
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(days)
}

// WriteReceivedText writes days for a terminal: one block per day and
// policy domain, the failure groups in a table.
func WriteReceivedText(w io.Writer, days []ReceivedDay) error {
	if len(days) == 0 {
		_, err := fmt.Fprintln(w, "no TLS reports received")
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	for i, d := range days {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "%s %s: %d report(s), %d sessions successful, %d failed", d.Day, d.PolicyDomain, d.Reports, d.Successful, d.Failed)
		if d.Unsigned > 0 {
			fmt.Fprintf(tw, " (%d report(s) by email without a DKIM pass)", d.Unsigned)
		}
		fmt.Fprintln(tw)
		var orgs []string
		for _, o := range d.Organizations {
			orgs = append(orgs, fmt.Sprintf("%s (%d ok, %d failed)", o.Name, o.Successful, o.Failed))
		}
		fmt.Fprintf(tw, "  reported by: %s\n", strings.Join(orgs, ", "))
		if len(d.Failures) == 0 {
			continue
		}
		fmt.Fprintln(tw, "  sessions\tresult type\treceiving IP\tMX host\torganization\treason / likely cause")
		for _, f := range d.Failures {
			note := strings.Join(f.Reasons, "; ")
			if f.LikelyCause != "" {
				note = strings.TrimPrefix(note+"; likely cause: "+f.LikelyCause, "; ")
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", f.Sessions, f.ResultType, dash(f.ReceivingIP), dash(f.MXHost), f.Organization, note)
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
