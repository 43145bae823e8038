package gcp_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"gopkg.in/yaml.v3"

	"github.com/keywarden/keywarden/internal/gcpsmfake"
	"github.com/keywarden/keywarden/providers"
	kwcodes "github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/gcp"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/stage"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/pool"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// shippedRole reads the includedPermissions of deploy/policies/gcp-NAME.yaml.
func shippedRole(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "policies", "gcp-"+name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role struct {
		Title               string   `yaml:"title"`
		Stage               string   `yaml:"stage"`
		IncludedPermissions []string `yaml:"includedPermissions"`
	}
	if err := yaml.Unmarshal(b, &role); err != nil {
		t.Fatalf("gcp-%s.yaml: %v", name, err)
	}
	if role.Title == "" || role.Stage == "" || len(role.IncludedPermissions) == 0 {
		t.Fatalf("gcp-%s.yaml: title, stage and includedPermissions are required by gcloud iam roles create", name)
	}
	return role.IncludedPermissions
}

// iamWorld is a fake Secret Manager that enforces IAM, with the project's
// secrets made by an administrator bound on the project, as an operator
// following docs/operations.md makes them.
type iamWorld struct {
	srv    *gcpsmfake.Server
	admin  *gcp.Store
	values []string // every key value written, none of which may show in an error
}

const iamProject = "kw-iam"

func secretPath(name string) string { return "projects/" + iamProject + "/secrets/" + name }

func newIAMWorld(t *testing.T) *iamWorld {
	t.Helper()
	srv := gcpsmfake.Start(t)
	srv.EnforceIAM()
	if err := srv.Grant("projects/"+iamProject, "admin", gcpsmfake.Permissions...); err != nil {
		t.Fatal(err)
	}
	return &iamWorld{srv: srv, admin: gcp.New(srv.ClientAs(t, "admin"), iamProject, gcp.Options{})}
}

// create makes secret name (gcloud secrets create), with a first version
// holding a key when withKey.
func (w *iamWorld) create(t *testing.T, name string, withKey bool) {
	t.Helper()
	ctx := context.Background()
	c := w.srv.ClientAs(t, "admin")
	if _, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
		Parent: "projects/" + iamProject, SecretId: name,
		Secret: &secretmanagerpb.Secret{Replication: &secretmanagerpb.Replication{
			Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}}}},
	}); err != nil {
		t.Fatalf("admin creates %s: %v", name, err)
	}
	if withKey {
		v := providertest.FakeKey()
		w.values = append(w.values, string(v))
		if _, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: secretPath(name), Payload: &secretmanagerpb.SecretPayload{Data: v}}); err != nil {
			t.Fatalf("admin adds a version to %s: %v", name, err)
		}
	}
}

// bind binds a role's permissions on secret name to member (gcloud secrets
// add-iam-policy-binding).
func (w *iamWorld) bind(t *testing.T, name, member string, perms []string) {
	t.Helper()
	if err := w.srv.Grant(secretPath(name), member, perms...); err != nil {
		t.Fatalf("bind on %s: %v", name, err)
	}
}

// store is the driver as member runs it: the real client, its calls
// carrying member's bearer token.
func (w *iamWorld) store(t *testing.T, member string, opts gcp.Options) *gcp.Store {
	return gcp.New(w.srv.ClientAs(t, member), iamProject, opts)
}

// denied checks that err is the driver's PermissionDenied naming the
// permission refused and the roles to bind, and holds no key value.
func (w *iamWorld) denied(t *testing.T, who, what string, err error) {
	t.Helper()
	providertest.CheckDenied(t, who, what, err, []string{"Permission 'secretmanager.", "gcloud secrets add-iam-policy-binding",
		"deploy/policies/gcp-reader.yaml, gcp-rotator.yaml"}, w.values)
}

func (w *iamWorld) state(t *testing.T, name, version string) secretmanagerpb.SecretVersion_State {
	t.Helper()
	v, err := w.srv.ClientAs(t, "admin").GetSecretVersion(context.Background(), &secretmanagerpb.GetSecretVersionRequest{Name: secretPath(name) + "/versions/" + version})
	if err != nil {
		t.Fatal(err)
	}
	return v.GetState()
}

