package pool_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/aws"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/stage"
	"github.com/keywarden/keywarden/rotation/pool"
)

func TestMain(m *testing.M) { mototest.Main(m) }

func fakeKey() providers.Secret {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return providers.NewSecret("sk-ant-api03-" + hex.EncodeToString(b) + "AA")
}

func uniqueName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "kwpool-" + hex.EncodeToString(b)
}

func stores(t *testing.T) map[string]driver.Stager {
	return map[string]driver.Stager{
		"file": file.New(filepath.Join(t.TempDir(), "pool.json")),
		"aws":  aws.New(mototest.SecretsManager(t), nil),
	}
}

func TestPool(t *testing.T) {
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testPool(t, st)
		})
	}
}

func testPool(t *testing.T, st driver.Stager) {
	ctx := context.Background()
	p := pool.New(st, uniqueName())
	if n, err := p.Available(ctx); err != nil || n != 0 {
		t.Fatalf("new pool: %d %v", n, err)
	}
	if _, _, err := p.Claim(ctx, "tok-0"); !errors.Is(err, pool.ErrEmpty) {
		t.Fatalf("claim on an empty pool: %v", err)
	}
	k1, k2 := fakeKey(), fakeKey()
	if n, err := p.Add(ctx, k1, "apikey_1"); err != nil || n != 1 {
		t.Fatalf("add: %d %v", n, err)
	}
	if n, err := p.Add(ctx, k2, ""); err != nil || n != 2 {
		t.Fatalf("add: %d %v", n, err)
	}
	if _, err := p.Add(ctx, k1, ""); err == nil || !strings.Contains(err.Error(), "already in the pool") || strings.Contains(err.Error(), k1.Reveal()) {
		t.Fatalf("duplicate add: %v", err)
	}
	e, left, err := p.Claim(ctx, "tok-1")
	if err != nil || !e.Secret().Equal(k1) || e.KeyID != "apikey_1" || left != 1 {
		t.Fatalf("claim: %v left %d", err, left)
	}
	again, left, err := p.Claim(ctx, "tok-1")
	if err != nil || !again.Secret().Equal(k1) || left != 1 {
		t.Fatal("a second claim with the same token took another key")
	}
	// A claimed key is still known: adding it again is refused.
	if _, err := p.Add(ctx, k1, ""); err == nil {
		t.Fatal("re-added a claimed key")
	}
	list, err := p.List(ctx)
	if err != nil || len(list) != 2 || list[0].Claimed != "" || list[1].Claimed != "tok-1" || list[1].KeyID != "apikey_1" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := p.Commit(ctx, "tok-1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(ctx, "tok-1"); err != nil {
		t.Fatalf("second commit: %v", err)
	}
	if list, _ := p.List(ctx); len(list) != 1 {
		t.Fatalf("after commit: %+v", list)
	}
	e, left, err = p.Claim(ctx, "tok-2")
	if err != nil || !e.Secret().Equal(k2) || left != 0 {
		t.Fatalf("claim 2: %v", err)
	}
	if _, _, err := p.Claim(ctx, "tok-3"); !errors.Is(err, pool.ErrEmpty) {
		t.Fatalf("claim on an emptied pool: %v", err)
	}
	// A released key is first in line again, once.
	if err := p.Release(ctx, "tok-2"); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(ctx, "tok-2"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if list, _ := p.List(ctx); len(list) != 1 || list[0].Claimed != "" {
		t.Fatalf("after release: %+v", list)
	}
	if e, left, err := p.Claim(ctx, "tok-4"); err != nil || !e.Secret().Equal(k2) || left != 0 {
		t.Fatalf("claim after release: %v", err)
	}
}

// TestConcurrentAdds adds keys from several goroutines at once: every key
// lands (compare-and-swap retries), none twice.
func TestConcurrentAdds(t *testing.T) {
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := pool.New(st, uniqueName())
			const n = 4
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := p.Add(ctx, fakeKey(), fmt.Sprintf("apikey_%d", i))
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if got, _ := p.Available(ctx); got != n {
				t.Fatalf("%d keys in the pool, want %d", got, n)
			}
		})
	}
}

