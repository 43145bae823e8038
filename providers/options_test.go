package providers_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
)

func TestResolveOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  string
		set  providers.Options
		want providers.Options // Field, Refresh, Jitter, MaxStale
		err  string
	}{
		{name: "defaults", url: "file:keys.json?name=prod",
			want: providers.Options{Field: "api_key", Refresh: 5 * time.Minute, Jitter: 30 * time.Second, MaxStale: time.Hour}},
		{name: "URL parameters", url: "file:keys.json?name=prod&refresh=1m&field=token&max_stale=2h",
			want: providers.Options{Field: "token", Refresh: time.Minute, Jitter: 6 * time.Second, MaxStale: 2 * time.Hour}},
		{name: "URL jitter", url: "file:keys.json?name=prod&refresh=1m&jitter=1s",
			want: providers.Options{Field: "api_key", Refresh: time.Minute, Jitter: time.Second, MaxStale: time.Hour}},
		// The config sets the same settings the URL holds: the set ones win
		// and the URL's are still known (this was "unknown parameter(s)
		// refresh").
		{name: "set and in URL", url: "file:keys.json?name=prod&refresh=1m",
			set:  providers.Options{Refresh: 2 * time.Minute, Jitter: time.Second},
			want: providers.Options{Field: "api_key", Refresh: 2 * time.Minute, Jitter: time.Second, MaxStale: time.Hour}},
		{name: "all set and in URL", url: "file:keys.json?name=prod&refresh=1m&jitter=2s&max_stale=3h&field=x",
			set:  providers.Options{Field: "token", Refresh: time.Minute, Jitter: time.Second, MaxStale: 2 * time.Hour},
			want: providers.Options{Field: "token", Refresh: time.Minute, Jitter: time.Second, MaxStale: 2 * time.Hour}},
		{name: "refresh off", url: "env://KEY", set: providers.Options{Refresh: -1},
			want: providers.Options{Field: "api_key", Refresh: -1, MaxStale: time.Hour}},
		{name: "bad duration", url: "file:keys.json?refresh=soon", err: `parameter refresh="soon" is not a positive Go duration`},
		{name: "bad overridden duration", url: "file:keys.json?refresh=soon", set: providers.Options{Refresh: time.Minute}, err: "refresh"},
		{name: "negative", url: "file:keys.json?jitter=-1s", err: "jitter"},
		{name: "stale before refresh", url: "file:keys.json?refresh=10m&max_stale=5m", err: "max_stale 5m0s is shorter than refresh 10m0s"},
		{name: "stale before set refresh", url: "file:keys.json", set: providers.Options{Refresh: 2 * time.Hour, MaxStale: time.Hour}, err: "max_stale 1h0m0s is shorter"},
		{name: "default stale after long refresh", url: "file:keys.json?refresh=2h",
			want: providers.Options{Field: "api_key", Refresh: 2 * time.Hour, Jitter: 12 * time.Minute, MaxStale: 4 * time.Hour}},
		{name: "negative jitter", url: "file:keys.json", set: providers.Options{Jitter: -time.Second}, err: "jitter -1s is negative"},
		{name: "backoff", url: "file:keys.json", set: providers.Options{MinBackoff: time.Minute, MaxBackoff: time.Second}, err: "below min backoff"},
		{name: "no scheme", url: "keys.json", err: "has no scheme"},
		// A minimum refresh: refresh=1ns made 27,646 store reads in 2 s.
		{name: "refresh 1ns", url: "file:keys.json?refresh=1ns", err: "refresh 1ns is shorter than the minimum of 1s"},
		{name: "set refresh too short", url: "file:keys.json", set: providers.Options{Refresh: 999 * time.Millisecond}, err: "refresh 999ms is shorter than the minimum"},
		{name: "refresh at the minimum", url: "file:keys.json?refresh=1s",
			want: providers.Options{Field: "api_key", Refresh: time.Second, Jitter: 100 * time.Millisecond, MaxStale: time.Hour}},
		{name: "negative max_stale", url: "file:keys.json", set: providers.Options{MaxStale: -time.Second}, err: "max_stale -1s is negative"},
		// Bounded durations: 2*refresh overflowed into "max_stale 1h0m0s
		// is shorter than refresh".
		{name: "refresh overflow", url: "file:keys.json?refresh=1500000h", err: "refresh 1500000h0m0s is longer than the limit of 365 days"},
		{name: "set refresh overflow", url: "file:keys.json", set: providers.Options{Refresh: 1500000 * time.Hour}, err: "refresh 1500000h0m0s is longer than the limit"},
		{name: "jitter too long", url: "file:keys.json?jitter=8761h", err: "jitter 8761h0m0s is longer than the limit"},
		{name: "max_stale too long", url: "file:keys.json", set: providers.Options{MaxStale: providers.MaxDuration + 1}, err: "max_stale"},
		{name: "backoff too long", url: "file:keys.json", set: providers.Options{MaxBackoff: providers.MaxDuration + 1}, err: "max backoff"},
		// The key cannot live in the field that holds its id (encoding a
		// payload with an id wrote the id over the key).
		{name: "field key_id", url: "file:keys.json?field=key_id", err: `field "key_id" is where a payload keeps the key's id`},
		{name: "set field key_id", url: "file:keys.json", set: providers.Options{Field: "key_id"}, err: `field "key_id"`},
		{name: "refresh at the limit", url: "file:keys.json?refresh=8760h",
			want: providers.Options{Field: "api_key", Refresh: 8760 * time.Hour, Jitter: 876 * time.Hour, MaxStale: 17520 * time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := providers.ResolveOptions(tc.url, tc.set)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !codes.Is(err, codes.InvalidArgument) {
					t.Fatalf("ResolveOptions: %v, want InvalidArgument containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Field != tc.want.Field || got.Refresh != tc.want.Refresh || got.Jitter != tc.want.Jitter || got.MaxStale != tc.want.MaxStale {
				t.Fatalf("got field %q refresh %v jitter %v max_stale %v, want %q %v %v %v", got.Field, got.Refresh, got.Jitter, got.MaxStale,
					tc.want.Field, tc.want.Refresh, tc.want.Jitter, tc.want.MaxStale)
			}
			if got.MinBackoff != providers.DefaultMinBackoff || got.MaxBackoff != providers.DefaultMaxBackoff || got.Logger == nil {
				t.Fatal("backoff or logger not defaulted")
			}
			if want := max(tc.want.Refresh, 0) + tc.want.Jitter; got.LongestGap() != want && tc.want.Refresh > 0 || tc.want.Refresh < 0 && got.LongestGap() != 0 {
				t.Fatalf("LongestGap %v", got.LongestGap())
			}
		})
	}
}

