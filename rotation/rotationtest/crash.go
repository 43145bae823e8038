package rotationtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/providertest/crashtest"
	"github.com/keywarden/keywarden/providers/stage"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/pool"
)

// CrashBackend is one store for RunCrash.
type CrashBackend struct {
	// Name names the backend in test names.
	Name string
	// Prefix starts the names of the secrets the harness writes.
	Prefix string
	// Start starts or finds the backend (in the parent only; it may skip
	// the test) and returns the environment (NAME=value) that Open reads to
	// reach it: endpoint, address, token. RunCrash sets it in the parent
	// and passes it to children.
	Start func(t testing.TB) []string
	// Open opens a new driver on the backend named by the environment, for
	// the secret called secret (a backend may keep each secret apart, as
	// the file store does in a file of its own). Every store call the
	// driver makes ticks c after its answer arrived (a nil c counts
	// nothing). Open runs in the parent and in children.
	Open func(t testing.TB, c *crashtest.Counter, secret string) driver.Stager
}

// Environment variables of a crash child, besides crashtest's.
const (
	envSecret = crashtest.EnvPrefix + "SECRET"
	envDir    = crashtest.EnvPrefix + "DIR"
	envArgs   = crashtest.EnvPrefix + "ARGS"
	envAPI    = crashtest.EnvPrefix + "CLAUDE_URL" // an anthropic world's fake Claude API
)

// crashWorkers bounds the children and follow-ups running at once.
const crashWorkers = 4

// RunCrash is the crash-point harness. For every operation that makes
// several store or API calls (the driver's PutPending, Promote,
// DiscardPending and WriteRecord, `put` (stage.Put), the key pool's Add,
// Claim and Commit, whole rotations (Rotator.Run) with the exec issuer and
// with the anthropic issuer against a fake Claude API, and with the exec
// issuer on a store that gives the new PENDING version an id shaped like
// a key (refused: the next run finishes the refusal, is refused in turn
// and prints no key), --abandon of each kind of stuck rotation, and
// `key-id`) on every backend, it first runs
// the operation in a child process that counts its calls, then, for every
// k, runs it in a child that exits after its k-th call, and checks the
// store from this process with a fresh driver. A call is one to the store
// or to the issuer (the exec issuer's Create and Revoke, the Admin API),
// or a probe of the new key: each counts once its answer arrived.
//
//   - consumers read the right CURRENT (the old value or the new one,
//     never none, never the PENDING version);
//   - each follow-up, from its own copy of the crashed state (the state is
//     made again per follow-up; a dry run, which changes nothing, shares
//     the copy of the rotation that follows it), completes or undoes the
//     interrupted operation: for a key, the next rotation (Run with
//     Force), put, --abandon and dry runs; for the pool, the next pool add
//     and a rotation's claim and commit;
//   - no key is revoked twice, and CURRENT's key is never revoked;
//   - no key is valid at the issuer that nothing in the store or the
//     rotation record names (a leaked key), and no pool key stays claimed
//     by a rotation that is over: after the crash and after each
//     follow-up.
//
// A crash after a call that only read leaves the state of the crash after
// the call before it: such a crash point is crashed and checked, and its
// follow-ups are those of the state before, unless the issuer acted in
// between (a key minted, activated or revoked: the issuer's state is
// compared).
//
// The children are this test binary run again with -test.run=^<test>$,
// where test is the top-level test calling RunCrash (it must call RunCrash
// before anything else that a child should not do). Call it with every
// backend; in a child it runs the one operation its environment names and
// exits.
func RunCrash(t *testing.T, backends ...CrashBackend) {
	if crashtest.IsChild() {
		crashChild(t, backends)
		return
	}
	test := t.Name()
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			// Backends run side by side: moto serves on one core.
			t.Parallel()
			env := b.Start(t)
			for _, kv := range env {
				// Each backend's variables are its own: set them for
				// this process's Open as t.Setenv would, which a
				// parallel test may not call.
				k, v, _ := strings.Cut(kv, "=")
				old, had := os.LookupEnv(k)
				if err := os.Setenv(k, v); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if had {
						os.Setenv(k, old)
					} else {
						os.Unsetenv(k)
					}
				})
			}
			points := 0
			for _, op := range crashOps {
				t.Run(op.name, func(t *testing.T) {
					points += runCrashOp(t, test, b, env, op)
				})
			}
			t.Logf("%s: %d crash points exercised", b.Name, points)
		})
	}
}

// crashOp is one operation under test.
type crashOp struct {
	name string
	pool bool // on the pool secret, not on a key
	// issuer is the issuer of the key's rotations: issuerExec (default) or
	// issuerClaude (a fake Claude API is started per crashed state).
	issuer string
	// seed prepares the secret (in the parent) and returns what do needs.
	seed func(ctx context.Context, w *world) (map[string]string, error)
	// do runs the operation (in the child).
	do func(ctx context.Context, w *world, args map[string]string) error
	// followUps replaces keyFollowUps for the operation (nil: those).
	followUps []followUp
	// store wraps the key's store as the backend opens it, alike in the
	// parent and in every child (nil: as it is): a driver that misbehaves.
	store func(driver.Stager) driver.Stager
}

