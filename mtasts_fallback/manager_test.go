package mtastsfallback

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"
)

type testEnv struct {
	m     *Manager
	site  *policySite
	txt   *fakeTXT
	clock *fakeClock
	store Store
	fetch *Fetcher
	logs  *logCapture
}

// newEnv builds a Manager over a loopback policy site, canned TXT records,
// a fake clock and the given store (nil: memory only).
func newEnv(t *testing.T, store Store) *testEnv {
	t.Helper()
	site, f := siteFetcher(t)
	env := &testEnv{site: site, txt: newFakeTXT(), clock: newFakeClock(), store: store, fetch: f, logs: &logCapture{}}
	env.m = env.manager(t)
	return env
}

// manager builds another Manager sharing env's site, DNS, clock and store,
// as after a restart.
func (env *testEnv) manager(t *testing.T) *Manager {
	t.Helper()
	m, err := NewManager(Config{
		LookupTXT: env.txt.Lookup,
		Fetcher:   env.fetch,
		Store:     env.store,
		Now:       env.clock.Now,
		Logger:    slog.New(env.logs),
		IsNotFound: func(err error) bool {
			return errors.Is(err, errStoreNotFound)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func (env *testEnv) publish(domain, id, body string) {
	env.txt.set(domain, "v=STSv1; id="+id+";")
	env.site.set(domain, body)
}

func mustPolicy(t *testing.T, m *Manager, domain string) *Result {
	t.Helper()
	r, err := m.Policy(context.Background(), domain)
	if err != nil {
		t.Fatalf("Policy(%q): %v", domain, err)
	}
	if r.Domain == "" {
		t.Fatalf("Result without domain")
	}
	return r
}

func wantSource(t *testing.T, r *Result, src Source) {
	t.Helper()
	if r.Source != src {
		t.Fatalf("source %q, want %q (policy %+v, err %v)", r.Source, src, r.Policy, r.Err)
	}
	if (r.Policy == nil) != (src == SourceNone) {
		t.Fatalf("source %q with policy %+v", r.Source, r.Policy)
	}
}

// logCapture is a slog.Handler recording messages and levels.
type logCapture struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCapture) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r)
	return nil
}
func (l *logCapture) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCapture) WithGroup(string) slog.Handler      { return l }

func (l *logCapture) count(level slog.Level, msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r.Level == level && r.Message == msg {
			n++
		}
	}
	return n
}

const failMsg = "mta-sts: policy discovery failed"

func TestManagerFetchThenCache(t *testing.T) {
	store := newFileStore(t, t.TempDir())
	env := newEnv(t, store)
	env.publish("example.com", "20160831085700Z", policyText("enforce", 86400, "mx.example.com", "*.example.net"))
	t0 := env.clock.Now()

	r := mustPolicy(t, env.m, "Example.com.")
	wantSource(t, r, SourceFetched)
	p := r.Policy
	if r.Domain != "example.com" || p.Domain != "example.com" || p.ID != "20160831085700Z" || p.Mode != ModeEnforce {
		t.Fatalf("result %+v policy %+v", r, p)
	}
	if !p.FetchedAt.Equal(t0) || !p.Expires.Equal(t0.Add(86400*time.Second)) {
		t.Fatalf("fetched %v expires %v, want %v + 1d", p.FetchedAt, p.Expires, t0)
	}
	if r.Err != nil {
		t.Fatalf("Err = %v", r.Err)
	}

	env.clock.Advance(time.Hour)
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceCache)
	if r.Policy != p {
		t.Fatal("cached policy is not the fetched one")
	}
	if env.site.count("example.com") != 1 || env.txt.count("example.com") != 2 {
		t.Fatalf("fetches %d lookups %d, want 1 and 2", env.site.count("example.com"), env.txt.count("example.com"))
	}

	v, exp, err := store.Get(DefaultKeyPrefix + "example.com")
	if err != nil {
		t.Fatal(err)
	}
	stored, err := UnmarshalPolicy(v)
	if err != nil || !reflect.DeepEqual(stored, p) || !exp.Equal(p.Expires) {
		t.Fatalf("stored %+v (expires %v), %v; want %+v", stored, exp, err, p)
	}
}

