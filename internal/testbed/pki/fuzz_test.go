package pki

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/miekg/dns"
)

// FuzzTLSARaw checks that TLSARaw either rejects its input or renders a
// record that miekg/dns parses back to the same fields.
func FuzzTLSARaw(f *testing.F) {
	f.Add("_25._tcp.mx1.example.", uint8(3), uint8(1), uint8(1), []byte{1, 2, 3})
	f.Add("_25._tcp.mx1.example", uint8(2), uint8(0), uint8(0), []byte{0xff})
	f.Add("a\\.b.example", uint8(255), uint8(255), uint8(255), []byte{0})
	f.Add("", uint8(0), uint8(0), uint8(0), []byte{})
	f.Add("x y", uint8(0), uint8(0), uint8(0), []byte{1})
	f.Fuzz(func(t *testing.T, name string, usage, sel, mt uint8, data []byte) {
		var out string
		if fails(func(tb testing.TB) { out = TLSARaw(tb, name, usage, sel, mt, data) }) {
			return
		}
		rr, err := dns.NewRR(out)
		if err != nil {
			t.Fatalf("TLSARaw(%q) = %q does not parse: %v", name, out, err)
		}
		tl, ok := rr.(*dns.TLSA)
		if !ok {
			t.Fatalf("%q parsed as %T", out, rr)
		}
		got, err := hex.DecodeString(tl.Certificate)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("data round trip: %q vs %x", tl.Certificate, data)
		}
		if tl.Usage != usage || tl.Selector != sel || tl.MatchingType != mt || tl.Hdr.Ttl != DefaultTLSATTL {
			t.Fatalf("fields changed: %v", tl)
		}
		if want := dns.Fqdn(name); tl.Hdr.Name != want {
			t.Fatalf("owner %q, want %q", tl.Hdr.Name, want)
		}
	})
}
