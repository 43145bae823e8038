package providertest

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keywarden/keywarden/providers/driver"
)

// Faulty wraps a real driver, counts its reads, and injects failures and
// latency into them, for tests of what sits above a driver (Source, proxy,
// rotator) during store outages.
type Faulty struct {
	driver.Reader

	reads atomic.Int64

	mu    sync.Mutex
	err   error         // returned by Read while set
	delay time.Duration // added to every Read
}

var _ driver.Reader = (*Faulty)(nil)

// NewFaulty wraps r.
func NewFaulty(r driver.Reader) *Faulty { return &Faulty{Reader: r} }

// Fail makes every Read fail with err until Fail(nil).
func (f *Faulty) Fail(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

// Delay adds d to every Read (honouring ctx).
func (f *Faulty) Delay(d time.Duration) {
	f.mu.Lock()
	f.delay = d
	f.mu.Unlock()
}

// Reads returns the number of Read calls of CURRENT so far: one per refresh.
func (f *Faulty) Reads() int64 { return f.reads.Load() }

// Read counts the call, waits the injected delay, and fails with the
// injected error or reads through.
func (f *Faulty) Read(ctx context.Context, name string, stage driver.Stage) (*driver.Version, error) {
	if stage == driver.Current {
		f.reads.Add(1)
	}
	f.mu.Lock()
	err, delay := f.err, f.delay
	f.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	if err != nil {
		return nil, err
	}
	return f.Reader.Read(ctx, name, stage)
}
