package rotationtest_test

import (
	"context"
	"testing"

	"github.com/keywarden/keywarden/providers/vault"
	"github.com/keywarden/keywarden/providers/vault/vaulttest"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

func TestVault(t *testing.T) {
	st, err := vault.New(context.Background(), vault.Options{Client: vaulttest.Client(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	rotationtest.Run(t, rotationtest.Harness{Stager: st, Prefix: "anthropic/kwrot-"})
}

// BenchmarkRotationVault is BenchmarkRotationAWS on the Vault driver and a
// real Vault core.
func BenchmarkRotationVault(b *testing.B) {
	st, err := vault.New(context.Background(), vault.Options{Client: vaulttest.Client(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	benchmarkRotation(b, st, "anthropic/kwbench-"+randomHex())
}
