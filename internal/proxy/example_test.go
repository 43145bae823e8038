package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"

	"github.com/anthropics/anthropic-sdk-go"

	"github.com/keywarden/keywarden/internal/proxy"
	"github.com/keywarden/keywarden/internal/proxy/proxytest"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/file"
)

// An application using the official SDK changes no code: it is started
// with ANTHROPIC_BASE_URL pointing at the sidecar and a placeholder
// ANTHROPIC_API_KEY, which the sidecar replaces with the stored key.
func Example() {
	const key = "sk-ant-api03-example-0123456789abcdefghijklmnopqrstuvwxyz"
	// The Claude API (a stand-in that accepts only the stored key).
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("X-Api-Key") != key {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`)
			return
		}
		io.WriteString(w, `{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5",
			"content":[{"type":"text","text":"Hello through the sidecar"}],"stop_reason":"end_turn",
			"usage":{"input_tokens":9,"output_tokens":5}}`)
	}))
	defer api.Close()

	// The sidecar: a Source on the store, and the proxy in front of the API.
	dir, _ := os.MkdirTemp("", "keywarden-example")
	defer os.RemoveAll(dir)
	st := file.New(filepath.Join(dir, "keys.json"))
	if err := st.PutByHand(context.Background(), "prod", []byte(key)); err != nil {
		log.Fatal(err)
	}
	src, err := providers.New(context.Background(), st, "prod", providers.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	upstream, _ := url.Parse(api.URL)
	p, err := proxy.New(proxy.Options{Routes: []proxy.Route{
		{Prefix: "/", Key: "prod", Source: src, Upstream: upstream, Version: "2023-06-01"},
	}})
	if err != nil {
		log.Fatal(err)
	}
	sidecar := proxytest.NewServer(p) // keywarden sidecar listens on 127.0.0.1:8787
	defer sidecar.Close()
	defer p.CloseIdleConnections()

	// The application's environment.
	os.Setenv("ANTHROPIC_BASE_URL", sidecar.URL)
	os.Setenv("ANTHROPIC_API_KEY", "placeholder")
	defer os.Unsetenv("ANTHROPIC_BASE_URL")
	defer os.Unsetenv("ANTHROPIC_API_KEY")

	// The application, unchanged.
	client := anthropic.NewClient()
	msg, err := client.Messages.New(context.Background(), anthropic.MessageNewParams{
		Model:     anthropic.ModelClaudeSonnet4_5,
		MaxTokens: 64,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello"))},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg.Content[0].Text)
	// Output: Hello through the sidecar
}
