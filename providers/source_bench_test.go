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
	for b.Loop() {
		sink = src.Key()
	}
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

// BenchmarkRefreshIfCurrentStorm is the proxy's path: 10,000 requests that
// saw the same rejected key ask for a refresh.
func BenchmarkRefreshIfCurrentStorm(b *testing.B) {
	d := providertest.NewFaulty(store(b))
	src := newSource(b, d, providers.Options{Refresh: -1})
	d.Delay(time.Millisecond)
	start := d.Reads()
	for b.Loop() {
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
	}
	b.ReportMetric(float64(d.Reads()-start)/float64(b.N), "store-reads/10k-refreshes")
}
