package aws_test

import (
	"context"
	"testing"

	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/providers/aws"
	"github.com/keywarden/keywarden/providers/providertest"
)

func TestConformance(t *testing.T) {
	sm := mototest.SecretsManager(t)
	providertest.Run(t, providertest.Harness{
		Stager: aws.New(sm, nil),
		PutByHand: func(ctx context.Context, name string, value []byte) error {
			return putByHand(ctx, sm, name, value)
		},
	})
}
