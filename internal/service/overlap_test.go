package service

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// overlapService builds and starts a service with TLS reporting in dir,
// as one server generation of a configuration reload would.
func overlapService(t *testing.T, dir, instance string) *Service {
	t.Helper()
	s := DefaultSettings()
	s.Resolvers = []string{"127.0.0.1:1"}
	s.MTASTS = false
	r := DefaultTLSRPTSettings()
	r.PollInterval = time.Hour // the sender never ticks in this test
	if err := r.Validate("mx.sender.test", dir); err != nil {
		t.Fatal(err)
	}
	s.TLSRPT = &r
	svc, err := New(s, Deps{Log: newTestLog(), Instance: instance})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	return svc
}

// registered reports whether c is the collector the default registry
// holds for its descriptors.
func registered(c prometheus.Collector) bool {
	var are prometheus.AlreadyRegisteredError
	err := prometheus.Register(c)
	if err == nil {
		prometheus.Unregister(c)
		return false
	}
	return errors.As(err, &are) && are.ExistingCollector == c
}

func cacheCollector(name string, i int) prometheus.Collector {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if i >= len(cacheColls[name]) {
		return nil
	}
	return cacheColls[name][i]
}

// TestReloadOverlap: maddy 0.9 starts the new server of a configuration
// reload before it stops the old one. Across that overlap the report store
// keeps exactly one sender, which passes to the new service when the old
// one stops, and the cache metrics pass to the new service's cache
// instead of reporting a stopped one.
func TestReloadOverlap(t *testing.T) {
	dir := t.TempDir()
	old := overlapService(t, dir, "overlap")
	oldColl := cacheCollector("dns:overlap", 0)
	if old.rpt.stop == nil || !registered(oldColl) {
		t.Fatal("the only service does not run the sender or export its cache")
	}

	nu := overlapService(t, dir, "overlap")
	newColl := cacheCollector("dns:overlap", 1)
	if nu.rpt.store != old.rpt.store {
		t.Fatal("the new service opened a second store for the same directory")
	}
	if nu.rpt.stop != nil || old.rpt.stop == nil {
		t.Fatal("during the overlap the new service runs a sender too, or the old one stopped")
	}
	if !registered(oldColl) || registered(newColl) {
		t.Fatal("during the overlap the cache collector is not the old service's")
	}

	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if nu.rpt.stop == nil || old.rpt.stop != nil {
		t.Fatal("after the old service stopped, the new one does not run the sender")
	}
	if registered(oldColl) || !registered(newColl) {
		t.Fatal("after the old service stopped, the cache collector is not the new service's")
	}
	if err := nu.Close(); err != nil {
		t.Fatal(err)
	}
	if registered(newColl) || cacheCollector("dns:overlap", 0) != nil {
		t.Fatal("the cache collector outlived its service")
	}
	sendersMu.Lock()
	left := len(senders[nu.rpt.path])
	sendersMu.Unlock()
	if left != 0 {
		t.Fatalf("%d senders left for a store nobody uses", left)
	}
}

// TestNewFailsCleanly: a setting that only New can check (a resolver
// address) is an error, not a panic, and leaves nothing registered.
func TestNewFailsCleanly(t *testing.T) {
	s := DefaultSettings()
	s.Resolvers = []string{"not:an:address:53"}
	if _, err := New(s, Deps{Log: newTestLog(), NoRun: true, Instance: "bad-resolver"}); err == nil {
		t.Fatal("New accepted an invalid resolver address")
	}
	if cacheCollector("dns:bad-resolver", 0) != nil {
		t.Fatal("a failed New left its cache collector registered")
	}
}
