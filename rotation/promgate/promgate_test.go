package promgate_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/rotation/promgate"
)

const vector = `{"status":"success","data":{"resultType":"vector","result":[
 {"metric":{"__name__":"keywarden_key_info","fingerprint":"sk-ant-api03-…sha256:1f2e3d4c","instance":"10.0.0.7:9090","job":"sidecar","key":"prod","pod":"web-7"},"value":[1700000000.123,"1"]},
 {"metric":{"__name__":"keywarden_key_info","instance":"10.0.0.8:9090","pod":"web-8"},"value":[1700000000.123,"0"]}]}}`

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

func FuzzParseVector(f *testing.F) {
	f.Add([]byte(vector))
	f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":[]}}`))
	f.Add([]byte(`{"status":"error","errorType":"timeout","error":"query timed out"}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":null,"value":[1,"NaN"]}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := promgate.ParseVector(body)
		if err != nil {
			if got != nil {
				t.Fatal("series with an error")
			}
			return
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