func TestManagerIDChangeRefetches(t *testing.T) {
	env := newEnv(t, nil)
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	mustPolicy(t, env.m, "example.com")

	env.publish("example.com", "2", policyText("testing", 3600, "new.example.com"))
	env.clock.Advance(time.Minute)
	r := mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceFetched)
	if r.Policy.ID != "2" || r.Policy.Mode != ModeTesting || !r.Policy.MatchMX("new.example.com") || r.Policy.MatchMX("mx.example.com") {
		t.Fatalf("policy %+v", r.Policy)
	}
	if n := env.site.count("example.com"); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// And back: a different id again means another fetch, even if it is
	// an id seen before (ids have no order, RFC 8461 §3.1).
	env.txt.set("example.com", "v=STSv1; id=1")
	wantSource(t, mustPolicy(t, env.m, "example.com"), SourceFetched)
}

func TestManagerFetchFailureKeepsCachedPolicy(t *testing.T) {
	env := newEnv(t, nil)
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	first := mustPolicy(t, env.m, "example.com").Policy

	env.txt.set("example.com", "v=STSv1; id=2")
	env.site.fail("example.com", http.StatusInternalServerError)
	r := mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceStale)
	if r.Policy != first {
		t.Fatalf("policy %+v, want the cached one", r.Policy)
	}
	wantReason(t, r.Err, ReasonPolicyFetchError, CodeHTTPStatus)
	// RFC 8461 §3.3/§10.2: failing to refresh an enforce policy is
	// alert-worthy.
	if env.logs.count(slog.LevelWarn, failMsg) != 1 {
		t.Fatalf("refresh failure of a cached enforce policy not logged as a warning")
	}

	// Within the backoff the failure is remembered, not retried.
	env.clock.Advance(time.Minute)
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceStale)
	wantReason(t, r.Err, ReasonPolicyFetchError, CodeHTTPStatus)
	if n := env.site.count("example.com"); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}

	// The cached policy still governs until its max_age runs out.
	env.clock.Advance(86400*time.Second - time.Minute - time.Second)
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceStale)
	env.clock.Advance(time.Second)
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceNone)
	wantReason(t, r.Err, ReasonPolicyFetchError, CodeHTTPStatus)
}

func TestManagerExpiry(t *testing.T) {
	env := newEnv(t, nil)
	env.publish("example.com", "1", policyText("enforce", 3600, "mx.example.com"))
	mustPolicy(t, env.m, "example.com")

	env.clock.Advance(3599 * time.Second)
	wantSource(t, mustPolicy(t, env.m, "example.com"), SourceCache)
	env.clock.Advance(time.Second) // exactly max_age after the fetch
	r := mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceFetched)
	if n := env.site.count("example.com"); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}

	// Expired and unrefreshable: no policy at all (RFC 8461 §3.3).
	env.site.fail("example.com", http.StatusNotFound)
	env.clock.Advance(3600 * time.Second)
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceNone)
	wantReason(t, r.Err, ReasonPolicyFetchError, CodeHTTPStatus)
	if env.logs.count(slog.LevelInfo, failMsg) != 1 {
		t.Fatal("failure without a cached policy not logged at info level")
	}
}

func TestManagerMaxAgeZero(t *testing.T) {
	store := newFileStore(t, t.TempDir())
	env := newEnv(t, store)
	env.publish("example.com", "1", policyText("enforce", 0, "mx.example.com"))
	r := mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceFetched) // usable for the delivery at hand
	wantSource(t, mustPolicy(t, env.m, "example.com"), SourceFetched)
	if n := env.site.count("example.com"); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	if keys, _ := store.Keys(); len(keys) != 0 {
		t.Fatalf("max_age 0 policy persisted: %q", keys)
	}
}

