package dane

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func bytesOf(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// unknownAlgSPKI is a well-formed SubjectPublicKeyInfo with an algorithm
// crypto/x509 does not know.
func unknownAlgSPKI(t testing.TB) []byte {
	t.Helper()
	der, err := asn1.Marshal(struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}{
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}},
		PublicKey: asn1.BitString{Bytes: []byte{1, 2, 3, 4}, BitLength: 32},
	})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// emptyKeySPKI is a SubjectPublicKeyInfo with an empty key.
func emptyKeySPKI(t testing.TB) []byte {
	t.Helper()
	der, err := asn1.Marshal(struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}{Algorithm: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestClassifyUsability(t *testing.T) {
	f := sharedFixture(t)
	leafDER, leafSPKI := f.leaf.cert.Raw, f.leaf.cert.RawSubjectPublicKeyInfo
	odd := unknownAlgSPKI(t)
	cases := []struct {
		name string
		r    Record
		want UnusableReason // "" = usable
	}{
		{"3 1 1", Record{DANEEE, SPKI, SHA2_256, bytesOf(32, 1)}, ""},
		{"3 0 1", Record{DANEEE, Cert, SHA2_256, bytesOf(32, 1)}, ""},
		{"2 0 2", Record{DANETA, Cert, SHA2_512, bytesOf(64, 1)}, ""},
		{"2 1 2", Record{DANETA, SPKI, SHA2_512, bytesOf(64, 1)}, ""},
		{"3 0 0", Record{DANEEE, Cert, Full, leafDER}, ""},
		{"3 1 0", Record{DANEEE, SPKI, Full, leafSPKI}, ""},
		{"2 0 0", Record{DANETA, Cert, Full, f.root.cert.Raw}, ""},
		{"2 1 0", Record{DANETA, SPKI, Full, f.root.cert.RawSubjectPublicKeyInfo}, ""},
		{"3 1 0 unknown key algorithm", Record{DANEEE, SPKI, Full, odd}, ""},

		{"PKIX-TA", Record{PKIXTA, Cert, SHA2_256, bytesOf(32, 1)}, UnusablePKIX},
		{"PKIX-EE", Record{PKIXEE, SPKI, SHA2_256, bytesOf(32, 1)}, UnusablePKIX},
		{"usage 4", Record{4, SPKI, SHA2_256, bytesOf(32, 1)}, UnusableUsage},
		{"PrivCert", Record{PrivCert, SPKI, SHA2_256, bytesOf(32, 1)}, UnusableUsage},
		{"selector 2", Record{DANEEE, 2, SHA2_256, bytesOf(32, 1)}, UnusableSelector},
		{"PrivSel", Record{DANEEE, PrivSel, SHA2_256, bytesOf(32, 1)}, UnusableSelector},
		{"matching type 3", Record{DANEEE, SPKI, 3, bytesOf(32, 1)}, UnusableMatchingType},
		{"PrivMatch", Record{DANEEE, SPKI, PrivMatch, bytesOf(32, 1)}, UnusableMatchingType},
		{"SHA2-256 short", Record{DANEEE, SPKI, SHA2_256, bytesOf(31, 1)}, UnusableDigestLength},
		{"SHA2-256 long", Record{DANEEE, SPKI, SHA2_256, bytesOf(33, 1)}, UnusableDigestLength},
		{"SHA2-256 given 64", Record{DANEEE, SPKI, SHA2_256, bytesOf(64, 1)}, UnusableDigestLength},
		{"SHA2-512 given 32", Record{DANETA, Cert, SHA2_512, bytesOf(32, 1)}, UnusableDigestLength},
		{"SHA2-256 empty", Record{DANEEE, SPKI, SHA2_256, nil}, UnusableDigestLength},
		{"3 0 0 garbage", Record{DANEEE, Cert, Full, []byte("garbage")}, UnusableCertificate},
		{"3 0 0 SPKI given", Record{DANEEE, Cert, Full, leafSPKI}, UnusableCertificate},
		{"3 0 0 trailing data", Record{DANEEE, Cert, Full, append(append([]byte(nil), leafDER...), 0)}, UnusableCertificate},
		{"3 0 0 empty", Record{DANEEE, Cert, Full, nil}, UnusableCertificate},
		{"3 1 0 garbage", Record{DANEEE, SPKI, Full, []byte{0x30, 0x01}}, UnusableSPKI},
		{"3 1 0 certificate given", Record{DANEEE, SPKI, Full, leafDER}, UnusableSPKI},
		{"3 1 0 trailing data", Record{DANEEE, SPKI, Full, append(append([]byte(nil), leafSPKI...), 0)}, UnusableSPKI},
		{"3 1 0 empty", Record{DANEEE, SPKI, Full, nil}, UnusableSPKI},
		{"2 1 0 unknown key algorithm", Record{DANETA, SPKI, Full, odd}, UnusableKeyAlgorithm},
		{"2 1 0 garbage", Record{DANETA, SPKI, Full, []byte("x")}, UnusableSPKI},
		{"2 0 0 garbage", Record{DANETA, Cert, Full, []byte("x")}, UnusableCertificate},
		{"2 0 0 unknown key algorithm", Record{DANETA, Cert, Full, f.unknownKeyCA.Raw}, UnusableKeyAlgorithm},
		{"3 0 0 unknown key algorithm", Record{DANEEE, Cert, Full, f.unknownKeyCA.Raw}, ""},
		{"3 1 0 empty key", Record{DANEEE, SPKI, Full, emptyKeySPKI(t)}, UnusableSPKI},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			usable, unusable := Classify([]Record{c.r})
			if len(usable)+len(unusable) != 1 {
				t.Fatalf("%d usable + %d unusable for one record", len(usable), len(unusable))
			}
			if c.want == "" {
				if len(usable) != 1 || !usable[0].Equal(c.r) {
					t.Fatalf("unusable: %v", unusable)
				}
				return
			}
			if len(unusable) != 1 {
				t.Fatalf("usable, want %s", c.want)
			}
			u := unusable[0]
			if u.Reason != c.want || !u.Record.Equal(c.r) || u.Detail == "" {
				t.Fatalf("got %v, want reason %s", u, c.want)
			}
		})
	}
}

