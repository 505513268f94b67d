package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/netns"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type collector struct {
	mu      sync.Mutex
	fail    bool
	reports []map[string]any
	ctypes  []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail {
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	js, _ := io.ReadAll(zr)
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	c.reports = append(c.reports, m)
	c.ctypes = append(c.ctypes, r.Header.Get("Content-Type"))
	w.WriteHeader(http.StatusCreated)
}

func (c *collector) count() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.reports) }

// TestSenderSchedule drives the scheduler with an injected clock: reports
// go out once, after the day ended, retried with backoff while the
// collector fails, and mail reports go through the submit function.
func TestSenderSchedule(t *testing.T) {
	netns.Required(t)
	col := &collector{}
	srv := httptest.NewUnstartedServer(col)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.StartTLS()
	defer srv.Close()

	st := openT(t, filepath.Join(t.TempDir(), "tlsrpt.db"))
	clk := &clock{t: day1}
	var mails []string
	txt := map[string][]string{
		"_smtp._tls.https.example.": {"v=TLSRPTv1; rua=" + srv.URL + "/report"},
		"_smtp._tls.mail.example.":  {"v=TLSRPTv1;rua=mailto:tlsrpt@mail.example"},
	}
	s := &Sender{
		Store: st, Meta: ReportMeta{OrganizationName: "Org", ContactInfo: "tlsrpt@sender.example"},
		From:       "tlsrpt@sender.example",
		LookupTXT:  func(_ context.Context, name string) ([]string, error) { return txt[name], nil },
		HTTPClient: srv.Client(),
		Submit: func(_ context.Context, from string, to []string, msg []byte) error {
			if from != "tlsrpt@sender.example" || len(to) != 1 || to[0] != "tlsrpt@mail.example" {
				return errors.New("wrong envelope")
			}
			mails = append(mails, string(msg))
			return nil
		},
		Now: clk.Now, SendAfter: 2 * time.Hour, InitialBackoff: 10 * time.Minute, MaxBackoff: time.Hour, RetryFor: 3 * time.Hour,
	}
	for _, d := range []string{"https.example", "mail.example", "nopolicy.example"} {
		if err := st.Add(day1, okRec(d, "mx."+d)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	tick := func() []Outcome {
		t.Helper()
		outs, err := s.tick(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return outs
	}
	// Same day, and the next day before SendAfter: nothing.
	if outs := tick(); len(outs) != 0 {
		t.Fatalf("sent during the day: %v", outs)
	}
	clk.Set(time.Date(2026, 12, 1, 1, 59, 0, 0, time.UTC))
	if outs := tick(); len(outs) != 0 {
		t.Fatalf("sent before send time: %v", outs)
	}
	col.fail = true
	clk.Set(time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC))
	outs := tick()
	res := map[string]string{}
	for _, o := range outs {
		res[o.Domain] = o.Result
	}
	if res["https.example"] != "retry" || res["mail.example"] != "sent" || res["nopolicy.example"] != "no-policy" || len(mails) != 1 {
		t.Fatalf("first round: %v, %d mails", outs, len(mails))
	}
	// Before the backoff expires: no new attempt.
	clk.Add(9 * time.Minute)
	if outs := tick(); len(outs) != 0 {
		t.Fatalf("retried before backoff: %v", outs)
	}
	clk.Add(time.Minute)
	if outs := tick(); len(outs) != 1 || outs[0].Result != "retry" {
		t.Fatalf("second attempt: %v", outs)
	}
	stt, _ := st.State("2026-11-30", "https.example")
	if stt.Attempts != 2 || !stt.NextAttempt.Equal(clk.Now().Add(20*time.Minute)) {
		t.Fatalf("backoff not doubled: %+v", stt)
	}
	col.mu.Lock()
	col.fail = false
	col.mu.Unlock()
	clk.Add(20 * time.Minute)
	if outs := tick(); len(outs) != 1 || outs[0].Result != "sent" {
		t.Fatalf("third attempt: %v", outs)
	}
	if col.count() != 1 || col.ctypes[0] != "application/tlsrpt+gzip" {
		t.Fatalf("collector got %d reports, %v", col.count(), col.ctypes)
	}
	if col.reports[0]["report-id"] != stt.ReportID {
		t.Fatalf("report-id changed across retries: %v vs %v", col.reports[0]["report-id"], stt.ReportID)
	}
	// Sent once: later ticks do nothing.
	clk.Add(24 * time.Hour)
	if outs := tick(); len(outs) != 0 || col.count() != 1 || len(mails) != 1 {
		t.Fatalf("resent: %v", outs)
	}
	// A send request resends the day.
	if err := st.RequestSend("2026-11-30", clk.Now()); err != nil {
		t.Fatal(err)
	}
	tick()
	if col.count() != 2 || len(mails) != 2 {
		t.Fatalf("requested send: %d reports, %d mails", col.count(), len(mails))
	}
}

// TestSenderGivesUp: after RetryFor the report is dropped as failed, and
// days older than KeepDays are expired and pruned.
func TestSenderGivesUp(t *testing.T) {
	st := openT(t, filepath.Join(t.TempDir(), "tlsrpt.db"))
	clk := &clock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	s := &Sender{
		Store: st, Meta: ReportMeta{OrganizationName: "Org", ContactInfo: "tlsrpt@sender.example"}, From: "tlsrpt@sender.example",
		LookupTXT: func(context.Context, string) ([]string, error) {
			return []string{"v=TLSRPTv1;rua=mailto:r@x.example"}, nil
		},
		Submit: func(context.Context, string, []string, []byte) error { return errors.New("451 try later") },
		Now:    clk.Now, InitialBackoff: time.Hour, MaxBackoff: 8 * time.Hour, RetryFor: 5 * time.Hour, KeepDays: 3,
	}
	var counts []string
	s.Count = func(r string) { counts = append(counts, r) }
	_ = st.Add(day1, okRec("x.example", "mx.x.example"))
	_ = st.Add(day1.AddDate(0, 0, -10), okRec("x.example", "mx.x.example"))
	results := []string{}
	for i := 0; i < 6; i++ {
		outs, err := s.tick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outs {
			results = append(results, o.Day+" "+o.Result)
		}
		clk.Add(time.Hour)
	}
	want := []string{"2026-11-20 expired", "2026-11-30 retry", "2026-11-30 retry", "2026-11-30 failed"}
	if len(results) != len(want) {
		t.Fatalf("results %v, want %v", results, want)
	}
	for i := range want {
		if results[i] != want[i] {
			t.Fatalf("results %v, want %v", results, want)
		}
	}
	built := 0
	for _, c := range counts {
		if c == "built" {
			built++
		}
	}
	if built != 3 {
		t.Fatalf("counts %v", counts)
	}
	var buf bytes.Buffer
	list, _ := st.List()
	for _, p := range list {
		buf.WriteString(p.Day + " ")
	}
	if len(list) != 1 || list[0].Day != "2026-11-30" || list[0].State.Outcome != "failed" {
		t.Fatalf("after pruning: %s %+v", buf.String(), list)
	}
}
