package rotation

import "time"

// SetRenewEvery sets how often r's runs renew their lease, for tests that
// must see renewals without waiting Lease/3.
func SetRenewEvery(r *Rotator, d time.Duration) { r.renewEvery = d }
