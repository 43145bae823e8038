package rotation

import (
	"context"
	"time"
)

// SetRenewEvery sets how often r's runs renew their lease, for tests that
// must see renewals without waiting Lease/3.
func SetRenewEvery(r *Rotator, d time.Duration) { r.renewEvery = d }

// NextWake exposes the daemon's choice of when a key's loop runs next.
func NextWake(ctx context.Context, r *Rotator, name string, minRetry time.Duration) (time.Time, string, error) {
	return r.nextWake(ctx, r.keys[name], minRetry)
}
