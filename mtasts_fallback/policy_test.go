package mtastsfallback

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	rfcExample := "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n"
	appendixA := "version: STSv1\r\nmode: testing\r\nmx: mx1.example.com\r\nmx: mx2.example.com\r\nmx: mx.backup-example.com\r\nmax_age: 1296000\r\n"
	tests := []struct {
		name string
		body string
		want *Policy
	}{
		{"RFC 8461 §3.2 example, LF", rfcExample, &Policy{Mode: ModeEnforce, MaxAge: 604800,
			MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}}},
		{"RFC 8461 §3.2 example, CRLF", strings.ReplaceAll(rfcExample, "\n", "\r\n"), &Policy{Mode: ModeEnforce, MaxAge: 604800,
			MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}}},
		{"RFC 8461 Appendix A", appendixA, &Policy{Mode: ModeTesting, MaxAge: 1296000,
			MX: []string{"mx1.example.com", "mx2.example.com", "mx.backup-example.com"}}},
		{"no final line break", "version: STSv1\nmode: none\nmax_age: 86400", &Policy{Mode: ModeNone, MaxAge: 86400}},
		{"mode none without mx", "version: STSv1\nmode: none\nmax_age: 86400\n", &Policy{Mode: ModeNone, MaxAge: 86400}},
		{"mode none with mx", "version: STSv1\nmode: none\nmx: a.example\nmax_age: 1\n", &Policy{Mode: ModeNone, MaxAge: 1, MX: []string{"a.example"}}},
		{"fields in any order", "max_age: 5\nmx: a.example\nmode: enforce\nversion: STSv1\n", &Policy{Mode: ModeEnforce, MaxAge: 5, MX: []string{"a.example"}}},
		{"no space after colon, tabs, trailing space", "version:STSv1\nmode:\t enforce \t\nmx:a.example \nmax_age:\t0\n",
			&Policy{Mode: ModeEnforce, MaxAge: 0, MX: []string{"a.example"}}},
		{"max_age at the limit", policyText("enforce", MaxMaxAge, "a.example"), &Policy{Mode: ModeEnforce, MaxAge: MaxMaxAge, MX: []string{"a.example"}}},
		{"max_age above the limit is capped", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
			&Policy{Mode: ModeEnforce, MaxAge: MaxMaxAge, MX: []string{"a.example"}}},
		{"10-digit max_age is capped", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n",
			&Policy{Mode: ModeEnforce, MaxAge: MaxMaxAge, MX: []string{"a.example"}}},
		{"leading zeros", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 0000000086\n",
			&Policy{Mode: ModeEnforce, MaxAge: 86, MX: []string{"a.example"}}},
		{"mx case and trailing dot normalized, duplicates removed", "version: STSv1\nmode: enforce\nmx: MX.Example.COM.\nmx: mx.example.com\nmx: *.Example.NET\nmax_age: 1\n",
			&Policy{Mode: ModeEnforce, MaxAge: 1, MX: []string{"mx.example.com", "*.example.net"}}},
		{"punycode mx", "version: STSv1\nmode: enforce\nmx: mx.xn--mnchen-3ya.de\nmax_age: 1\n",
			&Policy{Mode: ModeEnforce, MaxAge: 1, MX: []string{"mx.xn--mnchen-3ya.de"}}},
		{"duplicate fields: first wins", "version: STSv1\nversion: STSv2\nmode: testing\nmode: bogus\nmax_age: 10\nmax_age: x\nmx: a.example\n",
			&Policy{Mode: ModeTesting, MaxAge: 10, MX: []string{"a.example"}}},
		{"extension values may contain colons", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nx-note: see https://example.com/a:b\nx-note: second\n",
			&Policy{Mode: ModeEnforce, MaxAge: 1, MX: []string{"a.example"}, Extensions: map[string]string{"x-note": "see https://example.com/a:b"}}},
		{"UTF-8 extension value and empty one", "version: STSv1\nmode: none\nmax_age: 1\ncomment: grüße\nempty:\n",
			&Policy{Mode: ModeNone, MaxAge: 1, Extensions: map[string]string{"comment": "grüße", "empty": ""}}},
		{"keys are case-sensitive: Mode is an extension", "version: STSv1\nMode: none\nmode: enforce\nmx: a.example\nmax_age: 1\n",
			&Policy{Mode: ModeEnforce, MaxAge: 1, MX: []string{"a.example"}, Extensions: map[string]string{"Mode": "none"}}},
		{"blank lines and BOM tolerated", "\xef\xbb\xbfversion: STSv1\r\n\r\nmode: enforce\n  \nmx: a.example\nmax_age: 1\n\n\n",
			&Policy{Mode: ModeEnforce, MaxAge: 1, MX: []string{"a.example"}}},
		{"single-label mx", "version: STSv1\nmode: enforce\nmx: localhost\nmax_age: 1\n",
			&Policy{Mode: ModeEnforce, MaxAge: 1, MX: []string{"localhost"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePolicy([]byte(tc.body))
			if err != nil {
				t.Fatalf("ParsePolicy: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParsePolicy =\n%#v\nwant\n%#v", got, tc.want)
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("parsed policy does not validate: %v", err)
			}
		})
	}
}

