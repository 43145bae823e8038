package rotationtest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/rotation"

	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/providers/aws"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

func TestAWS(t *testing.T) {
	st := aws.New(mototest.SecretsManager(t), nil)
	rotationtest.Run(t, rotationtest.Harness{Stager: st})
}

// BenchmarkRotationAWS measures one whole rotation (create, probe, promote,
// revoke; grace 0) against Secrets Manager on moto, with the in-memory
// ledger as issuer and probe: the store's share of a rotation.
func BenchmarkRotationAWS(b *testing.B) {
	st := aws.New(mototest.SecretsManager(b), nil)
	benchmarkRotation(b, st, "kwbench-"+randomHex())
}

func BenchmarkRotationFile(b *testing.B) {
	benchmarkRotation(b, file.New(filepath.Join(b.TempDir(), "keys.json")), "bench")
}

func benchmarkRotation(b *testing.B, st driver.Stager, name string) {
	ctx := context.Background()
	l := rotationtest.NewLedger()
	c := l.Seed()
	providertest.Rotate(b, st, name, providers.EncodePayload(providers.Payload{Key: c.Key, KeyID: c.KeyID}))
	r, err := rotation.New(rotation.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		&rotation.Key{Name: "k", Store: st, Secret: name, Issuer: l, Probe: l.Probe(nil)})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		res, err := r.Run(ctx, "k", rotation.RunOptions{Force: true})
		if err != nil || res.Outcome != rotation.OutcomeRevoked {
			b.Fatalf("%v %+v", err, res)
		}
	}
}

func randomHex() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