func TestDigestAgility(t *testing.T) {
	d256, d512 := bytesOf(32, 0xaa), bytesOf(64, 0xbb)
	spki := unknownAlgSPKI(t)
	r311 := Record{DANEEE, SPKI, SHA2_256, d256}
	r312 := Record{DANEEE, SPKI, SHA2_512, d512}
	r310 := Record{DANEEE, SPKI, Full, spki}
	r302 := Record{DANEEE, Cert, SHA2_512, d512}
	r211 := Record{DANETA, SPKI, SHA2_256, d256}
	r212 := Record{DANETA, SPKI, SHA2_512, d512}
	short512 := Record{DANEEE, SPKI, SHA2_512, d256}
	cases := []struct {
		name       string
		order      DigestOrder
		in         []Record
		usable     []Record
		superseded []Record
	}{
		// The example of RFC 7671 §9.
		{"rfc example", nil, []Record{r311, r312, r310}, []Record{r312, r310}, []Record{r311}},
		{"single digest kept", nil, []Record{r311, r311}, []Record{r311, r311}, nil},
		{"per selector", nil, []Record{r311, r302}, []Record{r311, r302}, nil},
		{"per usage", nil, []Record{r311, r212}, []Record{r311, r212}, nil},
		{"each combination", nil, []Record{r211, r311, r212, r312}, []Record{r212, r312}, []Record{r211, r311}},
		// Unusable records are discarded before agility: a malformed
		// SHA2-512 record does not suppress a good SHA2-256 one.
		{"malformed stronger ignored", nil, []Record{short512, r311}, []Record{r311}, nil},
		{"client prefers SHA2-256", DigestOrder{SHA2_256, SHA2_512}, []Record{r311, r312}, []Record{r311}, []Record{r312}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			order := c.order
			if order == nil {
				order = DefaultDigestOrder
			}
			usable, unusable := order.Classify(c.in)
			if !equalRecords(usable, c.usable) {
				t.Errorf("usable %v, want %v", usable, c.usable)
			}
			var sup []Record
			for _, u := range unusable {
				if u.Reason == UnusableSuperseded {
					sup = append(sup, u.Record)
					if !strings.Contains(u.Detail, "RFC 7671") {
						t.Errorf("detail %q", u.Detail)
					}
				}
			}
			if !equalRecords(sup, c.superseded) {
				t.Errorf("superseded %v, want %v", sup, c.superseded)
			}
			if len(usable)+len(unusable) != len(c.in) {
				t.Errorf("records lost: %d in, %d+%d out", len(c.in), len(usable), len(unusable))
			}
		})
	}
	t.Run("disabled digest", func(t *testing.T) {
		usable, unusable := DigestOrder{SHA2_256}.Classify([]Record{r311, r312})
		if !equalRecords(usable, []Record{r311}) || len(unusable) != 1 || unusable[0].Reason != UnusableMatchingType {
			t.Errorf("usable %v unusable %v", usable, unusable)
		}
	})
	t.Run("unimplemented entries ignored", func(t *testing.T) {
		usable, _ := DigestOrder{3, Full, SHA2_512, SHA2_512, SHA2_256}.Classify([]Record{r311, r312})
		if !equalRecords(usable, []Record{r312}) {
			t.Errorf("usable %v", usable)
		}
	})
}

