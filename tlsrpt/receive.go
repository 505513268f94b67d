package tlsrpt

// The receiving side: reports other MTAs send about the domains this
// operator runs (the rua of their own "_smtp._tls" record). They arrive
// by email (RFC 8460 §5.3) or by HTTPS POST (§5.4), gzip'd (§5.2) or
// as plain JSON, and carry the §4.4 JSON report. The parser is strict
// about what it understands and tolerant of what it does not:
//
//   - every field §4.4 defines is checked for its JSON type; the fields
//     the schema always fills in are required (organization-name,
//     date-range with both times, contact-info, report-id, policies; per
//     policy: policy with policy-type and policy-domain, summary with
//     both counts; per failure detail: result-type and
//     failed-session-count);
//   - counts are non-negative JSON integers (no fraction, no exponent);
//   - times are RFC 3339 (§4.4 "date-time"), the end not before the
//     start;
//   - policy-type is one of the three §4.4 values;
//   - result-type is a registry token (lower-case letters, digits and
//     "-"). Values outside the §4.3 registry are kept, with a warning:
//     the IANA registry (§6.6) can grow, and refusing a whole report for
//     one new type would lose its other counts;
//   - fields §4.4 does not define are ignored, and each one is named in
//     the warnings, so that an operator can see them without the report
//     being lost.
//
// Sizes are bounded twice: the compressed (or raw JSON) body, and the
// decompressed JSON. A gzip body is decompressed as a stream and given
// up as soon as it passes the limit, so a gzip bomb costs at most the
// limit in memory and the time to inflate that many bytes.

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message"
)

// ContentTypeJSON is the media type of an uncompressed report (RFC 8460
// §6.4).
const ContentTypeJSON = "application/tlsrpt+json"

// Errors of the receiving side. Every error the parsers return wraps one
// of them, with the details after it.
var (
	// ErrTooLarge: the message or the report body exceeds its limit.
	ErrTooLarge = errors.New("tlsrpt: report too large")
	// ErrDecompressionLimit: the gzip'd report inflates past
	// Limits.MaxJSON (a gzip bomb, or simply a report too large).
	ErrDecompressionLimit = errors.New("tlsrpt: decompressed report exceeds the limit")
	// ErrNotReport: the email carries no application/tlsrpt+gzip or
	// application/tlsrpt+json part, or the body has another media type.
	ErrNotReport = errors.New("tlsrpt: not a TLS report")
	// ErrMalformed: the body is not valid gzip, not valid JSON, or not a
	// valid §4.4 report.
	ErrMalformed = errors.New("tlsrpt: malformed report")
)

// Limits bound what the receiver reads. Zero fields take the defaults.
type Limits struct {
	// MaxMessage bounds a whole report email, headers and base64 included.
	// Default 16 MiB.
	MaxMessage int64
	// MaxBody bounds the report as transferred: the gzip bytes, or the
	// JSON of an uncompressed report. Default 10 MiB, the receiver limit
	// RFC 8460 §5.2 mentions as common.
	MaxBody int64
	// MaxJSON bounds the decompressed JSON. Default 32 MiB.
	MaxJSON int64
}

// Default limits.
const (
	DefaultMaxMessage = 16 << 20
	DefaultMaxBody    = 10 << 20
	DefaultMaxJSON    = 32 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxMessage <= 0 {
		l.MaxMessage = DefaultMaxMessage
	}
	if l.MaxBody <= 0 {
		l.MaxBody = DefaultMaxBody
	}
	if l.MaxJSON <= 0 {
		l.MaxJSON = DefaultMaxJSON
	}
	return l
}

// maxReportIDLen bounds report-id: it keys the received-report store.
const maxReportIDLen = 1024

// maxReportParts bounds the MIME parts looked at in one email.
const maxReportParts = 64

// Received is a report as it arrived.
type Received struct {
	Report *Report
	// MediaType is ContentTypeGzip or ContentTypeJSON.
	MediaType string
	// JSONSize is the size of the (decompressed) JSON in bytes.
	JSONSize int64
	// Email only: the TLS-Report-Domain and TLS-Report-Submitter header
	// fields (§5.3), the From address and the Message-ID.
	HeaderDomain, HeaderSubmitter, From, MessageID string
	// Warnings lists what was accepted although not as RFC 8460 asks:
	// unknown fields, unregistered result types, header fields that
	// disagree with the report (the report wins, §5.6).
	Warnings []string
}

// Totals returns the successful and failed sessions of the report.
func (r *Received) Totals() (successful, failed uint64) {
	for _, p := range r.Report.Policies {
		successful += p.Summary.TotalSuccessful
		failed += p.Summary.TotalFailure
	}
	return
}

