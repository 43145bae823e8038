package proxy

import (
	"crypto/x509"
	"time"
)

// SetAccounting turns the usage accounting of p on or off, so that one
// benchmark run measures the proxy with and without it.
func SetAccounting(p *Proxy, on bool) { p.noAccount = !on }

// SetClock replaces the clock of p's budgets.
func SetClock(p *Proxy, now func() time.Time) { p.now = now }

// TrustUpstream makes p's https upstreams trust roots instead of the
// system's.
func TrustUpstream(p *Proxy, roots *x509.CertPool) {
	for _, hp := range p.pools {
		if hp.tls != nil {
			hp.tls.RootCAs = roots
		}
	}
}

// AgeIdleConnections makes p's idle upstream connections look idle for d
// longer than they have been.
func AgeIdleConnections(p *Proxy, d time.Duration) {
	for _, hp := range p.pools {
		hp.mu.Lock()
		for _, c := range hp.idle {
			c.idleAt = c.idleAt.Add(-d)
		}
		hp.mu.Unlock()
	}
}

// MaxHandshakes is the most upstream TLS handshakes under way at once.
const MaxHandshakes = maxHandshakes