func TestManagerModeNone(t *testing.T) {
	env := newEnv(t, nil)
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	r := mustPolicy(t, env.m, "example.com")
	if err := r.Policy.CheckMX("rogue.example.org"); err == nil {
		t.Fatal("enforce policy accepted a foreign MX")
	}

	// RFC 8461 §8.3: the domain opts out with mode none and a new id.
	env.publish("example.com", "2", "version: STSv1\nmode: none\nmax_age: 86400\n")
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceFetched)
	if r.Policy.Mode != ModeNone {
		t.Fatalf("mode %q", r.Policy.Mode)
	}
	if err := r.Policy.CheckMX("rogue.example.org"); err != nil {
		t.Fatalf("mode none refused an MX: %v", err)
	}
	if err := CheckConn(r.Policy, "rogue.example.org", tls.ConnectionState{}, nil, env.clock.Now()); err != nil {
		t.Fatalf("mode none required TLS: %v", err)
	}
	// The cached none policy keeps lifting enforcement, and its refresh
	// failures are not alert-worthy (RFC 8461 §10.2).
	env.txt.setErr("example.com", errors.New("SERVFAIL"))
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceStale)
	if r.Policy.Mode != ModeNone {
		t.Fatalf("mode %q", r.Policy.Mode)
	}
	if env.logs.count(slog.LevelWarn, failMsg) != 0 || env.logs.count(slog.LevelInfo, failMsg) != 1 {
		t.Fatal("refresh failure of a none policy logged as a warning")
	}
}

func TestManagerTXTAbsence(t *testing.T) {
	env := newEnv(t, nil)
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	first := mustPolicy(t, env.m, "example.com").Policy

	// RFC 8461 §5.1: a vanished TXT record does not remove the policy.
	env.txt.remove("example.com")
	r := mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceStale)
	if r.Policy != first || r.Err != nil {
		t.Fatalf("policy %+v err %v", r.Policy, r.Err)
	}
	// An empty answer and ErrNoRecord mean the same.
	env.txt.set("example.com")
	wantSource(t, mustPolicy(t, env.m, "example.com"), SourceStale)
	env.txt.setErr("example.com", ErrNoRecord)
	wantSource(t, mustPolicy(t, env.m, "example.com"), SourceStale)
	env.txt.set("example.com", "v=spf1 -all")
	wantSource(t, mustPolicy(t, env.m, "example.com"), SourceStale)
	if n := env.site.count("example.com"); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}

	// A domain without TXT record and without cache has no policy, and
	// no error: it simply does not use MTA-STS.
	env.site.set("example.org", policyText("enforce", 86400, "mx.example.org"))
	r = mustPolicy(t, env.m, "example.org")
	wantSource(t, r, SourceNone)
	if r.Err != nil || env.site.count("example.org") != 0 {
		t.Fatalf("err %v, %d fetches", r.Err, env.site.count("example.org"))
	}
}

func TestManagerInvalidTXT(t *testing.T) {
	env := newEnv(t, nil)
	// RFC 8461 §3.1: several STS records mean no policy.
	env.txt.set("example.org", "v=STSv1; id=1", "v=STSv1; id=2")
	env.site.set("example.org", policyText("enforce", 86400, "mx.example.org"))
	r := mustPolicy(t, env.m, "example.org")
	wantSource(t, r, SourceNone)
	wantReason(t, r.Err, ReasonPolicyInvalid, CodeTXTInvalid)
	if !errors.Is(r.Err, ErrMultipleRecords) || env.site.count("example.org") != 0 {
		t.Fatalf("err %v, %d fetches", r.Err, env.site.count("example.org"))
	}

	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	mustPolicy(t, env.m, "example.com")
	env.txt.set("example.com", "v=STSv1; id=not-valid")
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceStale)
	if !errors.Is(r.Err, ErrInvalidTXT) {
		t.Fatalf("err %v", r.Err)
	}
}

// TestManagerDNSBackoff checks the schedule after consecutive DNS
// failures: 1, 2, 4, ... seconds, at most five minutes (RFC 9520 §3.2).
func TestManagerDNSBackoff(t *testing.T) {
	env := newEnv(t, nil)
	env.txt.setErr("example.com", errors.New("SERVFAIL"))
	r := mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceNone)
	wantReason(t, r.Err, ReasonPolicyFetchError, CodeDNS)
	lookups := 1
	for n := 1; n <= 12; n++ {
		delay := min(time.Second<<(n-1), 5*time.Minute)
		env.clock.Advance(delay - time.Millisecond)
		r := mustPolicy(t, env.m, "example.com")
		wantReason(t, r.Err, ReasonPolicyFetchError, CodeDNS)
		if got := env.txt.count("example.com"); got != lookups {
			t.Fatalf("after failure %d: lookup before the %v backoff ended (%d lookups)", n, delay, got)
		}
		env.clock.Advance(time.Millisecond)
		mustPolicy(t, env.m, "example.com")
		lookups++
		if got := env.txt.count("example.com"); got != lookups {
			t.Fatalf("after failure %d: no lookup when the %v backoff ended (%d lookups)", n, delay, got)
		}
	}
	// Recovery clears the failure.
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	env.clock.Advance(time.Hour)
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceFetched)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
}