// limitReader reads at most n bytes from r; reading beyond gives err.
type limitReader struct {
	r   io.Reader
	n   int64
	err error
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		// One byte more tells "exactly at the limit" from "over it".
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			return 0, l.err
		}
		return 0, err
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// DecodeReport reads a report body of the given media type (parameters
// allowed) and parses it. A gzip body is inflated as a stream, bounded by
// lim.MaxJSON.
func DecodeReport(mediaType string, body io.Reader, lim Limits) (*Received, error) {
	lim = lim.withDefaults()
	mt, _, err := mime.ParseMediaType(mediaType)
	if err != nil {
		return nil, fmt.Errorf("%w: media type %q: %v", ErrNotReport, mediaType, err)
	}
	in := &limitReader{r: body, n: lim.MaxBody, err: fmt.Errorf("%w: body over %d bytes", ErrTooLarge, lim.MaxBody)}
	var js io.Reader
	switch mt {
	case ContentTypeGzip:
		zr, err := gzip.NewReader(in)
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: not gzip: %v", ErrMalformed, err)
		}
		defer zr.Close()
		js = &limitReader{r: zr, n: lim.MaxJSON, err: fmt.Errorf("%w: more than %d bytes of JSON", ErrDecompressionLimit, lim.MaxJSON)}
	case ContentTypeJSON:
		js = &limitReader{r: in, n: min(lim.MaxBody, lim.MaxJSON), err: fmt.Errorf("%w: body over %d bytes", ErrTooLarge, min(lim.MaxBody, lim.MaxJSON))}
	default:
		return nil, fmt.Errorf("%w: media type %s, want %s or %s", ErrNotReport, mt, ContentTypeGzip, ContentTypeJSON)
	}
	data, err := io.ReadAll(js)
	if err != nil {
		if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrDecompressionLimit) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: reading %s: %v", ErrMalformed, mt, err)
	}
	rep, warn, err := ParseReport(data)
	if err != nil {
		return nil, err
	}
	return &Received{Report: rep, MediaType: mt, JSONSize: int64(len(data)), Warnings: warn}, nil
}

// ParseEmail reads a report email (RFC 8460 §5.3): a multipart/report;
// report-type=tlsrpt message with one application/tlsrpt+gzip or
// application/tlsrpt+json part. Another multipart type that carries such
// a part is accepted with a warning; an email with no report part, or
// with several, is refused. A missing or disagreeing TLS-Report-Domain or
// TLS-Report-Submitter is a warning: the report is authoritative (§5.6).
func ParseEmail(r io.Reader, lim Limits) (*Received, error) {
	lim = lim.withDefaults()
	in := &limitReader{r: r, n: lim.MaxMessage, err: fmt.Errorf("%w: message over %d bytes", ErrTooLarge, lim.MaxMessage)}
	ent, err := message.Read(in)
	if err != nil && !message.IsUnknownCharset(err) {
		if errors.Is(err, ErrTooLarge) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: message header: %v", ErrNotReport, err)
	}
	var warn []string
	mt, params, _ := ent.Header.ContentType()
	if mt != "multipart/report" || !strings.EqualFold(params["report-type"], "tlsrpt") {
		warn = append(warn, fmt.Sprintf("message is %s (report-type %q), not multipart/report; report-type=tlsrpt (§5.3)", nonEmpty(mt, "text/plain"), params["report-type"]))
	}
	var got *Received
	parts := 0
	err = ent.Walk(func(path []int, part *message.Entity, err error) error {
		if err != nil {
			if message.IsUnknownCharset(err) {
				return nil
			}
			return err
		}
		if parts++; parts > maxReportParts {
			return fmt.Errorf("%w: more than %d MIME parts", ErrNotReport, maxReportParts)
		}
		pt, _, _ := part.Header.ContentType()
		if pt != ContentTypeGzip && pt != ContentTypeJSON {
			return nil
		}
		if got != nil {
			return fmt.Errorf("%w: more than one report part", ErrMalformed)
		}
		rcv, err := DecodeReport(pt, part.Body, lim)
		if err != nil {
			return err
		}
		got = rcv
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrDecompressionLimit) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrNotReport) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: MIME structure: %v", ErrMalformed, err)
	}
	if got == nil {
		return nil, fmt.Errorf("%w: no %s or %s part", ErrNotReport, ContentTypeGzip, ContentTypeJSON)
	}
	h := ent.Header
	got.HeaderDomain = strings.TrimSpace(h.Get("TLS-Report-Domain"))
	got.HeaderSubmitter = strings.TrimSpace(h.Get("TLS-Report-Submitter"))
	got.MessageID = strings.Trim(strings.TrimSpace(h.Get("Message-Id")), "<>")
	if from, err := (&mailHeader{h}).from(); err == nil {
		got.From = from
	}
	rep := got.Report
	// §5.3: TLS-Report-Submitter must be the domain of contact-info.
	sub := ReportMeta{ContactInfo: rep.ContactInfo}.Submitter()
	switch {
	case got.HeaderSubmitter == "":
		warn = append(warn, "no TLS-Report-Submitter header field (§5.3)")
	case sub != "" && normDomain(got.HeaderSubmitter) != sub:
		warn = append(warn, fmt.Sprintf("TLS-Report-Submitter %q is not the domain of contact-info %q (§5.3)", got.HeaderSubmitter, rep.ContactInfo))
	}
	if got.HeaderDomain == "" {
		warn = append(warn, "no TLS-Report-Domain header field (§5.3)")
	} else if !reportHasDomain(rep, got.HeaderDomain) && !onlyTLSA(rep) {
		// A tlsa policy's policy-domain is the TLSA base domain (§4.4,
		// the MX host), which need not be the domain the report is
		// about: such reports cannot be checked against the field.
		warn = append(warn, fmt.Sprintf("TLS-Report-Domain %q is not a policy-domain of the report", got.HeaderDomain))
	}
	got.Warnings = append(warn, got.Warnings...)
	return got, nil
}