func TestParsePolicyErrors(t *testing.T) {
	const head = "version: STSv1\nmode: enforce\nmax_age: 1\n"
	tests := []struct {
		name, body, msg string
	}{
		{"empty body", "", "version field is missing"},
		{"missing version", "mode: enforce\nmx: a.example\nmax_age: 1\n", "version field is missing"},
		{"missing mode", "version: STSv1\nmx: a.example\nmax_age: 1\n", "mode field is missing"},
		{"missing max_age", "version: STSv1\nmode: enforce\nmx: a.example\n", "max_age field is missing"},
		{"enforce without mx", head, "requires at least one mx"},
		{"testing without mx", "version: STSv1\nmode: testing\nmax_age: 1\n", "requires at least one mx"},
		{"wrong version", "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", "line 1: version"},
		{"version case", "version: stsv1\nmode: none\nmax_age: 1\n", "line 1: version"},
		{"unknown mode", "version: STSv1\nmode: enforcing\nmx: a.example\nmax_age: 1\n", "line 2: mode"},
		{"mode case", "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n", "line 2: mode"},
		{"negative max_age", "version: STSv1\nmode: none\nmax_age: -1\n", "line 3: max_age"},
		{"11-digit max_age", "version: STSv1\nmode: none\nmax_age: 31557600000\n", "line 3: max_age"},
		{"exponent max_age", "version: STSv1\nmode: none\nmax_age: 1e6\n", "line 3: max_age"},
		{"empty max_age", "version: STSv1\nmode: none\nmax_age:\n", "line 3: max_age"},
		{"plus sign", "version: STSv1\nmode: none\nmax_age: +5\n", "line 3: max_age"},
		{"no colon", head + "mx a.example\n", "line 4"},
		{"space before colon", head + "mx : a.example\n", "line 4: invalid field name"},
		{"leading space", head + " mx: a.example\n", "line 4: invalid field name"},
		{"empty key", head + ": value\n", "line 4: invalid field name"},
		{"key with underscore start", head + "_x: 1\nmx: a.example\n", "line 4: invalid field name"},
		{"empty mx", head + "mx:\n", "line 4: mx"},
		{"underscore in mx", head + "mx: mail_1.example.com\n", "line 4: mx"},
		{"double wildcard", head + "mx: *.*.example.com\n", "line 4: mx"},
		{"inner wildcard", head + "mx: mx.*.example.com\n", "line 4: mx"},
		{"partial wildcard", head + "mx: *mx.example.com\n", "line 4: mx"},
		{"bare wildcard", head + "mx: *\n", "line 4: mx"},
		{"wildcard dot only", head + "mx: *.\n", "line 4: mx"},
		{"hyphen at label start", head + "mx: -a.example.com\n", "line 4: mx"},
		{"empty label", head + "mx: a..example.com\n", "line 4: mx"},
		{"U-label mx", head + "mx: mx.münchen.de\n", "line 4: mx"},
		{"mx with port", head + "mx: mx.example.com:25\n", "line 4: mx"},
		{"two mx on one line", head + "mx: a.example b.example\n", "line 4: mx"},
		{"63+ char label", head + "mx: " + strings.Repeat("a", 64) + ".example\n", "line 4: mx"},
		{"control character in extension", head + "mx: a.example\nx: a\x01b\n", "line 5"},
		{"invalid UTF-8 in extension", head + "mx: a.example\nx: \xff\n", "line 5"},
		{"bare CR inside mode", "version: STSv1\nmode: enforce\rx\nmx: a.example\nmax_age: 1\n", "line 2: mode"},
		{"HTML error page", "<html><body>Not here</body></html>\n", "line 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tc.body))
			if err == nil {
				t.Fatalf("ParsePolicy accepted %q: %#v", tc.body, p)
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v does not wrap ErrInvalidPolicy", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not mention %q", err, tc.msg)
			}
			if p != nil {
				t.Fatalf("policy returned with error")
			}
		})
	}
}

