package aws_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/aws"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/stage"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/pool"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// The names the policies are filled in with. The other secrets share the
// key's name as a prefix: the ARN pattern NAME-?????? ('-' and exactly six
// characters, the random suffix AWS appends) must not reach them.
const (
	iamKey   = "anthropic-prod"
	iamPool  = "anthropic-prod-pool"
	iamAdmin = "anthropic-admin"
)

var iamOthers = []string{"anthropic-prod-2", "anthropic-production", "anthropic-prod-AbCdEf"}

// shippedPolicy reads deploy/policies/aws-NAME.json and fills in its
// variables.
func shippedPolicy(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "policies", "aws-"+name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.NewReplacer(
		"${REGION}", mototest.Region,
		"${ACCOUNT_ID}", mototest.AccountID,
		"${SECRET_NAME}", iamKey,
		"${POOL_SECRET_NAME}", iamPool,
		"${ADMIN_KEY_SECRET_NAME}", iamAdmin,
		"${KMS_KEY_ID}", "1234abcd-12ab-34cd-56ef-1234567890ab",
	).Replace(string(b))
	if strings.Contains(s, "${") {
		t.Fatalf("aws-%s.json has a variable this test does not fill in", name)
	}
	return s
}

// TestShippedPoliciesOnIAM runs the real driver, under the credentials of
// IAM users holding deploy/policies/aws-reader.json and aws-rotator.json,
// against a moto server that authenticates and authorizes every request:
// the rotator puts the first key into a secret that does not exist yet,
// rotates it and fills a pool that does not exist yet; the reader opens a
// Source on the key through a store URL and the SDK's credential chain.
// Every write of the reader, and every call on the other secrets, is
// refused with PermissionDenied.
//
// What this proves and what not: moto's evaluator (with the fills listed in
// internal/mototest/iamserver.py) checks the policies' actions and secret
// ARNs, IAM wildcards included. It does not evaluate conditions or KMS: the
// kms:Decrypt and kms:GenerateDataKey statements with kms:ViaService and
// kms:EncryptionContext:SecretARN are untested here (moto's Secrets Manager
// never calls KMS). Nor does it know how AWS authorizes a call on a secret
// that does not exist: it evaluates arn:...:secret:NAME, without suffix,
// which the policies grant for that reason.
func TestShippedPoliciesOnIAM(t *testing.T) {
	srv := mototest.StartIAM(t)
	ctx := context.Background()
	readerCreds := srv.User(t, "keywarden-reader", shippedPolicy(t, "reader"))
	rotatorCreds := srv.User(t, "keywarden-rotator", shippedPolicy(t, "rotator"))
	admin := srv.SecretsManager(srv.Admin)

	var values []string // every key value, none of which may show in an error
	for _, name := range append([]string{iamAdmin}, iamOthers...) {
		v := fakeKey()
		values = append(values, string(v))
		if err := putByHand(ctx, admin, name, v); err != nil {
			t.Fatalf("admin creates %s: %v", name, err)
		}
	}
	othersBefore := map[string]map[string][]string{}
	for _, name := range iamOthers {
		othersBefore[name] = labelsOf(t, admin, name)
	}

	rot := aws.New(srv.SecretsManager(rotatorCreds), nil)
	rd := aws.New(srv.SecretsManager(readerCreds), nil)

	// The rotator: `put` of the first key creates the secret, then a whole
	// rotation with an issuer and probe that keep account (the ledger).
	ledger := rotationtest.NewLedger()
	seed := ledger.Seed()
	values = append(values, seed.Key.Reveal())
	if _, err := stage.Put(ctx, rot, iamKey, providers.EncodePayload(providers.Payload{Key: seed.Key, KeyID: seed.KeyID})); err != nil {
		t.Fatalf("rotator: put the first key into the missing secret %s: %v", iamKey, err)
	}
	r, err := rotation.New(rotation.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		&rotation.Key{Name: "k", Store: rot, Secret: iamKey, Issuer: ledger, Probe: ledger.Probe(nil)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true})
	if err != nil || res.Outcome != rotation.OutcomeRevoked {
		t.Fatalf("rotator: rotate %s: outcome %q, %v; want %q", iamKey, res.Outcome, err, rotation.OutcomeRevoked)
	}
	// The pool: created by its first add, then read.
	pk := fakeKey()
	values = append(values, string(pk))
	p := pool.New(rot, iamPool)
	if _, err := p.Add(ctx, providers.NewSecret(string(pk)), ""); err != nil {
		t.Fatalf("rotator: add to the missing pool %s: %v", iamPool, err)
	}
	if n, err := p.Available(ctx); err != nil || n != 1 {
		t.Fatalf("rotator: pool size %d, %v; want 1", n, err)
	}
	// The Admin key: read only.
	if _, err := rot.Read(ctx, iamAdmin, driver.Current); err != nil {
		t.Fatalf("rotator: read the Admin key %s: %v", iamAdmin, err)
	}

	// The reader, as a pod runs it: a store URL, the SDK's default chain.
	hermeticEnv(t, mototest.Region)
	t.Setenv("AWS_ACCESS_KEY_ID", readerCreds.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", readerCreds.SecretAccessKey)
	src, err := providers.Open(ctx, "awssm://"+iamKey+"?region="+mototest.Region+"&endpoint="+srv.Endpoint, nil)
	if err != nil {
		t.Fatalf("reader: open a Source on %s: %v", iamKey, err)
	}
	defer src.Close()
	cur, prev := src.Current(), src.Previous()
	if cur == nil || cur.Value.Equal(seed.Key) || ledger.ByValue(cur.Value) == nil {
		t.Fatalf("reader: CURRENT is not the rotated key")
	}
	if prev == nil || !prev.Value.Equal(seed.Key) {
		t.Fatalf("reader: PREVIOUS is not the first key")
	}
	values = append(values, cur.Value.Reveal())

	denied := func(who, what string, err error) {
		t.Helper()
		providertest.CheckDenied(t, who, what, err, []string{"is not authorized to perform: secretsmanager:",
			"deploy/policies/aws-reader.json, aws-rotator.json"}, values)
	}
	pendingID := "kw01-a000000000000000000000000000"

	// Every write of the driver, and the raw write calls, on the key's own
	// secret: refused to the reader.
	readerCalls := providertest.DriverCalls(ctx, rd, iamKey, pendingID, cur.VersionID)
	for _, what := range []string{"PutPending", "Promote", "Discard", "WriteRecord", "put"} {
		denied("reader", what+" on "+iamKey, readerCalls[what]())
	}
	denied("reader", "create a secret", providertest.DriverCalls(ctx, rd, "anthropic-prod-3", "", "")["PutPending"]())
	readerSM := srv.SecretsManager(readerCreds)
	for what, op := range map[string]func() error{
		"PutSecretValue": func() error {
			_, err := readerSM.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: sdkaws.String(iamKey), SecretString: sdkaws.String("x")})
			return err
		},
		"UpdateSecretVersionStage": func() error {
			_, err := readerSM.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{SecretId: sdkaws.String(iamKey),
				VersionStage: sdkaws.String("AWSCURRENT"), MoveToVersionId: sdkaws.String(prev.VersionID), RemoveFromVersionId: sdkaws.String(cur.VersionID)})
			return err
		},
		"CreateSecret": func() error {
			_, err := readerSM.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: sdkaws.String("anthropic-prod-3"), SecretString: sdkaws.String("x")})
			return err
		},
		"DescribeSecret": func() error {
			_, err := readerSM.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: sdkaws.String(iamKey)})
			return err
		},
	} {
		if code := apiCode(op()); code != "AccessDeniedException" {
			t.Errorf("reader: %s on %s: AWS code %q, want AccessDeniedException", what, iamKey, code)
		}
	}
	// The reader reads its key only: not the pool, the Admin key or the
	// secrets whose names start like its own.
	for _, name := range append([]string{iamPool, iamAdmin}, iamOthers...) {
		_, err := rd.Read(ctx, name, driver.Current)
		denied("reader", "read "+name, err)
	}

	// The rotator on the other secrets: nothing, and no new secret.
	for _, name := range append([]string{"anthropic-prod-3"}, iamOthers...) {
		for what, op := range providertest.DriverCalls(ctx, rot, name, pendingID, "") {
			denied("rotator", what+" on "+name, op())
		}
	}
	// The Admin key: read, never written.
	_, err = rot.PutPending(ctx, iamAdmin, token(), fakeKey())
	denied("rotator", "PutPending on "+iamAdmin, err)

	// Nothing refused changed anything.
	for _, name := range iamOthers {
		if got := labelsOf(t, admin, name); !equalLabels(got, othersBefore[name]) {
			t.Errorf("%s changed: %v, was %v", name, got, othersBefore[name])
		}
	}
	if _, err := admin.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: sdkaws.String("anthropic-prod-3")}); apiCode(err) != "ResourceNotFoundException" {
		t.Errorf("anthropic-prod-3 exists after refused creations (%v)", err)
	}
}

func equalLabels(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for id, ls := range a {
		if !slices.Equal(slices.Sorted(slices.Values(ls)), slices.Sorted(slices.Values(b[id]))) {
			return false
		}
	}
	return true
}
