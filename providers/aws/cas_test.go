package aws_test

import (
	"context"
	"sync"
	"testing"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/providers/aws"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/stage"
)

// interleave is a real client that runs a hook before it forwards the first
// call of one kind, to put a competing writer exactly between the driver's
// check and its write.
type interleave struct {
	*secretsmanager.Client

	once        sync.Once
	beforeStage func(in *secretsmanager.UpdateSecretVersionStageInput)
	beforePut   func(in *secretsmanager.PutSecretValueInput)
}

func (c *interleave) UpdateSecretVersionStage(ctx context.Context, in *secretsmanager.UpdateSecretVersionStageInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.UpdateSecretVersionStageOutput, error) {
	if c.beforeStage != nil {
		c.once.Do(func() { c.beforeStage(in) })
	}
	return c.Client.UpdateSecretVersionStage(ctx, in, opts...)
}

func (c *interleave) PutSecretValue(ctx context.Context, in *secretsmanager.PutSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.PutSecretValueOutput, error) {
	if c.beforePut != nil {
		c.once.Do(func() { c.beforePut(in) })
	}
	return c.Client.PutSecretValue(ctx, in, opts...)
}

// rotate stages and promotes value over currentID.
func rotate(t *testing.T, st driver.Stager, name, currentID string, value []byte) *driver.Version {
	t.Helper()
	ctx := context.Background()
	v, err := st.PutPending(ctx, name, token(), value)
	if err != nil {
		t.Fatalf("PutPending: %v", err)
	}
	if err := st.Promote(ctx, name, v.ID, currentID); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	return v
}

// An operator rolls AWSCURRENT back by hand (console: move AWSCURRENT to
// the previous version) between Promote's check and its move of AWSCURRENT:
// the move names the old current in RemoveFromVersionId, so the backend
// refuses it, and Promote reports Aborted without changing anything.
func TestPromoteCASDecidedByBackend(t *testing.T) {
	sm := mototest.SecretsManager(t)
	ctx := context.Background()
	name := uniqueName("promote-cas")
	first := fakeKey()
	prev := rotate(t, aws.New(sm, nil), name, "", first)
	c0 := rotate(t, aws.New(sm, nil), name, prev.ID, fakeKey())
	cl := &interleave{Client: sm, beforeStage: func(*secretsmanager.UpdateSecretVersionStageInput) {
		if _, err := sm.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
			SecretId: sdkaws.String(name), VersionStage: sdkaws.String("AWSCURRENT"),
			MoveToVersionId: sdkaws.String(prev.ID), RemoveFromVersionId: sdkaws.String(c0.ID),
		}); err != nil {
			t.Errorf("rollback by hand: %v", err)
		}
	}}
	st := aws.New(cl, nil)
	p, err := st.PutPending(ctx, name, token(), fakeKey())
	if err != nil {
		t.Fatal(err)
	}
	err = st.Promote(ctx, name, p.ID, c0.ID)
	if !codes.Is(err, codes.Aborted) {
		t.Fatalf("Promote racing a rollback: got %v (code %v), want Aborted", err, codes.Of(err))
	}
	cur, err := st.Read(ctx, name, driver.Current)
	if err != nil {
		t.Fatal(err)
	}
	if cur.ID != prev.ID || string(cur.Value) != string(first) {
		t.Fatalf("CURRENT is %s after the refused Promote, want the rolled-back-to %s", cur.ID, prev.ID)
	}
	if pend, err := st.ReadPending(ctx, name); err != nil || pend.ID != p.ID {
		t.Fatalf("PENDING after the refused Promote: %v; want %s untouched", err, p.ID)
	}
}

// A racing promoter of the same version lands between Promote's check and
// its move: the backend refuses the second move, and Promote sees that the
// same version won and succeeds.
func TestPromoteRacingSamePromotion(t *testing.T) {
	sm := mototest.SecretsManager(t)
	ctx := context.Background()
	name := uniqueName("promote-same")
	c0 := rotate(t, aws.New(sm, nil), name, "", fakeKey())
	other := aws.New(sm, nil)
	var p *driver.Version
	cl := &interleave{Client: sm, beforeStage: func(*secretsmanager.UpdateSecretVersionStageInput) {
		if err := other.Promote(ctx, name, p.ID, c0.ID); err != nil {
			t.Errorf("racing Promote: %v", err)
		}
	}}
	st := aws.New(cl, nil)
	p, err := st.PutPending(ctx, name, token(), fakeKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Promote(ctx, name, p.ID, c0.ID); err != nil {
		t.Fatalf("Promote that lost the race to the same promotion: %v, want success", err)
	}
	l := labelsOf(t, sm, name)
	if holderOf(l, "AWSCURRENT") != p.ID || holderOf(l, "AWSPREVIOUS") != c0.ID || holderOf(l, "AWSPENDING") != "" {
		t.Fatalf("labels after the race: %v", l)
	}
}

// Many promoters of one PENDING version at once: each succeeds or is
// Aborted, at least one succeeds, and the labels end right.
func TestPromoteManyPromoters(t *testing.T) {
	sm := mototest.SecretsManager(t)
	ctx := context.Background()
	st := aws.New(sm, nil)
	name := uniqueName("promote-many")
	cur := rotate(t, st, name, "", fakeKey())
	for round := 0; round < 3; round++ {
		p, err := st.PutPending(ctx, name, token(), fakeKey())
		if err != nil {
			t.Fatal(err)
		}
		errs := make([]error, 6)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = aws.New(sm, nil).Promote(ctx, name, p.ID, cur.ID)
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !codes.Is(err, codes.Aborted):
				t.Fatalf("round %d: racing Promote: %v (code %v)", round, err, codes.Of(err))
			}
		}
		if ok == 0 {
			t.Fatalf("round %d: no promoter succeeded", round)
		}
		l := labelsOf(t, sm, name)
		if holderOf(l, "AWSCURRENT") != p.ID || holderOf(l, "AWSPREVIOUS") != cur.ID || holderOf(l, "AWSPENDING") != "" {
			t.Fatalf("round %d: labels after the race: %v", round, l)
		}
		cur = p
	}
}

