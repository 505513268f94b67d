package tlsrpt

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var day1 = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)

func okRec(domain, mx string) Record {
	return Record{Domain: domain, PolicyType: PolicyTLSA, PolicyStrings: []string{"3 1 1 AB"}, PolicyDomain: mx, MXHost: mx, Success: true}
}

func failRec(domain, mx, rt string) Record {
	return Record{Domain: domain, PolicyType: PolicyTLSA, PolicyStrings: []string{"3 1 1 AB"}, PolicyDomain: mx, MXHost: mx, ResultType: rt, ReceivingIP: "192.0.2.1", FailureReason: "no match"}
}

func openT(t *testing.T, path string) *Store {
	t.Helper()
	st, err := OpenStore(path, StoreOptions{OnCorrupt: func(m string, err error) { t.Errorf("unexpected corruption: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func totals(t *testing.T, st *Store, day, domain string) (ok, fail uint64) {
	t.Helper()
	aggs, err := st.Aggregates(day, domain)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range aggs {
		if a.Key.Success {
			ok += a.Count
		} else {
			fail += a.Count
		}
	}
	return
}

// TestStoreRestartMidDay: records before and after a restart in the same
// day add up exactly.
func TestStoreRestartMidDay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlsrpt.db")
	st := openT(t, path)
	for i := 0; i < 7; i++ {
		if err := st.Add(day1.Add(time.Duration(i)*time.Minute), okRec("example.org", "mx.example.org")); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		if err := st.Add(day1, failRec("example.org", "mx.example.org", ResultCertificateExpired)); err != nil {
			t.Fatal(err)
		}
	}
	// "Restart": a new Store on the same file, as a new maddy process.
	st = openT(t, path)
	if ok, fail := totals(t, st, "2026-11-30", "example.org"); ok != 7 || fail != 3 {
		t.Fatalf("after restart: %d/%d, want 7/3", ok, fail)
	}
	for i := 0; i < 5; i++ {
		if err := st.Add(day1.Add(5*time.Hour), okRec("example.org", "mx.example.org")); err != nil {
			t.Fatal(err)
		}
	}
	// The next UTC day is separate.
	if err := st.Add(day1.Add(14*time.Hour), okRec("example.org", "mx.example.org")); err != nil {
		t.Fatal(err)
	}
	st = openT(t, path)
	if ok, fail := totals(t, st, "2026-11-30", "example.org"); ok != 12 || fail != 3 {
		t.Fatalf("after second restart: %d/%d, want 12/3", ok, fail)
	}
	if ok, _ := totals(t, st, "2026-12-01", "example.org"); ok != 1 {
		t.Fatalf("next day: %d, want 1", ok)
	}
	list, err := st.List()
	if err != nil || len(list) != 2 || list[0].Successes != 12 || list[0].Failures != 3 || list[1].Day != "2026-12-01" {
		t.Fatalf("list: %+v %v", list, err)
	}
}

// TestStoreConcurrentAdds: group commit loses and duplicates nothing.
func TestStoreConcurrentAdds(t *testing.T) {
	st := openT(t, filepath.Join(t.TempDir(), "tlsrpt.db"))
	var wg sync.WaitGroup
	const workers, each = 8, 25
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r := okRec("example.org", fmt.Sprintf("mx%d.example.org", w%3))
				if i%5 == 0 {
					r = failRec("example.org", "mx.example.org", ResultSTARTTLSNotSupported)
				}
				if err := st.Add(day1, r); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	wg.Wait()
	ok, fail := totals(t, st, "2026-11-30", "example.org")
	if ok+fail != workers*each || fail != workers*each/5 {
		t.Fatalf("got %d ok + %d failed, want %d with %d failed", ok, fail, workers*each, workers*each/5)
	}
}

const crashChildEnv = "TLSRPT_CRASH_CHILD"

// crashChild adds records forever, printing the number acknowledged after
// each Add returns; the parent kills it with SIGKILL.
func crashChild() {
	st, err := OpenStore(os.Getenv(crashChildEnv), StoreOptions{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for i := 1; ; i++ {
		if err := st.Add(day1, okRec("crash.example", "mx.crash.example")); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("acked", i)
	}
}

// TestStoreSurvivesCrash kills a writer process at an arbitrary moment
// (SIGKILL, no clean-up): every acknowledged record is on disk, and at most
// the one in flight beyond them.
func TestStoreSurvivesCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlsrpt.db")
	for round := 0; round < 3; round++ {
		before, _ := totals(t, openT(t, path), "2026-11-30", "crash.example")
		self, _ := os.Executable()
		cmd := exec.Command(self, "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		acked := 0
		target := 20 + round*15
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "error") {
				t.Fatal(line)
			}
			if n, ok := strings.CutPrefix(line, "acked "); ok {
				acked, _ = strconv.Atoi(n)
			}
			if acked >= target {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
		// Drain what the child wrote before it died.
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
				acked, _ = strconv.Atoi(n)
			}
		}
		_ = cmd.Wait()
		after, _ := totals(t, openT(t, path), "2026-11-30", "crash.example")
		got := int(after - before)
		if got < acked || got > acked+1 {
			t.Fatalf("round %d: %d records on disk, %d acknowledged (allowed: %d or %d)", round, got, acked, acked, acked+1)
		}
	}
}

// TestStoreCorruptIsMovedAside: a damaged file is reported, kept for
// inspection, and replaced by an empty store that works.
func TestStoreCorruptIsMovedAside(t *testing.T) {
	for name, damage := range map[string]func(path string){
		"garbage": func(path string) {
			_ = os.WriteFile(path, []byte(strings.Repeat("not a bolt database\n", 500)), 0o600)
		},
		"truncated": func(path string) {
			st, _ := OpenStore(path, StoreOptions{})
			_ = st.Add(day1, okRec("example.org", "mx.example.org"))
			_ = os.Truncate(path, 100)
		},
		"meta-pages": func(path string) {
			st, _ := OpenStore(path, StoreOptions{})
			_ = st.Add(day1, okRec("example.org", "mx.example.org"))
			f, _ := os.OpenFile(path, os.O_RDWR, 0)
			// Overwrite both meta pages (pages 0 and 1) in the middle.
			_, _ = f.WriteAt(make([]byte, 64), 32)
			_, _ = f.WriteAt(make([]byte, 64), 4096+32)
			f.Close()
		},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tlsrpt.db")
			damage(path)
			var moved string
			var cause error
			st, err := OpenStore(path, StoreOptions{OnCorrupt: func(m string, err error) { moved, cause = m, err }})
			if err != nil {
				t.Fatalf("open of a corrupt store failed instead of starting fresh: %v", err)
			}
			if moved == "" || cause == nil {
				t.Fatal("corruption not reported")
			}
			if _, err := os.Stat(moved); err != nil {
				t.Fatalf("corrupt file not kept: %v", err)
			}
			if err := st.Add(day1, okRec("example.org", "mx.example.org")); err != nil {
				t.Fatalf("fresh store unusable: %v", err)
			}
			if ok, _ := totals(t, st, "2026-11-30", "example.org"); ok != 1 {
				t.Fatalf("fresh store holds %d records, want 1", ok)
			}
		})
	}
}

// TestStoreState: delivery state and send requests persist.
func TestStoreState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlsrpt.db")
	st := openT(t, path)
	if err := st.Add(day1, okRec("example.org", "mx.example.org")); err != nil {
		t.Fatal(err)
	}
	want := DeliveryState{ReportID: "x@y", Attempts: 2, Done: true, Outcome: "sent", DoneAt: day1}
	if err := st.SetState("2026-11-30", "example.org", want); err != nil {
		t.Fatal(err)
	}
	st = openT(t, path)
	got, err := st.State("2026-11-30", "example.org")
	if err != nil || got.ReportID != "x@y" || got.Attempts != 2 || !got.Done || !got.DoneAt.Equal(day1) {
		t.Fatalf("state %+v %v", got, err)
	}
	if err := st.RequestSend("2026-11-30", day1); err != nil {
		t.Fatal(err)
	}
	got, _ = st.State("2026-11-30", "example.org")
	if got.Done || got.ReportID != "x@y" {
		t.Fatalf("a send request must re-open the report and keep its id: %+v", got)
	}
	reqs, err := st.takeRequests()
	if err != nil || !reqs["2026-11-30"] {
		t.Fatalf("requests %v %v", reqs, err)
	}
	if reqs, _ = st.takeRequests(); len(reqs) != 0 {
		t.Fatalf("requests not cleared: %v", reqs)
	}
	if err := st.Prune("2026-12-01"); err != nil {
		t.Fatal(err)
	}
	if list, _ := st.List(); len(list) != 0 {
		t.Fatalf("prune left %v", list)
	}
}

