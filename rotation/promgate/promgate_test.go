package promgate_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/rotation/promgate"
)

const vector = `{"status":"success","data":{"resultType":"vector","result":[
 {"metric":{"__name__":"keywarden_key_info","fingerprint":"sk-ant-api03-…sha256:1f2e3d4c","instance":"10.0.0.7:9090","job":"sidecar","key":"prod","pod":"web-7"},"value":[1700000000.123,"1"]},
 {"metric":{"__name__":"keywarden_key_info","instance":"10.0.0.8:9090","pod":"web-8"},"value":[1700000000.123,"0"]}]}}`

// partial is what Thanos, Cortex and Mimir answer when part of the data
// was unreachable: a success, an empty vector, and a warning.
const partial = `{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["partial response: store 10.0.0.9:10901 unavailable: rpc error: code = Unavailable"]}`

func TestParseVector(t *testing.T) {
	tests := []struct {
		name, body string
		want       int
		wantErr    string
	}{
		{"one holder, a zero sample left out", vector, 1, ""},
		{"empty", `{"status":"success","data":{"resultType":"vector","result":[]}}`, 0, ""},
		{"error answer", `{"status":"error","errorType":"bad_data","error":"parse error at char 5"}`, 0, "prometheus error bad_data: parse error at char 5"},
		{"matrix", `{"status":"success","data":{"resultType":"matrix","result":[]}}`, 0, `result type "matrix", want vector`},
		{"not JSON", `<html>502 Bad Gateway</html>`, 0, "malformed answer"},
		{"bad value", `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}`, 0, `value "x" is not a number`},
		{"short value", `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1]}]}}`, 0, "value has 1 elements"},
		{"no status", `{}`, 0, `status ""`},
		{"partial response", partial, 0, `the answer may be incomplete: warning "partial response: store 10.0.0.9:10901 unavailable`},
		{"holders and a warning", strings.Replace(vector, `"data"`, `"warnings":["store b down"],"data"`, 1), 0, `warning "store b down"`},
		{"two warnings", `{"status":"success","warnings":["a","b"],"data":{"resultType":"vector","result":[]}}`, 0, `warning "a" (and 1 more)`},
		{"empty warnings", `{"status":"success","warnings":[],"data":{"resultType":"vector","result":[]}}`, 0, ""},
		{"null warnings", `{"status":"success","warnings":null,"data":{"resultType":"vector","result":[]}}`, 0, ""},
		{"warnings not strings", `{"status":"success","warnings":[{"w":1}],"data":{"resultType":"vector","result":[]}}`, 0, "malformed answer"},
		{"infos are not warnings", strings.Replace(vector, `"data"`, `"infos":["PromQL info: metric might not be a counter"],"data"`, 1), 1, ""},
		{"error with warnings", `{"status":"error","errorType":"execution","error":"store down","warnings":["w"]}`, 0, "prometheus error execution: store down"},
		{"null result", `{"status":"success","data":{"resultType":"vector","result":null}}`, 0, "malformed result: not a list"},
		{"no result", `{"status":"success","data":{"resultType":"vector"}}`, 0, "malformed result"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := promgate.ParseVector([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != tc.want {
				t.Fatalf("got %v, %v; want %d series", got, err, tc.want)
			}
		})
	}
}

// A warning reaches the error message clipped and printable: no control
// character, escape sequence or invalid UTF-8 from the answer.
func TestParseVectorWarningPrintable(t *testing.T) {
	// An escape sequence, a newline, a bidi override and a byte that is
	// not UTF-8, then more than the 300 bytes kept.
	body := `{"status":"success","warnings":["\u001b[31mstore\nb\u202edown` + "\xff " + strings.Repeat("é", 400) + `"],"data":{"resultType":"vector","result":[]}}`
	_, err := promgate.ParseVector([]byte(body))
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if !strings.Contains(msg, "warning \"\ufffd[31mstore\ufffdb\ufffddown\ufffd éé") || !strings.HasSuffix(msg, "é…\"") || len(msg) > 400 {
		t.Fatalf("message %q", msg)
	}
	if !printable(msg) {
		t.Fatalf("not printable: %q", msg)
	}
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// TestHoldersPartialResponse: a Thanos-like server that could not reach a
// store answers success, no series and a warning. Holders must not read
// that as "nobody holds the key"; and it asks Thanos not to answer
// partially at all (partial_response=false).
func TestHoldersPartialResponse(t *testing.T) {
	var got url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.Query()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(partial))
	}))
	defer srv.Close()
	c, err := promgate.New(promgate.Options{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := c.Holders(context.Background(), "prod", "sk-ant-api03-…sha256:1f2e3d4c")
	if err == nil || hs != nil {
		t.Fatalf("Holders = %v, %v; want an error (a partial answer is no clear check)", hs, err)
	}
	if !strings.Contains(err.Error(), `may be incomplete: warning "partial response: store 10.0.0.9:10901 unavailable`) {
		t.Fatalf("error %q does not name the warning", err)
	}
	if got.Get("partial_response") != "false" || got.Get("query") != c.Query("prod", "sk-ant-api03-…sha256:1f2e3d4c") {
		t.Fatalf("query parameters %v, want partial_response=false and the query", got)
	}
}

func FuzzParseVector(f *testing.F) {
	f.Add([]byte(vector))
	f.Add([]byte(partial))
	f.Add([]byte(`{"status":"success","warnings":[],"infos":["i"],"data":{"resultType":"vector","result":[]}}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":[]}}`))
	f.Add([]byte(`{"status":"error","errorType":"timeout","error":"query timed out"}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":null,"value":[1,"NaN"]}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := promgate.ParseVector(body)
		if err != nil {
			if got != nil {
				t.Fatal("series with an error")
			}
			if !printable(err.Error()) {
				t.Fatalf("error not printable: %q", err)
			}
			return
		}
		// Only a complete success answers: status success, no warnings.
		var env struct {
			Status   string   `json:"status"`
			Warnings []string `json:"warnings"`
		}
		if json.Unmarshal(body, &env) != nil || env.Status != "success" || len(env.Warnings) > 0 {
			t.Fatalf("accepted %+v", env)
		}
		for _, m := range got {
			if m == nil {
				t.Fatal("a nil label set")
			}
		}
		again, err := promgate.ParseVector(body)
		if err != nil || len(again) != len(got) {
			t.Fatal("not deterministic")
		}
	})
}

func TestQuery(t *testing.T) {
	c, err := promgate.New(promgate.Options{URL: "http://prom:9090", Selector: map[string]string{"namespace": `pr"od`, "key": "anthropic-prod"}})
	if err != nil {
		t.Fatal(err)
	}
	got := c.Query("prod", "sk-ant-api03-…sha256:1f2e3d4c")
	want := `keywarden_key_info{fingerprint="sk-ant-api03-…sha256:1f2e3d4c",key="anthropic-prod",namespace="pr\"od"}`
	if got != want {
		t.Fatalf("query\n %s\nwant\n %s", got, want)
	}
}

// TestURLQueryNotShown: a token in the Prometheus URL's query (which no
// query sends: the gate's own replaces it) is shown nowhere: not by
// Describe (status, messages, events), not in an error.
func TestURLQueryNotShown(t *testing.T) {
	key := string(providertest.FakeKey())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()
	c, err := promgate.New(promgate.Options{URL: srv.URL + "/prom/?access_token=" + key + "#" + key})
	if err != nil {
		t.Fatal(err)
	}
	shown := c.Describe()
	if _, err := c.Holders(context.Background(), "prod", "sha256:1f2e3d4c"); err != nil {
		shown += " " + err.Error()
	}
	if !strings.HasPrefix(shown, "prometheus "+srv.URL+"/prom ") || !strings.Contains(shown, "HTTP 502") || strings.Contains(shown, key[13:]) {
		t.Fatalf("want the URL without query, and the error; got %d bytes, the key in them: %v", len(shown), strings.Contains(shown, key[13:]))
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		o    promgate.Options
		want string
	}{
		{promgate.Options{}, "no Prometheus URL"},
		{promgate.Options{URL: "prom:9090"}, "not an http(s) URL"},
		{promgate.Options{URL: "http://u:p@prom:9090"}, "must not carry credentials"},
		{promgate.Options{URL: "http://prom", BearerTokenFile: "/t", Username: "u", PasswordFile: "/p"}, "not both"},
		{promgate.Options{URL: "http://prom", Username: "u"}, "both a username and a password file"},
		{promgate.Options{URL: "http://prom", Selector: map[string]string{"bad-label": "x"}}, "not a label name"},
		{promgate.Options{URL: "http://prom", Selector: map[string]string{"fingerprint": "x"}}, "set by the gate"},
	} {
		if _, err := promgate.New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
}

// The credentials go in headers, read from their files at each query, and
// never appear in an error.
func TestAuth(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(tok, []byte("tok-SECRET-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte("pw-SECRET-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	var auth string
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		if r.URL.Path != "/prom/api/v1/query" || !strings.HasPrefix(r.URL.Query().Get("query"), "keywarden_key_info{") {
			t.Errorf("request %s", r.URL)
		}
		w.WriteHeader(status)
		if status == http.StatusOK {
			w.Write([]byte(vector))
		} else {
			w.Write([]byte(`{"status":"error","errorType":"unauthorized","error":"bad token"}`))
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	c, err := promgate.New(promgate.Options{URL: srv.URL + "/prom/", BearerTokenFile: tok})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := c.Holders(ctx, "prod", "fp")
	if err != nil || len(hs) != 1 || hs[0]["pod"] != "web-7" || auth != "Bearer tok-SECRET-1" {
		t.Fatalf("bearer: %v, %v, auth %q", hs, err, auth)
	}
	// The token file changes: the next query uses the new one.
	if err := os.WriteFile(tok, []byte("tok-SECRET-3"), 0o600); err != nil {
		t.Fatal(err)
	}
	status = http.StatusUnauthorized
	_, err = c.Holders(ctx, "prod", "fp")
	if err == nil || auth != "Bearer tok-SECRET-3" || strings.Contains(err.Error(), "SECRET") || !strings.Contains(err.Error(), "unauthorized") {
		t.Fatalf("401: %v, auth %q", err, auth)
	}
	status = http.StatusOK
	c, err = promgate.New(promgate.Options{URL: srv.URL + "/prom", Username: "gate", PasswordFile: pw})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Holders(ctx, "prod", "fp"); err != nil || !strings.HasPrefix(auth, "Basic ") {
		t.Fatalf("basic: %v, auth %q", err, auth)
	}
	os.Remove(pw)
	if _, err := c.Holders(ctx, "prod", "fp"); err == nil || !strings.Contains(err.Error(), "read the credential file") {
		t.Fatalf("missing password file: %v", err)
	}
}