// TestManagerFetchBackoff checks the schedule after consecutive HTTPS
// failures for one id: never sooner than 5 minutes (RFC 8461 §3.3), then
// doubling to an hour; a new id is fetched at once.
func TestManagerFetchBackoff(t *testing.T) {
	env := newEnv(t, nil)
	env.txt.set("example.com", "v=STSv1; id=1")
	env.site.fail("example.com", http.StatusServiceUnavailable)
	r := mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceNone)
	wantReason(t, r.Err, ReasonPolicyFetchError, CodeHTTPStatus)
	fetches := 1
	for n := 1; n <= 8; n++ {
		delay := max(min(time.Minute<<(n-1), time.Hour), 5*time.Minute)
		env.clock.Advance(delay - time.Second)
		r := mustPolicy(t, env.m, "example.com")
		wantReason(t, r.Err, ReasonPolicyFetchError, CodeHTTPStatus)
		if got := env.site.count("example.com"); got != fetches {
			t.Fatalf("after failure %d: fetch before the %v backoff ended", n, delay)
		}
		env.clock.Advance(time.Second)
		mustPolicy(t, env.m, "example.com")
		fetches++
		if got := env.site.count("example.com"); got != fetches {
			t.Fatalf("after failure %d: no fetch when the %v backoff ended (%d fetches)", n, delay, got)
		}
	}
	// A new id is worth a try at once.
	env.txt.set("example.com", "v=STSv1; id=2")
	mustPolicy(t, env.m, "example.com")
	if got := env.site.count("example.com"); got != fetches+1 {
		t.Fatalf("new id not fetched at once")
	}
	env.site.set("example.com", policyText("testing", 86400, "mx.example.com"))
	env.txt.set("example.com", "v=STSv1; id=3")
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceFetched)
}

func TestManagerRestartReusesStore(t *testing.T) {
	dir := t.TempDir()
	env := newEnv(t, newFileStore(t, dir))
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	first := mustPolicy(t, env.m, "example.com").Policy
	env.m.Close()

	// New process: new store handle on the same directory, new Manager.
	env.store = newFileStore(t, dir)
	env.site.fail("example.com", http.StatusInternalServerError) // a fetch would fail
	env.clock.Advance(time.Hour)
	m2 := env.manager(t)
	r := mustPolicy(t, m2, "example.com")
	wantSource(t, r, SourceCache)
	if !reflect.DeepEqual(r.Policy, first) {
		t.Fatalf("restored %+v, want %+v", r.Policy, first)
	}
	if n := env.site.count("example.com"); n != 1 {
		t.Fatalf("%d fetches after restart, want none", n)
	}

	// Attack on discovery after restart (RFC 8461 §10.2): DNS fails, the
	// stored policy still applies.
	m3 := env.manager(t)
	env.txt.setErr("example.com", errors.New("timeout"))
	r = mustPolicy(t, m3, "example.com")
	wantSource(t, r, SourceStale)
	if r.Policy.Mode != ModeEnforce {
		t.Fatalf("policy %+v", r.Policy)
	}

	// Past max_age the stored copy is dead and removed.
	env.clock.Advance(24 * time.Hour)
	m4 := env.manager(t)
	wantSource(t, mustPolicy(t, m4, "example.com"), SourceNone)
	if _, _, err := env.store.Get(DefaultKeyPrefix + "example.com"); !errors.Is(err, errStoreNotFound) {
		t.Fatalf("expired entry still stored: %v", err)
	}
}

