package rotationtest_test

import (
	"os"
	"testing"

	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/providers/vault/vaulttest"
)

// TestMain stops the moto and Vault servers that the tests started.
func TestMain(m *testing.M) {
	code := m.Run()
	mototest.Stop()
	vaulttest.Stop()
	os.Exit(code)
}
