package random_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/random"
)

func TestCreate(t *testing.T) {
	for _, tc := range []struct {
		o       random.Options
		wantLen int
		charset string
	}{
		{random.Options{}, 43, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"},
		{random.Options{Bytes: 16, Encoding: "hex", Prefix: "kw-"}, 3 + 32, "kw-0123456789abcdef"},
	} {
		i, err := random.New(tc.o)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for range 100 {
			c, err := i.Create(context.Background(), "tok")
			if err != nil {
				t.Fatal(err)
			}
			v := c.Key.Reveal()
			if len(v) != tc.wantLen || !strings.HasPrefix(v, tc.o.Prefix) || strings.Trim(v, tc.charset) != "" {
				t.Fatalf("secret %s: length %d, want %d, prefix %q", c.Key.Fingerprint(), len(v), tc.wantLen, tc.o.Prefix)
			}
			if seen[v] {
				t.Fatal("the same secret twice")
			}
			seen[v] = true
		}
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []random.Options{{Bytes: 8}, {Bytes: 4096}, {Encoding: "base32"}} {
		if _, err := random.New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// TestPrefix: a prefix that consumers would refuse in a key (a space, a
// character outside printable ASCII) is refused when the issuer is made;
// every rotation failed on it.
func TestPrefix(t *testing.T) {
	for prefix, want := range map[string]string{
		"kw-": "", "sk_live_": "",
		"kw key ": "white space", " kw": "white space", "kw\t": "white space",
		"kw\u00e9": "printable ASCII", "kw\x01": "control character", "{": "JSON",
	} {
		_, err := random.New(random.Options{Prefix: prefix})
		switch {
		case want == "" && err != nil:
			t.Errorf("prefix %q: %v", prefix, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("prefix %q: %v, want an error saying %q", prefix, err, want)
		}
	}
}

// TestRotate rotates a shared secret in a file store: no probe, no revoke.
func TestRotate(t *testing.T) {
	st := file.New(filepath.Join(t.TempDir(), "keys.json"))
	i, _ := random.New(random.Options{Prefix: "kw-"})
	r, err := rotation.New(rotation.Options{}, &rotation.Key{Name: "shared", Store: st, Secret: "shared", Issuer: i})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var values []string
	for range 3 {
		if _, err := r.Run(ctx, "shared", rotation.RunOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
		v, err := st.Read(ctx, "shared", driver.Current)
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, string(v.Value))
	}
	if values[0] == values[1] || values[1] == values[2] || !strings.HasPrefix(values[2], "kw-") {
		t.Fatal("rotation did not replace the secret")
	}
}
