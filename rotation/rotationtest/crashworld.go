package rotationtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/anthropictest"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest/crashtest"
	"github.com/keywarden/keywarden/providers/stage"
	"github.com/keywarden/keywarden/rotation"
	claude "github.com/keywarden/keywarden/rotation/anthropic"
	rexec "github.com/keywarden/keywarden/rotation/exec"
	"github.com/keywarden/keywarden/rotation/pool"
)

// The issuers a crash operation's rotations use.
const (
	issuerExec   = "exec"      // testdata/issuer.sh, its state in world.dir
	issuerClaude = "anthropic" // rotation/anthropic against an anthropictest server
)

// world is one secret on one backend, with its issuer's state.
type world struct {
	st     driver.Stager
	name   string
	dir    string // the exec issuer's state (keys minted, revocations)
	issuer string // issuerExec or issuerClaude
	// open opens another secret of the backend (the anthropic issuer's
	// pool and Admin key), counting as st does.
	open func(secret string) driver.Stager
	// c counts the issuer's and the probe's calls besides the store's (a
	// child's; nil in the parent).
	c *crashtest.Counter
	// api is the fake Claude API of an anthropic world (parent only) and
	// apiURL its address (parent and child).
	api    *anthropictest.Server
	apiURL string
}

// poolName names the anthropic issuer's pool secret, beside the key's.
func (w *world) poolName() string { return w.name + "-pool" }

// adminStore is where the anthropic issuer reads its Admin key (secret
// "admin"): a file store of the world's own, outside the backend under
// test and not counted. The Admin key's store is configured apart from the
// key's, and a crash after reading it leaves the state of the crash
// before it: counting its reads would add crash points and no state.
func (w *world) adminStore() driver.Stager { return file.New(filepath.Join(w.dir, "admin.json")) }

// rotatorOpt changes a crash rotator's options or key before it is made:
// to seed a state (a failing probe, a run stopped at a boundary).
type rotatorOpt func(*rotation.Options, *rotation.Key)

