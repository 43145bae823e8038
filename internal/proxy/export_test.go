package proxy

import "time"

// SetAccounting turns the usage accounting of p on or off, so that one
// benchmark run measures the proxy with and without it.
func SetAccounting(p *Proxy, on bool) { p.noAccount = !on }

// SetClock replaces the clock of p's budgets.
func SetClock(p *Proxy, now func() time.Time) { p.now = now }
