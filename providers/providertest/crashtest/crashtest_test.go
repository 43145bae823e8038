package crashtest_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/keywarden/keywarden/providers/providertest/crashtest"
)

// TestCounter runs itself as a child: the child makes three HTTP calls
// (POST, GET, POST) through the counting transport. Counting, the child
// reports 3 calls, two writes; armed with k = 2, it exits after the second
// answer and never makes the third call.
func TestCounter(t *testing.T) {
	if crashtest.IsChild() {
		child(t)
		return
	}
	var calls atomic.Int64 // the child's set-up call (before Arm) is one
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	ctx := context.Background()
	env := func(k int) []string {
		return []string{crashtest.EnvCase + "=counter", fmt.Sprintf("%s=%d", crashtest.EnvAt, k), crashtest.EnvPrefix + "URL=" + srv.URL}
	}
	res, err := crashtest.Spawn(ctx, "TestCounter", env(0))
	if err != nil {
		t.Fatal(err)
	}
	if res.Crashed || res.Calls != 3 || !slices.Equal(res.Writes, []bool{true, false, true}) || calls.Load() != 1+3 {
		t.Fatalf("counting child: %+v, server saw %d calls; want 3 calls counted: write, read, write", res, calls.Load())
	}
	calls.Store(0)
	res, err = crashtest.Spawn(ctx, "TestCounter", env(2))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Crashed || calls.Load() != 1+2 {
		t.Fatalf("child armed at 2: crashed %v, server saw %d calls; want a crash after 2 counted", res.Crashed, calls.Load())
	}
}

func child(t *testing.T) {
	c, err := crashtest.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: c.Transport(nil)}
	url := os.Getenv(crashtest.EnvPrefix + "URL")
	hc.Get(url) // before Arm: not counted
	c.Arm()
	for _, m := range []string{http.MethodPost, http.MethodGet, http.MethodPost} {
		req, _ := http.NewRequest(m, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	c.Report()
	os.Exit(0)
}