// open opens the key's store for op on b (see CrashBackend.Open).
func (op crashOp) open(t testing.TB, b CrashBackend, c *crashtest.Counter, secret string) driver.Stager {
	st := b.Open(t, c, secret)
	if op.store != nil {
		st = op.store(st)
	}
	return st
}

// Key ids of the values the harness writes.
const (
	idOld  = "apikey_old"  // CURRENT before the operation
	idNew  = "apikey_new"  // what the operation writes
	idPut  = "apikey_put"  // what the put follow-up writes
	idPool = "apikey_pool" // prefix of pool keys
)

func keyValue(id string) []byte {
	return providers.EncodePayload(providers.Payload{Key: providers.NewSecret(string(providertest.FakeKey())), KeyID: id})
}

func seedKey(ctx context.Context, w *world) (map[string]string, error) {
	_, err := stage.Put(ctx, w.st, w.name, keyValue(idOld))
	return nil, err
}

// seedPending seeds CURRENT and a PENDING version of a one-shot write.
func seedPending(ctx context.Context, w *world) (map[string]string, error) {
	cur, err := stage.Put(ctx, w.st, w.name, keyValue(idOld))
	if err != nil {
		return nil, err
	}
	pv, err := w.st.PutPending(ctx, w.name, stage.OneShotToken(), keyValue(idNew))
	if err != nil {
		return nil, err
	}
	return map[string]string{"pending": pv.ID, "current": cur.ID}, nil
}

// seedPool writes a pool of keys b and e, with key a claimed by tok-1, in
// one write.
func seedPool(ctx context.Context, w *world) (map[string]string, error) {
	entry := func(id string) map[string]string {
		return map[string]string{"api_key": string(providertest.FakeKey()), "key_id": idPool + "_" + id}
	}
	doc, err := json.Marshal(map[string]any{
		"keys":    []map[string]string{entry("b"), entry("e")},
		"claimed": map[string]any{"tok-1": entry("a")},
	})
	if err != nil {
		return nil, err
	}
	_, err = stage.Put(ctx, w.st, w.name, doc)
	return nil, err
}

