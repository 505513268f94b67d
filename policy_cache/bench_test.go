package policycache

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// tlsaLike is a representative cached value: a digest and a few fields,
// like a parsed TLSA record.
type tlsaLike struct {
	data                   []byte
	usage, selector, mtype uint8
	secure                 bool
	port                   uint16
}

func benchKey(i int) string {
	return fmt.Sprintf("_25._tcp.mx%06d.example.org", i) // 28 bytes
}

func benchFetch(context.Context) (tlsaLike, time.Duration, error) {
	return tlsaLike{data: make([]byte, 32), usage: 3, selector: 1, mtype: 1, secure: true, port: 25}, time.Hour, nil
}

func BenchmarkGetHit(b *testing.B) {
	c := New[string, tlsaLike](Config{})
	ctx := context.Background()
	const keys = 1024
	names := make([]string, keys)
	for i := range names {
		names[i] = benchKey(i)
		if _, err := c.Get(ctx, names[i], benchFetch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Get(ctx, names[i%keys], benchFetch); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetHitParallel(b *testing.B) {
	c := New[string, tlsaLike](Config{})
	ctx := context.Background()
	const keys = 1024
	names := make([]string, keys)
	for i := range names {
		names[i] = benchKey(i)
		if _, err := c.Get(ctx, names[i], benchFetch); err != nil {
			b.Fatal(err)
		}
	}
	var seed atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(7919))
		for pb.Next() {
			i++
			if _, err := c.Get(ctx, names[i%keys], benchFetch); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetHitParallelOneKey is the worst case for contention: every
// goroutine reads the same key.
func BenchmarkGetHitParallelOneKey(b *testing.B) {
	c := New[string, tlsaLike](Config{})
	ctx := context.Background()
	key := benchKey(1)
	if _, err := c.Get(ctx, key, benchFetch); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Get(ctx, key, benchFetch); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetMiss measures a full miss: a fetch in its own goroutine and
// the insertion, with eviction once the cache is full.
func BenchmarkGetMiss(b *testing.B) {
	c := New[int, tlsaLike](Config{MaxEntries: 10_000})
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Get(ctx, i, benchFetch); err != nil {
			b.Fatal(err)
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemoryPerEntry fills a cache with 100,000 entries (28-byte
// string keys, values holding a 32-byte slice and a few fields) and
// reports the heap growth per entry, keys and values included.
func BenchmarkMemoryPerEntry(b *testing.B) {
	const n = 100_000
	var perEntry float64
	for i := 0; i < b.N; i++ {
		before := heapInUse()
		c := New[string, tlsaLike](Config{MaxEntries: n})
		for j := range n {
			v, _, _ := benchFetch(nil)
			c.Set(benchKey(j), v, time.Hour)
		}
		after := heapInUse()
		if c.Len() != n {
			b.Fatalf("Len = %d", c.Len())
		}
		perEntry = float64(after-before) / n
		runtime.KeepAlive(c)
	}
	b.ReportMetric(perEntry, "bytes/entry")
}

// BenchmarkMemoryPerEntryViaGet is the same, filling through Get so that
// the fetch path's retained allocations are counted too.
func BenchmarkMemoryPerEntryViaGet(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	var perEntry float64
	for i := 0; i < b.N; i++ {
		before := heapInUse()
		c := New[string, tlsaLike](Config{MaxEntries: n})
		for j := range n {
			if _, err := c.Get(ctx, benchKey(j), benchFetch); err != nil {
				b.Fatal(err)
			}
		}
		after := heapInUse()
		perEntry = float64(after-before) / n
		runtime.KeepAlive(c)
	}
	b.ReportMetric(perEntry, "bytes/entry")
}

func BenchmarkStorePutGet(b *testing.B) {
	s, err := OpenStore(b.TempDir(), StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	val := make([]byte, 512)
	exp := time.Now().Add(time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		key := benchKey(i % 64)
		if err := s.Put(key, val, exp); err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.Get(key); err != nil {
			b.Fatal(err)
		}
	}
}
