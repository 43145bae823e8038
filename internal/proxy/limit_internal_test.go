package proxy

import (
	"fmt"
	"testing"
)

func TestLimiterEvictsIdleClients(t *testing.T) {
	l := newLimiter(10, 10, 5)
	busy, why, _ := l.acquire("10.0.0.1:1000")
	if why != admitted {
		t.Fatal("first request refused")
	}
	for i := 0; i < maxClients+10; i++ {
		c, why, _ := l.acquire(fmt.Sprintf("10.1.%d.%d:1", i/256, i%256))
		if why != admitted {
			t.Fatalf("client %d refused", i)
		}
		l.release(c)
	}
	l.mu.RLock()
	n := len(l.clients)
	_, kept := l.clients["10.0.0.1"]
	l.mu.RUnlock()
	if n > maxClients {
		t.Fatalf("%d clients kept, want at most %d", n, maxClients)
	}
	if !kept {
		t.Fatal("a client with a request under way was evicted")
	}
	l.release(busy)
}

func TestClientID(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1:5000": "127.0.0.1", "[::1]:80": "::1", "@": "@", "": ""} {
		if got := clientID(in); got != want {
			t.Errorf("clientID(%q) = %q, want %q", in, got, want)
		}
	}
	if newLimiter(0, 0, 0) != nil {
		t.Fatal("a limiter with both limits off")
	}
}

func TestCleanPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/v1/messages": true, "/v1/models/": true, "/": true,
		"": false, "v1": false, "//v1": false, "/v1//x": false, "/v1/./x": false, "/v1/..": false, "/v1\\x": false, "/v1/.": false,
	} {
		if got := cleanPath(p); got != want {
			t.Errorf("cleanPath(%q) = %v, want %v", p, got, want)
		}
	}
}
