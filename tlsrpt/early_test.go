package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// mailedReport decodes the JSON report attached to a report email.
func mailedReport(t *testing.T, raw string) map[string]any {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no report attachment: %v", err)
		}
		if p.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
			continue
		}
		b64, _ := io.ReadAll(p)
		gz, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(b64)))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		js, _ := io.ReadAll(zr)
		var m map[string]any
		if err := json.Unmarshal(js, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
}

// sessionTotals adds up the summaries of a decoded report.
func sessionTotals(m map[string]any) (ok, failed float64) {
	pols, _ := m["policies"].([]any)
	for _, p := range pols {
		sum := p.(map[string]any)["summary"].(map[string]any)
		ok += sum["total-successful-session-count"].(float64)
		failed += sum["total-failure-session-count"].(float64)
	}
	return ok, failed
}

// TestSenderEarlyRequestKeepsDayOpen: "maddy tlsrpt send --day TODAY"
// sends the day so far under a report-id of its own and leaves the day
// open, so that the complete report (every session of the day) still goes
// out after the day ends, under the day's regular report-id.
func TestSenderEarlyRequestKeepsDayOpen(t *testing.T) {
	st := openT(t, filepath.Join(t.TempDir(), "tlsrpt.db"))
	clk := &clock{t: day1} // 2026-11-30 10:00 UTC
	var mails []string
	s := &Sender{
		Store: st, Meta: ReportMeta{OrganizationName: "Org", ContactInfo: "tlsrpt@sender.example"}, From: "tlsrpt@sender.example",
		LookupTXT: func(context.Context, string) ([]string, error) {
			return []string{"v=TLSRPTv1;rua=mailto:r@x.example"}, nil
		},
		Submit: func(_ context.Context, _ string, _ []string, msg []byte) error {
			mails = append(mails, string(msg))
			return nil
		},
		Now: clk.Now, SendAfter: time.Hour,
	}
	tick := func() []Outcome {
		t.Helper()
		outs, err := s.tick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return outs
	}
	for range 2 {
		if err := st.Add(clk.Now(), okRec("x.example", "mx.x.example")); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.RequestSend(Day(clk.Now()), clk.Now()); err != nil {
		t.Fatal(err)
	}
	if outs := tick(); len(outs) != 1 || outs[0].Result != "sent" || len(mails) != 1 {
		t.Fatalf("early send: %v, %d mails", outs, len(mails))
	}
	early := mailedReport(t, mails[0])
	if ok, _ := sessionTotals(early); ok != 2 {
		t.Fatalf("early report counts %v sessions, want 2", ok)
	}
	stt, _ := st.State("2026-11-30", "x.example")
	if stt.Done || stt.EarlyOutcome != "sent" || !stt.EarlyAt.Equal(clk.Now()) || stt.ReportID != "" {
		t.Fatalf("state after the early send: %+v", stt)
	}

	// More sessions that day; nothing goes out before the day is due.
	clk.Add(2 * time.Hour)
	if err := st.Add(clk.Now(), failRec("x.example", "mx.x.example", ResultValidationFailure)); err != nil {
		t.Fatal(err)
	}
	if outs := tick(); len(outs) != 0 {
		t.Fatalf("sent before the day was due: %v", outs)
	}
	clk.Set(time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC))
	if outs := tick(); len(outs) != 1 || outs[0].Result != "sent" || len(mails) != 2 {
		t.Fatalf("complete report: %v, %d mails", outs, len(mails))
	}
	full := mailedReport(t, mails[1])
	if ok, failed := sessionTotals(full); ok != 2 || failed != 1 {
		t.Fatalf("complete report counts %v+%v sessions, want 2+1", ok, failed)
	}
	if full["report-id"] != "20261130.x.example@sender.example" || early["report-id"] == full["report-id"] {
		t.Fatalf("report-ids: early %v, complete %v", early["report-id"], full["report-id"])
	}
	stt, _ = st.State("2026-11-30", "x.example")
	if !stt.Done || stt.Outcome != "sent" {
		t.Fatalf("state after the complete report: %+v", stt)
	}
	if outs := tick(); len(outs) != 0 || len(mails) != 2 {
		t.Fatalf("resent: %v", outs)
	}
}