// TestHandWritten reads a pool written by hand as a bare JSON list, and
// refuses a document that is not a pool without quoting it.
func TestHandWritten(t *testing.T) {
	ctx := context.Background()
	st := file.New(filepath.Join(t.TempDir(), "pool.json"))
	k := fakeKey()
	if err := st.PutByHand(ctx, "p", []byte(`[{"api_key": "`+k.Reveal()+`", "key_id": "apikey_x"}]`)); err != nil {
		t.Fatal(err)
	}
	e, _, err := pool.New(st, "p").Claim(ctx, "t")
	if err != nil || !e.Secret().Equal(k) {
		t.Fatalf("claim from a hand-written list: %v", err)
	}
	if err := st.PutByHand(ctx, "bad", []byte(k.Reveal())); err != nil {
		t.Fatal(err)
	}
	_, err = pool.New(st, "bad").Available(ctx)
	if err == nil || strings.Contains(err.Error(), k.Reveal()) {
		t.Fatalf("bad pool: %v", err)
	}
}

// TestInterruptedWriteCleared: a pool write that died between its store
// calls leaves a one-shot PENDING version on the pool secret; the next
// write (add, claim, commit) discards it and goes on at once.
func TestInterruptedWriteCleared(t *testing.T) {
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := pool.New(st, uniqueName())
			if _, err := p.Add(ctx, fakeKey(), "apikey_1"); err != nil {
				t.Fatal(err)
			}
			// The first call of an interrupted write, a moment ago.
			if _, err := st.PutPending(ctx, p.Name(), stage.OneShotToken(), []byte(`{"keys": []}`)); err != nil {
				t.Fatal(err)
			}
			if n, err := p.Add(ctx, fakeKey(), "apikey_2"); err != nil || n != 2 {
				t.Fatalf("add after an interrupted write: %d %v", n, err)
			}
			if _, err := st.ReadPending(ctx, p.Name()); !codes.Is(err, codes.NotFound) {
				t.Fatalf("PENDING after the add: %v, want NotFound", err)
			}
			if _, err := st.PutPending(ctx, p.Name(), stage.OneShotToken(), []byte(`{"keys": []}`)); err != nil {
				t.Fatal(err)
			}
			if e, left, err := p.Claim(ctx, "tok"); err != nil || e.KeyID != "apikey_1" || left != 1 {
				t.Fatalf("claim after an interrupted write: %v %d %v", e, left, err)
			}
		})
	}
}

// TestEntryRedacts: an Entry prints its key's fingerprint with every verb
// and in JSON, while the pool document keeps the key in "api_key".
func TestEntryRedacts(t *testing.T) {
	ctx := context.Background()
	st := file.New(filepath.Join(t.TempDir(), "pool.json"))
	k := fakeKey()
	p := pool.New(st, "p")
	if _, err := p.Add(ctx, k, "apikey_x"); err != nil {
		t.Fatal(err)
	}
	e, _, err := p.Claim(ctx, "tok")
	if err != nil || !e.Secret().Equal(k) {
		t.Fatalf("claim: %v", err)
	}
	j, _ := json.Marshal(e)
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", e, e, e, e.APIKey), string(j)} {
		if strings.Contains(s, k.Reveal()) {
			t.Fatalf("an Entry printed its key")
		}
	}
	v, err := st.Read(ctx, "p", driver.Current)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Claimed map[string]struct {
			APIKey string `json:"api_key"`
			KeyID  string `json:"key_id"`
		} `json:"claimed"`
	}
	if err := json.Unmarshal(v.Value, &raw); err != nil || raw.Claimed["tok"].APIKey != k.Reveal() || raw.Claimed["tok"].KeyID != "apikey_x" {
		t.Fatalf("the stored document lost its format: %v", err)
	}
}

