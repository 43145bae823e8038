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
	stuck atomic.Int64 // Read calls held by Hang right now

	mu    sync.Mutex
	err   error           // returned by Read while set
	delay time.Duration   // added to every Read
	hang  <-chan struct{} // while set, Read blocks until it is closed
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

// Hang makes every Read begun from now on block until until is closed,
// ignoring its context: a store call that never returns (a hung NFS or FUSE
// mount, a network call without a deadline). Hang(nil) lets new calls
// through again; calls already held stay held until until is closed.
func (f *Faulty) Hang(until <-chan struct{}) {
	f.mu.Lock()
	f.hang = until
	f.mu.Unlock()
}

// Stuck returns the number of Read calls that Hang holds right now.
func (f *Faulty) Stuck() int64 { return f.stuck.Load() }

// Reads returns the number of Read calls of CURRENT so far: one per refresh.
func (f *Faulty) Reads() int64 { return f.reads.Load() }

// Read counts the call, blocks while Hang holds it, waits the injected
// delay, and fails with the injected error or reads through.
func (f *Faulty) Read(ctx context.Context, name string, stage driver.Stage) (*driver.Version, error) {
	if stage == driver.Current {
		f.reads.Add(1)
	}
	f.mu.Lock()
	err, delay, hang := f.err, f.delay, f.hang
	f.mu.Unlock()
	if hang != nil {
		f.stuck.Add(1)
		<-hang // deliberately deaf to ctx
		f.stuck.Add(-1)
	}
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