var crashOps = []crashOp{
	{name: "PutPending", seed: seedKey, do: func(ctx context.Context, w *world, _ map[string]string) error {
		_, err := w.st.PutPending(ctx, w.name, stage.OneShotToken(), keyValue(idNew))
		return err
	}},
	{name: "Promote", seed: seedPending, do: func(ctx context.Context, w *world, a map[string]string) error {
		return w.st.Promote(ctx, w.name, a["pending"], a["current"])
	}},
	{name: "DiscardPending", seed: seedPending, do: func(ctx context.Context, w *world, a map[string]string) error {
		return w.st.DiscardPending(ctx, w.name, a["pending"])
	}},
	{name: "WriteRecord", seed: func(ctx context.Context, w *world) (map[string]string, error) {
		if _, err := seedKey(ctx, w); err != nil {
			return nil, err
		}
		rec, err := w.st.ReadRecord(ctx, w.name)
		if err != nil {
			return nil, err
		}
		return map[string]string{"rev": rec.Rev}, nil
	}, do: func(ctx context.Context, w *world, a map[string]string) error {
		_, err := w.st.WriteRecord(ctx, w.name, a["rev"], map[string]string{"v": "1", "phase": string(rotation.PhaseIdle), "rotations": "0"})
		return err
	}},
	{name: "put", seed: seedKey, do: func(ctx context.Context, w *world, _ map[string]string) error {
		_, err := stage.Put(ctx, w.st, w.name, keyValue(idNew))
		return err
	}},
	{name: "rotate", seed: seedKey, do: doRotate},
	{name: "rotate.anthropic", issuer: issuerClaude, seed: func(ctx context.Context, w *world) (map[string]string, error) {
		_, err := seedClaude(ctx, w)
		return nil, err
	}, do: doRotate},
	// The new key fails its probe and is discarded (the run fails with
	// exit 10, as it should).
	{name: "rotate.discard", seed: seedKey, do: doRotateWith(discardOnFailure, failingProbe)},
	// The store gives the new key's PENDING version an id shaped like a
	// key: the run discards it, revokes the key and fails (exit 12), as
	// does every later rotation on that store.
	{name: "rotate.keyshaped-pending-id", seed: seedKey, do: doRotateRefused, followUps: keyShapedFollowUps, store: wrapKeyShapedPending},
	{name: "rotate.discard.anthropic", issuer: issuerClaude, seed: func(ctx context.Context, w *world) (map[string]string, error) {
		_, err := seedClaude(ctx, w)
		return nil, err
	}, do: doRotateWith(discardOnFailure, failingProbe)},
	// CURRENT holds the bare key: the rotation resolves its id by hint
	// before promoting.
	{name: "rotate.skip.anthropic", issuer: issuerClaude, seed: func(ctx context.Context, w *world) (map[string]string, error) {
		_, err := seedClaudeAs(ctx, w, false)
		if err != nil {
			return nil, err
		}
		// The first pool key was archived in the Console: the draw drops
		// it from the pool and claims the next.
		ks := w.api.Keys()
		if err := w.api.SetStatus(ks[1].ID, anthropictest.StatusArchived); err != nil {
			return nil, err
		}
		// A third, for the follow-up's rotation.
		k := w.api.AddKey("", anthropictest.StatusInactive)
		_, err = pool.New(w.open(w.poolName()), w.poolName()).Add(ctx, providers.NewSecret(k.Value), k.ID)
		return nil, err
	}, do: doRotate},
	{name: "abandon.creating", seed: seedRun(rotation.PhaseCreating, stopAt(rotation.AfterCreate)), do: doAbandon},
	{name: "abandon.creating.anthropic", issuer: issuerClaude, seed: seedRun(rotation.PhaseCreating, stopAt(rotation.AfterCreate)), do: doAbandon},
	{name: "abandon.parked", seed: seedRun(rotation.PhaseParked, failingProbe), do: doAbandon},
	{name: "abandon.parked.anthropic", issuer: issuerClaude, seed: seedRun(rotation.PhaseParked, failingProbe), do: doAbandon},
	{name: "abandon.stray", seed: func(ctx context.Context, w *world) (map[string]string, error) {
		if _, err := seedKey(ctx, w); err != nil {
			return nil, err
		}
		_, err := w.st.PutPending(ctx, w.name, "stray-token", keyValue(idNew))
		return nil, err
	}, do: doAbandon},
	{name: "abandon.revoking", seed: seedRevoking, do: doAbandon},
	{name: "abandon.revoking.anthropic", issuer: issuerClaude, seed: seedRevokingClaude, do: doAbandon},
	// A revocation the issuer refused, abandoned: the old key is listed
	// as left valid; `rotate --revoke-left-valid` revokes it and drops it.
	{name: "revoke-left-valid", seed: seedLeftValid, do: doRevokeLeftValid, followUps: leftValidFollowUps},
	{name: "revoke-left-valid.anthropic", issuer: issuerClaude, seed: seedLeftValidClaude, do: doRevokeLeftValid, followUps: leftValidFollowUps},
	{name: "key-id", seed: seedKey, do: func(ctx context.Context, w *world, _ map[string]string) error {
		_, err := w.rotator().SetKeyID(ctx, "k", driver.Current, "apikey_attached")
		return err
	}},
	{name: "key-id.anthropic", issuer: issuerClaude, seed: func(ctx context.Context, w *world) (map[string]string, error) {
		first, err := seedClaude(ctx, w)
		return map[string]string{"id": first.ID}, err
	}, do: func(ctx context.Context, w *world, a map[string]string) error {
		_, err := w.rotator().SetKeyID(ctx, "k", driver.Current, a["id"])
		return err
	}},
	{name: "pool.Add", pool: true, seed: seedPool, do: func(ctx context.Context, w *world, _ map[string]string) error {
		_, err := pool.New(w.st, w.name).Add(ctx, providers.NewSecret(string(providertest.FakeKey())), idPool+"_c")
		return err
	}},
	{name: "pool.Claim", pool: true, seed: seedPool, do: func(ctx context.Context, w *world, _ map[string]string) error {
		_, _, err := pool.New(w.st, w.name).Claim(ctx, "tok-2")
		return err
	}},
	{name: "pool.Commit", pool: true, seed: seedPool, do: func(ctx context.Context, w *world, _ map[string]string) error {
		return pool.New(w.st, w.name).Commit(ctx, "tok-1")
	}},
}

// doRotate runs a rotation (`keywarden rotate --force`).
func doRotate(ctx context.Context, w *world, a map[string]string) error {
	return doRotateWith()(ctx, w, a)
}

// doRotateWith runs a rotation of a rotator changed by mods. A probe
// failure is an outcome, not an error of the operation.
func doRotateWith(mods ...rotatorOpt) func(context.Context, *world, map[string]string) error {
	return func(ctx context.Context, w *world, _ map[string]string) error {
		_, err := w.rotator(mods...).Run(ctx, "k", rotation.RunOptions{Force: true})
		if rotation.KindOf(err) == rotation.KindProbe {
			return nil
		}
		return err
	}
}

// doAbandon runs `keywarden rotate --abandon`.
func doAbandon(ctx context.Context, w *world, _ map[string]string) error {
	_, err := w.rotator().Run(ctx, "k", rotation.RunOptions{Abandon: true})
	return err
}

// seedIssuerKey seeds CURRENT as the world's issuer wants it.
func seedIssuerKey(ctx context.Context, w *world) error {
	if w.issuer == issuerClaude {
		_, err := seedClaude(ctx, w)
		return err
	}
	_, err := seedKey(ctx, w)
	return err
}

