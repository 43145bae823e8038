package gcpsmfake_test

import (
	"context"
	"hash/crc32"
	"strings"
	"testing"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keywarden/keywarden/internal/gcpsmfake"
)

const parent = "projects/p"

var auto = &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}}}

func code(err error) codes.Code { return status.Code(err) }

// TestDocumentedBehaviour drives the fake with the real client over loopback.
func TestDocumentedBehaviour(t *testing.T) {
	ctx := context.Background()
	srv := gcpsmfake.Start(t)
	c := srv.Client(t)
	name := parent + "/secrets/s"

	if _, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "bad id!", Secret: &secretmanagerpb.Secret{Replication: auto}}); code(err) != codes.InvalidArgument {
		t.Fatalf("bad secret id: %v", err)
	}
	if _, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "s", Secret: &secretmanagerpb.Secret{}}); code(err) != codes.InvalidArgument {
		t.Fatalf("missing replication: %v", err)
	}
	sec, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "s", Secret: &secretmanagerpb.Secret{Replication: auto}})
	if err != nil || sec.GetName() != name || !strings.HasPrefix(sec.GetEtag(), `"`) {
		t.Fatalf("create: %v %v", sec, err)
	}
	if _, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "s", Secret: &secretmanagerpb.Secret{Replication: auto}}); code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name + "/versions/latest"}); code(err) != codes.NotFound {
		t.Fatalf("latest of an empty secret: %v", err)
	}
	for _, d := range []string{"one", "two", "three"} {
		if _, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: name, Payload: &secretmanagerpb.SecretPayload{Data: []byte(d)}}); err != nil {
			t.Fatal(err)
		}
	}
	bad := int64(42)
	if _, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: name, Payload: &secretmanagerpb.SecretPayload{Data: []byte("x"), DataCrc32C: &bad}}); code(err) != codes.InvalidArgument {
		t.Fatalf("bad crc: %v", err)
	}
	if _, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: name, Payload: &secretmanagerpb.SecretPayload{Data: make([]byte, 65537)}}); code(err) != codes.InvalidArgument {
		t.Fatalf("oversized payload: %v", err)
	}
	access := func(v string) (string, error) {
		r, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name + "/versions/" + v})
		if err != nil {
			return "", err
		}
		if int64(crc32.Checksum(r.GetPayload().GetData(), crc32.MakeTable(crc32.Castagnoli))) != r.GetPayload().GetDataCrc32C() {
			t.Fatal("response crc32c wrong")
		}
		return string(r.GetPayload().GetData()), nil
	}
	if got, err := access("latest"); got != "three" || err != nil {
		t.Fatalf("latest: %q %v", got, err)
	}
	if got, err := access("1"); got != "one" || err != nil {
		t.Fatalf("by number: %q %v", got, err)
	}
	if _, err := access("9"); code(err) != codes.NotFound {
		t.Fatalf("missing version: %v", err)
	}
	// Aliases via UpdateSecret, guarded by the etag.
	sec, _ = c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
	mask := &fieldmaskpb.FieldMask{Paths: []string{"version_aliases"}}
	upd, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: name, Etag: sec.GetEtag(), VersionAliases: map[string]int64{"current": 2}}, UpdateMask: mask})
	if err != nil || upd.GetEtag() == sec.GetEtag() {
		t.Fatalf("update: %v (etag must change)", err)
	}
	if got, err := access("current"); got != "two" || err != nil {
		t.Fatalf("by alias: %q %v", got, err)
	}
	_, err = c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: name, Etag: sec.GetEtag(), VersionAliases: map[string]int64{"current": 3}}, UpdateMask: mask})
	if code(err) != codes.FailedPrecondition {
		t.Fatalf("stale etag: %v, want FAILED_PRECONDITION (documented)", err)
	}
	if _, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: name, VersionAliases: map[string]int64{"x": 99}}, UpdateMask: mask}); code(err) != codes.InvalidArgument {
		t.Fatalf("alias to a missing version: %v", err)
	}
	if _, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: name}}); code(err) != codes.InvalidArgument {
		t.Fatalf("missing mask: %v", err)
	}
	if _, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: name}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"replication"}}}); code(err) != codes.InvalidArgument {
		t.Fatalf("unsupported mask path: %v", err)
	}
	// Disable, enable, destroy.
	v1 := name + "/versions/1"
	ver, _ := c.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: v1})
	if _, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: v1, Etag: `"stale"`}); code(err) != codes.FailedPrecondition {
		t.Fatalf("disable with a stale etag: %v", err)
	}
	if _, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: v1, Etag: ver.GetEtag()}); err != nil {
		t.Fatal(err)
	}
	if _, err := access("1"); code(err) != codes.FailedPrecondition {
		t.Fatalf("access disabled: %v", err)
	}
	if _, err := c.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: v1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: name + "/versions/2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := access("2"); code(err) != codes.FailedPrecondition {
		t.Fatalf("access destroyed: %v", err)
	}
	if _, err := access("current"); code(err) != codes.NotFound {
		t.Fatalf("alias of a destroyed version must be gone: %v", err)
	}
	if _, err := c.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: name + "/versions/2"}); code(err) != codes.FailedPrecondition {
		t.Fatalf("enable destroyed: %v", err)
	}
	// Paged listing, newest first, with a state filter.
	var got []string
	it := c.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{Parent: name, PageSize: 2})
	for {
		v, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v.GetName()[len(name)+10:])
	}
	if strings.Join(got, ",") != "3,2,1" {
		t.Fatalf("list: %v", got)
	}
	it = c.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{Parent: name, Filter: "state:DESTROYED"})
	if v, err := it.Next(); err != nil || !strings.HasSuffix(v.GetName(), "/2") {
		t.Fatalf("filter: %v %v", v, err)
	}
	// Fault injection and delete.
	srv.FailNext("GetSecret", 1, codes.Unavailable)
	if _, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name}); code(err) != codes.Unavailable {
		t.Fatalf("injected: %v", err)
	}
	if _, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name}); err != nil {
		t.Fatalf("after the fault: %v", err)
	}
	if err := c.DeleteSecret(ctx, &secretmanagerpb.DeleteSecretRequest{Name: name}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name}); code(err) != codes.NotFound {
		t.Fatalf("deleted: %v", err)
	}
}