func TestMatchMX(t *testing.T) {
	p := &Policy{Mode: ModeEnforce, MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}}
	tests := []struct {
		host string
		want bool
	}{
		{"mail.example.com", true},
		{"MAIL.Example.COM", true},
		{"mail.example.com.", true},
		{"backupmx.example.com", true},
		{"mx1.example.net", true},
		{"MX1.EXAMPLE.NET.", true},
		{"x.example.net", true},
		{"example.net", false},     // wildcard needs one more label (§4.1)
		{"a.b.example.net", false}, // ...and exactly one
		{".example.net", false},
		{"xexample.net", false},
		{"mx1.example.netx", false},
		{"mx1.example.net.evil", false},
		{"example.com", false},
		{"evilmail.example.com", false},
		{"mail.example.com.evil", false},
		{"ail.example.com", false},
		{"", false},
		{".", false},
		{"*.example.net", false},
		{"m*.example.net", false},
		{"mäil.example.com", false},
		{"mx1.example.net..", false},
	}
	for _, tc := range tests {
		if got := p.MatchMX(tc.host); got != tc.want {
			t.Errorf("MatchMX(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
	var nilPolicy *Policy
	if nilPolicy.MatchMX("mail.example.com") {
		t.Error("nil policy matched")
	}
	// Hand-made policies with odd patterns: case and trailing dots are
	// folded, non-ASCII folding is not applied.
	hand := &Policy{Mode: ModeEnforce, MX: []string{"MX.Example.ORG.", "*.Wild.Example."}}
	for host, want := range map[string]bool{"mx.example.org": true, "a.wild.example": true, "wild.example": false} {
		if got := hand.MatchMX(host); got != want {
			t.Errorf("hand-made MatchMX(%q) = %v, want %v", host, got, want)
		}
	}
	kelvin := &Policy{Mode: ModeEnforce, MX: []string{"mx.k.example"}}
	if kelvin.MatchMX("mx.\u212a.example") {
		t.Error("Kelvin sign matched 'k'")
	}
}

func TestCheckMX(t *testing.T) {
	mx := []string{"mx.example.com"}
	for _, tc := range []struct {
		mode       Mode
		host       string
		wantErr    bool
		reportOnly bool
	}{
		{ModeEnforce, "mx.example.com", false, false},
		{ModeEnforce, "other.example.com", true, false},
		{ModeTesting, "other.example.com", true, true},
		{ModeTesting, "mx.example.com", false, false},
		{ModeNone, "other.example.com", false, false},
		{Mode("bogus"), "other.example.com", true, false}, // unknown: fail safe, like enforce
	} {
		p := &Policy{Mode: tc.mode, MX: mx, Domain: "example.com"}
		err := p.CheckMX(tc.host)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s CheckMX(%q) = %v, want error %v", tc.mode, tc.host, err, tc.wantErr)
			continue
		}
		if err != nil {
			e := wantReason(t, err, ReasonValidationFailure, CodeMXNotInPolicy)
			if e.ReportOnly != tc.reportOnly || IsReportOnly(err) != tc.reportOnly {
				t.Errorf("%s: ReportOnly = %v, want %v", tc.mode, e.ReportOnly, tc.reportOnly)
			}
			if ReasonOf(err) != ReasonValidationFailure {
				t.Errorf("ReasonOf = %q", ReasonOf(err))
			}
		}
	}
	var nilPolicy *Policy
	if err := nilPolicy.CheckMX("anything"); err != nil {
		t.Errorf("nil policy: %v", err)
	}
}

func TestPolicyLinesRoundTrip(t *testing.T) {
	body := "version: STSv1\nmode: testing\nmx: b.example\nmx: *.a.example\nmax_age: 86400\nzz: last\naa: first: with colon\n"
	p, err := ParsePolicy([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"version: STSv1", "mode: testing", "mx: b.example", "mx: *.a.example", "max_age: 86400", "aa: first: with colon", "zz: last"}
	if got := p.Lines(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Lines() = %q, want %q", got, want)
	}
	p2, err := ParsePolicy([]byte(strings.Join(p.Lines(), "\r\n")))
	if err != nil || !reflect.DeepEqual(p, p2) {
		t.Fatalf("round trip: %v\n%#v\n%#v", err, p, p2)
	}
}

func TestMarshalPolicy(t *testing.T) {
	fetched := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	p := &Policy{Mode: ModeEnforce, MaxAge: 3600, MX: []string{"mx.example.com", "*.example.net"},
		Extensions: map[string]string{"x": "y"}, Domain: "example.com", ID: "abc123",
		FetchedAt: fetched, Expires: fetched.Add(time.Hour)}
	data, err := MarshalPolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalPolicy(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Fatalf("round trip:\n%#v\n%#v", got, p)
	}
	// encoding/json works on Policy directly as well.
	raw, err := json.Marshal(p)
	if err != nil || !strings.Contains(string(raw), `"max_age":3600`) || !strings.Contains(string(raw), `"id":"abc123"`) {
		t.Fatalf("json.Marshal = %s, %v", raw, err)
	}

	bad := map[string]string{
		"not JSON":              "garbage",
		"trailing data":         string(data) + "{}",
		"unknown format":        strings.Replace(string(data), `"format":1`, `"format":2`, 1),
		"null policy":           `{"format":1,"policy":null}`,
		"bad mode":              strings.Replace(string(data), `"enforce"`, `"off"`, 1),
		"bad mx":                strings.Replace(string(data), `"mx.example.com"`, `"mx..example.com"`, 1),
		"uppercase mx":          strings.Replace(string(data), `"mx.example.com"`, `"MX.example.com"`, 1),
		"max_age too large":     strings.Replace(string(data), `"max_age":3600`, `"max_age":99999999999`, 1),
		"expiry beyond max_age": strings.Replace(string(data), `"max_age":3600`, `"max_age":60`, 1),
		"bad id":                strings.Replace(string(data), `"abc123"`, `"a-b"`, 1),
		"bad domain":            strings.Replace(string(data), `"domain":"example.com"`, `"domain":"Example.com."`, 1),
		"enforce without mx":    `{"format":1,"policy":{"mode":"enforce","max_age":1}}`,
	}
	for name, s := range bad {
		if _, err := UnmarshalPolicy([]byte(s)); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: UnmarshalPolicy error = %v, want ErrInvalidPolicy", name, err)
		}
	}
	if _, err := MarshalPolicy(&Policy{Mode: "x"}); err == nil {
		t.Error("MarshalPolicy accepted an invalid policy")
	}
}

func TestNormalizeDomain(t *testing.T) {
	good := map[string]string{
		"example.com":       "example.com",
		"Example.COM.":      "example.com",
		"xn--mnchen-3ya.de": "xn--mnchen-3ya.de",
		"a-b.c1.example":    "a-b.c1.example",
	}
	for in, want := range good {
		if got, err := NormalizeDomain(in); err != nil || got != want {
			t.Errorf("NormalizeDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", ".", "münchen.de", "a..b", "-a.example", "a-.example", "a_b.example",
		"1.2.3.4", "[1.2.3.4]", "::1", "ex ample.com", strings.Repeat("a.", 127) + "com", strings.Repeat("a", 64) + ".com"} {
		if got, err := NormalizeDomain(in); !errors.Is(err, ErrInvalidDomain) {
			t.Errorf("NormalizeDomain(%q) = %q, %v; want ErrInvalidDomain", in, got, err)
		}
	}
}