// seedRun seeds a key, then a rotation that mods stop or fail, leaving the
// record in phase want.
func seedRun(want rotation.Phase, mods ...rotatorOpt) func(context.Context, *world) (map[string]string, error) {
	return func(ctx context.Context, w *world) (map[string]string, error) {
		if err := seedIssuerKey(ctx, w); err != nil {
			return nil, err
		}
		return seedRunOn(ctx, w, want, mods...)
	}
}

// seedRunOn runs a rotation that mods stop or fail on the seeded world,
// leaving the record in phase want.
func seedRunOn(ctx context.Context, w *world, want rotation.Phase, mods ...rotatorOpt) (map[string]string, error) {
	_, runErr := w.rotator(mods...).Run(ctx, "k", rotation.RunOptions{Force: true})
	rec, err := w.st.ReadRecord(ctx, w.name)
	if err != nil {
		return nil, err
	}
	if got := rotation.Phase(rec.Data["phase"]); got != want {
		return nil, fmt.Errorf("the seeding rotation left phase %s, want %s (run: %v)", got, want, runErr)
	}
	return nil, nil
}

// seedRevoking seeds a rotation stuck in phase revoking: the issuer
// refused the revocation.
func seedRevoking(ctx context.Context, w *world) (map[string]string, error) {
	refuse := filepath.Join(w.dir, "fail-revoke")
	if err := os.WriteFile(refuse, nil, 0o600); err != nil {
		return nil, err
	}
	args, err := seedRun(rotation.PhaseRevoking)(ctx, w)
	if rerr := os.Remove(refuse); err == nil {
		err = rerr
	}
	return args, err
}

// seedLeftValid seeds a rotation whose revocation the issuer refused and
// an operator abandoned: the old key (idOld) is listed as left valid.
func seedLeftValid(ctx context.Context, w *world) (map[string]string, error) {
	if _, err := seedRevoking(ctx, w); err != nil {
		return nil, err
	}
	if _, err := w.rotator().Run(ctx, "k", rotation.RunOptions{Abandon: true}); err != nil {
		return nil, fmt.Errorf("abandon: %w", err)
	}
	return nil, nil
}

// seedLeftValidClaude is seedLeftValid with the Admin API as the issuer:
// its revocation of the old key failed, and an operator abandoned the
// rotation.
func seedLeftValidClaude(ctx context.Context, w *world) (map[string]string, error) {
	if _, err := seedRevokingClaude(ctx, w); err != nil {
		return nil, err
	}
	if _, err := w.rotator().Run(ctx, "k", rotation.RunOptions{Abandon: true}); err != nil {
		return nil, fmt.Errorf("abandon: %w", err)
	}
	if old := w.oldKeyID(); w.keyRevoked(old) {
		return nil, fmt.Errorf("seed: the old key %s is revoked already: nothing is left valid", old)
	}
	return nil, nil
}

// doRevokeLeftValid runs `keywarden rotate --revoke-left-valid`.
func doRevokeLeftValid(ctx context.Context, w *world, _ map[string]string) error {
	_, err := w.rotator().Run(ctx, "k", rotation.RunOptions{RevokeLeftValid: true})
	return err
}

// seedRevokingClaude seeds an anthropic rotation stuck in phase revoking
// (the Admin API failed the revocation) whose run died before it told the
// pool that its key was stored (a crash right after recording probing):
// the pool still holds the key as claimed by the rotation.
func seedRevokingClaude(ctx context.Context, w *world) (map[string]string, error) {
	first, err := seedClaude(ctx, w)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(w.dir, oldKeyFile), []byte(first.ID), 0o600); err != nil {
		return nil, err
	}
	if _, err := seedRunOn(ctx, w, rotation.PhaseProbing, stopAt(rotation.AfterRecordProbing)); err != nil {
		return nil, err
	}
	w.api.FailNext(1, 500, "/v1/organizations/api_keys/"+first.ID)
	return seedRunOn(ctx, w, rotation.PhaseRevoking)
}

// crashChild runs the operation the environment names, counting store
// calls, and exits.
func crashChild(t *testing.T, backends []CrashBackend) {
	bname, opname, _ := strings.Cut(crashtest.Case(), "/")
	bi := slices.IndexFunc(backends, func(b CrashBackend) bool { return b.Name == bname })
	oi := slices.IndexFunc(crashOps, func(o crashOp) bool { return o.name == opname })
	if bi < 0 || oi < 0 {
		t.Fatalf("crash child: unknown case %q", crashtest.Case())
	}
	c, err := crashtest.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	var args map[string]string
	if err := json.Unmarshal([]byte(os.Getenv(envArgs)), &args); err != nil {
		t.Fatalf("crash child: %s: %v", envArgs, err)
	}
	name := os.Getenv(envSecret)
	b := backends[bi]
	op := crashOps[oi]
	w := &world{st: op.open(t, b, c, name), name: name, dir: os.Getenv(envDir), c: c,
		issuer: op.issuer, apiURL: os.Getenv(envAPI),
		open: func(secret string) driver.Stager { return b.Open(t, c, secret) }}
	c.Arm()
	if err := op.do(context.Background(), w, args); err != nil {
		fmt.Printf("crash child: %s: %v\n", crashtest.Case(), err)
		os.Exit(1)
	}
	c.Report()
	os.Exit(0)
}

