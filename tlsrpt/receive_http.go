package tlsrpt

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// Handler receives reports POSTed over HTTPS (RFC 8460 §5.4). It answers:
//
//	201 Created           a new report, stored
//	200 OK                a report already stored (same report-id)
//	405 Method Not Allowed anything but POST (with "Allow: POST")
//	415 Unsupported Media Type  a Content-Type other than
//	                      application/tlsrpt+gzip or application/tlsrpt+json,
//	                      or a Content-Encoding other than gzip
//	413 Content Too Large the body or the inflated JSON over its limit
//	400 Bad Request       not gzip, not JSON, not a valid report
//	503 Service Unavailable  the report could not be stored (a sender
//	                      retries, §5.5)
//
// "application/tlsrpt+json" with "Content-Encoding: gzip" is read as
// gzip. The handler does no TLS and no authentication: RFC 8460 has
// none; mount it behind the HTTPS listener.
type Handler struct {
	Limits Limits
	// Accept stores a parsed report; added is false for a duplicate.
	// Required.
	Accept func(ctx context.Context, r *Received) (added bool, err error)
	// Refused, if set, is told about every refused request, with the
	// reason RefusalReason gives and the error.
	Refused func(reason string, err error)
}

// Refusal reasons, as RefusalReason returns them (and as the metrics
// label them).
const (
	RefusedTooLarge   = "too-large"
	RefusedDecompress = "decompression-limit"
	RefusedMalformed  = "malformed"
	RefusedNotReport  = "not-a-report"
	RefusedStoreError = "store-error"
	RefusedMethod     = "method"
	RefusedOther      = "other"
)

// RefusalReason maps a receiving error to a short, bounded reason.
func RefusalReason(err error) string {
	switch {
	case errors.Is(err, ErrDecompressionLimit):
		return RefusedDecompress
	case errors.Is(err, ErrTooLarge):
		return RefusedTooLarge
	case errors.Is(err, ErrMalformed):
		return RefusedMalformed
	case errors.Is(err, ErrNotReport):
		return RefusedNotReport
	}
	return RefusedOther
}

func (h *Handler) refuse(w http.ResponseWriter, code int, reason string, err error) {
	if h.Refused != nil {
		h.Refused(reason, err)
	}
	http.Error(w, err.Error(), code)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.refuse(w, http.StatusMethodNotAllowed, RefusedMethod, fmt.Errorf("tlsrpt: method %s, reports are POSTed", r.Method))
		return
	}
	lim := h.Limits.withDefaults()
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err == nil && mt != ContentTypeGzip && mt != ContentTypeJSON {
		err = fmt.Errorf("media type %s", mt)
	}
	if err != nil {
		h.refuse(w, http.StatusUnsupportedMediaType, RefusedNotReport,
			fmt.Errorf("%w: Content-Type %q (%v), want %s or %s", ErrNotReport, r.Header.Get("Content-Type"), err, ContentTypeGzip, ContentTypeJSON))
		return
	}
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		mt = ContentTypeGzip
	default:
		h.refuse(w, http.StatusUnsupportedMediaType, RefusedNotReport, fmt.Errorf("%w: Content-Encoding %q", ErrNotReport, enc))
		return
	}
	if r.ContentLength > lim.MaxBody {
		h.refuse(w, http.StatusRequestEntityTooLarge, RefusedTooLarge, fmt.Errorf("%w: Content-Length %d over %d", ErrTooLarge, r.ContentLength, lim.MaxBody))
		return
	}
	// MaxBytesReader also makes the server close the connection instead
	// of reading the rest of an oversized body.
	body := http.MaxBytesReader(w, r.Body, lim.MaxBody+1)
	rcv, err := DecodeReport(mt, body, lim)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = fmt.Errorf("%w: body over %d bytes", ErrTooLarge, lim.MaxBody)
		}
		code := http.StatusBadRequest
		switch RefusalReason(err) {
		case RefusedTooLarge, RefusedDecompress:
			code = http.StatusRequestEntityTooLarge
		case RefusedNotReport:
			code = http.StatusUnsupportedMediaType
		}
		h.refuse(w, code, RefusalReason(err), err)
		return
	}
	added, err := h.Accept(r.Context(), rcv)
	if err != nil {
		w.Header().Set("Retry-After", "300")
		h.refuse(w, http.StatusServiceUnavailable, RefusedStoreError, fmt.Errorf("tlsrpt: storing the report: %w", err))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if added {
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "report %s stored\n", rcv.Report.ReportID)
		return
	}
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "report %s already stored\n", rcv.Report.ReportID)
}
