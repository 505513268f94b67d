package service

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/maddy-dane/daneguard/dane"
	"github.com/maddy-dane/daneguard/internal/engine"
	policycache "github.com/maddy-dane/daneguard/policy_cache"
	"github.com/maddy-dane/daneguard/tlsrpt"
)

// testLog is a Logger that keeps its lines, with the fields of With.
type testLog struct {
	mu     *sync.Mutex
	lines  *[]string
	fields []any
}

func newTestLog() testLog { return testLog{mu: &sync.Mutex{}, lines: new([]string)} }

func (l testLog) add(msg string, kv []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.lines = append(*l.lines, fmt.Sprint(msg, append(slices.Clone(l.fields), kv...)))
}
func (l testLog) Msg(msg string, kv ...any) { l.add(msg, kv) }
func (l testLog) Error(msg string, err error, kv ...any) {
	l.add(msg, append(kv, "reason", err.Error()))
}
func (l testLog) DebugMsg(msg string, kv ...any) { l.add(msg, kv) }
func (l testLog) Debug() bool                    { return true }
func (l testLog) With(kv ...any) Logger {
	n := l
	n.fields = append(slices.Clone(l.fields), kv...)
	return n
}

type failQuerier struct{}

func (failQuerier) Query(context.Context, string, uint16) (*dane.Answer, error) {
	return nil, errors.New("no DNS in this test")
}

// TestTLSRPTSkipsReportDeliveries: sessions of report emails are never
// recorded, and only they bypass a deferral.
func TestTLSRPTSkipsReportDeliveries(t *testing.T) {
	st, err := tlsrpt.OpenStore(filepath.Join(t.TempDir(), "tlsrpt.db"), tlsrpt.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lg := newTestLog()
	s := &Service{log: lg, rpt: &reporter{store: st}, dns: engine.NewCachedQuerier(failQuerier{}, policycache.Config{}, nil)}
	v := &engine.Verdict{Domain: "d.example", MX: "mx.d.example", Result: engine.Deferred, Reason: engine.ReasonDANEMismatch, Mechanism: engine.MechDANE, ReportType: "certificate-host-mismatch"}
	report, ordinary := s.Delivery(ReportMsgIDPrefix+"0123"), s.Delivery("ordinary-1")
	report.recordTLSRPT(v)
	ordinary.recordTLSRPT(v)
	list, err := st.List()
	if err != nil || len(list) != 1 || list[0].Failures != 1 {
		t.Fatalf("store: %+v %v, want exactly the ordinary session", list, err)
	}
	if !report.reportBypass(v) {
		t.Fatal("a report delivery was held back by a DANE failure (RFC 8460 §5.3)")
	}
	if ordinary.reportBypass(v) {
		t.Fatal("an ordinary message bypassed a DANE failure")
	}
	ok := &engine.Verdict{Domain: "d.example", Result: engine.Authenticated}
	if report.reportBypass(ok) {
		t.Fatal("bypass reported for a verdict that passed")
	}
	// The bypass line names the message through the delivery's logger.
	if want := fmt.Sprint("tlsrpt report delivered despite policy failure (RFC 8460 §5.3)", []any{"msg_id", ReportMsgIDPrefix + "0123", "domain", "d.example", "mx", "mx.d.example", "reason", "tlsa-mismatch"}); !slices.Contains(*lg.lines, want) {
		t.Fatalf("log %q lacks %q", *lg.lines, want)
	}
}

// TestDeliveryLoggerCarriesMsgID: every line of a delivery has the
// message's msg_id, and Reset moves it to the next message.
func TestDeliveryLoggerCarriesMsgID(t *testing.T) {
	lg := newTestLog()
	s := &Service{log: lg}
	d := s.Delivery("m1")
	d.logger().Msg("x")
	d.Reset("m2")
	d.logger().Msg("y")
	d.Reset("")
	d.logger().Msg("z")
	want := []string{fmt.Sprint("x", []any{"msg_id", "m1"}), fmt.Sprint("y", []any{"msg_id", "m2"}), fmt.Sprint("z", []any(nil))}
	if !slices.Equal(*lg.lines, want) {
		t.Fatalf("lines %q, want %q", *lg.lines, want)
	}
}
