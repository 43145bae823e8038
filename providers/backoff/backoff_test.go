package backoff_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers/backoff"
)

func TestBase(t *testing.T) {
	p := backoff.Policy{Min: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for n, w := range want {
		if got := p.Base(n); got != w*time.Millisecond {
			t.Errorf("Base(%d) = %v, want %v", n, got, w*time.Millisecond)
		}
	}
	if got := p.Base(1 << 20); got != time.Second {
		t.Errorf("Base(huge) = %v, want the cap", got)
	}
	if got := (backoff.Policy{}).Delay(3); got != 0 {
		t.Errorf("zero policy waits %v", got)
	}
	if got := (backoff.Policy{Min: time.Second, Max: time.Millisecond}).Base(4); got != time.Second {
		t.Errorf("Max below Min: %v, want Min", got)
	}
}

func TestDelayJitterBounds(t *testing.T) {
	p := backoff.Policy{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	for n := 0; n < 6; n++ {
		base := p.Base(n)
		seen := map[time.Duration]bool{}
		for i := 0; i < 500; i++ {
			d := p.Delay(n)
			if d < base/2 || d > base {
				t.Fatalf("Delay(%d) = %v, outside [%v, %v]", n, d, base/2, base)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("Delay(%d): only %d distinct values in 500 draws: no jitter", n, len(seen))
		}
	}
	p.NoJitter = true
	if got := p.Delay(2); got != 40*time.Millisecond {
		t.Fatalf("NoJitter Delay(2) = %v", got)
	}
}

func TestAfterHonoursServer(t *testing.T) {
	p := backoff.Policy{Min: time.Millisecond, Max: 5 * time.Millisecond, NoJitter: true}
	if got := p.After(0, 2*time.Second); got != 2*time.Second {
		t.Fatalf("After with retry-after 2s = %v", got)
	}
	if got := p.After(10, 0); got != 5*time.Millisecond {
		t.Fatalf("After without retry-after = %v", got)
	}
}

func TestSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := backoff.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on a cancelled context = %v", err)
	}
	if err := backoff.Sleep(context.Background(), 0); err != nil {
		t.Fatalf("Sleep(0) = %v", err)
	}
	if err := backoff.Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("Sleep(1ms) = %v", err)
	}
}