func equalRecords(a, b []Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func TestDigestOrderValidate(t *testing.T) {
	for _, o := range []DigestOrder{DefaultDigestOrder, {SHA2_256}, {SHA2_256, SHA2_512}} {
		if err := o.Validate(); err != nil {
			t.Errorf("%v: %v", o, err)
		}
	}
	for _, o := range []DigestOrder{nil, {}, {Full}, {SHA2_256, SHA2_256}, {3}, {PrivMatch, SHA2_256}} {
		if err := o.Validate(); err == nil {
			t.Errorf("%v: no error", o)
		}
	}
}

func TestFromRR(t *testing.T) {
	mk := func(u, s, m uint8, hexdata string) *dns.TLSA {
		return &dns.TLSA{Hdr: dns.RR_Header{Name: "_25._tcp.mx.example.com.", Rrtype: dns.TypeTLSA, Class: dns.ClassINET}, Usage: u, Selector: s, MatchingType: m, Certificate: hexdata}
	}
	good := strings.Repeat("ab", 32)
	r, err := FromRR(mk(3, 1, 1, strings.ToUpper(good)))
	if err != nil || r.Usage != DANEEE || r.Selector != SPKI || r.MatchingType != SHA2_256 || hex.EncodeToString(r.Data) != good {
		t.Fatalf("FromRR = %v, %v", r, err)
	}
	if r, err := FromRR(mk(3, 1, 1, good[:20]+" \n"+good[20:])); err != nil || len(r.Data) != 32 {
		t.Errorf("whitespace in hex: %v, %v", r, err)
	}
	for name, rr := range map[string]*dns.TLSA{
		"nil":     nil,
		"odd":     mk(3, 1, 1, "abc"),
		"not hex": mk(2, 0, 1, strings.Repeat("zz", 32)),
	} {
		t.Run(name, func(t *testing.T) {
			r, err := FromRR(rr)
			if err == nil {
				t.Fatalf("no error, got %v", r)
			}
			if rr != nil && (r.Usage != Usage(rr.Usage) || r.Data != nil) {
				t.Errorf("parameters not kept: %v", r)
			}
		})
	}

	usable, unusable := ClassifyRRs([]*dns.TLSA{mk(3, 1, 1, good), nil, mk(3, 1, 1, "xyz"), mk(1, 1, 1, good), mk(3, 1, 2, good)})
	if len(usable) != 1 || hex.EncodeToString(usable[0].Data) != good {
		t.Errorf("usable %v", usable)
	}
	var reasons []string
	for _, u := range unusable {
		reasons = append(reasons, string(u.Reason))
	}
	if got := strings.Join(reasons, ","); got != "bad-encoding,bad-encoding,pkix-usage,bad-digest-length" {
		t.Errorf("unusable reasons %s", got)
	}
}

func TestRecordStrings(t *testing.T) {
	r := Record{DANEEE, SPKI, SHA2_256, []byte{0xde, 0xad, 0xbe, 0xef}}
	if got := r.String(); got != "3 1 1 deadbeef" {
		t.Errorf("String() = %q", got)
	}
	if got := r.Mnemonic(); got != "DANE-EE(3) SPKI(1) SHA2-256(1)" {
		t.Errorf("Mnemonic() = %q", got)
	}
	if got := (Record{Usage: 7, Selector: 9, MatchingType: 255}).Mnemonic(); got != "Unassigned(7) Unassigned(9) PrivMatch(255)" {
		t.Errorf("Mnemonic() = %q", got)
	}
	if got := (Record{Usage: 2}).String(); got != "2 0 0" {
		t.Errorf("String() without data = %q", got)
	}
	names := map[string]string{
		PKIXTA.String(): "PKIX-TA(0)", PKIXEE.String(): "PKIX-EE(1)", DANETA.String(): "DANE-TA(2)", DANEEE.String(): "DANE-EE(3)", PrivCert.String(): "PrivCert(255)",
		Cert.String(): "Cert(0)", SPKI.String(): "SPKI(1)", PrivSel.String(): "PrivSel(255)",
		Full.String(): "Full(0)", SHA2_512.String(): "SHA2-512(2)",
	}
	for got, want := range names {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	u := Unusable{Record: r, Reason: UnusablePKIX, Detail: "x"}
	if got := u.String(); got != "DANE-EE(3) SPKI(1) SHA2-256(1): pkix-usage: x" {
		t.Errorf("Unusable.String() = %q", got)
	}
}

func TestParseRecord(t *testing.T) {
	good := strings.Repeat("ab", 32)
	cases := []struct {
		in   string
		want string // String() of the result, "" for an error
	}{
		{"3 1 1 " + good, "3 1 1 " + good},
		{"DANE-EE SPKI SHA2-256 " + strings.ToUpper(good), "3 1 1 " + good},
		{"dane-ta cert sha2-512 " + good, "2 0 2 " + good},
		{"PKIX-TA Cert Full 00", "0 0 0 00"},
		{"PrivCert PrivSel PrivMatch 01", "255 255 255 01"},
		{"  3\t1 1 " + good[:10] + " " + good[10:] + "\n", "3 1 1 " + good},
		{"3 1 1", ""},
		{"3 1 1 ", ""},
		{"256 1 1 00", ""},
		{"-1 1 1 00", ""},
		{"DANE-XX 1 1 00", ""},
		{"3 SPKIX 1 00", ""},
		{"3 1 SHA3 00", ""},
		{"3 1 1 0g", ""},
		{"3 1 1 abc", ""},
		{"", ""},
	}
	for _, c := range cases {
		r, err := ParseRecord(c.in)
		if c.want == "" {
			if err == nil {
				t.Errorf("ParseRecord(%q) = %v, want error", c.in, r)
			}
			continue
		}
		if err != nil || r.String() != c.want {
			t.Errorf("ParseRecord(%q) = %v, %v; want %s", c.in, r, err, c.want)
		}
	}
}

func TestRecordMatches(t *testing.T) {
	f := sharedFixture(t)
	for _, s := range []Selector{Cert, SPKI} {
		for _, m := range []MatchingType{Full, SHA2_256, SHA2_512} {
			r := rec(DANEEE, s, m, f.leaf.cert)
			if !r.Matches(f.leaf.cert) {
				t.Errorf("%s does not match its certificate", r.Mnemonic())
			}
			if r.Matches(f.inter.cert) || r.Matches(nil) {
				t.Errorf("%s matches another certificate", r.Mnemonic())
			}
		}
	}
	if (Record{DANEEE, 7, SHA2_256, bytesOf(32, 0)}).Matches(f.leaf.cert) {
		t.Error("unknown selector matched")
	}
}

func TestTLSAStateOf(t *testing.T) {
	r := Record{DANEEE, SPKI, SHA2_256, bytesOf(32, 1)}
	u := Unusable{Record: r, Reason: UnusablePKIX}
	if TLSAStateOf(nil, nil) != TLSANone || TLSAStateOf(nil, []Unusable{u}) != TLSAUnusable || TLSAStateOf([]Record{r}, []Unusable{u}) != TLSAUsable {
		t.Error("TLSAStateOf")
	}
}

// FuzzClassifyRR converts arbitrary TLSA records and classifies them, alone
// and together with a fixed usable record. Nothing may panic, no record
// may be lost, and agility must never empty a usable set.
func FuzzClassifyRR(f *testing.F) {
	f.Add(uint8(3), uint8(1), uint8(1), strings.Repeat("ab", 32))
	f.Add(uint8(3), uint8(1), uint8(2), strings.Repeat("cd", 64))
	f.Add(uint8(2), uint8(0), uint8(0), "3082")
	f.Add(uint8(2), uint8(1), uint8(0), hex.EncodeToString(unknownAlgSPKI(f)))
	f.Add(uint8(0), uint8(0), uint8(1), "zz")
	f.Add(uint8(3), uint8(1), uint8(1), "a b\tc")
	fixed := &dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Certificate: strings.Repeat("01", 32)}
	f.Fuzz(func(t *testing.T, u, s, m uint8, data string) {
		rr := &dns.TLSA{Usage: u, Selector: s, MatchingType: m, Certificate: data}
		r, err := FromRR(rr)
		if err == nil && hex.EncodeToString(r.Data) != strings.ToLower(strings.Join(strings.Fields(data), "")) {
			t.Fatalf("data %q decoded to %x", data, r.Data)
		}
		usable, unusable := ClassifyRRs([]*dns.TLSA{rr})
		if len(usable)+len(unusable) != 1 {
			t.Fatalf("%d+%d records out of 1", len(usable), len(unusable))
		}
		for _, x := range usable {
			if x.Usage != DANEEE && x.Usage != DANETA {
				t.Fatalf("usable record with usage %s", x.Usage)
			}
			if n := x.MatchingType.digestLen(); n != 0 && len(x.Data) != n {
				t.Fatalf("usable digest of %d bytes", len(x.Data))
			}
		}
		for _, x := range unusable {
			if x.Reason == "" || x.Detail == "" {
				t.Fatalf("unusable without reason: %+v", x)
			}
			_ = x.String()
		}
		usable, unusable = ClassifyRRs([]*dns.TLSA{rr, fixed, rr})
		if len(usable) == 0 || len(usable)+len(unusable) != 3 {
			t.Fatalf("%d+%d records out of 3", len(usable), len(unusable))
		}
		_ = r.String()
		_ = r.Mnemonic()
	})
}

// FuzzParseRecord checks that the presentation parser never panics and
// that what it accepts prints back to an equivalent record.
func FuzzParseRecord(f *testing.F) {
	f.Add("3 1 1 " + strings.Repeat("ab", 32))
	f.Add("DANE-TA Cert SHA2-512 00ff")
	f.Add("255 255 255 0")
	f.Add("3 1 1 (ab cd)")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRecord(s)
		if err != nil {
			return
		}
		back, err := ParseRecord(r.String())
		if err != nil || !back.Equal(r) {
			t.Fatalf("%q -> %v -> %v, %v", s, r, back, err)
		}
		Classify([]Record{r})
	})
}
