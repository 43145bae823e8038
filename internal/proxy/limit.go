package proxy

import (
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// maxClients bounds the limiter table; past it, idle clients are dropped.
const maxClients = 4096

// limiter holds the rate and concurrency limits of each client. A client is
// a remote IP address; every unix socket client is one client.
type limiter struct {
	rps         rate.Limit
	burst       int
	concurrency int64

	mu      sync.RWMutex
	clients map[string]*client
}

type client struct {
	rate     *rate.Limiter // nil when the rate limit is off
	inflight atomic.Int64
	lastSeen atomic.Int64 // unix nanos
}

// newLimiter returns nil when both limits are off.
func newLimiter(rps float64, burst, concurrency int) *limiter {
	if rps <= 0 && concurrency <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(2*rps))
	}
	return &limiter{rps: rate.Limit(rps), burst: burst, concurrency: int64(concurrency), clients: map[string]*client{}}
}

type refusal uint8

const (
	admitted refusal = iota
	overRate
	overConcurrency
)

// acquire admits a request of the client at remoteAddr, or says which limit
// refused it and how many seconds to wait. Call release after an admitted
// request is done.
func (l *limiter) acquire(remoteAddr string) (c *client, why refusal, retryAfter int) {
	c = l.client(clientID(remoteAddr))
	if l.concurrency > 0 && c.inflight.Add(1) > l.concurrency {
		c.inflight.Add(-1)
		return nil, overConcurrency, 1
	}
	if c.rate != nil && !c.rate.Allow() {
		if l.concurrency > 0 {
			c.inflight.Add(-1)
		}
		return nil, overRate, retrySeconds(c.rate)
	}
	return c, admitted, 0
}

func (l *limiter) release(c *client) {
	if l.concurrency > 0 {
		c.inflight.Add(-1)
	}
}

func retrySeconds(r *rate.Limiter) int {
	res := r.Reserve()
	d := res.Delay()
	res.Cancel()
	if d == rate.InfDuration {
		return 60
	}
	return max(1, int(math.Ceil(d.Seconds())))
}

func (l *limiter) client(id string) *client {
	now := time.Now().UnixNano()
	l.mu.RLock()
	c, ok := l.clients[id]
	l.mu.RUnlock()
	if ok {
		c.lastSeen.Store(now)
		return c
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.clients[id]; ok {
		return c
	}
	if len(l.clients) >= maxClients {
		l.evictIdle(now)
	}
	c = &client{}
	if l.rps > 0 {
		c.rate = rate.NewLimiter(l.rps, l.burst)
	}
	c.lastSeen.Store(now)
	l.clients[id] = c
	return c
}

// evictIdle drops clients with nothing under way, oldest first, until the
// table has room. Called with mu held.
func (l *limiter) evictIdle(now int64) {
	for age := time.Hour; len(l.clients) >= maxClients && age >= 0; age /= 4 {
		for id, c := range l.clients {
			if c.inflight.Load() == 0 && now-c.lastSeen.Load() >= int64(age) {
				delete(l.clients, id)
			}
		}
		if age == 0 {
			break
		}
	}
}

// clientID is the host part of a remote address ("" for unix sockets).
func clientID(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}