// TestErrorKinds: a corrupt pool is ErrCorrupt with codes.Internal, a
// duplicate add ErrDuplicate with codes.InvalidArgument.
func TestErrorKinds(t *testing.T) {
	ctx := context.Background()
	st := file.New(filepath.Join(t.TempDir(), "pool.json"))
	for i, bad := range []string{`null`, `"sk-ant-api03-x"`, `{"keys": [{"key_id": "a"}]}`, `{"keys": {}}`, ``} {
		name := fmt.Sprintf("bad%d", i)
		if err := st.PutByHand(ctx, name, []byte(bad)); err != nil {
			t.Fatal(err)
		}
		_, err := pool.New(st, name).Available(ctx)
		if !errors.Is(err, pool.ErrCorrupt) || !codes.Is(err, codes.Internal) {
			t.Errorf("pool %q: %v (code %v), want ErrCorrupt and Internal", bad, err, codes.Of(err))
		}
	}
	p := pool.New(st, "p")
	k := fakeKey()
	if _, err := p.Add(ctx, k, "apikey_1"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key providers.Secret
		id  string
	}{{k, ""}, {fakeKey(), "apikey_1"}} {
		_, err := p.Add(ctx, c.key, c.id)
		if !errors.Is(err, pool.ErrDuplicate) || !codes.Is(err, codes.InvalidArgument) || strings.Contains(err.Error(), k.Reveal()) {
			t.Errorf("duplicate add: %v (code %v), want ErrDuplicate and InvalidArgument", err, codes.Of(err))
		}
	}
}

// Adding a key that waits in the pool without id, with an id, attaches the
// id in place (what the audit asks for); a key that has an id, or an id
// another key has, is still a duplicate.
func TestAddAttachesID(t *testing.T) {
	ctx := context.Background()
	p := pool.New(file.New(filepath.Join(t.TempDir(), "pool.json")), "p")
	a, b := fakeKey(), fakeKey()
	for _, k := range []providers.Secret{a, b} {
		if _, err := p.Add(ctx, k, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := p.Add(ctx, b, "apikey_b"); err != nil || n != 2 {
		t.Fatalf("attach: %d keys, %v; want 2, nil", n, err)
	}
	infos, err := p.List(ctx)
	if err != nil || len(infos) != 2 || infos[0].KeyID != "" || infos[1].KeyID != "apikey_b" || infos[1].Fingerprint != b.Fingerprint() {
		t.Fatalf("list: %+v %v", infos, err)
	}
	for _, c := range []struct {
		key providers.Secret
		id  string
	}{{b, "apikey_b"}, {b, "apikey_other"}, {a, "apikey_b"}, {a, ""}} {
		if _, err := p.Add(ctx, c.key, c.id); !errors.Is(err, pool.ErrDuplicate) {
			t.Errorf("add %s with id %q: %v, want ErrDuplicate", c.key.Fingerprint(), c.id, err)
		}
	}
}

// overtaken is a store where another writer adds a key to the pool right
// after the first promotion lands, before the writer reads CURRENT back.
type overtaken struct {
	driver.Stager
	once  sync.Once
	other func()
}

func (o *overtaken) Promote(ctx context.Context, name, id, currentID string) error {
	if err := o.Stager.Promote(ctx, name, id, currentID); err != nil {
		return err
	}
	o.once.Do(o.other)
	return nil
}

// TestAddOvertakenAfterItLanded: an Add whose write landed but was reported
// lost (another writer replaced CURRENT before the read-back) succeeds on
// its retry; it said "already in the pool", and concurrent adds failed so.
func TestAddOvertakenAfterItLanded(t *testing.T) {
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			secret := uniqueName()
			other := fakeKey()
			o := &overtaken{Stager: st}
			o.other = func() {
				if _, err := pool.New(st, secret).Add(ctx, other, "apikey_other"); err != nil {
					t.Errorf("the other writer: %v", err)
				}
			}
			n, err := pool.New(o, secret).Add(ctx, fakeKey(), "apikey_mine")
			if err != nil || n != 2 {
				t.Fatalf("Add overtaken after it landed: %d keys, %v", n, err)
			}
		})
	}
}