func TestManagerIgnoresBadStoreEntries(t *testing.T) {
	dir := t.TempDir()
	store := newFileStore(t, dir)
	now := newFakeClock().Now()
	otherDomain, _ := MarshalPolicy(&Policy{Mode: ModeEnforce, MaxAge: 86400, MX: []string{"evil.example"},
		Domain: "example.org", ID: "1", FetchedAt: now, Expires: now.Add(24 * time.Hour)})
	entries := map[string][]byte{
		"example.com":  []byte("{not json"),
		"example.net":  otherDomain,                                                                                                                                                                                       // stored under the wrong key
		"test.example": []byte(`{"format":1,"policy":{"mode":"enforce","max_age":86400,"mx":["mx.test.example"],"domain":"test.example","id":"1","fetched_at":"2030-01-02T03:04:05Z","expires":"2099-01-01T00:00:00Z"}}`), // expiry beyond max_age
	}
	for d, v := range entries {
		if err := store.Put(DefaultKeyPrefix+d, v, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	// A store-level corrupt file: Get itself fails.
	if err := writeRaw(filepath.Join(dir, hexKey(DefaultKeyPrefix+"example.org")), "garbage"); err != nil {
		t.Fatal(err)
	}
	env := newEnv(t, store)
	for _, d := range testDomains {
		env.publish(d, "1", policyText("enforce", 86400, "mx."+d))
		r := mustPolicy(t, env.m, d)
		wantSource(t, r, SourceFetched)
		if !r.Policy.MatchMX("mx."+d) || r.Policy.MatchMX("evil.example") {
			t.Fatalf("%s: policy %+v", d, r.Policy)
		}
		v, _, err := store.Get(DefaultKeyPrefix + d)
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		if _, err := UnmarshalPolicy(v); err != nil {
			t.Fatalf("%s: bad entry not replaced: %v", d, err)
		}
	}
	if env.logs.count(slog.LevelWarn, "mta-sts: ignoring damaged stored policy") != 3 {
		t.Fatal("damaged entries not logged")
	}
	if env.logs.count(slog.LevelWarn, "mta-sts: no usable stored policy") != 1 {
		t.Fatal("store read error not logged")
	}
}

func TestManagerBrokenOrNilStore(t *testing.T) {
	broken := &brokenStore{}
	var typedNil *fileStore
	for name, store := range map[string]Store{"failing": broken, "typed nil": typedNil, "nil": nil} {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t, store)
			env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
			wantSource(t, mustPolicy(t, env.m, "example.com"), SourceFetched)
			wantSource(t, mustPolicy(t, env.m, "example.com"), SourceCache)
			env.clock.Advance(13 * time.Hour) // past half of max_age
			env.m.RefreshNow(context.Background())
			if n := env.site.count("example.com"); n != 2 {
				t.Fatalf("%d fetches, want 2", n)
			}
			wantSource(t, mustPolicy(t, env.m, "example.com"), SourceCache)
		})
	}
	if broken.calls.Load() == 0 {
		t.Fatal("failing store never called")
	}
}