// followUp is what runs after a crash, from its own crashed state.
type followUp struct {
	name string
	do   func(ctx context.Context, w *world) error
	// keeps: the follow-up changes nothing, and fails if it did.
	keeps bool
}

var keyFollowUps = []followUp{
	{name: "rotate", do: followRotate},
	{name: "put", do: followPut},
	{name: "abandon", do: followAbandon},
	{name: "dry-run", do: followDryRun, keeps: true},
}

// leftValidFollowUps follow a crash of --revoke-left-valid: running it
// again converges; a rotation and a dry run work from the crashed state.
var leftValidFollowUps = []followUp{
	{name: "revoke-left-valid", do: followRevokeLeftValid},
	{name: "rotate", do: followRotate},
	{name: "dry-run", do: followDryRun, keeps: true},
}

var poolFollowUps = []followUp{
	{name: "pool-add", do: followPoolAdd},
	{name: "rotate-claim", do: followPoolClaim},
}

// runCrashOp exercises every crash point of op on b and returns how many.
func runCrashOp(t *testing.T, test string, b CrashBackend, benv []string, op crashOp) int {
	ctx := context.Background()
	dir := t.TempDir()
	var seq atomic.Int64
	// instance seeds a fresh world and runs op in a child stopped at k.
	instance := func(k int64) (*world, crashtest.Result, error) {
		n := seq.Add(1)
		name := providertest.UniqueName(b.Prefix + "kwcrash-" + strings.ReplaceAll(strings.ToLower(op.name), ".", "-"))
		w := &world{st: op.open(t, b, nil, name), name: name, dir: filepath.Join(dir, fmt.Sprint(n)), issuer: op.issuer,
			open: func(secret string) driver.Stager { return b.Open(t, nil, secret) }}
		if err := os.Mkdir(w.dir, 0o700); err != nil {
			return nil, crashtest.Result{}, err
		}
		if op.issuer == issuerClaude {
			w.api = anthropictest.Start(t)
			w.apiURL = w.api.URL()
		}
		args, err := op.seed(ctx, w)
		if err != nil {
			return nil, crashtest.Result{}, fmt.Errorf("seed: %w", err)
		}
		a, _ := json.Marshal(args)
		env := append([]string{
			crashtest.EnvCase + "=" + b.Name + "/" + op.name,
			fmt.Sprintf("%s=%d", crashtest.EnvAt, k),
			envSecret + "=" + w.name, envDir + "=" + w.dir, envArgs + "=" + string(a), envAPI + "=" + w.apiURL,
		}, benv...)
		res, err := crashtest.Spawn(ctx, test, env)
		return w, res, err
	}
	_, clean, err := instance(0)
	if err != nil {
		t.Fatalf("clean run: %v", err)
	}
	if clean.Calls == 0 {
		t.Fatalf("clean run made no store call: the counter is not wired\n%s", clean.Output)
	}
	fus := keyFollowUps
	switch {
	case op.pool:
		fus = poolFollowUps
	case op.followUps != nil:
		fus = op.followUps
	}
	check := checkKey
	if op.pool {
		check = checkPool
	}
	// Phase 1: crash at every k, check what consumers see, and note the
	// issuer's state.
	n := int(clean.Calls)
	worlds, sigs := make([]*world, n+1), make([]string, n+1)
	parallel(n, func(i int) {
		k := int64(i + 1)
		w, _, err := instance(k) // a child may also finish: k beyond its calls in this run
		if err == nil {
			err = check(ctx, w)
		}
		if err != nil {
			t.Errorf("crash after call %d of %d: %v", k, n, err)
			return
		}
		worlds[k], sigs[k] = w, w.issuerState()
	})
	if t.Failed() {
		return n
	}
	// Phase 2: the follow-ups, each from its own copy of every distinct
	// crashed state. A crash after a read that the issuer did not act
	// before leaves the state of the crash before it. A follow-up that
	// changes nothing (and checks that it did not) shares its copy with
	// the first one that does, and runs before it: phase 1's world.
	type job struct {
		k   int64
		fus []followUp
		w   *world // the crashed state of phase 1, or nil: make it again
	}
	var jobs []job
	states := 0
	for k := 1; k <= n; k++ {
		if k > 1 && k <= len(clean.Writes) && !clean.Writes[k-1] && sigs[k] == sigs[k-1] {
			continue
		}
		states++
		first := job{k: int64(k), w: worlds[k]}
		for _, fu := range fus {
			if fu.keeps {
				first.fus = append(first.fus, fu)
			}
		}
		for _, fu := range fus {
			switch {
			case fu.keeps:
			case first.fus == nil || first.fus[len(first.fus)-1].keeps:
				first.fus = append(first.fus, fu)
			default:
				jobs = append(jobs, job{k: int64(k), fus: []followUp{fu}})
			}
		}
		jobs = append(jobs, first)
	}
	parallel(len(jobs), func(i int) {
		j := jobs[i]
		w := j.w
		if w == nil {
			var err error
			if w, _, err = instance(j.k); err == nil {
				err = check(ctx, w)
			}
			if err != nil {
				t.Errorf("crash after call %d of %d (again, for %s): %v", j.k, n, j.fus[0].name, err)
				return
			}
		}
		for _, fu := range j.fus {
			if err := followAndCheck(ctx, w, fu, check); err != nil {
				t.Errorf("crash after call %d of %d, then %s: %v", j.k, n, fu.name, err)
				return
			}
		}
	})
	t.Logf("%d crash points, %d distinct crashed states, each with follow-ups %s", n, states, followUpNames(fus))
	return n
}

