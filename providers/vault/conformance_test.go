package vault_test

import (
	"context"
	"testing"

	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/vault"
	"github.com/keywarden/keywarden/providers/vault/vaulttest"
)

func TestConformance(t *testing.T) {
	root := vaulttest.Client(t)
	providertest.Run(t, providertest.Harness{
		Stager: newStore(t, nil, vault.Options{}),
		PutByHand: func(ctx context.Context, name string, value []byte) error {
			return putByHand(ctx, root, name, value)
		},
	})
}