func TestManagerCollapsesConcurrentCalls(t *testing.T) {
	env := newEnv(t, nil)
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	env.txt.block = make(chan struct{})
	env.txt.entered = make(chan string, 100)

	const n = 10
	results := make(chan *Result, n)
	for i := 0; i < n; i++ {
		go func() {
			r, err := env.m.Policy(context.Background(), "example.com")
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
	}
	<-env.txt.entered // the first resolution is stuck in DNS...
	for env.m.waiters.Load() != n {
		runtime.Gosched() // ...until every caller has joined it
	}
	close(env.txt.block)
	var first *Policy
	for i := 0; i < n; i++ {
		r := <-results
		wantSource(t, r, SourceFetched)
		if first == nil {
			first = r.Policy
		} else if r.Policy != first {
			t.Fatal("callers got different policies")
		}
	}
	if env.txt.count("example.com") != 1 || env.site.count("example.com") != 1 {
		t.Fatalf("%d lookups, %d fetches; want 1 and 1", env.txt.count("example.com"), env.site.count("example.com"))
	}
}

func TestManagerCallerGivesUp(t *testing.T) {
	env := newEnv(t, nil)
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	env.txt.block = make(chan struct{})
	env.txt.entered = make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-env.txt.entered; cancel() }()
	if _, err := env.m.Policy(ctx, "example.com"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	// The resolution goes on for the benefit of the next caller.
	close(env.txt.block)
	r := mustPolicy(t, env.m, "example.com")
	if r.Policy == nil || env.site.count("example.com") != 1 {
		t.Fatalf("policy %+v after %d fetches", r.Policy, env.site.count("example.com"))
	}
}

func TestManagerInvalidInput(t *testing.T) {
	if _, err := NewManager(Config{}); err == nil {
		t.Fatal("NewManager without LookupTXT succeeded")
	}
	env := newEnv(t, nil)
	for _, d := range []string{"münchen.de", "", "[192.0.2.1]", "a..b"} {
		if _, err := env.m.Policy(context.Background(), d); !errors.Is(err, ErrInvalidDomain) {
			t.Errorf("Policy(%q): %v, want ErrInvalidDomain", d, err)
		}
	}
	if n := len(env.txt.calls); n != 0 {
		t.Fatalf("%d lookups for invalid domains", n)
	}
}

func TestManagerRefreshNow(t *testing.T) {
	store := newFileStore(t, t.TempDir())
	env := newEnv(t, store)
	env.publish("example.com", "1", policyText("enforce", 7*86400, "mx.example.com"))
	env.publish("example.net", "1", policyText("testing", 7200, "mx.example.net"))
	mustPolicy(t, env.m, "example.com")
	mustPolicy(t, env.m, "example.net")

	// example.net (max_age 2h) is due after half its life.
	env.clock.Advance(time.Hour - time.Second)
	env.m.RefreshNow(context.Background())
	if env.site.count("example.net") != 1 {
		t.Fatal("refreshed too early")
	}
	env.clock.Advance(time.Second)
	env.m.RefreshNow(context.Background())
	if env.site.count("example.net") != 2 || env.site.count("example.com") != 1 {
		t.Fatalf("fetches: net %d com %d", env.site.count("example.net"), env.site.count("example.com"))
	}

	// example.com is due after a day, even with an unchanged id, and
	// even with no TXT record at all (RFC 8461 §10.2).
	env.txt.remove("example.com")
	env.site.set("example.com", policyText("enforce", 14*86400, "mx.example.com", "mx2.example.com"))
	env.clock.Advance(23 * time.Hour)
	env.m.RefreshNow(context.Background())
	if env.site.count("example.com") != 2 {
		t.Fatalf("example.com fetched %d times, want 2", env.site.count("example.com"))
	}
	r := mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceStale) // TXT absent, policy kept
	if r.Policy.MaxAge != 14*86400 || !r.Policy.FetchedAt.Equal(env.clock.Now()) || r.Policy.ID != "1" {
		t.Fatalf("refreshed policy %+v", r.Policy)
	}

	// A failing refresh keeps the policy and backs off.
	env.txt.set("example.com", "v=STSv1; id=1")
	env.site.fail("example.com", http.StatusBadGateway)
	env.clock.Advance(24 * time.Hour)
	env.m.RefreshNow(context.Background())
	env.m.RefreshNow(context.Background())
	if env.site.count("example.com") != 3 {
		t.Fatalf("example.com fetched %d times, want 3", env.site.count("example.com"))
	}
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceCache)
	if r.Policy.MaxAge != 14*86400 {
		t.Fatalf("policy lost: %+v", r.Policy)
	}
}