// halfPromoted returns a secret whose Promote stopped between its two label
// updates: AWSCURRENT moved to the new version, AWSPENDING still on it.
func halfPromoted(t *testing.T, sm *secretsmanager.Client, st driver.Stager) (name string, old, promoted *driver.Version, val []byte) {
	t.Helper()
	ctx := context.Background()
	name = uniqueName("promote-half")
	old = rotate(t, st, name, "", fakeKey())
	val = fakeKey()
	p, err := st.PutPending(ctx, name, token(), val)
	if err != nil {
		t.Fatal(err)
	}
	// The first half of Promote, done by hand.
	if _, err := sm.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
		SecretId: sdkaws.String(name), VersionStage: sdkaws.String("AWSCURRENT"),
		MoveToVersionId: sdkaws.String(p.ID), RemoveFromVersionId: sdkaws.String(old.ID),
	}); err != nil {
		t.Fatal(err)
	}
	return name, old, p, val
}

// A Promote that moved AWSCURRENT but died before clearing AWSPENDING is a
// finished promotion, as in AWS's own rotation protocol: readers see the new
// version, there is no PENDING version, the next Promote completes it, a
// DiscardPending clears the leftover label, and a new PutPending and a put
// proceed.
func TestPromoteInterruptedIsFinished(t *testing.T) {
	sm := mototest.SecretsManager(t)
	ctx := context.Background()
	st := aws.New(sm, nil)
	wantLabels := func(name, cur, prev, pend string) {
		t.Helper()
		l := labelsOf(t, sm, name)
		if holderOf(l, "AWSCURRENT") != cur || holderOf(l, "AWSPREVIOUS") != prev || holderOf(l, "AWSPENDING") != pend {
			t.Fatalf("labels %v, want CURRENT %s PREVIOUS %s PENDING %q", l, cur, prev, pend)
		}
	}
	t.Run("Read", func(t *testing.T) {
		name, old, p, val := halfPromoted(t, sm, st)
		if cur, err := st.Read(ctx, name, driver.Current); err != nil || string(cur.Value) != string(val) {
			t.Fatalf("Read(CURRENT): %v; want the promoted version", err)
		}
		if prev, err := st.Read(ctx, name, driver.Previous); err != nil || prev.ID != old.ID {
			t.Fatalf("Read(PREVIOUS): %v; want the old version", err)
		}
		if v, err := st.ReadPending(ctx, name); !codes.Is(err, codes.NotFound) {
			t.Fatalf("ReadPending: %v %v, want NotFound (version %s is CURRENT)", v, err, p.ID)
		}
	})
	t.Run("PromoteCompletes", func(t *testing.T) {
		name, old, p, _ := halfPromoted(t, sm, st)
		if err := st.Promote(ctx, name, p.ID, old.ID); err != nil {
			t.Fatalf("Promote completing a half promotion: %v", err)
		}
		wantLabels(name, p.ID, old.ID, "")
	})
	t.Run("DiscardClearsLabel", func(t *testing.T) {
		name, old, p, _ := halfPromoted(t, sm, st)
		if err := st.DiscardPending(ctx, name, p.ID); err != nil {
			t.Fatalf("DiscardPending of a finished promotion: %v", err)
		}
		wantLabels(name, p.ID, old.ID, "")
		if err := st.DiscardPending(ctx, name, "other"); err != nil {
			t.Fatalf("DiscardPending with no PENDING: %v", err)
		}
	})
	t.Run("PutPendingProceeds", func(t *testing.T) {
		name, old, p, _ := halfPromoted(t, sm, st)
		n, err := st.PutPending(ctx, name, token(), fakeKey())
		if err != nil {
			t.Fatalf("PutPending after a finished promotion: %v", err)
		}
		wantLabels(name, p.ID, old.ID, n.ID)
		if err := st.Promote(ctx, name, n.ID, p.ID); err != nil {
			t.Fatal(err)
		}
		wantLabels(name, n.ID, p.ID, "")
	})
	t.Run("Put", func(t *testing.T) {
		name, _, p, _ := halfPromoted(t, sm, st)
		val := fakeKey()
		n, err := stage.Put(ctx, st, name, val)
		if err != nil {
			t.Fatalf("put after a finished promotion: %v", err)
		}
		wantLabels(name, n.ID, p.ID, "")
	})
}

