package aws_test

import (
	"context"
	"errors"
	"testing"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"

	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/providers/providertest"
)

func TestMain(m *testing.M) { mototest.Main(m) }

// uniqueName returns a fresh secret name; tests share one server.
func uniqueName(kind string) string { return providertest.UniqueName("kwt-" + kind) }

// token and fakeKey make rotation tokens and Anthropic-shaped fake keys.
var token, fakeKey = providertest.Token, providertest.FakeKey

// putByHand writes value as an operator would with the console or CLI: a
// new secret, or a new version without labels (AWS moves AWSCURRENT to it).
func putByHand(ctx context.Context, sm *secretsmanager.Client, name string, value []byte) error {
	_, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId: sdkaws.String(name), SecretString: sdkaws.String(string(value)),
	})
	var ae smithy.APIError
	if err != nil && asAPI(err, &ae) && ae.ErrorCode() == "ResourceNotFoundException" {
		_, err = sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
			Name: sdkaws.String(name), SecretString: sdkaws.String(string(value)),
		})
	}
	return err
}

// labelsOf returns the raw staging labels of a secret: version id -> labels.
func labelsOf(t *testing.T, sm *secretsmanager.Client, name string) map[string][]string {
	t.Helper()
	out, err := sm.DescribeSecret(context.Background(), &secretsmanager.DescribeSecretInput{SecretId: sdkaws.String(name)})
	if err != nil {
		t.Fatalf("DescribeSecret(%s): %v", name, err)
	}
	return out.VersionIdsToStages
}

// holderOf returns the version holding label in a labelsOf map, or "".
func holderOf(m map[string][]string, label string) string {
	for id, ls := range m {
		for _, l := range ls {
			if l == label {
				return id
			}
		}
	}
	return ""
}

func asAPI(err error, ae *smithy.APIError) bool { return errors.As(err, ae) }