func TestManagerPrune(t *testing.T) {
	store := newFileStore(t, t.TempDir())
	env := newEnv(t, store)
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	mustPolicy(t, env.m, "example.com")
	mustPolicy(t, env.m, "example.org") // no MTA-STS: remembered as such
	entries := func() int {
		env.m.mu.Lock()
		defer env.m.mu.Unlock()
		return len(env.m.entries)
	}
	if entries() != 2 {
		t.Fatalf("%d entries", entries())
	}

	// Half-way through max_age the refresh fails; the policy stays.
	env.site.fail("example.com", http.StatusNotFound)
	env.clock.Advance(12 * time.Hour)
	mustPolicy(t, env.m, "example.org")
	env.m.RefreshNow(context.Background())
	if env.site.count("example.com") != 2 || entries() != 2 {
		t.Fatalf("%d fetches, %d entries", env.site.count("example.com"), entries())
	}
	if keys, _ := store.Keys(); len(keys) != 1 {
		t.Fatalf("stored keys %q", keys)
	}

	// At max_age the policy is dropped from memory and store; the
	// background refresh does not count as use, so example.com, last
	// asked for a day ago, is forgotten; example.org was asked 12h ago.
	env.clock.Advance(12 * time.Hour)
	env.m.RefreshNow(context.Background())
	if keys, _ := store.Keys(); len(keys) != 0 {
		t.Fatalf("expired policy still stored: %q", keys)
	}
	if entries() != 1 {
		t.Fatalf("%d entries after prune, want 1", entries())
	}
	env.clock.Advance(12 * time.Hour)
	env.m.RefreshNow(context.Background())
	if entries() != 0 {
		t.Fatalf("%d entries after second prune, want 0", entries())
	}
}

func TestManagerRefreshAfterRestart(t *testing.T) {
	dir := t.TempDir()
	env := newEnv(t, newFileStore(t, dir))
	env.publish("example.com", "1", policyText("enforce", 7*86400, "mx.example.com"))
	mustPolicy(t, env.m, "example.com")
	env.m.Close()

	env.store = newFileStore(t, dir)
	env.clock.Advance(25 * time.Hour)
	m2 := env.manager(t)
	m2.RefreshNow(context.Background()) // knows example.com from the store only
	if n := env.site.count("example.com"); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}

func TestManagerRun(t *testing.T) {
	dir := t.TempDir()
	env := newEnv(t, newFileStore(t, dir))
	env.publish("example.com", "1", policyText("enforce", 7*86400, "mx.example.com"))
	mustPolicy(t, env.m, "example.com")
	env.clock.Advance(25 * time.Hour)

	env.site.mu.Lock()
	env.site.hitCh = make(chan string, 10)
	env.site.mu.Unlock()
	m := env.manager(t)
	done := make(chan struct{})
	go func() { m.Run(context.Background()); close(done) }()
	if host := <-env.site.hitCh; host != "mta-sts.example.com" {
		t.Fatalf("fetched %q", host)
	}
	m.Close()
	<-done
	m.Close()                   // idempotent
	m.Run(context.Background()) // returns at once after Close

	// Run also stops with its context.
	m2 := env.manager(t)
	ctx, cancel := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { m2.Run(ctx); close(done2) }()
	cancel()
	<-done2
}

func TestManagerAfterClose(t *testing.T) {
	env := newEnv(t, nil)
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	mustPolicy(t, env.m, "example.com")
	env.m.Close()
	env.publish("example.com", "2", policyText("testing", 86400, "mx.example.com"))
	r := mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceStale)
	wantReason(t, r.Err, ReasonPolicyFetchError, CodeManagerClosing)
	if r.Policy.ID != "1" || env.site.count("example.com") != 1 {
		t.Fatalf("policy %+v, %d fetches", r.Policy, env.site.count("example.com"))
	}
	wantSource(t, mustPolicy(t, env.m, "example.org"), SourceNone)
}