type mailHeader struct{ h message.Header }

func (m *mailHeader) from() (string, error) {
	v := m.h.Get("From")
	if v == "" {
		return "", errors.New("no From")
	}
	// Good enough for a log field: the address between <>, or the whole.
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return v[i+1 : i+j], nil
		}
	}
	return strings.TrimSpace(v), nil
}

func onlyTLSA(r *Report) bool {
	for _, p := range r.Policies {
		if p.Policy.PolicyType != PolicyTLSA {
			return false
		}
	}
	return len(r.Policies) > 0
}

func reportHasDomain(r *Report, d string) bool {
	d = normDomain(d)
	for _, p := range r.Policies {
		if normDomain(p.Policy.PolicyDomain) == d {
			return true
		}
	}
	return false
}

// knownResultTypes is the §4.3 / §6.6 registry.
var knownResultTypes = map[string]bool{
	ResultSTARTTLSNotSupported: true, ResultCertificateHostMismatch: true, ResultCertificateExpired: true,
	ResultCertificateNotTrusted: true, ResultValidationFailure: true, ResultTLSAInvalid: true,
	ResultDNSSECInvalid: true, ResultDANERequired: true, ResultSTSPolicyFetchError: true,
	ResultSTSPolicyInvalid: true, ResultSTSWebPKIInvalid: true,
}

// IsRegisteredResultType reports whether t is in the RFC 8460 §6.6
// registry.
func IsRegisteredResultType(t string) bool { return knownResultTypes[t] }

// ParseReport parses the JSON report of RFC 8460 §4.4 strictly (see the
// comment at the top of receive.go for the rules). It returns the report
// and the warnings about what it ignored or accepted with doubts.
func ParseReport(data []byte) (*Report, []string, error) {
	p := &jparser{}
	rep, err := p.report(data)
	if err != nil {
		return nil, nil, err
	}
	return rep, p.warn, nil
}

type jparser struct{ warn []string }

type jobj struct {
	p    *jparser
	path string
	m    map[string]json.RawMessage
}

func (p *jparser) errf(path, format string, a ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformed, path, fmt.Sprintf(format, a...))
}

func isNull(raw json.RawMessage) bool {
	return raw == nil || string(bytes.TrimSpace(raw)) == "null"
}