// rotator returns the rotator of key "k" on the world's secret, with the
// world's issuer and a probe of it; in a child, every issuer and probe call
// is a crash point. Every process is the same holder: a restarted rotator.
func (w *world) rotator(mods ...rotatorOpt) *rotation.Rotator {
	weekly, _ := rotation.ParseSchedule("@weekly")
	o := rotation.Options{Holder: "crash-pod", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	k := &rotation.Key{Name: "k", Store: w.st, Secret: w.name, Schedule: weekly,
		Retry: rotation.Retry{Attempts: 1, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Settle: -1}}
	switch w.issuer {
	case issuerClaude:
		hc := &http.Client{Transport: w.c.Transport(nil), Timeout: time.Minute}
		iss, err := claude.NewIssuer(claude.IssuerOptions{
			BaseURL:  w.apiURL,
			AdminKey: claude.KeyFromStore(w.adminStore(), "admin", ""),
			Pool:     pool.New(w.open(w.poolName()), w.poolName()),
			// One attempt: a crash child never sees a failure to retry.
			HTTPClient: hc, Attempts: 1, Backoff: time.Millisecond,
			Logger: o.Logger,
		})
		if err != nil {
			panic(err)
		}
		k.Issuer = iss
		k.Probe = claude.NewProbe(claude.ProbeOptions{BaseURL: w.apiURL, HTTPClient: hc})
	default:
		script, err := filepath.Abs("testdata/issuer.sh")
		if err != nil {
			panic(err)
		}
		iss, err := rexec.New(rexec.Options{KeyName: "k", Command: []string{script}, Env: []string{"STATE=" + w.dir}})
		if err != nil {
			panic(err)
		}
		k.Issuer = countingIssuer{Issuer: iss, c: w.c}
		k.Probe = issuerProbe{dir: w.dir, c: w.c}
	}
	for _, m := range mods {
		m(&o, k)
	}
	r, err := rotation.New(o, k)
	if err != nil {
		panic(err)
	}
	return r
}

// countingIssuer makes each call of an issuer a crash point: c ticks after
// the issuer's answer arrived, as a write (Create mints, Revoke revokes).
// It offers only rotation.Issuer, as the exec issuer does.
type countingIssuer struct {
	rotation.Issuer
	c *crashtest.Counter
}

func (i countingIssuer) Create(ctx context.Context, token string) (rotation.Credential, error) {
	cred, err := i.Issuer.Create(ctx, token)
	i.c.Tick()
	return cred, err
}

func (i countingIssuer) Revoke(ctx context.Context, c rotation.Credential) error {
	err := i.Issuer.Revoke(ctx, c)
	i.c.Tick()
	return err
}

// issuerProbe asks the exec issuer's state whether a key works: minted and
// not revoked, as an API would answer a request with it. Each probe is a
// crash point that only read.
type issuerProbe struct {
	dir string
	c   *crashtest.Counter
}

func (issuerProbe) Type() string { return "issuer-state" }

func (p issuerProbe) Probe(_ context.Context, key providers.Secret) error {
	defer p.c.TickRead()
	for _, m := range mintedKeys(p.dir) {
		if m.value == key.Reveal() {
			if m.revoked {
				return &rotation.ProbeError{Err: fmt.Errorf("key %s is revoked", m.id)}
			}
			return nil
		}
	}
	return &rotation.ProbeError{Err: fmt.Errorf("key %s unknown to the issuer", key.Fingerprint())}
}

// minted is one key the exec issuer minted.
type minted struct {
	token, value, id string
	revoked          bool
}

// mintedKeys reads the exec issuer's keys from its state in dir.
func mintedKeys(dir string) []minted {
	files, _ := filepath.Glob(filepath.Join(dir, "token.*"))
	var out []minted
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		v, id, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		_, err = os.Stat(filepath.Join(dir, "revoked."+id))
		out = append(out, minted{token: strings.TrimPrefix(filepath.Base(f), "token."), value: v, id: id, revoked: err == nil})
	}
	return out
}

// issuerState describes the issuer's state, to tell crash points after
// which it changed: for the exec issuer, how many keys it minted and the
// revocations asked for; for the anthropic one, every key's status,
// oldest first.
func (w *world) issuerState() string {
	if w.issuer == issuerClaude {
		// Each world has its own server: statuses by age, not by id.
		var s []string
		for _, k := range w.api.Keys() {
			s = append(s, k.Status)
		}
		return strings.Join(s, " ")
	}
	return fmt.Sprintf("minted %d, revoked %v", len(mintedKeys(w.dir)), w.revoked())
}

// names is what the store and the rotation record name: key ids and
// fingerprints, and the token of a rotation under way.
type names struct {
	ids, fps map[string]bool
	token    string
}

func (n names) has(id, value string) bool {
	return n.ids[id] || n.fps[providers.NewSecret(value).Fingerprint()]
}