// TestManagerMaxDomains: recipient domains are chosen by whoever makes the
// server send mail; the in-memory map stays within MaxDomains, and a
// domain with a valid policy is not forgotten to make room (without a
// store it could not be recovered before max_age, RFC 8461 §5.1).
func TestManagerMaxDomains(t *testing.T) {
	env := newEnv(t, nil)
	m, err := NewManager(Config{
		LookupTXT: env.txt.Lookup, Fetcher: env.fetch, Now: env.clock.Now,
		Logger: slog.New(env.logs), MaxDomains: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	wantSource(t, mustPolicy(t, m, "example.com"), SourceFetched)
	for i := range 200 {
		r := mustPolicy(t, m, fmt.Sprintf("d%d.example", i))
		wantSource(t, r, SourceNone)
		m.mu.Lock()
		n := len(m.entries)
		m.mu.Unlock()
		if n > 10 {
			t.Fatalf("%d domains in memory after %d lookups, limit 10", n, i+1)
		}
	}
	wantSource(t, mustPolicy(t, m, "example.com"), SourceCache)
	if n := env.site.count("example.com"); n != 1 {
		t.Fatalf("example.com fetched %d times, want 1", n)
	}
}

// TestManagerNoPolicyPastMaxAge: a cached policy that reaches its max_age
// while the TXT lookup or the fetch is under way (either may take tens of
// seconds) is not applied when they fail (RFC 8461 §3.2).
func TestManagerNoPolicyPastMaxAge(t *testing.T) {
	env := newEnv(t, nil)
	var slowDNS, slowFetch sync.Mutex // held: the step fails after 20s
	slow := func(mu *sync.Mutex) bool {
		if mu.TryLock() {
			mu.Unlock()
			return false
		}
		env.clock.Advance(20 * time.Second)
		return true
	}
	f := *env.fetch
	dial := f.DialContext
	f.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		slow(&slowFetch)
		return dial(ctx, network, addr)
	}
	m, err := NewManager(Config{
		LookupTXT: func(ctx context.Context, name string) ([]string, error) {
			if slow(&slowDNS) {
				return nil, errors.New("server failure")
			}
			return env.txt.Lookup(ctx, name)
		},
		Fetcher: &f, Now: env.clock.Now, Logger: slog.New(env.logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })

	env.publish("example.com", "1", policyText("enforce", 100, "mx.example.com"))
	wantSource(t, mustPolicy(t, m, "example.com"), SourceFetched)
	env.clock.Advance(90 * time.Second)
	slowDNS.Lock()
	r := mustPolicy(t, m, "example.com")
	slowDNS.Unlock()
	if r.Policy != nil {
		t.Fatalf("policy expired during the lookup applied: source %s, expires %s, now %s", r.Source, r.Policy.Expires, env.clock.Now())
	}

	env.clock.Advance(time.Hour) // past any backoff
	env.publish("example.com", "2", policyText("enforce", 100, "mx.example.com"))
	wantSource(t, mustPolicy(t, m, "example.com"), SourceFetched)
	env.clock.Advance(90 * time.Second)
	env.publish("example.com", "3", policyText("enforce", 100, "mx.example.com"))
	env.site.fail("example.com", http.StatusServiceUnavailable)
	slowFetch.Lock()
	r = mustPolicy(t, m, "example.com")
	slowFetch.Unlock()
	if r.Policy != nil {
		t.Fatalf("policy expired during the fetch applied: source %s, expires %s, now %s", r.Source, r.Policy.Expires, env.clock.Now())
	}
}

// TestManagerShortDNSFault is the case RFC 9520's short failure cache is
// for: the TXT lookup of an enforce-mode domain contacted for the first
// time fails once (SERVFAIL); two seconds later its policy is in force,
// where the one-minute backoff of HTTPS and TXT-syntax failures would
// have left it without MTA-STS for a minute.
func TestManagerShortDNSFault(t *testing.T) {
	env := newEnv(t, nil)
	env.publish("example.com", "1", policyText("enforce", 86400, "mx.example.com"))
	env.txt.setErr("example.com", errors.New("SERVFAIL"))
	r := mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceNone)
	wantReason(t, r.Err, ReasonPolicyFetchError, CodeDNS)
	env.txt.set("example.com", "v=STSv1; id=1")
	env.clock.Advance(2 * time.Second)
	r = mustPolicy(t, env.m, "example.com")
	wantSource(t, r, SourceFetched)
	if r.Policy.Mode != ModeEnforce {
		t.Fatalf("mode %q", r.Policy.Mode)
	}

	// An unusable TXT record keeps the longer schedule: it is the
	// domain's error, not a transient resolution failure.
	env.txt.set("example.org", "v=STSv1; id=not-valid")
	mustPolicy(t, env.m, "example.org")
	env.txt.set("example.org", "v=STSv1; id=2")
	env.site.set("example.org", policyText("enforce", 86400, "mx.example.org"))
	env.clock.Advance(2 * time.Second)
	r = mustPolicy(t, env.m, "example.org")
	if !errors.Is(r.Err, ErrInvalidTXT) || env.site.count("example.org") != 0 {
		t.Fatalf("TXT-syntax failure retried after 2s: err %v, %d fetches", r.Err, env.site.count("example.org"))
	}
}
