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

// BenchmarkRefreshIfCurrentStorm is the proxy's path after a rotation: 10,000
// requests that saw the same key rejected ask for a refresh at once, with
// the store holding a new key ("changed") or still the rejected one
// ("unchanged", a key revoked before its replacement was stored). It reports
// the store reads each storm costs: one, by the order of reads and requests.
func BenchmarkRefreshIfCurrentStorm(b *testing.B) {
	for _, changed := range []bool{true, false} {
		name := "unchanged"
		if changed {
			name = "changed"
		}
		b.Run(name, func(b *testing.B) {
			st := store(b)
			d := providertest.NewFaulty(st)
			src := newSource(b, d, providers.Options{Refresh: -1})
			d.Delay(time.Millisecond)
			var reads int64
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				if changed {
					rotate(b, st, []string{keyB, keyA}[i%2])
				}
				start := d.Reads()
				b.StartTimer()
				seen, seq := src.Taken()
				var wg sync.WaitGroup
				for i := 0; i < 10000; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, _ = src.RefreshIfCurrent(context.Background(), seen, seq)
					}()
				}
				wg.Wait()
				reads += d.Reads() - start
			}
			b.ReportMetric(float64(reads)/float64(b.N), "store-reads/10k-refreshes")
		})
	}
}
