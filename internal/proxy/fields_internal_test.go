package proxy

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// fillFields fills f from lines as clientConn.fillHeader does (each value
// a one-element slice of a backing store).
func fillFields(f *fields, lines [][2]string) {
	vals := make([]string, len(lines))
	*f = (*f)[:0]
	index := newFieldsIndex(len(lines))
	for i, kv := range lines {
		vals[i] = kv[1]
		f.add(kv[0], vals[i:i+1:i+1], index)
	}
}

// checkFields fails unless f holds what net/http's server makes of lines:
// each name's values in the order sent, the names in the order first sent,
// and each name once.
func checkFields(t *testing.T, f fields, lines [][2]string) {
	t.Helper()
	want, order := http.Header{}, []string{}
	for _, kv := range lines {
		if _, ok := want[kv[0]]; !ok {
			order = append(order, kv[0])
		}
		want[kv[0]] = append(want[kv[0]], kv[1])
	}
	got := []string{}
	for _, fl := range f {
		got = append(got, fl.name)
		if !slices.Equal(fl.vals, want[fl.name]) {
			t.Fatalf("%q: values %q, want %q", fl.name, fl.vals, want[fl.name])
		}
	}
	if !slices.Equal(got, order) {
		t.Fatalf("names %q, want %q", got, order)
	}
}

// TestFields: repeated names join one field, below and above
// fieldsIndexed (a scan, then a map), and the values of one line are not
// overwritten by the next line's (the backing store is shared).
func TestFields(t *testing.T) {
	for _, n := range []int{0, 1, 5, fieldsIndexed, fieldsIndexed + 1, 300} {
		var lines [][2]string
		for i := range n {
			lines = append(lines, [2]string{fmt.Sprintf("X-H%d", i%7), fmt.Sprint("v", i)})
		}
		var f fields
		fillFields(&f, lines)
		checkFields(t, f, lines)
		fillFields(&f, lines[:n/2]) // reused, as a connection's is
		checkFields(t, f, lines[:n/2])
	}

	f := fields{}
	fillFields(&f, [][2]string{{"A", "1"}, {"B", "2"}, {"C", "3"}, {"B", "4"}, {"D", "5"}})
	f.Replace("B", []string{"x"})
	f.Replace("E", []string{"y"})
	f.Del("A")
	f.Del("Nope")
	f.drop(func(n string) bool { return n == "C" })
	if got := fmt.Sprint(f); got != "[{B [x]} {D [5]} {E [y]}]" {
		t.Fatalf("after Replace, Del and drop: %s", got)
	}
	if f.Values("B")[0] != "x" || f.Values("A") != nil {
		t.Fatalf("Values: %q %q", f.Values("B"), f.Values("A"))
	}
}

// FuzzFields feeds header lines (names of one to three letters, so that
// they repeat) to fields and compares what it holds with net/http's
// reading, then removes names and compares again.
func FuzzFields(f *testing.F) {
	f.Add("a:1\nb:2\na:3", "a")
	f.Add(strings.Repeat("a:1\nb:2\nc:3\n", 20), "b")
	f.Fuzz(func(t *testing.T, raw, del string) {
		var lines [][2]string
		for l := range strings.SplitSeq(raw, "\n") {
			name, value, ok := strings.Cut(l, ":")
			if !ok || name == "" || len(name) > 3 {
				continue
			}
			lines = append(lines, [2]string{name, value})
		}
		var fl fields
		fillFields(&fl, lines)
		checkFields(t, fl, lines)
		fl.Del(del)
		var rest [][2]string
		for _, kv := range lines {
			if kv[0] != del {
				rest = append(rest, kv)
			}
		}
		checkFields(t, fl, rest)
	})
}

// BenchmarkRequestFields fills a request's header of the SDK's fields and
// reads it as the guards and the key rule do (the token, the hop and
// client-address headers, the auth and version headers, Accept-Encoding),
// then walks it as fillRequest does: fields against the http.Header the
// proxy kept before (session 19).
func BenchmarkRequestFields(b *testing.B) {
	lines := [][2]string{
		{"Host", "127.0.0.1:8787"}, {"Accept", "application/json"}, {"Accept-Encoding", "gzip, deflate"},
		{"Anthropic-Version", "2023-06-01"}, {"Content-Type", "application/json"}, {"User-Agent", "Anthropic/Python 0.71.0"},
		{"X-Api-Key", "placeholder"}, {"X-Stainless-Arch", "x64"}, {"X-Stainless-Lang", "python"},
		{"X-Stainless-Os", "Linux"}, {"X-Stainless-Package-Version", "0.71.0"}, {"X-Stainless-Retry-Count", "0"},
		{"X-Stainless-Runtime", "CPython"}, {"X-Stainless-Runtime-Version", "3.12.3"}, {"X-Stainless-Timeout", "600"},
		{"Content-Length", "120"},
	}
	key, version, identity := []string{"sk-x"}, []string{"2023-06-01"}, []string{"identity"}
	b.Run("fields", func(b *testing.B) {
		b.ReportAllocs()
		vals := make([]string, len(lines))
		var f fields
		n := 0
		for b.Loop() {
			f = f[:0]
			for i, kv := range lines {
				vals[i] = kv[1]
				f.add(kv[0], vals[i:i+1:i+1], nil)
			}
			_, _ = presentedToken(&f)
			removeHopHeaders(&f)
			stripClientHeaders(&f)
			f.Del("Expect")
			f.Replace("Accept-Encoding", identity)
			f.Del("Authorization")
			f.Replace("X-Api-Key", key)
			if len(f.Values("Anthropic-Version")) == 0 {
				f.Replace("Anthropic-Version", version)
			}
			for _, fl := range f {
				n += len(fl.name) + len(fl.vals)
			}
		}
		if n == 0 {
			b.Fatal("no fields")
		}
	})
	b.Run("http.Header", func(b *testing.B) {
		b.ReportAllocs()
		vals := make([]string, len(lines))
		h := http.Header{}
		n := 0
		for b.Loop() {
			clear(h)
			for i, kv := range lines {
				vals[i] = kv[1]
				if old := h[kv[0]]; old != nil {
					h[kv[0]] = append(old[:len(old):len(old)], vals[i])
				} else {
					h[kv[0]] = vals[i : i+1 : i+1]
				}
			}
			for _, k := range []string{TokenHeader, "X-Api-Key", "Authorization"} {
				_ = h[k]
			}
			for _, v := range h["Connection"] {
				_ = v
			}
			for _, k := range hopHeaders {
				delete(h, k)
			}
			for k := range h {
				if k == TokenHeader || ClientAddressHeader(k) {
					delete(h, k)
				}
			}
			delete(h, "Expect")
			h["Accept-Encoding"] = identity
			delete(h, "Authorization")
			h["X-Api-Key"] = key
			if len(h["Anthropic-Version"]) == 0 {
				h["Anthropic-Version"] = version
			}
			for k, vs := range h {
				n += len(k) + len(vs)
			}
		}
		if n == 0 {
			b.Fatal("no fields")
		}
	})
}