func jsonKind(raw json.RawMessage) string {
	b := bytes.TrimSpace(raw)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func (p *jparser) object(path string, raw json.RawMessage) (*jobj, error) {
	if k := jsonKind(raw); k != "an object" {
		return nil, p.errf(path, "%s, want an object", k)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, p.errf(path, "%v", err)
	}
	return &jobj{p: p, path: path, m: m}, nil
}

func (o *jobj) sub(key string) string {
	if o.path == "" {
		return key
	}
	return o.path + "." + key
}

// known names the defined fields; the others become warnings.
func (o *jobj) known(keys ...string) {
	var unknown []string
	for k := range o.m {
		found := false
		for _, kk := range keys {
			if k == kk {
				found = true
				break
			}
		}
		if !found {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		o.p.warn = append(o.p.warn, fmt.Sprintf("%s: unknown field ignored", o.sub(k)))
	}
}

func (o *jobj) raw(key string, required bool) (json.RawMessage, bool, error) {
	raw, ok := o.m[key]
	if !ok || isNull(raw) {
		if required {
			return nil, false, o.p.errf(o.sub(key), "missing")
		}
		return nil, false, nil
	}
	return raw, true, nil
}

func (o *jobj) str(key string, required bool) (string, error) {
	raw, ok, err := o.raw(key, required)
	if !ok {
		return "", err
	}
	if k := jsonKind(raw); k != "a string" {
		return "", o.p.errf(o.sub(key), "%s, want a string", k)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", o.p.errf(o.sub(key), "%v", err)
	}
	if required && strings.TrimSpace(s) == "" {
		return "", o.p.errf(o.sub(key), "empty")
	}
	return s, nil
}

func (o *jobj) strs(path string, raw json.RawMessage) ([]string, error) {
	if k := jsonKind(raw); k != "an array" {
		return nil, o.p.errf(path, "%s, want an array of strings", k)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, o.p.errf(path, "%v", err)
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		if k := jsonKind(it); k != "a string" {
			return nil, o.p.errf(fmt.Sprintf("%s[%d]", path, i), "%s, want a string", k)
		}
		var s string
		if err := json.Unmarshal(it, &s); err != nil {
			return nil, o.p.errf(fmt.Sprintf("%s[%d]", path, i), "%v", err)
		}
		out = append(out, s)
	}
	return out, nil
}

// count reads a §4.4 count: a non-negative JSON integer.
func (o *jobj) count(key string) (uint64, error) {
	raw, _, err := o.raw(key, true)
	if err != nil {
		return 0, err
	}
	s := string(bytes.TrimSpace(raw))
	if k := jsonKind(raw); k != "a number" {
		return 0, o.p.errf(o.sub(key), "%s, want a count (a JSON integer)", k)
	}
	if strings.HasPrefix(s, "-") {
		return 0, o.p.errf(o.sub(key), "negative count %s", s)
	}
	if strings.ContainsAny(s, ".eE") {
		return 0, o.p.errf(o.sub(key), "%s is not an integer", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, o.p.errf(o.sub(key), "bad count %s", s)
	}
	return n, nil
}

func (o *jobj) time(key string) (time.Time, error) {
	s, err := o.str(key, true)
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, o.p.errf(o.sub(key), "%q is not an RFC 3339 date-time", s)
	}
	return t.UTC(), nil
}

func (o *jobj) array(key string, required bool) ([]json.RawMessage, error) {
	raw, ok, err := o.raw(key, required)
	if !ok {
		return nil, err
	}
	if k := jsonKind(raw); k != "an array" {
		return nil, o.p.errf(o.sub(key), "%s, want an array", k)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, o.p.errf(o.sub(key), "%v", err)
	}
	return items, nil
}

func (p *jparser) report(data []byte) (*Report, error) {
	if !json.Valid(data) {
		var v any
		err := json.Unmarshal(data, &v)
		return nil, fmt.Errorf("%w: not JSON: %v", ErrMalformed, err)
	}
	top, err := p.object("report", data)
	if err != nil {
		return nil, err
	}
	top.path = ""
	top.known("organization-name", "date-range", "contact-info", "report-id", "policies")
	r := &Report{}
	if r.OrganizationName, err = top.str("organization-name", true); err != nil {
		return nil, err
	}
	if r.ContactInfo, err = top.str("contact-info", true); err != nil {
		return nil, err
	}
	if r.ReportID, err = top.str("report-id", true); err != nil {
		return nil, err
	}
	if len(r.ReportID) > maxReportIDLen {
		return nil, p.errf("report-id", "longer than %d bytes", maxReportIDLen)
	}
	raw, _, err := top.raw("date-range", true)
	if err != nil {
		return nil, err
	}
	dr, err := p.object("date-range", raw)
	if err != nil {
		return nil, err
	}
	dr.known("start-datetime", "end-datetime")
	if r.DateRange.Start, err = dr.time("start-datetime"); err != nil {
		return nil, err
	}
	if r.DateRange.End, err = dr.time("end-datetime"); err != nil {
		return nil, err
	}
	if r.DateRange.End.Before(r.DateRange.Start) {
		return nil, p.errf("date-range", "end-datetime before start-datetime")
	}
	pols, err := top.array("policies", true)
	if err != nil {
		return nil, err
	}
	r.Policies = make([]PolicyResult, 0, len(pols))
	for i, raw := range pols {
		pr, err := p.policyResult(fmt.Sprintf("policies[%d]", i), raw)
		if err != nil {
			return nil, err
		}
		r.Policies = append(r.Policies, *pr)
	}
	return r, nil
}

func (p *jparser) policyResult(path string, raw json.RawMessage) (*PolicyResult, error) {
	o, err := p.object(path, raw)
	if err != nil {
		return nil, err
	}
	o.known("policy", "summary", "failure-details")
	pr := &PolicyResult{}

	praw, _, err := o.raw("policy", true)
	if err != nil {
		return nil, err
	}
	po, err := p.object(o.sub("policy"), praw)
	if err != nil {
		return nil, err
	}
	po.known("policy-type", "policy-string", "policy-domain", "mx-host")
	pt, err := po.str("policy-type", true)
	if err != nil {
		return nil, err
	}
	switch PolicyType(pt) {
	case PolicyTLSA, PolicySTS, PolicyNotFound:
		pr.Policy.PolicyType = PolicyType(pt)
	default:
		return nil, p.errf(po.sub("policy-type"), "%q, want tlsa, sts or no-policy-found", pt)
	}
	if pr.Policy.PolicyDomain, err = po.str("policy-domain", true); err != nil {
		return nil, err
	}
	if raw, ok, _ := po.raw("policy-string", false); ok {
		if pr.Policy.PolicyString, err = po.strs(po.sub("policy-string"), raw); err != nil {
			return nil, err
		}
	}
	// §4.4 "mx-host-pattern": an array for sts; senders write a single
	// string for the other types (and some for sts too): both are kept
	// as sent.
	if raw, ok, _ := po.raw("mx-host", false); ok {
		switch jsonKind(raw) {
		case "a string":
			s, err := po.str("mx-host", false)
			if err != nil {
				return nil, err
			}
			pr.Policy.MXHost = s
		case "an array":
			ss, err := po.strs(po.sub("mx-host"), raw)
			if err != nil {
				return nil, err
			}
			pr.Policy.MXHost = ss
		default:
			return nil, p.errf(po.sub("mx-host"), "%s, want a string or an array of strings", jsonKind(raw))
		}
	}

	sraw, _, err := o.raw("summary", true)
	if err != nil {
		return nil, err
	}
	so, err := p.object(o.sub("summary"), sraw)
	if err != nil {
		return nil, err
	}
	so.known("total-successful-session-count", "total-failure-session-count")
	if pr.Summary.TotalSuccessful, err = so.count("total-successful-session-count"); err != nil {
		return nil, err
	}
	if pr.Summary.TotalFailure, err = so.count("total-failure-session-count"); err != nil {
		return nil, err
	}

	fds, err := o.array("failure-details", false)
	if err != nil {
		return nil, err
	}
	var sum uint64
	for i, raw := range fds {
		fpath := fmt.Sprintf("%s[%d]", o.sub("failure-details"), i)
		fo, err := p.object(fpath, raw)
		if err != nil {
			return nil, err
		}
		fo.known("result-type", "sending-mta-ip", "receiving-mx-hostname", "receiving-mx-helo",
			"receiving-ip", "failed-session-count", "additional-information", "failure-reason-code")
		var fd FailureDetail
		if fd.ResultType, err = fo.str("result-type", true); err != nil {
			return nil, err
		}
		if !isToken(fd.ResultType) {
			return nil, p.errf(fo.sub("result-type"), "%q is not a result type (lower-case letters, digits, \"-\")", fd.ResultType)
		}
		if !knownResultTypes[fd.ResultType] {
			p.warn = append(p.warn, fmt.Sprintf("%s: %q is not a registered result type (§6.6)", fo.sub("result-type"), fd.ResultType))
		}
		for _, f := range []struct {
			key string
			dst *string
		}{
			{"sending-mta-ip", &fd.SendingMTAIP}, {"receiving-mx-hostname", &fd.ReceivingMXHostname},
			{"receiving-mx-helo", &fd.ReceivingMXHelo}, {"receiving-ip", &fd.ReceivingIP},
			{"additional-information", &fd.AdditionalInfo}, {"failure-reason-code", &fd.FailureReasonCode},
		} {
			if *f.dst, err = fo.str(f.key, false); err != nil {
				return nil, err
			}
		}
		if fd.FailedSessionCount, err = fo.count("failed-session-count"); err != nil {
			return nil, err
		}
		sum += fd.FailedSessionCount
		pr.FailureDetails = append(pr.FailureDetails, fd)
	}
	if len(fds) > 0 && sum != pr.Summary.TotalFailure {
		p.warn = append(p.warn, fmt.Sprintf("%s: failure-details count %d sessions, summary %d", path, sum, pr.Summary.TotalFailure))
	}
	return pr, nil
}

func isToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
