package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrDown is returned, at once, by operations attempted while the store is
// marked down after a failure (for Settings.RetryDown).
var ErrDown = errors.New("fleet: shared store down (recent failure); not tried")

// Client is the connection to the shared store, with the bounded
// timeouts of its Settings and a "down" mark: after a failed operation,
// operations fail at once with ErrDown for RetryDown, so that a Redis that
// is gone or slow costs the delivery path at most one bounded wait per
// RetryDown, not one per delivery. It is safe for concurrent use.
type Client struct {
	rdb       *redis.Client
	prefix    string
	m         *Metrics
	retryDown time.Duration
	budget    time.Duration // bound of one operation
	downUntil atomic.Int64  // UnixNano; 0: up
}

// Open validates s and builds a Client. It does not connect: Redis may be
// down when the server starts, and everything works without it (the
// client connects on first use and again after failures).
func Open(s Settings, m *Metrics) (*Client, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	rdb := redis.NewClient(&redis.Options{
		Addr: s.Addr, DB: s.DB, Username: s.Username, Password: s.Password, TLSConfig: s.TLS,
		DialTimeout: s.DialTimeout, ReadTimeout: s.ReadTimeout, WriteTimeout: s.WriteTimeout,
		PoolTimeout:           s.ReadTimeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1, // no hidden retries: one bounded attempt
		DisableIdentity:       true,
	})
	c := &Client{rdb: rdb, prefix: s.KeyPrefix, m: m, retryDown: s.RetryDown,
		budget: s.DialTimeout + s.ReadTimeout + s.WriteTimeout}
	if m != nil {
		m.Up.Set(1)
	}
	return c, nil
}

// Close closes the connections.
func (c *Client) Close() error { return c.rdb.Close() }

// Ping checks the server now, ignoring the down mark, and clears the mark
// when it answers.
func (c *Client) Ping(ctx context.Context) error {
	c.downUntil.Store(0)
	return c.do(ctx, OpPing, func(ctx context.Context) error { return c.rdb.Ping(ctx).Err() })
}

// Down reports whether the store is marked down now.
func (c *Client) Down() bool {
	u := c.downUntil.Load()
	return u != 0 && time.Now().UnixNano() < u
}

// do runs fn, bounded by the operation budget, unless the store is down.
// redis.Nil (no such key) is not a failure.
func (c *Client) do(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	if c.Down() {
		if c.m != nil {
			c.m.Errors.WithLabelValues("down").Inc()
		}
		return ErrDown
	}
	ctx, cancel := context.WithTimeout(ctx, c.budget)
	defer cancel()
	start := time.Now()
	err := fn(ctx)
	if c.m != nil {
		c.m.Latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		c.downUntil.Store(time.Now().Add(c.retryDown).UnixNano())
		if c.m != nil {
			c.m.Errors.WithLabelValues(op).Inc()
			c.m.Up.Set(0)
		}
		return fmt.Errorf("fleet: %s: %w", op, err)
	}
	if c.m != nil {
		c.m.Up.Set(1)
	}
	return err
}

// key builds a key under the prefix.
func (c *Client) key(parts ...string) string {
	k := c.prefix
	for i, p := range parts {
		if i > 0 {
			k += ":"
		}
		k += p
	}
	return k
}