// named reads what CURRENT, PREVIOUS, PENDING and the rotation record name.
func named(ctx context.Context, w *world) (names, error) {
	n := names{ids: map[string]bool{}, fps: map[string]bool{}}
	add := func(v *driver.Version) {
		if p, err := providers.DecodePayload(v.Value, ""); err == nil {
			n.ids[p.KeyID] = true
			n.fps[p.Key.Fingerprint()] = true
		}
	}
	for _, s := range []driver.Stage{driver.Current, driver.Previous} {
		v, err := w.st.Read(ctx, w.name, s)
		switch {
		case err == nil:
			add(v)
		case !codes.Is(err, codes.NotFound):
			return n, fmt.Errorf("read %s: %w", s, err)
		}
	}
	switch v, err := w.st.ReadPending(ctx, w.name); {
	case err == nil:
		add(v)
	case !codes.Is(err, codes.NotFound):
		return n, fmt.Errorf("read PENDING: %w", err)
	}
	rec, err := w.st.ReadRecord(ctx, w.name)
	if err != nil {
		return n, fmt.Errorf("read the rotation record: %w", err)
	}
	d := rec.Data
	for _, f := range []string{"new_key_id", "old_key_id"} {
		n.ids[d[f]] = true
	}
	for _, f := range []string{"new_fp", "old_fp"} {
		n.fps[d[f]] = true
	}
	for _, id := range strings.FieldsFunc(d["key_ids"], func(r rune) bool { return strings.ContainsRune(`{}",:`, r) }) {
		n.ids[id] = true
	}
	// The keys rotations left valid are named until they are revoked.
	if lv := d["left_valid"]; lv != "" {
		var es []rotation.LeftValidKey
		if err := json.Unmarshal([]byte(lv), &es); err != nil {
			return n, fmt.Errorf("the record's left_valid: %w", err)
		}
		for _, e := range es {
			n.ids[e.KeyID], n.fps[e.Fingerprint] = true, true
		}
	}
	if d["phase"] != string(rotation.PhaseIdle) {
		n.token = d["token"]
	}
	delete(n.ids, "")
	delete(n.fps, "")
	return n, nil
}

// noLeak checks that every key valid at the issuer is named by the store
// or the rotation record (a rotation under way names the key it was issued
// by its token): none is left valid that nobody knows of, to revoke.
func noLeak(ctx context.Context, w *world) error {
	n, err := named(ctx, w)
	if err != nil {
		return err
	}
	if w.issuer == issuerClaude {
		claimed, err := claimedBy(ctx, w, n.token)
		if err != nil {
			return err
		}
		if err := noStaleClaim(ctx, w, n.token); err != nil {
			return err
		}
		for _, k := range w.api.Keys() {
			if k.Status == anthropictest.StatusActive && !n.has(k.ID, k.Value) && k.Value != claimed {
				return fmt.Errorf("key %s is active at the Admin API and named by nothing in the store or the record (a leaked key)", k.ID)
			}
		}
		return nil
	}
	for _, m := range mintedKeys(w.dir) {
		if !m.revoked && !n.has(m.id, m.value) && (n.token == "" || m.token != n.token) {
			return fmt.Errorf("key %s is valid at the issuer and named by nothing in the store or the record (a leaked key)", m.id)
		}
	}
	return nil
}

// noStaleClaim checks that no pool key stays claimed by a rotation that is
// over (token is the one under way, "" for none): its key would be lost
// to every later rotation.
func noStaleClaim(ctx context.Context, w *world, token string) error {
	es, err := pool.New(w.open(w.poolName()), w.poolName()).List(ctx)
	if err != nil {
		return fmt.Errorf("pool: %w", err)
	}
	for _, e := range es {
		if e.Claimed != "" && e.Claimed != token {
			return fmt.Errorf("pool key %s stays claimed by a rotation that is over (token %.8s…)", e.Fingerprint, e.Claimed)
		}
	}
	return nil
}

// claimedBy returns the value of the pool key claimed by token ("" for
// none).
func claimedBy(ctx context.Context, w *world, token string) (string, error) {
	if token == "" {
		return "", nil
	}
	es, err := pool.New(w.open(w.poolName()), w.poolName()).List(ctx)
	if err != nil {
		return "", fmt.Errorf("pool: %w", err)
	}
	for _, e := range es {
		if e.Claimed == token {
			for _, k := range w.api.Keys() {
				if providers.NewSecret(k.Value).Fingerprint() == e.Fingerprint {
					return k.Value, nil
				}
			}
		}
	}
	return "", nil
}

// currentRevoked reports whether CURRENT's key (id, value) is revoked at
// the issuer.
func (w *world) currentRevoked(id, value string) bool {
	if w.issuer == issuerClaude {
		k, ok := w.api.KeyByValue(value)
		return ok && k.Status != anthropictest.StatusActive
	}
	return slices.Contains(w.revoked(), id)
}