// TestIAM: with the check on, a call needs its documented permission on
// the secret or the project; a missing secret is PermissionDenied to a
// caller bound on secrets only and NotFound to one bound on the project;
// bindings of a deleted secret do not come back with a new one.
func TestIAM(t *testing.T) {
	ctx := context.Background()
	srv := gcpsmfake.Start(t)
	srv.EnforceIAM()
	if err := srv.Grant(parent, "admin", gcpsmfake.Permissions...); err != nil {
		t.Fatal(err)
	}
	admin := srv.ClientAs(t, "admin")
	name := parent + "/secrets/s"
	create := func() {
		t.Helper()
		if _, err := admin.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "s", Secret: &secretmanagerpb.Secret{Replication: auto}}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: name, Payload: &secretmanagerpb.SecretPayload{Data: []byte("v")}}); err != nil {
			t.Fatal(err)
		}
	}
	create()
	if err := srv.Grant(name, "reader", "secretmanager.versions.access"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Grant(parent+"/secrets/missing", "reader", "secretmanager.versions.access"); code(err) != codes.NotFound {
		t.Fatalf("a binding on a missing secret: %v, want NotFound", err)
	}
	if err := srv.Grant(name, "reader", "secretmanager.versions.acess"); err == nil {
		t.Fatal("a misspelt permission was granted")
	}
	if err := srv.Grant(parent, "lister", "secretmanager.secrets.get"); err != nil {
		t.Fatal(err)
	}
	reader, lister := srv.ClientAs(t, "reader"), srv.ClientAs(t, "lister")

	if r, err := reader.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name + "/versions/latest"}); err != nil || string(r.GetPayload().GetData()) != "v" {
		t.Fatalf("access with versions.access on the secret: %v", err)
	}
	for _, c := range []struct {
		what string
		call func() error
		want codes.Code
		msg  string
	}{
		{"reader GetSecret", func() error {
			_, err := reader.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
			return err
		}, codes.PermissionDenied, "Permission 'secretmanager.secrets.get' denied for resource '" + name + "' (or it may not exist)."},
		{"reader GetSecretVersion", func() error {
			_, err := reader.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: name + "/versions/1"})
			return err
		}, codes.PermissionDenied, "Permission 'secretmanager.versions.get' denied for resource '" + name + "/versions/1' (or it may not exist)."},
		{"reader access of a missing secret", func() error {
			_, err := reader.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: parent + "/secrets/missing/versions/latest"})
			return err
		}, codes.PermissionDenied, "Permission 'secretmanager.versions.access' denied for resource '" + parent + "/secrets/missing/versions/latest' (or it may not exist)."},
		{"reader CreateSecret", func() error {
			_, err := reader.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "new", Secret: &secretmanagerpb.Secret{Replication: auto}})
			return err
		}, codes.PermissionDenied, "Permission 'secretmanager.secrets.create' denied for resource '" + parent + "' (or it may not exist)."},
		{"lister GetSecret of a missing secret", func() error {
			_, err := lister.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: parent + "/secrets/missing"})
			return err
		}, codes.NotFound, ""},
		{"lister GetSecret in another project", func() error {
			_, err := lister.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: "projects/other/secrets/s"})
			return err
		}, codes.PermissionDenied, ""},
		{"a call without a token", func() error {
			_, err := srv.Client(t).GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
			return err
		}, codes.Unauthenticated, ""},
		{"a call with an unknown token", func() error {
			_, err := srv.ClientAs(t, "nobody").GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
			return err
		}, codes.Unauthenticated, ""},
	} {
		err := c.call()
		if code(err) != c.want || c.msg != "" && status.Convert(err).Message() != c.msg {
			t.Errorf("%s: %v, want %v %q", c.what, err, c.want, c.msg)
		}
	}
	if _, err := lister.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name}); err != nil {
		t.Fatalf("secrets.get on the project reaches the secret: %v", err)
	}

	// The secret's bindings are the secret's: deleted with it.
	if err := admin.DeleteSecret(ctx, &secretmanagerpb.DeleteSecretRequest{Name: name}); err != nil {
		t.Fatal(err)
	}
	create()
	if err := srv.Grant(name, "reader", "secretmanager.versions.get"); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name + "/versions/latest"}); code(err) != codes.PermissionDenied {
		t.Fatalf("a binding of the deleted secret reached its successor: %v", err)
	}
}