// Two writers read the same record revision; the second one's write lands
// after the first one's check: the derived ClientRequestToken collides and
// the backend refuses it.
func TestRecordCASDecidedByBackend(t *testing.T) {
	sm := mototest.SecretsManager(t)
	ctx := context.Background()
	name := uniqueName("record-cas")
	other := aws.New(sm, nil)
	r0, err := other.WriteRecord(ctx, name, "", map[string]string{"phase": "idle"})
	if err != nil {
		t.Fatal(err)
	}
	cl := &interleave{Client: sm, beforePut: func(*secretsmanager.PutSecretValueInput) {
		if _, err := other.WriteRecord(ctx, name, r0.Rev, map[string]string{"holder": "other"}); err != nil {
			t.Errorf("competing WriteRecord: %v", err)
		}
	}}
	st := aws.New(cl, nil)
	_, err = st.WriteRecord(ctx, name, r0.Rev, map[string]string{"holder": "me"})
	if !codes.Is(err, codes.Aborted) {
		t.Fatalf("WriteRecord that lost the race: got %v (code %v), want Aborted", err, codes.Of(err))
	}
	got, err := st.ReadRecord(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if got.Data["holder"] != "other" {
		t.Fatalf("record after the race: %v, want the winner's", got.Data)
	}
}

// A writer many revisions behind is refused, and the record never reaches
// readers, even on a secret that holds nothing else.
func TestRecordStaleWriterAndReaders(t *testing.T) {
	sm := mototest.SecretsManager(t)
	ctx := context.Background()
	st := aws.New(sm, nil)
	name := uniqueName("record-stale")
	revs := []string{""}
	for i := 0; i < 5; i++ {
		r, err := st.WriteRecord(ctx, name, revs[len(revs)-1], map[string]string{"n": string(rune('a' + i))})
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		revs = append(revs, r.Rev)
	}
	for _, stale := range revs[:len(revs)-1] {
		if _, err := st.WriteRecord(ctx, name, stale, map[string]string{"n": "stale"}); !codes.Is(err, codes.Aborted) {
			t.Fatalf("WriteRecord with stale rev %q: %v, want Aborted", stale, err)
		}
	}
	for _, stage := range []driver.Stage{driver.Current, driver.Previous} {
		if _, err := st.Read(ctx, name, stage); !codes.Is(err, codes.NotFound) {
			t.Fatalf("Read(%s) of a secret holding only records: %v, want NotFound", stage, err)
		}
	}
	if _, err := st.ReadPending(ctx, name); !codes.Is(err, codes.NotFound) {
		t.Fatalf("ReadPending of a secret holding only records: %v, want NotFound", err)
	}
	// A first rotation over the records: PREVIOUS stays empty for readers.
	val := fakeKey()
	v := rotate(t, st, name, "", val)
	if cur, err := st.Read(ctx, name, driver.Current); err != nil || cur.ID != v.ID {
		t.Fatalf("Read(CURRENT) after the first rotation: %v", err)
	}
	if _, err := st.Read(ctx, name, driver.Previous); !codes.Is(err, codes.NotFound) {
		t.Fatalf("Read(PREVIOUS) after the first rotation: %v, want NotFound", err)
	}
	if r, err := st.ReadRecord(ctx, name); err != nil || r.Rev != revs[len(revs)-1] || r.Data["n"] != "e" {
		t.Fatalf("record after a rotation: %+v, %v", r, err)
	}
}

// A PENDING version never becomes the first version of a secret, which AWS
// would label AWSCURRENT: a new secret starts with a placeholder, and so does
// a secret created by hand without a value.
func TestPendingNeverFirstVersion(t *testing.T) {
	sm := mototest.SecretsManager(t)
	ctx := context.Background()
	st := aws.New(sm, nil)
	empty := uniqueName("empty")
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: sdkaws.String(empty)}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{uniqueName("fresh"), empty} {
		p, err := st.PutPending(ctx, name, token(), fakeKey())
		if err != nil {
			t.Fatalf("%s: PutPending: %v", name, err)
		}
		l := labelsOf(t, sm, name)
		if holderOf(l, "AWSCURRENT") == p.ID {
			t.Fatalf("%s: the PENDING version holds AWSCURRENT: %v", name, l)
		}
		if _, err := st.Read(ctx, name, driver.Current); !codes.Is(err, codes.NotFound) {
			t.Fatalf("%s: Read(CURRENT) before the first promotion: %v, want NotFound", name, err)
		}
		if err := st.Promote(ctx, name, p.ID, ""); err != nil {
			t.Fatalf("%s: Promote: %v", name, err)
		}
		if cur, err := st.Read(ctx, name, driver.Current); err != nil || cur.ID != p.ID {
			t.Fatalf("%s: Read(CURRENT) after promotion: %v", name, err)
		}
	}
}
