package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Report is the JSON report of RFC 8460 §4.4.
type Report struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyResult `json:"policies"`
}

// DateRange is the report's "date-range": a full UTC day (RFC 8460 §4.1).
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// MarshalJSON writes RFC 3339 times in UTC, whole seconds.
func (d DateRange) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Start string `json:"start-datetime"`
		End   string `json:"end-datetime"`
	}{d.Start.UTC().Format(time.RFC3339), d.End.UTC().Format(time.RFC3339)})
}

// PolicyResult is one element of "policies".
type PolicyResult struct {
	Policy         ReportPolicy    `json:"policy"`
	Summary        Summary         `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
}

// ReportPolicy is the "policy" object. MXHost is a string (the MX host)
// for tlsa and no-policy-found, and an array of the policy's patterns for
// sts (RFC 8460 §4.4, "mx-host-pattern").
type ReportPolicy struct {
	PolicyType   PolicyType `json:"policy-type"`
	PolicyString []string   `json:"policy-string,omitempty"`
	PolicyDomain string     `json:"policy-domain"`
	MXHost       any        `json:"mx-host,omitempty"`
}

// Summary is the "summary" object.
type Summary struct {
	TotalSuccessful uint64 `json:"total-successful-session-count"`
	TotalFailure    uint64 `json:"total-failure-session-count"`
}

// FailureDetail is one element of "failure-details".
type FailureDetail struct {
	ResultType          string `json:"result-type"`
	SendingMTAIP        string `json:"sending-mta-ip,omitempty"`
	ReceivingMXHostname string `json:"receiving-mx-hostname,omitempty"`
	ReceivingMXHelo     string `json:"receiving-mx-helo,omitempty"`
	ReceivingIP         string `json:"receiving-ip,omitempty"`
	FailedSessionCount  uint64 `json:"failed-session-count"`
	AdditionalInfo      string `json:"additional-information,omitempty"`
	FailureReasonCode   string `json:"failure-reason-code,omitempty"`
}

// ReportMeta is the reporting organization's side of a report.
type ReportMeta struct {
	// OrganizationName is "organization-name".
	OrganizationName string
	// ContactInfo is "contact-info", an RFC 5322 addr-spec. Its domain is
	// the report's submitter (RFC 8460 §5.3).
	ContactInfo string
}

// Submitter returns the domain of the contact address, the value of
// TLS-Report-Submitter (RFC 8460 §5.3: they must match).
func (m ReportMeta) Submitter() string {
	_, d, ok := strings.Cut(m.ContactInfo, "@")
	if !ok {
		return ""
	}
	return normDomain(d)
}

// ReportID returns the report-id used for day and domain: stable, so that
// a retried report has the id of the first try, and unique per submitter,
// day and policy domain. It has the "left@right" form the Subject of
// RFC 8460 §5.3 wants.
func ReportID(day, domain, submitter string) string {
	return strings.ReplaceAll(day, "-", "") + "." + normDomain(domain) + "@" + submitter
}

// BuildReport builds the report for domain on day (YYYY-MM-DD) from the
// aggregates in the store. Policies and failure details come out in a
// stable order.
func BuildReport(meta ReportMeta, day, domain, reportID string, aggs []Aggregate) (*Report, error) {
	start, err := ParseDay(day)
	if err != nil {
		return nil, err
	}
	r := &Report{
		OrganizationName: meta.OrganizationName,
		// RFC 8460 §4.1: 00:00-24:00 UTC; Appendix B writes the end as
		// the day's last second.
		DateRange:   DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)},
		ContactInfo: meta.ContactInfo,
		ReportID:    reportID,
		Policies:    []PolicyResult{},
	}
	type pkey struct {
		t          PolicyType
		s, d, m, p string
	}
	idx := map[pkey]int{}
	fidx := map[string]int{}
	for _, a := range aggs {
		k := a.Key
		pk := pkey{k.PolicyType, strings.Join(k.PolicyStrings, "\n"), k.PolicyDomain, k.MXHost, strings.Join(k.MXPatterns, "\n")}
		i, ok := idx[pk]
		if !ok {
			pol := ReportPolicy{PolicyType: k.PolicyType, PolicyString: k.PolicyStrings, PolicyDomain: k.PolicyDomain}
			if k.PolicyType == PolicySTS && len(k.MXPatterns) != 0 {
				pol.MXHost = k.MXPatterns
			} else if k.MXHost != "" {
				pol.MXHost = k.MXHost
			}
			i = len(r.Policies)
			idx[pk] = i
			r.Policies = append(r.Policies, PolicyResult{Policy: pol})
		}
		pr := &r.Policies[i]
		if k.Success {
			pr.Summary.TotalSuccessful += a.Count
			continue
		}
		pr.Summary.TotalFailure += a.Count
		fd := FailureDetail{
			ResultType: k.ResultType, SendingMTAIP: k.SendingIP, ReceivingMXHostname: k.MXHost,
			ReceivingMXHelo: k.ReceivingHELO, ReceivingIP: k.ReceivingIP, FailureReasonCode: k.FailureReason,
		}
		fk := fmt.Sprintf("%d\x00%s\x00%s\x00%s\x00%s\x00%s\x00%s", i, fd.ResultType, fd.SendingMTAIP, fd.ReceivingMXHostname, fd.ReceivingMXHelo, fd.ReceivingIP, fd.FailureReasonCode)
		if j, ok := fidx[fk]; ok {
			pr.FailureDetails[j].FailedSessionCount += a.Count
			continue
		}
		fd.FailedSessionCount = a.Count
		fidx[fk] = len(pr.FailureDetails)
		pr.FailureDetails = append(pr.FailureDetails, fd)
	}
	sort.SliceStable(r.Policies, func(i, j int) bool {
		a, b := r.Policies[i].Policy, r.Policies[j].Policy
		if a.PolicyDomain != b.PolicyDomain {
			return a.PolicyDomain < b.PolicyDomain
		}
		if a.PolicyType != b.PolicyType {
			return a.PolicyType < b.PolicyType
		}
		if ma, mb := fmt.Sprint(a.MXHost), fmt.Sprint(b.MXHost); ma != mb {
			return ma < mb
		}
		return strings.Join(a.PolicyString, "\n") < strings.Join(b.PolicyString, "\n")
	})
	for i := range r.Policies {
		fds := r.Policies[i].FailureDetails
		sort.SliceStable(fds, func(a, b int) bool {
			x, y := fds[a], fds[b]
			if x.ResultType != y.ResultType {
				return x.ResultType < y.ResultType
			}
			if x.ReceivingMXHostname != y.ReceivingMXHostname {
				return x.ReceivingMXHostname < y.ReceivingMXHostname
			}
			if x.ReceivingIP != y.ReceivingIP {
				return x.ReceivingIP < y.ReceivingIP
			}
			return x.FailureReasonCode < y.FailureReasonCode
		})
	}
	return r, nil
}

// JSON encodes the report.
func (r *Report) JSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Gzip returns the gzip'd JSON report (RFC 8460 §5.2).
func (r *Report) Gzip() ([]byte, error) {
	js, err := r.JSON()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(js); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Filename is the RFC 8460 §5.1 file name of the gzip'd report:
// sender!policy-domain!begin!end!unique.json.gz.
func (r *Report) Filename(submitter, domain string) string {
	return fmt.Sprintf("%s!%s!%d!%d.json.gz", submitter, normDomain(domain),
		r.DateRange.Start.Unix(), r.DateRange.End.Unix())
}