// parallel runs fn(0) to fn(n-1) on crashWorkers goroutines.
func parallel(n int, fn func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range crashWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

func followUpNames(fus []followUp) string {
	names := make([]string, len(fus))
	for i, f := range fus {
		names[i] = f.name
	}
	return strings.Join(names, ", ")
}

// followAndCheck runs fu on a crashed state and checks the outcome.
func followAndCheck(ctx context.Context, w *world, fu followUp, check func(context.Context, *world) error) error {
	if err := fu.do(ctx, w); err != nil {
		return err
	}
	if err := check(ctx, w); err != nil {
		return fmt.Errorf("after %s: %w", fu.name, err)
	}
	return nil
}

// current reads CURRENT's key id, and checks that CURRENT exists and is not
// PENDING.
func current(ctx context.Context, w *world) (string, error) {
	p, err := currentPayload(ctx, w)
	return p.KeyID, err
}

// currentPayload reads CURRENT's payload, and checks that CURRENT exists
// and is not PENDING.
func currentPayload(ctx context.Context, w *world) (providers.Payload, error) {
	cur, err := w.st.Read(ctx, w.name, driver.Current)
	if err != nil {
		return providers.Payload{}, fmt.Errorf("consumers cannot read CURRENT: %w", err)
	}
	p, err := providers.DecodePayload(cur.Value, "")
	if err != nil {
		return providers.Payload{}, fmt.Errorf("CURRENT version %s holds no key: %w", cur.ID, err)
	}
	switch pv, err := w.st.ReadPending(ctx, w.name); {
	case err == nil && pv.ID == cur.ID:
		return providers.Payload{}, fmt.Errorf("CURRENT version %s is also PENDING", cur.ID)
	case err != nil && !codes.Is(err, codes.NotFound):
		return providers.Payload{}, fmt.Errorf("read PENDING: %w", err)
	}
	return p, nil
}

// noPending checks that no PENDING version is left.
func noPending(ctx context.Context, w *world) error {
	if pv, err := w.st.ReadPending(ctx, w.name); !codes.Is(err, codes.NotFound) {
		if err == nil {
			return fmt.Errorf("PENDING version %s (token %q) left behind", pv.ID, pv.Token)
		}
		return fmt.Errorf("read PENDING: %w", err)
	}
	return nil
}

// revoked returns the key ids the issuer was asked to revoke, in order.
func (w *world) revoked() []string {
	b, _ := os.ReadFile(filepath.Join(w.dir, "revoke.calls"))
	return strings.Fields(string(b))
}

// checkKey checks a key's invariants: CURRENT is readable and is a value
// some operation wrote, never PENDING; no key was revoked twice; CURRENT's
// key was not revoked; no key is valid at the issuer that nothing in the
// store or the record names (noLeak). A revocation repeated right after
// itself is one revocation retried: a rotator stopped between the
// issuer's answer and its record asks again, as rotation.Issuer's contract
// allows.
func checkKey(ctx context.Context, w *world) error {
	p, err := currentPayload(ctx, w)
	if err != nil {
		return err
	}
	id := p.KeyID
	if id != idOld && id != idNew && id != idPut && !w.isIssued(id, p.Key.Reveal()) {
		return fmt.Errorf("CURRENT holds key %q, which no operation wrote", id)
	}
	rev := w.revoked()
	seen := map[string]bool{}
	for i, r := range rev {
		if i > 0 && rev[i-1] == r {
			continue
		}
		if seen[r] {
			return fmt.Errorf("key %s revoked twice (revocations %v)", r, rev)
		}
		seen[r] = true
	}
	if w.currentRevoked(id, p.Key.Reveal()) {
		return fmt.Errorf("CURRENT's key %s was revoked (revocations %v)", id, rev)
	}
	return noLeak(ctx, w)
}

// checkPool checks the pool's invariants: the document reads, no key is in
// it twice, and no seeded key was lost (the one claimed by tok-1 may be
// committed, that is gone).
func checkPool(ctx context.Context, w *world) error {
	list, err := pool.New(w.st, w.name).List(ctx)
	if err != nil {
		return fmt.Errorf("pool: %w", err)
	}
	seen := map[string]bool{}
	for _, e := range list {
		if seen[e.KeyID] {
			return fmt.Errorf("pool holds key %s twice", e.KeyID)
		}
		seen[e.KeyID] = true
	}
	for _, id := range []string{"b", "e"} {
		if !seen[idPool+"_"+id] && !committed(w, idPool+"_"+id) {
			return fmt.Errorf("pool lost key %s_%s", idPool, id)
		}
	}
	return nil
}

// committed reports whether the pool follow-up claimed and committed id.
func committed(w *world, id string) bool {
	b, _ := os.ReadFile(filepath.Join(w.dir, "committed"))
	return string(b) == id
}

func followRotate(ctx context.Context, w *world) error {
	if err := revokeByHand(ctx, w); err != nil {
		return err
	}
	res, err := w.rotator().Run(ctx, "k", rotation.RunOptions{Force: true})
	if err != nil && rotation.KindOf(err) == rotation.KindConflict && strings.Contains(err.Error(), "--abandon` to discard it") {
		// A PENDING version no rotation wrote: the documented way out is
		// --abandon, then the rotation runs.
		if _, aerr := w.rotator().Run(ctx, "k", rotation.RunOptions{Abandon: true}); aerr != nil {
			return fmt.Errorf("rotate: %w; then abandon, as told: %w", err, aerr)
		}
		res, err = w.rotator().Run(ctx, "k", rotation.RunOptions{Force: true})
	}
	if err != nil && rotation.KindOf(err) == rotation.KindProbe && strings.Contains(err.Error(), "failed its probe and was discarded") {
		// A run that finishes discarding a key that failed its probe
		// reports that failure (exit 10) and ends there, the key undone;
		// the next run rotates.
		if perr := noPending(ctx, w); perr != nil {
			return fmt.Errorf("rotate: %w; and %w", err, perr)
		}
		res, err = w.rotator().Run(ctx, "k", rotation.RunOptions{Force: true})
	}
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if res.Outcome != rotation.OutcomeRevoked {
		return fmt.Errorf("rotate: outcome %s: %s", res.Outcome, res.Message)
	}
	p, err := currentPayload(ctx, w)
	if err != nil {
		return fmt.Errorf("after rotate: %w", err)
	}
	if id := p.KeyID; !w.isIssued(id, p.Key.Reveal()) {
		return fmt.Errorf("after rotate: CURRENT holds %s, not a key the issuer handed out", id)
	}
	return noPending(ctx, w)
}

// followRevokeLeftValid runs --revoke-left-valid again: it succeeds, the
// list is empty, and the key it named (idOld) is revoked at the issuer.
func followRevokeLeftValid(ctx context.Context, w *world) error {
	res, err := w.rotator().Run(ctx, "k", rotation.RunOptions{RevokeLeftValid: true})
	if err != nil {
		return fmt.Errorf("revoke-left-valid: %w", err)
	}
	if res.Outcome != rotation.OutcomeLeftValidRevoked && res.Outcome != rotation.OutcomeNothing {
		return fmt.Errorf("revoke-left-valid: outcome %s: %s", res.Outcome, res.Message)
	}
	rec, err := w.st.ReadRecord(ctx, w.name)
	if err != nil {
		return err
	}
	if lv := rec.Data["left_valid"]; lv != "" || rec.Data["holder"] != "" {
		return fmt.Errorf("after revoke-left-valid: left_valid %s, holder %q", lv, rec.Data["holder"])
	}
	if old := w.oldKeyID(); !w.keyRevoked(old) {
		return fmt.Errorf("after revoke-left-valid: %s was not revoked (revocations %v)", old, w.revoked())
	}
	return nil
}

// oldKeyFile holds, in a world's folder, the issuer id of the key CURRENT
// held before the seeded rotation, when the issuer chose it (the Admin
// API's; idOld otherwise).
const oldKeyFile = "old-key.id"

// oldKeyID returns the issuer id of CURRENT's key before the seeded
// rotation.
func (w *world) oldKeyID() string {
	if b, err := os.ReadFile(filepath.Join(w.dir, oldKeyFile)); err == nil {
		return string(b)
	}
	return idOld
}

// keyRevoked reports whether the issuer revoked the key with issuer id id
// (the Admin API: it is no longer active).
func (w *world) keyRevoked(id string) bool {
	if w.issuer == issuerClaude {
		keys := w.api.Keys()
		i := slices.IndexFunc(keys, func(k anthropictest.Key) bool { return k.ID == id })
		return i >= 0 && keys[i].Status != anthropictest.StatusActive
	}
	return slices.Contains(w.revoked(), id)
}

func followPut(ctx context.Context, w *world) error {
	before, err := current(ctx, w)
	if err != nil {
		return err
	}
	if _, err := stage.Put(ctx, w.st, w.name, keyValue(idPut)); err != nil {
		// A rotation's PENDING version is refused by put: the rotation
		// owns it. Nothing changes.
		if codes.Is(err, codes.FailedPrecondition) {
			if pv, perr := w.st.ReadPending(ctx, w.name); perr == nil && !stage.IsOneShot(pv.Token) {
				if after, _ := current(ctx, w); after != before {
					return fmt.Errorf("a refused put changed CURRENT from %s to %s", before, after)
				}
				return nil
			}
		}
		return fmt.Errorf("put: %w", err)
	}
	if id, err := current(ctx, w); err != nil || id != idPut {
		return fmt.Errorf("after put: CURRENT %q (%v), want %s", id, err, idPut)
	}
	return noPending(ctx, w)
}

func followAbandon(ctx context.Context, w *world) error {
	before, err := current(ctx, w)
	if err != nil {
		return err
	}
	r := w.rotator()
	_, err = r.Run(ctx, "k", rotation.RunOptions{Abandon: true})
	if err != nil {
		// A rotation past its probe is not abandoned but finished.
		if rotation.KindOf(err) != rotation.KindConflict || !strings.Contains(err.Error(), "let it finish") {
			return fmt.Errorf("abandon: %w", err)
		}
		return followRotate(ctx, w)
	}
	if after, err := current(ctx, w); err != nil || after != before {
		return fmt.Errorf("abandon changed CURRENT from %s to %q (%v)", before, after, err)
	}
	return noPending(ctx, w)
}

// followDryRun plans a run (--dry-run --force): the plan changes nothing
// (CURRENT, PENDING and the issuer's state stay), never proposes to
// revoke or discard CURRENT's key, and shows no key.
func followDryRun(ctx context.Context, w *world) error { return dryRun(ctx, w, nil) }

// dryRun is followDryRun, a plan failing otherwise than with a conflict
// when refused (nil: never) accepts its error.
func dryRun(ctx context.Context, w *world, refused func(error) bool) error {
	before, err := current(ctx, w)
	if err != nil {
		return err
	}
	cur, err := w.st.Read(ctx, w.name, driver.Current)
	if err != nil {
		return err
	}
	p, err := providers.DecodePayload(cur.Value, "")
	if err != nil {
		return err
	}
	curFP := p.Key.Fingerprint()
	pendBefore, _ := w.st.ReadPending(ctx, w.name)
	issuerBefore := w.issuerState()
	for _, o := range []rotation.RunOptions{{DryRun: true, Force: true}, {DryRun: true, Abandon: true}} {
		res, err := runShown(ctx, w, o)
		if err != nil && rotation.KindOf(err) != rotation.KindConflict && (refused == nil || !refused(err)) {
			return fmt.Errorf("dry run (abandon %v): %w", o.Abandon, err)
		}
		if res == nil {
			continue
		}
		for _, line := range res.Plan {
			// A step that revokes or discards now (not "promote it over
			// CURRENT; revoke the old key after a grace": that is the
			// rotation itself) must not name CURRENT's key.
			now := strings.HasPrefix(line, "revoke ") || strings.HasPrefix(line, "abandon ") ||
				strings.HasPrefix(line, "discard ") || strings.HasPrefix(line, "finish discarding ")
			names := strings.Contains(line, curFP) || strings.Contains(line, "key id "+before+")") ||
				regexp.MustCompile(`\bversion `+regexp.QuoteMeta(cur.ID)+`\b`).MatchString(line)
			if now && names {
				return fmt.Errorf("dry run proposes to revoke or discard CURRENT's key %s: %q", before, line)
			}
		}
	}
	after, err := current(ctx, w)
	if err != nil || after != before {
		return fmt.Errorf("dry run changed CURRENT from %s to %q (%v)", before, after, err)
	}
	pendAfter, _ := w.st.ReadPending(ctx, w.name)
	if (pendBefore == nil) != (pendAfter == nil) || pendBefore != nil && pendBefore.ID != pendAfter.ID {
		return fmt.Errorf("dry run changed PENDING")
	}
	if w.issuerState() != issuerBefore {
		return fmt.Errorf("dry run called the issuer")
	}
	return nil
}

func followPoolAdd(ctx context.Context, w *world) error {
	p := pool.New(w.st, w.name)
	if _, err := p.Add(ctx, providers.NewSecret(string(providertest.FakeKey())), idPool+"_d"); err != nil {
		return fmt.Errorf("pool add: %w", err)
	}
	list, err := p.List(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(list, func(i pool.Info) bool { return i.KeyID == idPool+"_d" }) {
		return errors.New("pool add: the key is not in the pool")
	}
	return noPending(ctx, w)
}

// followPoolClaim is what a rotation does to the pool: claim a key for its
// token, then commit it.
func followPoolClaim(ctx context.Context, w *world) error {
	p := pool.New(w.st, w.name)
	e, _, err := p.Claim(ctx, "tok-3")
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	list, err := p.List(ctx)
	if err != nil {
		return err
	}
	for _, i := range list {
		if i.KeyID == e.KeyID && i.Claimed != "tok-3" {
			return fmt.Errorf("claim: key %s is claimed by tok-3 and listed as %q too", e.KeyID, i.Claimed)
		}
	}
	if err := os.WriteFile(filepath.Join(w.dir, "committed"), []byte(e.KeyID), 0o600); err != nil {
		return err
	}
	if err := p.Commit(ctx, "tok-3"); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return noPending(ctx, w)
}
