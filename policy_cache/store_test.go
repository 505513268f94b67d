package policycache

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock shared by the store and cache tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// corruptLog records OnCorrupt calls.
type corruptLog struct {
	mu    sync.Mutex
	calls []corruption
}

func (l *corruptLog) record(key string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, corruption{key, err})
}

func (l *corruptLog) take() []corruption {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.calls
	l.calls = nil
	return c
}

func openTestStore(t *testing.T, dir string) (*Store, *fakeClock, *corruptLog) {
	t.Helper()
	clk := newFakeClock()
	log := &corruptLog{}
	s, err := OpenStore(dir, StoreOptions{Now: clk.Now, OnCorrupt: log.record})
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return s, clk, log
}

// dirNames lists a directory, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestStoreRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, clk, log := openTestStore(t, dir)

	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("store dir mode = %v, want 0700", fi.Mode().Perm())
	}

	exp := clk.Now().Add(time.Hour + 123*time.Nanosecond)
	entries := map[string][]byte{
		"example.com":  []byte("version: STSv1\nmode: enforce\n"),
		"empty.test":   {},
		"binary.test":  {0, 1, 2, 0xff, 0xfe, '\n', 0},
		"large.test":   bytes.Repeat([]byte{0xa5}, MaxValueSize),
		"UPPER.Test.":  []byte("case and trailing dot are part of the key"),
		"unicode.тест": []byte("x"),
	}
	for k, v := range entries {
		if err := s.Put(k, v, exp); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
	}
	for k, v := range entries {
		got, gotExp, err := s.Get(k)
		if err != nil {
			t.Fatalf("Get(%q): %v", k, err)
		}
		if !bytes.Equal(got, v) {
			t.Errorf("Get(%q) value = %q, want %q", k, got, v)
		}
		if !gotExp.Equal(exp) {
			t.Errorf("Get(%q) expires = %v, want %v", k, gotExp, exp)
		}
	}
	for _, name := range dirNames(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", name, fi.Mode().Perm())
		}
	}

	// Overwrite.
	exp2 := exp.Add(time.Hour)
	if err := s.Put("example.com", []byte("new"), exp2); err != nil {
		t.Fatal(err)
	}
	if got, gotExp, err := s.Get("example.com"); err != nil || string(got) != "new" || !gotExp.Equal(exp2) {
		t.Errorf("after overwrite Get = %q, %v, %v", got, gotExp, err)
	}

	keys, err := s.Keys()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for k := range entries {
		want = append(want, k)
	}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Errorf("Keys = %q, want %q", keys, want)
	}

	if err := s.Delete("binary.test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get("binary.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: err = %v, want ErrNotFound", err)
	}
	if err := s.Delete("binary.test"); err != nil {
		t.Errorf("Delete of missing key: %v", err)
	}
	if _, _, err := s.Get("never.stored"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of unknown key: err = %v, want ErrNotFound", err)
	}

	// Data survives reopening.
	s2, clk2, _ := openTestStore(t, dir)
	clk2.Advance(0)
	if got, _, err := s2.Get("example.com"); err != nil || string(got) != "new" {
		t.Errorf("after reopen Get = %q, %v", got, err)
	}
	if got := log.take(); len(got) != 0 {
		t.Errorf("unexpected OnCorrupt calls: %v", got)
	}
}

