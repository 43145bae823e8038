package providers_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
)

// exampleAPI stands in for the Claude API in the examples: it answers
// Messages requests that carry the stored key and refuses any other key.
func exampleAPI(key string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("X-Api-Key") != key {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`)
			return
		}
		io.WriteString(w, `{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5",
			"content":[{"type":"text","text":"Hello from Claude"}],"stop_reason":"end_turn",
			"usage":{"input_tokens":9,"output_tokens":4}}`)
	}))
}

// exampleSource opens a Source on a file store holding key, as a service
// would open one on its secret manager.
func exampleSource(key string) (*providers.Source, func()) {
	dir, _ := os.MkdirTemp("", "keywarden-example")
	st := file.New(filepath.Join(dir, "keys.json"))
	if err := st.PutByHand(context.Background(), "prod", []byte(key)); err != nil {
		log.Fatal(err)
	}
	src, err := providers.Open(context.Background(), "file://"+st.Path()+"?name=prod", nil)
	if err != nil {
		log.Fatal(err)
	}
	return src, func() { src.Close(); os.RemoveAll(dir) }
}

// The official Go SDK with keywarden's client: the SDK's own key option is
// a placeholder that never reaches the API; every request carries the
// Source's CURRENT key, and a 401 after a rotation is retried once with the
// new key.
func ExampleNewClient() {
	const key = "sk-ant-api03-example-0123456789abcdefghijklmnopqrstuvwxyz"
	api := exampleAPI(key)
	defer api.Close()
	src, done := exampleSource(key)
	defer done()

	client := anthropic.NewClient(
		option.WithHTTPClient(providers.NewClient(src)),
		option.WithAPIKey("placeholder-set-by-keywarden"),
		option.WithBaseURL(api.URL), // leave out to reach api.anthropic.com
	)
	msg, err := client.Messages.New(context.Background(), anthropic.MessageNewParams{
		Model:     anthropic.ModelClaudeSonnet4_5,
		MaxTokens: 64,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello"))},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg.Content[0].Text)
	// Output: Hello from Claude
}

// A Transport around a base transport of your own, for any HTTP client:
// here with bearer auth and a pinned anthropic-version.
func ExampleTransport() {
	const key = "sk-ant-api03-example-0123456789abcdefghijklmnopqrstuvwxyz"
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("bearer ok:", r.Header.Get("Authorization") == "Bearer "+key)
		fmt.Println("anthropic-version:", r.Header.Get("Anthropic-Version"))
	}))
	defer api.Close()
	src, done := exampleSource(key)
	defer done()

	client := &http.Client{Transport: &providers.Transport{
		Source:        src,
		Base:          http.DefaultTransport,
		Auth:          providers.AuthBearer,
		Version:       "2023-06-01",
		VersionPolicy: providers.VersionEnforce,
		OnEvent:       func(ev providers.Event) { log.Printf("keywarden: %s %v", ev.Kind, ev.Key) },
	}}
	req, _ := http.NewRequest("GET", api.URL+"/v1/models", nil)
	req.Header.Set("Anthropic-Version", "2020-01-01") // replaced: the policy enforces
	resp, err := client.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	// Output:
	// bearer ok: true
	// anthropic-version: 2023-06-01
}

// The key itself, for code that puts it somewhere the Transport does not
// reach. Key is one atomic load; its printed forms are a fingerprint.
func ExampleSource_Key_library() {
	const key = "sk-ant-api03-example-0123456789abcdefghijklmnopqrstuvwxyz"
	src, done := exampleSource(key)
	defer done()

	k := src.Key()
	fmt.Println(k)                   // safe to print or log
	fmt.Println(len(k.Reveal()) > 0) // Reveal only where the key leaves
	fmt.Println(src.Current().VersionID)
	// Output:
	// sk-ant-api03-…sha256:6e7f5bc3
	// true
	// 1
}