// TestNewBounds: New, given a driver by Go code, takes a refresh below
// MinRefresh (tests drive in-memory stores in milliseconds) but not a
// duration past MaxDuration.
func TestNewBounds(t *testing.T) {
	st := file.New(filepath.Join(t.TempDir(), "keys.json"))
	rotate(t, st, keyA)
	src, err := providers.New(context.Background(), st, "prod", providers.Options{Refresh: 5 * time.Millisecond})
	if err != nil {
		t.Fatalf("New with a 5ms refresh: %v", err)
	}
	src.Close()
	for _, o := range []providers.Options{{Refresh: 1500000 * time.Hour}, {Jitter: providers.MaxDuration + 1}, {MinBackoff: providers.MaxDuration + 1}} {
		if _, err := providers.New(context.Background(), st, "prod", o); !codes.Is(err, codes.InvalidArgument) || !strings.Contains(err.Error(), "longer than the limit") {
			t.Errorf("New(%+v): %v, want InvalidArgument over the limit", o, err)
		}
	}
}

// TestOpenWithPortableParametersAndOptions is the config's way in: the
// store URL holds refresh (as documented) and the options set it too.
func TestOpenWithPortableParametersAndOptions(t *testing.T) {
	dir := t.TempDir()
	rotate(t, file.New(filepath.Join(dir, "keys.json")), keyA)
	u := "file:" + filepath.Join(dir, "keys.json") + "?name=prod&refresh=1m&jitter=1s&max_stale=2h&field=api_key"
	o, err := providers.ResolveOptions(u, providers.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src, err := providers.Open(context.Background(), u, &o)
	if err != nil {
		t.Fatalf("Open with resolved options: %v", err)
	}
	defer src.Close()
	if got := src.Options(); got.Refresh != time.Minute || got.Jitter != time.Second || got.MaxStale != 2*time.Hour || src.Key().Reveal() != keyA {
		t.Fatalf("effective options %+v", got)
	}
	// A driver parameter the driver does not know is still refused, with
	// the known ones listed.
	_, err = providers.Open(context.Background(), u+"&refrsh=1m", &o)
	if err == nil || !strings.Contains(err.Error(), "unknown parameter(s) refrsh (known: name, field, refresh, jitter, max_stale)") {
		t.Fatalf("a misspelt parameter: %v", err)
	}
}

func TestSameStore(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"file:k.json?name=prod", "file:k.json?name=prod&refresh=1m", true},
		{"awssm://a/b?region=x&field=f", "awssm://a/b?region=x", true},
		{"awssm://a/b?profile=p&region=x", "awssm://a/b?region=x&profile=p", true},
		{"file:k.json?name=prod", "file:k.json?name=dev", false},
		{"awssm://a/b?region=x", "awssm://a/c?region=x", false},
		{"%zz", "%zz", true},
	} {
		if got := providers.SameStore(tc.a, tc.b); got != tc.same {
			t.Errorf("SameStore(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

// TestSourceRefusesBadPayloads: a first read of a payload that is no key
// fails at once, naming the problem and not the value; a refresh that finds
// one keeps serving the last good key and reports the failure.
func TestSourceRefusesBadPayloads(t *testing.T) {
	bad := map[string]string{
		"null": "null", "array": "[]", "JSON string": `"` + keyB + `"`,
		"inner space": keyB[:30] + " " + keyB[30:], "control": keyB[:30] + "\x1b" + keyB[30:],
		"field with newline": `{"api_key":"` + keyB + `\n"}`,
	}
	for name, payload := range bad {
		t.Run(name, func(t *testing.T) {
			st := file.New(filepath.Join(t.TempDir(), "keys.json"))
			rotate(t, st, payload)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := providers.New(ctx, st, "prod", providers.Options{Refresh: -1})
			if err == nil || !codes.Is(err, codes.InvalidArgument) || ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("first read: %v (ctx %v); want InvalidArgument at once", err, ctx.Err())
			}
			if !strings.Contains(err.Error(), "payload") || strings.Contains(err.Error(), keyB[13:33]) {
				t.Fatalf("first read error %q: want the problem named, never the value", err)
			}

			st = file.New(filepath.Join(t.TempDir(), "keys.json"))
			rotate(t, st, keyA)
			d := providertest.NewFaulty(st)
			src := newSource(t, d, providers.Options{Refresh: -1})
			rotate(t, st, payload)
			_, err = src.Refresh(context.Background())
			if err == nil || !codes.Is(err, codes.InvalidArgument) || strings.Contains(err.Error(), keyB[13:33]) {
				t.Fatalf("refresh: %v", err)
			}
			if src.Key().Reveal() != keyA || src.Stats().Failures != 1 || src.Stats().LastFailure.IsZero() {
				t.Fatalf("after a bad refresh: serving %v, %d failures", src.Current(), src.Stats().Failures)
			}
		})
	}
}

// TestFirstReadCorruptFailsAtOnce: corrupt data (DataLoss, Internal) is not
// retried until the deadline.
func TestFirstReadCorruptFailsAtOnce(t *testing.T) {
	for _, c := range []codes.Code{codes.DataLoss, codes.Internal, codes.PermissionDenied} {
		t.Run(c.String(), func(t *testing.T) {
			d := providertest.NewFaulty(store(t))
			d.Fail(codes.Errorf(c, "test: record is corrupt"))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := providers.New(ctx, d, "prod", providers.Options{Refresh: -1, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
			if !codes.Is(err, c) || ctx.Err() != nil || d.Reads() != 1 {
				t.Fatalf("first read: %v after %d reads (ctx %v); want %v after one read", err, d.Reads(), ctx.Err(), c)
			}
			if n := strings.Count(err.Error(), "providers:"); n != 1 {
				t.Fatalf("error %q repeats its prefix", err)
			}
		})
	}
}

// storeURLs seeds FuzzStoreURL and its corpus.
var storeURLs = []string{
	"file:keys.json?name=prod", "file:///etc/kw/keys.json?name=prod&refresh=1m&jitter=5s&max_stale=2h&field=token",
	"env://ANTHROPIC_API_KEY", "env://X?refresh=1m", "env:KEY", "env://bad-name", "env://X/path",
	"awssm://user:sk-ant-api03-secretsecretsecret@x/y", "file://%zz", "file:k.json?refresh=-1s", "file:k.json?refresh=1m&refresh=2m",
	"nosuch://x", "", " ", "keys.json", "file:k.json?name=p&extra=1", "file:k.json?max_stale=1m&refresh=2m", "::", "file:%",
	"env://X?jitter=x&field=", "file:k.json?name=p#frag", "FILE:k.json?name=p", "file:k.json?%gg=1",
}

// FuzzStoreURL: parsing a store URL and its parameters never panics; an
// error never holds the URL's password, nor a quoted part of a URL that does
// not parse; ResolveOptions' errors are InvalidArgument; what ResolveOptions accepts is valid
// (a field, a refresh from MinRefresh to MaxDuration, a max_stale not below
// it, no negative duration, none that a doubling overflows);
// and SameStore holds for a URL with itself and with its portable
// parameters removed.
func FuzzStoreURL(f *testing.F) {
	for _, s := range storeURLs {
		f.Add(s)
	}
	f.Chdir(f.TempDir()) // file: URLs with relative paths point here
	f.Fuzz(func(t *testing.T, raw string) {
		ctx := context.Background()
		var password string
		u, perr := url.Parse(raw)
		if perr == nil && u.User != nil {
			password, _ = u.User.Password()
		}
		leaks := func(err error) bool {
			return err != nil && len(password) >= 8 && strings.Contains(err.Error(), password)
		}
		d, _, params, err := providers.OpenDriver(ctx, raw)
		// url.Parse quotes the input it trips on; the error says what
		// is wrong without quoting any of it.
		if perr != nil && (err == nil || strings.Contains(err.Error(), `"`)) {
			t.Fatalf("OpenDriver of a URL that does not parse: %v", err)
		}
		if err == nil {
			d.Close()
			for k := range params {
				switch k {
				case "field", "refresh", "jitter", "max_stale":
				default:
					t.Fatalf("OpenDriver returned %q as a portable parameter", k)
				}
			}
		} else if leaks(err) {
			t.Fatalf("OpenDriver error holds the password: %v", err)
		}
		o, err := providers.ResolveOptions(raw, providers.Options{})
		if err != nil {
			if !codes.Is(err, codes.InvalidArgument) {
				t.Fatalf("ResolveOptions error without InvalidArgument: %v", err)
			}
			if leaks(err) {
				t.Fatalf("ResolveOptions error holds the password: %v", err)
			}
			return
		}
		if o.Field == "" || o.Refresh < providers.MinRefresh || o.Jitter < 0 || o.MaxStale < o.Refresh || o.LongestGap() < o.Refresh ||
			o.Refresh > providers.MaxDuration || o.Jitter > providers.MaxDuration || o.MaxStale > 2*providers.MaxDuration {
			t.Fatalf("ResolveOptions accepted %q as field %q refresh %v jitter %v max_stale %v", raw, o.Field, o.Refresh, o.Jitter, o.MaxStale)
		}
		// Options the caller sets win over the URL's.
		if o2, err := providers.ResolveOptions(raw, providers.Options{Field: "f", Refresh: 7 * time.Hour, MaxStale: 8 * time.Hour}); err != nil || o2.Field != "f" || o2.Refresh != 7*time.Hour || o2.MaxStale != 8*time.Hour {
			t.Fatalf("set options lost: %+v %v", o2, err)
		}
		if !providers.SameStore(raw, raw) {
			t.Fatalf("SameStore(%q, itself) is false", raw)
		}
		q := u.Query()
		for _, p := range []string{"field", "refresh", "jitter", "max_stale"} {
			q.Del(p)
		}
		u.RawQuery = q.Encode()
		if !providers.SameStore(raw, u.String()) {
			t.Fatalf("SameStore(%q, %q without portable parameters) is false", raw, u.String())
		}
	})
}

// A config loader copies what the user set and lets providers resolve the
// rest from the store URL and the defaults; a rotation's grace period must
// be at least LongestGap.
func ExampleResolveOptions() {
	o, err := providers.ResolveOptions("file:keys.json?name=prod&refresh=1m", providers.Options{MaxStale: 2 * time.Hour})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(o.Field, o.Refresh, o.Jitter, o.MaxStale, o.LongestGap())
	// Output: api_key 1m0s 6s 2h0m0s 1m6s
}

// TestQuery: a parameter given twice or with an empty value is refused by
// name (it silently read as the last one, or as the default), never
// echoing a value; a key pasted as a value is not echoed either.
func TestQuery(t *testing.T) {
	for _, tc := range []struct{ query, want string }{
		{"name=prod", ""},
		{"name=prod&name=other", "parameter name is given 2 times; give it once"},
		{"timeout=1m&timeout=2m", "parameter timeout is given 2 times"},
		{"insecure=true&insecure=false", "parameter insecure is given 2 times"},
		{"name=", "parameter name is empty; give it a value, or leave it out for its default"},
		{"timeout=", "parameter timeout is empty"},
		{"insecure=", "parameter insecure is empty"},
		{"timeout=" + keyA, "parameter timeout=\"[redacted "},
		{"colour=blue", "unknown parameter(s) colour"},
	} {
		vals, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		q := providers.NewQuery(vals)
		q.String("name", "def")
		q.Bool("insecure", false)
		q.Duration("timeout", time.Second)
		err = q.Done("name", "insecure", "timeout")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.query, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !codes.Is(err, codes.InvalidArgument)):
			t.Errorf("%s: %v, want InvalidArgument containing %q", tc.query, err, tc.want)
		case err != nil && (strings.Contains(err.Error(), "other") || strings.Contains(err.Error(), "2m") || strings.Contains(err.Error(), keyA[13:])):
			t.Errorf("%s: the error echoes a value: %v", tc.query, err)
		}
	}
	// The portable parameters go through the same rules.
	for _, raw := range []string{"file:k.json?name=p&refresh=1m&refresh=2m", "file:k.json?name=p&field=", "file:k.json?name=p&refresh="} {
		if _, err := providers.ResolveOptions(raw, providers.Options{}); err == nil || !codes.Is(err, codes.InvalidArgument) {
			t.Errorf("ResolveOptions(%q): %v, want InvalidArgument", raw, err)
		}
	}
}

// FuzzQuery: a driver's parameter parsing never panics; Done fails exactly
// when a parameter is unknown, given twice, empty or does not parse, names
// every unknown one,
// and is InvalidArgument; a value that parses is what the URL says.
func FuzzQuery(f *testing.F) {
	for _, s := range []string{"name=prod", "insecure=true&timeout=30s", "insecure=maybe", "timeout=-1s", "timeout=1h&timeout=x",
		"other=1&another=2", "name=a&name=b", "%zz=1", "insecure=", "timeout=9223372036854775807ns", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		vals, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q := providers.NewQuery(vals)
		name := q.String("name", "def")
		insecure := q.Bool("insecure", false)
		timeout := q.Duration("timeout", time.Second)
		err = q.Done("name", "insecure", "timeout")
		// A parameter given once with a value; given twice or empty, it
		// is an error and reads as its default.
		last := func(k string) (string, bool) {
			v, ok := vals[k]
			switch {
			case !ok || len(v) == 0:
				return "", false
			case len(v) > 1 || v[0] == "":
				if err == nil || !strings.Contains(err.Error(), "parameter "+k+" is") {
					t.Fatalf("%s given as %q accepted: %v", k, v, err)
				}
				return "", false
			}
			return v[0], true
		}
		bad := false
		if v, ok := last("name"); ok && name != v || !ok && name != "def" {
			t.Fatalf("name = %q", name)
		}
		if v, ok := last("insecure"); ok && v != "" {
			switch strings.ToLower(v) {
			case "true", "1", "yes":
				bad = bad || !insecure
			case "false", "0", "no":
				bad = bad || insecure
			default:
				if err == nil {
					t.Fatalf("insecure=%q accepted", v)
				}
			}
		}
		if v, ok := last("timeout"); ok && v != "" {
			if d, perr := time.ParseDuration(v); perr == nil && d >= 0 && timeout != d {
				t.Fatalf("timeout=%q read as %v", v, timeout)
			} else if (perr != nil || d < 0) && err == nil {
				t.Fatalf("timeout=%q accepted", v)
			}
		}
		if bad {
			t.Fatalf("insecure read as %v", insecure)
		}
		for k := range vals {
			if k != "name" && k != "insecure" && k != "timeout" {
				if err == nil || !strings.Contains(err.Error(), "unknown parameter(s)") {
					t.Fatalf("unknown parameter %q accepted: %v", k, err)
				}
			}
		}
		if err != nil && !codes.Is(err, codes.InvalidArgument) {
			t.Fatalf("Done error without InvalidArgument: %v", err)
		}
	})
}
