package aws_test

import (
	"context"
	"errors"
	"testing"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"

	"github.com/keywarden/keywarden/internal/mototest"
)

// The driver's compare-and-swaps rest on two documented behaviours of
// Secrets Manager. These tests check that the test backend (moto) has them
// too, so that the driver's tests on moto mean something.

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// UpdateSecretVersionStage fails when RemoveFromVersionId does not hold the
// label (AWS: InvalidParameterException).
func TestBackendRefusesStaleRemoveFromVersionId(t *testing.T) {
	sm := mototest.SecretsManager(t)
	ctx := context.Background()
	name := uniqueName("moto-remove")
	if err := putByHand(ctx, sm, name, fakeKey()); err != nil {
		t.Fatal(err)
	}
	old := holderOf(labelsOf(t, sm, name), "AWSCURRENT")
	if err := putByHand(ctx, sm, name, fakeKey()); err != nil {
		t.Fatal(err)
	}
	cur := holderOf(labelsOf(t, sm, name), "AWSCURRENT")
	_, err := sm.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
		SecretId: sdkaws.String(name), VersionStage: sdkaws.String("AWSCURRENT"),
		MoveToVersionId: sdkaws.String(old), RemoveFromVersionId: sdkaws.String(old),
	})
	if apiCode(err) != "InvalidParameterException" {
		t.Fatalf("moving AWSCURRENT with a stale RemoveFromVersionId: got %v, want InvalidParameterException", err)
	}
	if got := holderOf(labelsOf(t, sm, name), "AWSCURRENT"); got != cur {
		t.Fatalf("the refused move changed AWSCURRENT to %s (was %s)", got, cur)
	}
}

// PutSecretValue with a ClientRequestToken that names an existing version
// fails with ResourceExistsException when the content differs, and is an
// idempotent no-op when it is the same.
func TestBackendClientRequestTokenConflict(t *testing.T) {
	sm := mototest.SecretsManager(t)
	ctx := context.Background()
	name := uniqueName("moto-token")
	if err := putByHand(ctx, sm, name, fakeKey()); err != nil {
		t.Fatal(err)
	}
	tok := "kwrec-0123456789abcdef0123456789abcdef01234567"
	put := func(value string) error {
		_, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
			SecretId: sdkaws.String(name), ClientRequestToken: sdkaws.String(tok),
			SecretString: sdkaws.String(value), VersionStages: []string{"KWRECORD"},
		})
		return err
	}
	if err := put(`{"a":"1"}`); err != nil {
		t.Fatalf("first put: %v", err)
	}
	if err := put(`{"a":"1"}`); err != nil {
		t.Fatalf("same token, same content (a retry): %v, want success", err)
	}
	if err := put(`{"a":"2"}`); apiCode(err) != "ResourceExistsException" {
		t.Fatalf("same token, other content: got %v, want ResourceExistsException", err)
	}
	out, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: sdkaws.String(name), VersionId: sdkaws.String(tok)})
	if err != nil {
		t.Fatal(err)
	}
	if sdkaws.ToString(out.SecretString) != `{"a":"1"}` {
		t.Fatalf("the refused put changed the version")
	}
}
