package anthropictest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
)

const streamBody = `{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`

type sseEvent struct {
	name string
	data map[string]any
}

// sseReader reads one SSE event at a time from a live response body.
type sseReader struct{ r *bufio.Reader }

func (s sseReader) next() (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && ev.name != "":
			return ev, nil
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data); err != nil {
				return ev, err
			}
		}
	}
}

func openStream(t *testing.T, ctx context.Context, s *anthropictest.Server, key string) (*http.Response, sseReader) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", s.URL()+"/v1/messages", strings.NewReader(streamBody))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers(key) {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("content-type") != "text/event-stream; charset=utf-8" || resp.Header.Get("request-id") == "" {
		t.Fatalf("stream: %d %q", resp.StatusCode, resp.Header.Get("content-type"))
	}
	return resp, sseReader{bufio.NewReader(resp.Body)}
}

// TestStreamOrder reads a stream event by event and checks the documented
// order, that every data's type names its event, and the text.
func TestStreamOrder(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.WithStream(4, time.Millisecond))
	k := s.AddKey("", anthropictest.StatusActive)
	_, rd := openStream(t, context.Background(), s, k.Value)
	var names []string
	text := ""
	for {
		ev, err := rd.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, ev.name)
		if ev.data["type"] != ev.name {
			t.Fatalf("event %s carries data of type %v", ev.name, ev.data["type"])
		}
		switch ev.name {
		case "message_start":
			m := ev.data["message"].(map[string]any)
			if !strings.HasPrefix(m["id"].(string), "msg_01") || m["model"] != "claude-sonnet-4-5" || m["stop_reason"] != nil {
				t.Fatalf("message_start %v", m)
			}
		case "content_block_delta":
			text += ev.data["delta"].(map[string]any)["text"].(string)
		case "message_delta":
			if ev.data["delta"].(map[string]any)["stop_reason"] != "end_turn" {
				t.Fatalf("message_delta %v", ev.data)
			}
		}
	}
	want := "message_start content_block_start ping content_block_delta content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("events\n %s\nwant\n %s", got, want)
	}
	if text != "tok0 tok1 tok2 tok3 " {
		t.Fatalf("text %q", text)
	}
	// SetStream changes later streams.
	s.SetStream(1, 0)
	_, rd = openStream(t, context.Background(), s, k.Value)
	n := 0
	for {
		ev, err := rd.next()
		if err != nil {
			break
		}
		if ev.name == "content_block_delta" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d deltas after SetStream(1, 0)", n)
	}
}

// TestStreamFlush: with an hour between events, the headers and
// message_start still arrive: every event is flushed as written, not
// buffered to the end (time to first byte does not wait for the rest). The
// client then hangs up and the handler returns.
func TestStreamFlush(t *testing.T) {
	s := anthropictest.Start(t, anthropictest.WithStream(3, time.Hour))
	k := s.AddKey("", anthropictest.StatusActive)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", s.URL()+"/v1/messages", strings.NewReader(streamBody))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers(k.Value) {
		req.Header.Set(k, v)
	}
	type result struct {
		ev  sseEvent
		err error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		ev, err := sseReader{bufio.NewReader(resp.Body)}.next()
		got <- result{ev, err}
	}()
	select {
	case r := <-got:
		if r.err != nil || r.ev.name != "message_start" {
			t.Fatalf("first event %q: %v", r.ev.name, r.err)
		}
	case <-time.After(30 * time.Second): // a deadlock guard, not a timing claim
		t.Fatal("message_start was not flushed: nothing arrived while the server waits for the next event")
	}
	cancel()
	// The handler saw the hang-up and recorded the stream (Close would
	// block on a handler still sleeping).
	s.Close()
	if n := s.Stats().ByStatus[200]; n != 1 {
		t.Fatalf("recorded 200s: %d", n)
	}
}

// TestStreamErrorEvent: an injected error arrives as `event: error` after
// the 200 and the given number of events, and ends the stream.
func TestStreamErrorEvent(t *testing.T) {
	s := anthropictest.Start(t)
	k := s.AddKey("", anthropictest.StatusActive)
	s.FailStreams(1, 4, 529)
	_, rd := openStream(t, context.Background(), s, k.Value)
	var names []string
	var last sseEvent
	for {
		ev, err := rd.next()
		if err != nil {
			break
		}
		names = append(names, ev.name)
		last = ev
	}
	if got := strings.Join(names, " "); got != "message_start content_block_start ping content_block_delta error" {
		t.Fatalf("events %s", got)
	}
	if e := last.data["error"].(map[string]any); e["type"] != "overloaded_error" || e["message"] != "Overloaded" {
		t.Fatalf("error event %v", last.data)
	}
	st := s.Stats()
	if st.StreamErrors != 1 || st.Keys[k.ID].Failed != 1 || st.Keys[k.ID].Served != 0 || st.Errors() != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The next stream is whole again.
	_, rd = openStream(t, context.Background(), s, k.Value)
	for {
		ev, err := rd.next()
		if err != nil {
			t.Fatal("the stream after the injected error did not end with message_stop")
		}
		if ev.name == "message_stop" {
			break
		}
	}
}
