package dnsbed

import (
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestDelayAndQueryLog(t *testing.T) {
	w, addr := startWorld(t)
	srv := w.srv
	const d = 40 * time.Millisecond
	srv.SetDelay(d)
	srv.SetQueryLog(true)
	srv.SetFault(t, "gone.example.", dns.TypeA, ServFail)

	// Three queries at once: each waits d, in parallel.
	var wg sync.WaitGroup
	for _, name := range []string{"mx1.example.", "example.", "gone.example."} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			if _, _, err := c.Exchange(m, addr); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	wg.Wait()
	log := srv.QueryLog()
	if len(log) != 3 {
		t.Fatalf("query log holds %d records, want 3: %v", len(log), log)
	}
	rcodes := map[string]int{}
	for _, r := range log {
		if r.Type != dns.TypeA || r.TCP {
			t.Errorf("record %v: type or transport wrong", r)
		}
		// The delay is a lower bound by construction (time.Sleep), so this
		// checks that it was applied, not how fast anything is.
		if r.Answered.Sub(r.Received) < d {
			t.Errorf("%v answered %v after it arrived, want at least %v", r, r.Answered.Sub(r.Received), d)
		}
		rcodes[r.Name] = r.Rcode
	}
	if rcodes["mx1.example."] != dns.RcodeSuccess || rcodes["gone.example."] != dns.RcodeServerFailure {
		t.Errorf("rcodes %v", rcodes)
	}

	srv.ResetCounts()
	if n := len(srv.QueryLog()); n != 0 {
		t.Fatalf("ResetCounts left %d log records", n)
	}
	srv.SetQueryLog(false)
	srv.SetDelay(0)
	query(t, addr, "mx1.example.", dns.TypeA)
	if n := len(srv.QueryLog()); n != 0 {
		t.Fatalf("log off, yet %d records", n)
	}
	if n := srv.QueryCount("mx1.example.", dns.TypeA); n != 1 {
		t.Fatalf("QueryCount = %d after the log was turned off, want 1", n)
	}
}