// BenchmarkStoreAdd measures one durable Add (open, commit with fsync,
// close), sequential and from many goroutines (group commit).
func BenchmarkStoreAdd(b *testing.B) {
	st, err := OpenStore(filepath.Join(b.TempDir(), "tlsrpt.db"), StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	r := okRec("example.org", "mx.example.org")
	b.Run("sequential", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := st.Add(day1, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := st.Add(day1, r); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// TestStoreOversizedRecordAlone: a record whose policy is too large for a
// bbolt key (a hostile domain's 40 KiB MTA-STS policy) is refused on its
// own; the records committed in the same group commit are kept.
func TestStoreOversizedRecordAlone(t *testing.T) {
	st := openT(t, filepath.Join(t.TempDir(), "tlsrpt.db"))
	big := okRec("hostile.example", "mx.hostile.example")
	big.PolicyType = PolicySTS
	big.PolicyStrings = []string{"version: STSv1", "mode: enforce", "x: " + strings.Repeat("a", 40<<10)}
	// Hold the database so that every Add below joins one batch.
	st.wmu.Lock()
	const n = 5
	errs := make(chan error, n+1)
	go func() { errs <- st.Add(day1, big) }()
	for i := 0; i < n; i++ {
		go func() { errs <- st.Add(day1, okRec("example.org", "mx.example.org")) }()
	}
	for waiting := 0; waiting < n; {
		runtime.Gosched()
		st.mu.Lock()
		waiting = 0
		if st.cur != nil {
			waiting = len(st.cur.recs)
		}
		st.mu.Unlock()
		if waiting > n {
			break // the oversized record joined the batch (the defect)
		}
	}
	st.wmu.Unlock()
	var failed int
	for i := 0; i < n+1; i++ {
		if err := <-errs; err != nil {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d Adds failed, want only the oversized one", failed)
	}
	if ok, _ := totals(t, st, "2026-11-30", "example.org"); ok != n {
		t.Fatalf("%d records of example.org stored, want %d", ok, n)
	}
}