// The secrets: the key, its pool, the Admin key, and others whose names
// start like the key's, which no binding may reach.
const (
	iamKey   = "anthropic-prod"
	iamPool  = "anthropic-prod-pool"
	iamAdmin = "anthropic-admin"
	iamNew   = "anthropic-prod-3" // never created
)

var iamOthers = []string{"anthropic-prod-2", "anthropic-production"}

// TestShippedRolesOnIAM runs the real driver, with the real client and the
// bearer token of a caller holding the permissions of
// deploy/policies/gcp-reader.yaml or gcp-rotator.yaml bound as
// docs/operations.md binds them (on the secrets; the rotator's reader role
// on the Admin key's secret), against gcpsmfake enforcing Secret Manager's
// per-method permissions. The rotator puts the first key, rotates twice with
// disable_old=true, discards a PENDING version and fills the pool; the
// reader loads and refreshes CURRENT and PREVIOUS as a Source and `keywarden
// check` do. Every write of the reader, and every call on the other secrets
// or a missing one, is PermissionDenied, saying what to bind.
//
// What this proves and what not: the permissions each driver call needs on
// the secret it names, under the fake's model (internal/gcpsmfake/iam.go
// lists what it leaves out: conditions, deny and organization policies,
// folders, CMEK). It does not prove how Application Default Credentials
// reach the token: the callers here hold a bearer token, not a GKE identity.
func TestShippedRolesOnIAM(t *testing.T) {
	ctx := context.Background()
	readerRole, rotatorRole := shippedRole(t, "reader"), shippedRole(t, "rotator")
	w := newIAMWorld(t)
	// The secrets exist before their roles are bound: a binding is made on
	// an existing secret.
	w.create(t, iamKey, false)
	w.create(t, iamPool, false)
	w.create(t, iamAdmin, true)
	for _, name := range iamOthers {
		w.create(t, name, true)
	}
	w.bind(t, iamKey, "reader", readerRole)
	w.bind(t, iamKey, "rotator", rotatorRole)
	w.bind(t, iamPool, "rotator", rotatorRole)
	w.bind(t, iamAdmin, "rotator", readerRole)

	rot := w.store(t, "rotator", gcp.Options{DisableOld: true})
	rd := w.store(t, "reader", gcp.Options{})

	// The rotator's work, in the order an operator meets it: `put` of the
	// first key, two rotations (so that disable_old finds a version older
	// than PREVIOUS), `pool add` and the pool's count, the Admin key.
	ledger := rotationtest.NewLedger()
	seed := ledger.Seed()
	w.values = append(w.values, seed.Key.Reveal())
	r, err := rotation.New(rotation.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		&rotation.Key{Name: "k", Store: rot, Secret: iamKey, Issuer: ledger, Probe: ledger.Probe(nil)})
	if err != nil {
		t.Fatal(err)
	}
	rotate := func() error {
		res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true})
		if err == nil && res.Outcome != rotation.OutcomeRevoked {
			err = fmt.Errorf("outcome %q, want %q", res.Outcome, rotation.OutcomeRevoked)
		}
		return err
	}
	pooled := providertest.FakeKey()
	w.values = append(w.values, string(pooled))
	keys := pool.New(rot, iamPool)
	for _, step := range []struct {
		what string
		do   func() error
	}{
		{"put the first key", func() error {
			_, err := stage.Put(ctx, rot, iamKey, providers.EncodePayload(providers.Payload{Key: seed.Key, KeyID: seed.KeyID}))
			return err
		}},
		{"rotate", rotate},
		{"rotate again", rotate},
		{"pool add", func() error { _, err := keys.Add(ctx, providers.NewSecret(string(pooled)), ""); return err }},
		{"count the pool", func() error {
			if n, err := keys.Available(ctx); err != nil || n != 1 {
				return fmt.Errorf("%d keys (%v), want 1", n, err)
			}
			return nil
		}},
		{"read the Admin key " + iamAdmin, func() error { _, err := rot.Read(ctx, iamAdmin, driver.Current); return err }},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("rotator: %s: %v", step.what, err)
		}
	}
	if st := w.state(t, iamKey, "1"); st != secretmanagerpb.SecretVersion_DISABLED {
		t.Errorf("rotator: disable_old left version 1 (older than PREVIOUS) %v", st)
	}

	// The reader, as the sidecar, the library and `keywarden check` read:
	// a Source's first load and a refresh, CURRENT and PREVIOUS.
	src, err := providers.New(ctx, rd, iamKey, providers.Options{})
	if err != nil {
		t.Fatalf("reader: open a Source on %s: %v", iamKey, err)
	}
	defer src.Close()
	if _, err := src.Refresh(ctx); err != nil {
		t.Fatalf("reader: refresh %s: %v", iamKey, err)
	}
	cur, prev := src.Current(), src.Previous()
	if cur == nil || ledger.ByValue(cur.Value) == nil || cur.Value.Equal(seed.Key) || cur.VersionID != "3" {
		t.Fatalf("reader: CURRENT is not the second rotation's key (version %v)", cur)
	}
	if prev == nil || prev.VersionID != "2" || ledger.ByValue(prev.Value) == nil {
		t.Fatalf("reader: PREVIOUS is not the first rotation's key (version %v)", prev)
	}
	w.values = append(w.values, cur.Value.Reveal(), prev.Value.Reveal())

	// Every write of the reader on its key: refused; those that move a
	// PENDING version with one there (staged by the rotator, which later
	// discards it), so that they reach their write.
	readerWrites := func(want ...string) {
		t.Helper()
		calls := driverCalls(ctx, rd, iamKey, pendingID(w, t), cur.VersionID)
		for _, what := range want {
			w.denied(t, "reader", what+" on "+iamKey, calls[what]())
		}
	}
	readerWrites("PutPending", "put", "pool add", "WriteRecord")
	pend, err := rot.PutPending(ctx, iamKey, providertest.Token(), providertest.FakeKey())
	if err != nil {
		t.Fatalf("rotator: stage a PENDING version: %v", err)
	}
	readerWrites("Promote", "Discard", "WriteRecord")
	// And the raw calls a reader could try: the role holds none of them.
	readerClient := w.srv.ClientAs(t, "reader")
	for what, op := range map[string]func() error{
		"AddSecretVersion": func() error {
			_, err := readerClient.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: secretPath(iamKey), Payload: &secretmanagerpb.SecretPayload{Data: []byte("x")}})
			return err
		},
		"UpdateSecret": func() error {
			_, err := readerClient.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: secretPath(iamKey)}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"version_aliases"}}})
			return err
		},
		"DisableSecretVersion": func() error {
			_, err := readerClient.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: secretPath(iamKey) + "/versions/" + cur.VersionID})
			return err
		},
		"DestroySecretVersion": func() error {
			_, err := readerClient.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: secretPath(iamKey) + "/versions/" + cur.VersionID})
			return err
		},
		"ListSecretVersions": func() error {
			_, err := readerClient.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{Parent: secretPath(iamKey)}).Next()
			return err
		},
		"DeleteSecret": func() error {
			return readerClient.DeleteSecret(ctx, &secretmanagerpb.DeleteSecretRequest{Name: secretPath(iamKey)})
		},
	} {
		if c := status.Code(op()); c != codes.PermissionDenied {
			t.Errorf("reader: %s on %s: %v, want PermissionDenied", what, iamKey, c)
		}
	}
	// The reader reads its key only.
	for _, name := range append([]string{iamPool, iamAdmin, iamNew}, iamOthers...) {
		_, err := rd.Read(ctx, name, driver.Current)
		w.denied(t, "reader", "read "+name, err)
	}

	// The rotator discards its PENDING version: disabled, never destroyed.
	if err := rot.DiscardPending(ctx, iamKey, pend.ID); err != nil {
		t.Fatalf("rotator: discard PENDING %s: %v", pend.ID, err)
	}
	if st := w.state(t, iamKey, pend.ID); st != secretmanagerpb.SecretVersion_DISABLED {
		t.Errorf("rotator: the discarded version %s is %v, want DISABLED", pend.ID, st)
	}
	// The rotator on the other secrets, and on a missing one, which it
	// cannot create: nothing.
	for _, name := range append([]string{iamNew}, iamOthers...) {
		for what, op := range driverCalls(ctx, rot, name, pend.ID, "") {
			w.denied(t, "rotator", what+" on "+name, op())
		}
	}
	// The Admin key: read, never written.
	_, err = stage.Put(ctx, rot, iamAdmin, providertest.FakeKey())
	w.denied(t, "rotator", "put on "+iamAdmin, err)

	// Nothing refused changed anything: the others keep their one version,
	// the missing secret stays missing, no version was destroyed.
	for _, name := range iamOthers {
		if v, err := w.admin.Read(ctx, name, driver.Current); err != nil || v.ID != "1" {
			t.Errorf("%s changed: CURRENT %v, %v", name, v, err)
		}
		if d := w.srv.Destroyed(secretPath(name)); d != 0 {
			t.Errorf("%s: %d versions destroyed", name, d)
		}
	}
	if _, err := w.admin.Read(ctx, iamNew, driver.Current); !kwcodes.Is(err, kwcodes.NotFound) {
		t.Errorf("%s exists after refused writes (%v)", iamNew, err)
	}
	if v, err := w.admin.Read(ctx, iamKey, driver.Current); err != nil || v.ID != cur.VersionID {
		t.Errorf("%s: CURRENT moved under refused writes: %v %v", iamKey, v, err)
	}
}