func TestStoreInvalidInput(t *testing.T) {
	s, clk, _ := openTestStore(t, t.TempDir())
	exp := clk.Now().Add(time.Hour)
	long := strings.Repeat("a", MaxKeySize+1)
	for _, k := range []string{"", long} {
		if err := s.Put(k, nil, exp); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Put(len %d key): err = %v, want ErrInvalidKey", len(k), err)
		}
		if _, _, err := s.Get(k); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Get(len %d key): err = %v, want ErrInvalidKey", len(k), err)
		}
		if err := s.Delete(k); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Delete(len %d key): err = %v, want ErrInvalidKey", len(k), err)
		}
	}
	if err := s.Put("a", make([]byte, MaxValueSize+1), exp); !errors.Is(err, ErrValueTooLarge) {
		t.Errorf("Put(oversized value): err = %v, want ErrValueTooLarge", err)
	}
	// The longest key is accepted.
	maxKey := strings.Repeat("k", MaxKeySize)
	if err := s.Put(maxKey, []byte("v"), exp); err != nil {
		t.Fatalf("Put(max key): %v", err)
	}
	if got, _, err := s.Get(maxKey); err != nil || string(got) != "v" {
		t.Errorf("Get(max key) = %q, %v", got, err)
	}

	// Opening a file as a store fails clearly.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(f, StoreOptions{}); err == nil {
		t.Error("OpenStore on a regular file succeeded")
	}
	if _, err := OpenStore("", StoreOptions{}); err == nil {
		t.Error("OpenStore(\"\") succeeded")
	}
}

func TestStoreExpiryAndPrune(t *testing.T) {
	dir := t.TempDir()
	s, clk, _ := openTestStore(t, dir)
	t0 := clk.Now()
	if err := s.Put("short.test", []byte("1"), t0.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("long.test", []byte("2"), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("past.test", []byte("3"), t0.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get("past.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of already expired entry: err = %v, want ErrNotFound", err)
	}

	clk.Advance(10*time.Second - time.Nanosecond)
	if _, _, err := s.Get("short.test"); err != nil {
		t.Errorf("Get 1ns before expiry: %v", err)
	}
	clk.Advance(time.Nanosecond) // exactly at expiry: gone
	if _, _, err := s.Get("short.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get at expiry: err = %v, want ErrNotFound", err)
	}
	keys, err := s.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"long.test"}) {
		t.Errorf("Keys = %q, want [long.test]", keys)
	}
	if n := len(dirNames(t, dir)); n != 3 {
		t.Errorf("%d files before Prune, want 3", n)
	}
	removed, err := s.Prune()
	if err != nil {
		t.Fatal(err)
	}
	if removed != 2 {
		t.Errorf("Prune removed %d, want 2", removed)
	}
	if names := dirNames(t, dir); len(names) != 1 || names[0] != entryName("long.test") {
		t.Errorf("files after Prune = %q", names)
	}
	if removed, err := s.Prune(); err != nil || removed != 0 {
		t.Errorf("second Prune = %d, %v; want 0, nil", removed, err)
	}
	clk.Advance(time.Hour)
	if removed, err := s.Prune(); err != nil || removed != 1 {
		t.Errorf("last Prune = %d, %v; want 1, nil", removed, err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("files after last Prune = %q", names)
	}
}

// expectCorrupt checks that Get(key) fails with ErrCorrupt, OnCorrupt was
// called once for key, and the entry file is gone.
func expectCorrupt(t *testing.T, s *Store, log *corruptLog, key, what string) {
	t.Helper()
	v, _, err := s.Get(key)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: Get = %q, %v; want ErrCorrupt", what, v, err)
	}
	if v != nil {
		t.Fatalf("%s: Get returned data %q with an error", what, v)
	}
	calls := log.take()
	if len(calls) != 1 || calls[0].key != key || !errors.Is(calls[0].err, ErrCorrupt) {
		t.Fatalf("%s: OnCorrupt calls = %v, want one for %q", what, calls, key)
	}
	if _, err := os.Lstat(s.pathFor(key)); !os.IsNotExist(err) {
		t.Fatalf("%s: damaged file still present (%v)", what, err)
	}
	// Once removed it is simply absent.
	if _, _, err := s.Get(key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("%s: second Get err = %v, want ErrNotFound", what, err)
	}
}

