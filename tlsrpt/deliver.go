package tlsrpt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/textproto"
	"strings"
	"time"
)

// ContentTypeGzip is the media type of a gzip'd report (RFC 8460 §6.5).
const ContentTypeGzip = "application/tlsrpt+gzip"

// PostHTTPS delivers a gzip'd report by HTTPS POST (RFC 8460 §5.4). Any
// 2xx answer is a success.
func PostHTTPS(ctx context.Context, client *http.Client, uri string, gz []byte) error {
	if !strings.HasPrefix(strings.ToLower(uri), "https://") {
		return fmt.Errorf("tlsrpt: not an https URI: %s", uri)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, uri, bytes.NewReader(gz))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ContentTypeGzip)
	if client == nil {
		client = http.DefaultClient
	}
	// Go's client answers a 301, 302 or 303 to a POST with a GET without
	// the body; the 2xx of that GET would count as delivered while the
	// report was lost. Follow only the redirects that repeat the POST
	// (307, 308), and only to https: URIs; any other 3xx is a failure.
	c := *client
	c.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.Method != http.MethodPost || r.URL.Scheme != "https" {
			return http.ErrUseLastResponse
		}
		if len(via) >= 10 {
			return errors.New("tlsrpt: too many redirects")
		}
		return nil
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64*1024))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("tlsrpt: %s answered %s", uri, resp.Status)
	}
	return nil
}

// EmailOptions describes a report email.
type EmailOptions struct {
	From      string // RFC 5322 From address
	To        []string
	Domain    string // the policy domain: TLS-Report-Domain
	Submitter string // TLS-Report-Submitter: the contact-info's domain
	ReportID  string
	Filename  string
	Gzip      []byte
	Date      time.Time
	// Organization appears in the human-readable part.
	Organization string
	// DateRange is described in the human-readable part.
	Start, End time.Time
	// MessageIDHost is the right side of the Message-ID; default
	// Submitter.
	MessageIDHost string
}

// ComposeEmail builds the report email of RFC 8460 §5.3: a
// multipart/report; report-type="tlsrpt" with a text/plain part and the
// gzip'd report as an application/tlsrpt+gzip attachment, with the
// TLS-Report-Domain and TLS-Report-Submitter header fields and the
// "Report Domain: ... Submitter: ... Report-ID: <...>" subject. Lines end
// in CRLF.
func ComposeEmail(o EmailOptions) ([]byte, error) {
	if o.From == "" || len(o.To) == 0 || o.Domain == "" || o.Submitter == "" {
		return nil, fmt.Errorf("tlsrpt: incomplete email options")
	}
	if o.Date.IsZero() {
		o.Date = time.Now()
	}
	idHost := o.MessageIDHost
	if idHost == "" {
		idHost = o.Submitter
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	text := fmt.Sprintf("This is an aggregate TLS report (RFC 8460) from %s\r\nabout mail to %s\r\n"+
		"for %s to %s (UTC).\r\nThe report is attached as %s.\r\n",
		nonEmpty(o.Organization, o.Submitter), o.Domain,
		o.Start.UTC().Format(time.RFC3339), o.End.UTC().Format(time.RFC3339), o.Filename)
	th := textproto.MIMEHeader{}
	ascii := isASCII(text)
	if ascii {
		th.Set("Content-Type", `text/plain; charset="us-ascii"`)
		th.Set("Content-Transfer-Encoding", "7bit")
	} else {
		// A non-ASCII organization name: declaring it us-ascii/7bit
		// would be wrong (RFC 2045 §2.7), and 8bit needs 8BITMIME on
		// every hop.
		th.Set("Content-Type", `text/plain; charset="utf-8"`)
		th.Set("Content-Transfer-Encoding", "quoted-printable")
	}
	pw, err := mw.CreatePart(th)
	if err != nil {
		return nil, err
	}
	if ascii {
		_, _ = io.WriteString(pw, text)
	} else {
		qw := quotedprintable.NewWriter(pw)
		_, _ = io.WriteString(qw, text)
		if err := qw.Close(); err != nil {
			return nil, err
		}
	}

	ah := textproto.MIMEHeader{}
	ah.Set("Content-Type", ContentTypeGzip)
	ah.Set("Content-Transfer-Encoding", "base64")
	// Folded; the file name's characters ("!", ".", letters) need no
	// encoding but are quoted like RFC 8460's example.
	ah.Set("Content-Disposition", "attachment;\r\n filename=\""+o.Filename+"\"")
	pw, err = mw.CreatePart(ah)
	if err != nil {
		return nil, err
	}
	enc := base64.StdEncoding.EncodeToString(o.Gzip)
	for len(enc) > 76 {
		_, _ = io.WriteString(pw, enc[:76]+"\r\n")
		enc = enc[76:]
	}
	_, _ = io.WriteString(pw, enc+"\r\n")
	if err := mw.Close(); err != nil {
		return nil, err
	}

	var msg bytes.Buffer
	hdr := func(k, v string) { msg.WriteString(k + ": " + v + "\r\n") }
	hdr("From", "<"+o.From+">")
	hdr("To", "<"+strings.Join(o.To, ">, <")+">")
	hdr("Date", o.Date.Format(time.RFC1123Z))
	// RFC 8460 §5.3 subject format, folded before "Submitter:" and
	// "Report-ID:".
	hdr("Subject", "Report Domain: "+o.Domain+"\r\n Submitter: "+o.Submitter+"\r\n Report-ID: <"+o.ReportID+">")
	hdr("TLS-Report-Domain", o.Domain)
	hdr("TLS-Report-Submitter", o.Submitter)
	hdr("Message-ID", "<tlsrpt."+hex.EncodeToString(rnd[:])+"@"+idHost+">")
	hdr("Auto-Submitted", "auto-generated")
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", `multipart/report; report-type="tlsrpt";`+"\r\n "+`boundary="`+mw.Boundary()+`"`)
	msg.WriteString("\r\n")
	msg.Write(body.Bytes())
	return msg.Bytes(), nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func nonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
