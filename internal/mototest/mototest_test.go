package mototest_test

import (
	"context"
	"fmt"
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