func TestStoreCorruptTruncated(t *testing.T) {
	s, clk, log := openTestStore(t, t.TempDir())
	const key = "mta-sts.example.org"
	exp := clk.Now().Add(time.Hour)
	if err := s.Put(key, []byte("version: STSv1\nmode: testing\nmx: *.example.org\nmax_age: 86400\n"), exp); err != nil {
		t.Fatal(err)
	}
	path := s.pathFor(key)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(good); n++ {
		if err := os.WriteFile(path, good[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		expectCorrupt(t, s, log, key, fmt.Sprintf("truncated to %d bytes", n))
	}
	// Trailing garbage is damage too.
	if err := os.WriteFile(path, append(slices.Clone(good), 0), 0o600); err != nil {
		t.Fatal(err)
	}
	expectCorrupt(t, s, log, key, "one byte appended")
}

func TestStoreCorruptFlippedBytes(t *testing.T) {
	s, clk, log := openTestStore(t, t.TempDir())
	const key = "example.net"
	if err := s.Put(key, []byte("policy payload"), clk.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	path := s.pathFor(key)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range good {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := slices.Clone(good)
			bad[i] ^= mask
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			expectCorrupt(t, s, log, key, fmt.Sprintf("byte %d xor %#x", i, mask))
		}
	}
}

func TestStoreCorruptOtherCases(t *testing.T) {
	dir := t.TempDir()
	s, clk, log := openTestStore(t, dir)
	exp := clk.Now().Add(time.Hour)
	const key = "victim.test"
	path := s.pathFor(key)

	// A valid entry for another key, under this key's name.
	if err := os.WriteFile(path, encodeEntry("other.test", []byte("x"), exp), 0o600); err != nil {
		t.Fatal(err)
	}
	expectCorrupt(t, s, log, key, "wrong key inside")

	write := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(nil)
	expectCorrupt(t, s, log, key, "empty file")

	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 500)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	write(garbage)
	expectCorrupt(t, s, log, key, "garbage")

	wrongMagic := encodeEntry(key, []byte("x"), exp)
	copy(wrongMagic, "XXXX")
	write(wrongMagic)
	expectCorrupt(t, s, log, key, "wrong magic")

	// A future format version (with a matching checksum) is not guessed at.
	future := encodeEntry(key, []byte("x"), exp)
	future[5] = 2
	crcOff := 20 + len(key) + 4
	putU32(future[crcOff:], entryChecksum(future, crcOff))
	write(future)
	expectCorrupt(t, s, log, key, "unknown version")

	// Oversized file (sparse, so cheap).
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(maxFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	expectCorrupt(t, s, log, key, "oversized file")

	// A directory (with content) where the file should be.
	if err := os.MkdirAll(filepath.Join(path, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	expectCorrupt(t, s, log, key, "directory")

	// A symlink to a directory outside the store: the link is removed,
	// what it points to is not touched.
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "precious"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, path); err != nil {
		t.Fatal(err)
	}
	expectCorrupt(t, s, log, key, "symlink to a directory")
	if data, err := os.ReadFile(filepath.Join(outside, "precious")); err != nil || string(data) != "keep" {
		t.Fatalf("symlink target damaged: %q, %v", data, err)
	}

	// Put replaces a directory in the way, reporting it.
	if err := os.MkdirAll(filepath.Join(path, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(key, []byte("fresh"), exp); err != nil {
		t.Fatalf("Put over a directory: %v", err)
	}
	if calls := log.take(); len(calls) != 1 || !errors.Is(calls[0].err, ErrCorrupt) {
		t.Errorf("Put over a directory: OnCorrupt calls = %v", calls)
	}
	if got, _, err := s.Get(key); err != nil || string(got) != "fresh" {
		t.Errorf("Get after Put over directory = %q, %v", got, err)
	}
	// Delete removes a directory in the way too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(key); err != nil {
		t.Errorf("Delete of a directory entry: %v", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("directory still present after Delete")
	}
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

func TestStoreScanFindsCorruption(t *testing.T) {
	dir := t.TempDir()
	s, clk, log := openTestStore(t, dir)
	exp := clk.Now().Add(time.Hour)
	for _, k := range []string{"a.test", "b.test", "c.test", "d.test"} {
		if err := s.Put(k, []byte(k), exp); err != nil {
			t.Fatal(err)
		}
	}
	// b: valid file renamed to another key's name (key inside readable).
	data, err := os.ReadFile(s.pathFor("b.test"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.pathFor("b.test")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.pathFor("x.test"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	// c: truncated.
	if err := os.Truncate(s.pathFor("c.test"), 3); err != nil {
		t.Fatal(err)
	}
	// Foreign files are left alone.
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("operator notes"), 0o600); err != nil {
		t.Fatal(err)
	}

	keys, err := s.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"a.test", "d.test"}) {
		t.Errorf("Keys = %q, want [a.test d.test]", keys)
	}
	calls := log.take()
	if len(calls) != 2 {
		t.Fatalf("OnCorrupt calls = %v, want 2", calls)
	}
	gotKeys := []string{calls[0].key, calls[1].key}
	slices.Sort(gotKeys)
	if !slices.Equal(gotKeys, []string{"", "b.test"}) {
		t.Errorf("OnCorrupt keys = %q, want [\"\" b.test]", gotKeys)
	}
	want := []string{entryName("a.test"), entryName("d.test"), "README"}
	slices.Sort(want)
	if got := dirNames(t, dir); !slices.Equal(got, want) {
		t.Errorf("files = %q, want %q", got, want)
	}

	// Prune counts damaged files it deletes.
	if err := os.WriteFile(s.pathFor("e.test"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Prune(); err != nil || n != 1 {
		t.Errorf("Prune = %d, %v; want 1 (the damaged file)", n, err)
	}
	if calls := log.take(); len(calls) != 1 {
		t.Errorf("Prune OnCorrupt calls = %v, want 1", calls)
	}
}

func TestStoreLeftoverTempFiles(t *testing.T) {
	dir := t.TempDir()
	s, clk, _ := openTestStore(t, dir)
	exp := clk.Now().Add(time.Hour)
	if err := s.Put("kept.test", []byte("old"), exp); err != nil {
		t.Fatal(err)
	}
	// Simulate a crash in the middle of replacing kept.test: a partial
	// temporary file of the new version is all that reached the disk.
	newer := encodeEntry("kept.test", []byte("new version"), exp)
	if err := os.WriteFile(filepath.Join(dir, tempPrefix+"12345"), newer[:len(newer)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, tempPrefix+"dir", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	s2, _, log := openTestStore(t, dir)
	if got := dirNames(t, dir); !slices.Equal(got, []string{entryName("kept.test")}) {
		t.Errorf("files after reopen = %q", got)
	}
	if got, _, err := s2.Get("kept.test"); err != nil || string(got) != "old" {
		t.Errorf("Get after crash = %q, %v; want the old value", got, err)
	}
	if calls := log.take(); len(calls) != 0 {
		t.Errorf("OnCorrupt calls = %v", calls)
	}
}

func TestStoreHostileKeys(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "store")
	s, clk, _ := openTestStore(t, dir)
	exp := clk.Now().Add(time.Hour)
	keys := []string{
		"../escape",
		"../../../../../../tmp/x",
		"/etc/passwd",
		"a/b/c",
		"..",
		".",
		".tmp-looks-like-temp",
		"nul\x00byte",
		"\xff\xfe invalid utf-8",
		"new\nline",
		strings.Repeat("../", 300),
		entryName("collide"),
	}
	for i, k := range keys {
		if err := s.Put(k, []byte{byte(i)}, exp); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
	}
	// A new store sees them all (so nothing was lost to temp cleanup).
	s2, _, log := openTestStore(t, dir)
	for i, k := range keys {
		got, _, err := s2.Get(k)
		if err != nil || !bytes.Equal(got, []byte{byte(i)}) {
			t.Errorf("Get(%q) = %v, %v", k, got, err)
		}
	}
	got, err := s2.Keys()
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Keys = %q, want %q", got, want)
	}
	// Everything lives directly in dir; nothing appeared elsewhere.
	for _, name := range dirNames(t, dir) {
		if !isEntryName(name) {
			t.Errorf("unexpected file %q in store dir", name)
		}
	}
	if n := len(dirNames(t, dir)); n != len(keys) {
		t.Errorf("%d files in store dir, want %d", n, len(keys))
	}
	if got := dirNames(t, root); !slices.Equal(got, []string{"a"}) {
		t.Errorf("root contains %q", got)
	}
	if got := dirNames(t, filepath.Join(root, "a")); !slices.Equal(got, []string{"store"}) {
		t.Errorf("parent contains %q", got)
	}
	if calls := log.take(); len(calls) != 0 {
		t.Errorf("OnCorrupt calls = %v", calls)
	}
}

func TestStoreOnCorruptMayUseStore(t *testing.T) {
	dir := t.TempDir()
	var s *Store
	var sawKeys []string
	s, err := OpenStore(dir, StoreOptions{OnCorrupt: func(key string, err error) {
		// Re-entering the store from the callback must not deadlock.
		k, kerr := s.Keys()
		if kerr != nil {
			t.Errorf("Keys from OnCorrupt: %v", kerr)
		}
		sawKeys = k
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put("good.test", []byte("v"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.pathFor("bad.test"), []byte("bad"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get("bad.test"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get = %v, want ErrCorrupt", err)
	}
	if !slices.Equal(sawKeys, []string{"good.test"}) {
		t.Errorf("callback saw Keys = %q", sawKeys)
	}
}

func TestStoreConcurrent(t *testing.T) {
	s, clk, log := openTestStore(t, t.TempDir())
	exp := clk.Now().Add(time.Hour)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				key := fmt.Sprintf("k%d.test", i%5)
				val := []byte(fmt.Sprintf("%s/%d/%d", key, g, i))
				switch i % 4 {
				case 0, 1:
					if err := s.Put(key, val, exp); err != nil {
						t.Error(err)
					}
				case 2:
					v, _, err := s.Get(key)
					if err != nil && !errors.Is(err, ErrNotFound) {
						t.Error(err)
					}
					if err == nil && !bytes.HasPrefix(v, []byte(key+"/")) {
						t.Errorf("Get(%q) = %q: value of another key", key, v)
					}
				case 3:
					if g%2 == 0 {
						if err := s.Delete(key); err != nil {
							t.Error(err)
						}
					} else if _, err := s.Keys(); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if calls := log.take(); len(calls) != 0 {
		t.Errorf("OnCorrupt calls = %v", calls)
	}
}

func TestDecodeEntryRoundTrip(t *testing.T) {
	times := []time.Time{
		{},
		time.Unix(0, 0),
		time.Unix(-1, 999_999_999),
		time.Date(2262, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
	}
	for _, exp := range times {
		data := encodeEntry("k", []byte("v"), exp)
		k, v, got, err := decodeEntry(data)
		if err != nil || k != "k" || string(v) != "v" || !got.Equal(exp) {
			t.Errorf("round trip of %v: %q %q %v %v", exp, k, v, got, err)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	f.Add(encodeEntry("example.com", []byte("version: STSv1\n"), exp))
	f.Add(encodeEntry("k", nil, time.Time{}))
	f.Add([]byte(storeMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		key, value, expires, err := decodeEntry(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if key == "" || len(key) > MaxKeySize || len(value) > MaxValueSize {
			t.Fatalf("accepted out-of-range entry: key %d bytes, value %d bytes", len(key), len(value))
		}
		// Only canonical encodings are accepted: re-encoding reproduces
		// the input exactly.
		if re := encodeEntry(key, value, expires); !bytes.Equal(re, data) {
			t.Fatalf("decoded entry re-encodes differently:\n in %x\nout %x", data, re)
		}
	})
}
