package mtastsfallback

import (
	"errors"
	"strings"
	"testing"
)

func TestParseTXT(t *testing.T) {
	id32 := strings.Repeat("a1", 16)
	tests := []struct {
		name    string
		records []string
		want    string
		err     error
	}{
		{"RFC 8461 §3.1 example", []string{"v=STSv1; id=20160831085700Z;"}, "20160831085700Z", nil},
		{"no spaces", []string{"v=STSv1;id=abc"}, "abc", nil},
		{"spaces and tabs around delimiters", []string{"v=STSv1 ;\tid=abc \t; "}, "abc", nil},
		{"trailing white space after last field", []string{"v=STSv1; id=abc  "}, "abc", nil},
		{"extension fields ignored", []string{"v=STSv1; ext-1.x=some:val; id=X9; other=1"}, "X9", nil},
		{"other TXT records ignored", []string{"v=spf1 -all", "google-site-verification=xyz", "v=STSv1; id=1"}, "1", nil},
		{"32 character id", []string{"v=STSv1; id=" + id32}, id32, nil},
		{"duplicate id: first wins", []string{"v=STSv1; id=first; id=second"}, "first", nil},
		{"strings joined by caller", []string{"v=STSv1; id=20160831" + "085700Z;"}, "20160831085700Z", nil},

		{"no records", nil, "", ErrNoRecord},
		{"only unrelated records", []string{"v=spf1 -all"}, "", ErrNoRecord},
		{"other version", []string{"v=STSv10; id=1"}, "", ErrNoRecord},
		{"version is case-sensitive", []string{"V=STSv1; id=1"}, "", ErrNoRecord},
		{"version not first", []string{"id=1; v=STSv1"}, "", ErrNoRecord},
		{"missing delimiter after version", []string{"v=STSv1 id=1"}, "", ErrNoRecord},
		{"two STS records", []string{"v=STSv1; id=1", "v=STSv1; id=2"}, "", ErrMultipleRecords},
		{"two identical STS records", []string{"v=STSv1; id=1", "v=STSv1; id=1"}, "", ErrMultipleRecords},

		{"version only", []string{"v=STSv1"}, "", ErrInvalidTXT},
		{"version and delimiter only", []string{"v=STSv1;"}, "", ErrInvalidTXT},
		{"no id", []string{"v=STSv1; foo=bar"}, "", ErrInvalidTXT},
		{"id name is case-sensitive", []string{"v=STSv1; ID=abc"}, "", ErrInvalidTXT},
		{"empty id", []string{"v=STSv1; id="}, "", ErrInvalidTXT},
		{"33 character id", []string{"v=STSv1; id=" + id32 + "x"}, "", ErrInvalidTXT},
		{"id with hyphen", []string{"v=STSv1; id=2019-04-29"}, "", ErrInvalidTXT},
		{"id with space", []string{"v=STSv1; id=abc def"}, "", ErrInvalidTXT},
		{"non-ASCII id", []string{"v=STSv1; id=é"}, "", ErrInvalidTXT},
		{"empty field in the middle", []string{"v=STSv1;; id=x"}, "", ErrInvalidTXT},
		{"double trailing delimiter", []string{"v=STSv1; id=x;;"}, "", ErrInvalidTXT},
		{"field without =", []string{"v=STSv1; id=x; junk"}, "", ErrInvalidTXT},
		{"bad extension name", []string{"v=STSv1; _x=1; id=x"}, "", ErrInvalidTXT},
		{"extension value with =", []string{"v=STSv1; x=a=b; id=x"}, "", ErrInvalidTXT},
		{"empty extension value", []string{"v=STSv1; x=; id=x"}, "", ErrInvalidTXT},
		{"duplicate id, second invalid", []string{"v=STSv1; id=ok; id=not-ok"}, "", ErrInvalidTXT},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := ParseTXT(tc.records)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ParseTXT(%q) = %q, %v; want error %v", tc.records, id, err, tc.err)
				}
				if id != "" {
					t.Fatalf("ParseTXT(%q) returned id %q with an error", tc.records, id)
				}
				return
			}
			if err != nil || id != tc.want {
				t.Fatalf("ParseTXT(%q) = %q, %v; want %q", tc.records, id, err, tc.want)
			}
		})
	}
}
