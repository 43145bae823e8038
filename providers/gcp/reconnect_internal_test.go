package gcp

import (
	"context"
	"testing"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"

	"github.com/keywarden/keywarden/internal/gcpsmfake"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/stage"
)

// TestReconnectAfterOutage: after an outage long enough for gRPC's default
// backoff to wait seconds between reconnection attempts, the store comes
// back on the same address, and a client opened as a store URL opens it
// reads again within a few reads spaced 100 ms apart (the reconnection wait
// is capped at maxReconnectDelay), not after gRPC's default waits.
func TestReconnectAfterOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a 10 s outage")
	}
	t.Parallel()
	ctx := context.Background()
	srv := gcpsmfake.Start(t)
	c, err := secretmanager.NewClient(ctx, clientOptions(srv.Addr(), true)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	st := New(c, "kw-reconnect", Options{})
	if _, err := stage.Put(ctx, st, "s", providertest.FakeKey()); err != nil {
		t.Fatal(err)
	}
	read := func() error {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := st.Read(ctx, "s", driver.Current)
		return err
	}
	srv.Stop()
	// gRPC's default backoff (1 s, ×1.6, up to 2 min) waits about 4 s and
	// then 6.6 s between the attempts around the end of this outage.
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if err := read(); err == nil {
			t.Fatal("a read succeeded during the outage")
		}
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	const maxReads = 20 // 2 s and more: twice maxReconnectDelay, with jitter
	for n := 1; ; n++ {
		err := read()
		if err == nil {
			t.Logf("read again after %d reads", n)
			return
		}
		if n == maxReads {
			t.Fatalf("%d reads after the store came back still fail: %v", n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
