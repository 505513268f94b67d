package fleet

import (
	"sync"
	"testing"
	"time"

	"github.com/maddy-dane/daneguard/internal/testbed/redisbed"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// client opens a Client on the test server with a short RetryDown, so
// that tests see the store come back quickly.
func client(t testing.TB, srv *redisbed.Server, m *Metrics) *Client {
	t.Helper()
	s, err := Parse(srv.URL(0))
	if err != nil {
		t.Fatal(err)
	}
	s.RetryDown = 50 * time.Millisecond
	c, err := Open(s, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