// pendingID is the key's PENDING version, "" when there is none.
func pendingID(w *iamWorld, t *testing.T) string {
	t.Helper()
	v, err := w.admin.ReadPending(context.Background(), iamKey)
	if kwcodes.Is(err, kwcodes.NotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return v.ID
}

// driverCalls is providertest.DriverCalls and `pool add`.
func driverCalls(ctx context.Context, st driver.Stager, name, pendingID, currentID string) map[string]func() error {
	calls := providertest.DriverCalls(ctx, st, name, pendingID, currentID)
	calls["pool add"] = func() error {
		_, err := pool.New(st, name).Add(ctx, providers.NewSecret(string(providertest.FakeKey())), "")
		return err
	}
	return calls
}

// TestCreateNeedsTheProject: keywarden creates a missing secret only for a
// rotator whose role and secretmanager.secrets.create are bound on the
// project (reaching every secret in it); secrets.create on the project
// beside a role bound on secrets is not enough, since the driver's first
// call on the missing secret (GetSecret) is refused before it could learn
// that the secret does not exist.
func TestCreateNeedsTheProject(t *testing.T) {
	ctx := context.Background()
	rotatorRole := shippedRole(t, "rotator")
	w := newIAMWorld(t)
	w.create(t, iamKey, false)
	w.bind(t, iamKey, "rotator", rotatorRole)
	if err := w.srv.Grant("projects/"+iamProject, "rotator", "secretmanager.secrets.create"); err != nil {
		t.Fatal(err)
	}
	if err := w.srv.Grant("projects/"+iamProject, "project-rotator", append([]string{"secretmanager.secrets.create"}, rotatorRole...)...); err != nil {
		t.Fatal(err)
	}
	_, err := stage.Put(ctx, w.store(t, "rotator", gcp.Options{}), iamNew, providertest.FakeKey())
	w.denied(t, "rotator with secrets.create on the project", "put into the missing "+iamNew, err)
	if err == nil || !strings.Contains(err.Error(), "gcloud secrets create") {
		t.Errorf("the refusal does not say to create the secret first: %v", err)
	}
	if _, err := stage.Put(ctx, w.store(t, "project-rotator", gcp.Options{}), iamNew, providertest.FakeKey()); err != nil {
		t.Fatalf("rotator bound on the project: put into the missing %s: %v", iamNew, err)
	}
}
