package mtastsfallback

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"time"
)

// Defaults for Fetcher, from the suggestions of RFC 8461 §3.3.
const (
	DefaultFetchTimeout = 60 * time.Second
	DefaultMaxBodySize  = 64 << 10
	DefaultUserAgent    = "daneguard-mtasts/1 (RFC 8461)"
)

// wellKnownPath is where the policy lives on the Policy Host (RFC 8461
// §3.2, registered in §9.1).
const wellKnownPath = "/.well-known/mta-sts.txt"

// Fetcher retrieves policies over HTTPS (RFC 8461 §3.3). The zero value is
// ready to use with the defaults. A Fetcher only holds configuration, so it
// may be copied and used concurrently; each Fetch uses a fresh connection
// (policies are fetched rarely and no connection is kept open).
type Fetcher struct {
	// RootCAs are the trust anchors for the Policy Host's certificate;
	// nil means the system's roots.
	RootCAs *x509.CertPool
	// Timeout bounds a whole fetch: connection, TLS handshake, request and
	// reading the body. Zero means DefaultFetchTimeout (one minute, as
	// RFC 8461 §3.3 suggests).
	Timeout time.Duration
	// MaxBodySize is the largest accepted policy body in bytes. Zero means
	// DefaultMaxBodySize (64 KiB, RFC 8461 §3.3). A larger body is an
	// error, detected without reading more than MaxBodySize+1 bytes.
	MaxBodySize int64
	// UserAgent is sent in the User-Agent header; empty means
	// DefaultUserAgent.
	UserAgent string
	// DialContext opens the TCP connection to the Policy Host. addr is
	// "mta-sts.<domain>:443". Nil means a net.Dialer. Tests use it to
	// send the fetch to a loopback server; production code may use it to
	// pin the source address. No proxy is ever used.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the clock used to check certificate validity and to stamp
	// FetchedAt; nil means time.Now.
	Now func() time.Time
}

// PolicyURL returns the URL of the policy of domain (RFC 8461 §3.2):
// https://mta-sts.<domain>/.well-known/mta-sts.txt. domain must already be
// normalized.
func PolicyURL(domain string) string {
	return "https://mta-sts." + domain + wellKnownPath
}

// Fetch retrieves and parses the policy of domain. domain is a Policy
// Domain in ASCII (see NormalizeDomain). On success the Policy has Domain,
// FetchedAt and Expires set; ID is left empty, as it comes from the TXT
// record.
//
// RFC 8461 §3.3 is followed strictly: the server's certificate must be
// valid under WebPKI for "mta-sts.<domain>" (also sent as SNI, §7.1);
// redirects are not followed; only status 200 is accepted; no HTTP cache
// and no proxy are used. The media type must be text/plain; its parameters
// (charset included) are ignored, as the body is parsed as UTF-8 either
// way.
//
// Every error is an *Error: Reason sts-webpki-invalid for certificate
// problems, sts-policy-invalid for a body ParsePolicy rejects, and
// sts-policy-fetch-error for everything else (connection, timeout, status,
// redirect, media type, size). An invalid domain gives an error wrapping
// ErrInvalidDomain.
func (f *Fetcher) Fetch(ctx context.Context, domain string) (*Policy, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return nil, &Error{Reason: ReasonPolicyFetchError, Code: CodeInvalidDomain, Err: err}
	}
	host := "mta-sts." + d
	if len(host) > maxNameLen {
		return nil, &Error{Reason: ReasonPolicyFetchError, Code: CodeInvalidDomain,
			Err: fmt.Errorf("%w: policy host name %q is too long", ErrInvalidDomain, host)}
	}
	fetchErr := func(code string, err error) error {
		return &Error{Reason: ReasonPolicyFetchError, Code: code, Err: err}
	}

	timeout := f.Timeout
	if timeout <= 0 {
		timeout = DefaultFetchTimeout
	}
	maxBody := f.MaxBodySize
	if maxBody <= 0 {
		maxBody = DefaultMaxBodySize
	}
	ua := f.UserAgent
	if ua == "" {
		ua = DefaultUserAgent
	}
	dial := f.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	now := f.Now
	if now == nil {
		now = time.Now
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	tr := &http.Transport{
		Proxy:       nil, // RFC 8461 §3.3 talks to the Policy Host itself
		DialContext: dial,
		TLSClientConfig: &tls.Config{
			RootCAs:    f.RootCAs,
			ServerName: host, // SNI and the DNS-ID to verify (§3.3, §7.1)
			MinVersion: tls.VersionTLS12,
			Time:       now,
		},
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// RFC 8461 §3.3: 3xx redirects MUST NOT be followed. Returning
		// ErrUseLastResponse hands the 3xx response back to us.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, PolicyURL(d), nil)
	if err != nil {
		return nil, fetchErr(CodeConnect, err)
	}
	req.Header.Set("User-Agent", ua)
	req.Header.Set("Accept", "text/plain")

	resp, err := client.Do(req)
	if err != nil {
		return nil, classifyTransportError(err)
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, fetchErr(CodeRedirect, fmt.Errorf("%s answered %s (redirect to %q refused, RFC 8461 §3.3)",
			host, resp.Status, resp.Header.Get("Location")))
	case resp.StatusCode != http.StatusOK:
		return nil, fetchErr(CodeHTTPStatus, fmt.Errorf("%s answered %s, only 200 is accepted", host, resp.Status))
	}
	ct := resp.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "text/plain" {
		return nil, fetchErr(CodeContentType, fmt.Errorf("%s served media type %q, want text/plain", host, ct))
	}
	if resp.ContentLength > maxBody {
		return nil, fetchErr(CodeBodyTooLarge, fmt.Errorf("policy of %d bytes exceeds the limit of %d", resp.ContentLength, maxBody))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		e := classifyTransportError(err)
		if e.Code == CodeConnect {
			e.Code = CodeRead
		}
		return nil, e
	}
	if int64(len(body)) > maxBody {
		return nil, fetchErr(CodeBodyTooLarge, fmt.Errorf("policy body exceeds the limit of %d bytes", maxBody))
	}
	p, err := ParsePolicy(body)
	if err != nil {
		return nil, &Error{Reason: ReasonPolicyInvalid, Code: CodePolicySyntax, Err: err}
	}
	p.Domain = d
	p.FetchedAt = now()
	p.Expires = p.FetchedAt.Add(p.Lifetime())
	return p, nil
}

// classifyTransportError maps an error from the HTTP client to an *Error.
func classifyTransportError(err error) *Error {
	var (
		cve *tls.CertificateVerificationError
		hn  x509.HostnameError
		ua  x509.UnknownAuthorityError
		ci  x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &hn):
		return &Error{Reason: ReasonWebPKIInvalid, Code: CodeHostMismatch, Err: err}
	case errors.As(err, &ua):
		return &Error{Reason: ReasonWebPKIInvalid, Code: CodeUnknownCA, Err: err}
	case errors.As(err, &ci):
		code := CodeBadChain
		if ci.Reason == x509.Expired {
			code = CodeExpired
		}
		return &Error{Reason: ReasonWebPKIInvalid, Code: code, Err: err}
	case errors.As(err, &cve):
		return &Error{Reason: ReasonWebPKIInvalid, Code: CodeVerify, Err: err}
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return &Error{Reason: ReasonPolicyFetchError, Code: CodeTimeout, Err: err}
	default:
		return &Error{Reason: ReasonPolicyFetchError, Code: CodeConnect, Err: err}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
