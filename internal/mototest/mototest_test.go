package mototest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/internal/mototest"
)

func TestMain(m *testing.M) { mototest.Main(m) }

func TestStartOnce(t *testing.T) {
	a, b := mototest.Start(t), mototest.Start(t)
	if a == "" || a != b {
		t.Fatalf("Start returned %q then %q, want one non-empty endpoint", a, b)
	}
}

func TestSecretsManagerClient(t *testing.T) {
	sm := mototest.SecretsManager(t)
	ctx := context.Background()
	name := fmt.Sprintf("mototest-client-%s-%d", t.Name(), time.Now().UnixNano()) // unique across -count runs on one moto
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String(name), SecretString: aws.String("not-a-key"),
	}); err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	out, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(name)})
	if err != nil {
		t.Fatalf("GetSecretValue: %v", err)
	}
	if aws.ToString(out.SecretString) != "not-a-key" {
		t.Fatalf("GetSecretValue returned another value")
	}
}

// The IAM server evaluates Secrets Manager requests against the secret's
// ARN with IAM's wildcards: a grant on one secret ("NAME-??????") reaches
// that secret and no other, and a user without a grant is denied.
func TestIAMServerEvaluatesSecretARNs(t *testing.T) {
	s := mototest.StartIAM(t)
	ctx := context.Background()
	admin := s.SecretsManager(s.Admin)
	for _, name := range []string{"app/one", "app/one-2", "app/onex"} {
		if _, err := admin.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
			Name: aws.String(name), SecretString: aws.String("not-a-key"),
		}); err != nil {
			t.Fatalf("admin CreateSecret %s: %v", name, err)
		}
	}
	one := s.SecretsManager(s.User(t, "one", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
		"Action":"secretsmanager:GetSecretValue",
		"Resource":"arn:aws:secretsmanager:us-east-1:`+mototest.AccountID+`:secret:app/one-??????"}]}`))
	none := s.SecretsManager(s.User(t, "none", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
		"Action":"secretsmanager:DescribeSecret","Resource":"*"}]}`))
	get := func(c *secretsmanager.Client, name string) error {
		_, err := c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(name)})
		return err
	}
	if err := get(one, "app/one"); err != nil {
		t.Errorf("granted read of app/one: %v", err)
	}
	for _, c := range []struct {
		who    string
		client *secretsmanager.Client
		name   string
	}{{"one", one, "app/one-2"}, {"one", one, "app/onex"}, {"one", one, "app/missing"}, {"none", none, "app/one"}} {
		if err := get(c.client, c.name); err == nil || !strings.Contains(err.Error(), "AccessDenied") {
			t.Errorf("user %s reading %s: got %v, want AccessDenied", c.who, c.name, err)
		}
	}
	// A request signed with a key moto's IAM does not know is refused.
	stranger := s.SecretsManager(aws.Credentials{AccessKeyID: "AKIAUNKNOWN000000000", SecretAccessKey: "x"})
	if err := get(stranger, "app/one"); err == nil || !strings.Contains(err.Error(), "UnrecognizedClientException") {
		t.Errorf("a read with unknown credentials: got %v, want UnrecognizedClientException", err)
	}
}
