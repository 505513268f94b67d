package dnsbed

import (
	"fmt"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkResign measures re-signing the example. zone of the test world
// after a change.
func BenchmarkResign(b *testing.B) {
	w := newWorld(b)
	if _, err := w.srv.currentView(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if err := w.ex.replace([]string{fmt.Sprintf("change A 127.0.1.%d", i%250)}); err != nil {
			b.Fatal(err)
		}
		if _, err := w.srv.currentView(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAnswer measures answering a signed TLSA query in process.
func BenchmarkAnswer(b *testing.B) {
	w := newWorld(b)
	v, err := w.srv.currentView()
	if err != nil {
		b.Fatal(err)
	}
	q := new(dns.Msg)
	q.SetQuestion("_25._tcp.mx1.example.", dns.TypeTLSA)
	q.SetEdns0(1232, true)
	b.ResetTimer()
	for range b.N {
		if resp := v.answer(q); len(resp.Answer) != 2 {
			b.Fatal(resp)
		}
	}
}