// isIssued reports whether the key (id, value) is one the world's issuer
// handed out (for the anthropic issuer: any key of its organization, found
// by its value when the payload has no id).
func (w *world) isIssued(id, value string) bool {
	if w.issuer == issuerClaude {
		_, ok := w.api.KeyByValue(value)
		return ok
	}
	return strings.HasPrefix(id, "apikey_k")
}

// seedClaude seeds the world's fake Claude API (started by the harness)
// with an active key as CURRENT (with its id), the Admin key in its
// store, and two inactive Console keys in the pool, the first without its
// id (a draw finds it by its partial_key_hint), the second with it.
func seedClaude(ctx context.Context, w *world) (anthropictest.Key, error) {
	return seedClaudeAs(ctx, w, true)
}

// seedClaudeAs is seedClaude, CURRENT's payload holding its id or, when
// not withID, only the bare key (a hand-managed secret: the rotation
// resolves the old key's id by its partial_key_hint before promoting).
func seedClaudeAs(ctx context.Context, w *world, withID bool) (anthropictest.Key, error) {
	first := w.api.AddKey("", anthropictest.StatusActive)
	value := []byte(first.Value)
	if withID {
		value = providers.EncodePayload(providers.Payload{Key: providers.NewSecret(first.Value), KeyID: first.ID})
	}
	if _, err := stage.Put(ctx, w.st, w.name, value); err != nil {
		return first, err
	}
	if _, err := stage.Put(ctx, w.adminStore(), "admin", []byte(w.api.AdminKey())); err != nil {
		return first, err
	}
	p := pool.New(w.open(w.poolName()), w.poolName())
	for i := range 2 {
		k := w.api.AddKey("", anthropictest.StatusInactive)
		id := k.ID
		if i == 0 {
			id = ""
		}
		if _, err := p.Add(ctx, providers.NewSecret(k.Value), id); err != nil {
			return first, err
		}
	}
	return first, nil
}

// stopAt stops a seeding run at boundary b, as a crash there would: the
// run writes nothing more.
func stopAt(b rotation.Boundary) rotatorOpt {
	return func(o *rotation.Options, _ *rotation.Key) {
		o.AfterStep = func(_ context.Context, _ string, at rotation.Boundary) error {
			if at == b {
				return errStopped
			}
			return nil
		}
	}
}

var errStopped = errors.New("stopped here to seed a state")

// revokeByHand does what a rotation that ended without revoking its old key
// (outcome not_revoked, or abandoned by an operator) tells the operator:
// revoke the key it names by hand at the issuer. The next rotation records
// another old key, and the store names the unrevoked one no more.
func revokeByHand(ctx context.Context, w *world) error {
	rec, err := w.st.ReadRecord(ctx, w.name)
	if err != nil {
		return fmt.Errorf("read the rotation record: %w", err)
	}
	d := rec.Data
	if d["phase"] != string(rotation.PhaseIdle) || (d["last_outcome"] != rotation.OutcomeNotRevoked && d["last_outcome"] != "abandoned") {
		return nil
	}
	id := d["old_key_id"]
	if w.issuer == issuerClaude {
		if _, ok := w.api.Key(id); ok {
			return w.api.SetStatus(id, anthropictest.StatusInactive)
		}
		return nil
	}
	return os.WriteFile(filepath.Join(w.dir, "revoked."+id), nil, 0o600)
}

// discardOnFailure discards a new key that fails its probe.
func discardOnFailure(_ *rotation.Options, k *rotation.Key) { k.OnProbeFailure = rotation.Discard }

// failingProbe makes the seeding run's probe refuse the new key.
func failingProbe(_ *rotation.Options, k *rotation.Key) { k.Probe = refusingProbe{} }

type refusingProbe struct{}

func (refusingProbe) Type() string { return "refusing" }

func (refusingProbe) Probe(context.Context, providers.Secret) error {
	return &rotation.ProbeError{Err: errors.New("401 authentication_error")}
}
