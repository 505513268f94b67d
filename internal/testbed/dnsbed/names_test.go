package dnsbed

import (
	"slices"
	"testing"
)

// TestCanonicalOrder checks the example ordering of RFC 4034 §6.1.
func TestCanonicalOrder(t *testing.T) {
	want := []string{
		"example.",
		"a.example.",
		"yljkjljk.a.example.",
		"Z.a.example.",
		"zABC.a.EXAMPLE.",
		"z.example.",
		`\001.z.example.`,
		"*.z.example.",
		`\200.z.example.`,
	}
	got := slices.Clone(want)
	// Reverse, then sort: the order must come back.
	slices.Reverse(got)
	slices.SortFunc(got, canonicalCompare)
	if !slices.Equal(got, want) {
		t.Fatalf("canonical order:\n got %q\nwant %q", got, want)
	}
	if c := canonicalCompare("A.Example.", "a.example."); c != 0 {
		t.Fatalf("case must not matter, got %d", c)
	}
	if c := canonicalCompare(".", "example."); c != -1 {
		t.Fatalf("the root sorts first, got %d", c)
	}
}

func TestCanonicalName(t *testing.T) {
	for in, want := range map[string]string{
		".":               ".",
		"Example.":        "example.",
		`\065.example.`:   "a.example.",
		`a\.b.EXAMPLE.`:   `a\.b.example.`,
		"_25._TCP.Mx1.a.": "_25._tcp.mx1.a.",
	} {
		got, err := canonicalName(in)
		if err != nil || got != want {
			t.Errorf("canonicalName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "example", "a..b.", string(make([]byte, 300)) + "."} {
		if got, err := canonicalName(bad); err == nil {
			t.Errorf("canonicalName(%q) = %q, want an error", bad, got)
		}
	}
}

func TestAncestorsAndAbsolute(t *testing.T) {
	if got, want := ancestors("a.b.example.", "example."), []string{"a.b.example.", "b.example.", "example."}; !slices.Equal(got, want) {
		t.Errorf("ancestors = %q, want %q", got, want)
	}
	if got, want := ancestors(`x\.y.example.`, "."), []string{`x\.y.example.`, "example.", "."}; !slices.Equal(got, want) {
		t.Errorf("ancestors with an escaped dot = %q, want %q", got, want)
	}
	for _, c := range []struct{ name, origin, want string }{
		{"@", "example.", "example."},
		{"mx1", "example.", "mx1.example."},
		{"MX1.Example.", "other.", "mx1.example."},
		{"com", ".", "com."},
	} {
		got, err := absoluteName(c.name, c.origin)
		if err != nil || got != c.want {
			t.Errorf("absoluteName(%q, %q) = %q, %v; want %q", c.name, c.origin, got, err, c.want)
		}
	}
}
