package providers_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/providertest"
)

var sink providers.Secret

// BenchmarkKey measures the hot-path read: one atomic load, no allocation.
func BenchmarkKey(b *testing.B) {
	src := newSource(b, providertest.NewFaulty(store(b)), providers.Options{Refresh: -1})
	b.ReportAllocs()
	var s providers.Secret
	for b.Loop() {
		s = src.Key()
	}
	sink = s
}

// BenchmarkKeyParallel reads the key from every P at once.
func BenchmarkKeyParallel(b *testing.B) {
	src := newSource(b, providertest.NewFaulty(store(b)), providers.Options{Refresh: -1})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var s providers.Secret
		for pb.Next() {
			s = src.Key()
		}
		_ = s
	})
}

// BenchmarkRefreshStorm fires 10,000 concurrent Refresh calls per iteration,
// as a storm of upstream 401s would, and reports the store reads they cost.
// The store read takes 1 ms, like a fast secret manager.
func BenchmarkRefreshStorm(b *testing.B) {
	d := providertest.NewFaulty(store(b))
	src := newSource(b, d, providers.Options{Refresh: -1})
	d.Delay(time.Millisecond)
	b.ReportAllocs()
	start := d.Reads()
	for b.Loop() {
		var wg sync.WaitGroup
		for i := 0; i < 10000; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = src.Refresh(context.Background())
			}()
		}
		wg.Wait()
	}
	b.ReportMetric(float64(d.Reads()-start)/float64(b.N), "store-reads/10k-refreshes")
}

// BenchmarkRefreshIfCurrentStorm is the proxy's path after a rotation: the
// store holds a new key, and 10,000 requests that saw the old key rejected
// ask for a refresh at once (MinForcedGap off, so only coalescing counts).
func BenchmarkRefreshIfCurrentStorm(b *testing.B) {
	st := store(b)
	d := providertest.NewFaulty(st)
	src := newSource(b, d, providers.Options{Refresh: -1})
	defer func(g time.Duration) { providers.MinForcedGap = g }(providers.MinForcedGap)
	providers.MinForcedGap = 0
	d.Delay(time.Millisecond)
	var reads int64
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		rotate(b, st, []string{keyA, keyB}[i%2])
		start := d.Reads()
		b.StartTimer()
		seen := src.Current()
		var wg sync.WaitGroup
		for i := 0; i < 10000; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = src.RefreshIfCurrent(context.Background(), seen)
			}()
		}
		wg.Wait()
		reads += d.Reads() - start
	}
	b.ReportMetric(float64(reads)/float64(b.N), "store-reads/10k-refreshes")
}
