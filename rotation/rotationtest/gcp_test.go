package rotationtest_test

import (
	"testing"

	"github.com/keywarden/keywarden/internal/gcpsmfake"
	"github.com/keywarden/keywarden/providers/gcp"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// TestGCP runs the rotation suite on the GCP driver, the real client and the
// in-process Secret Manager on the official gRPC interface.
func TestGCP(t *testing.T) {
	srv := gcpsmfake.Start(t)
	st := gcp.New(srv.Client(t), "kw-rotation", gcp.Options{})
	rotationtest.Run(t, rotationtest.Harness{Stager: st, Prefix: "kwrot-"})
}

// BenchmarkRotationGCP is BenchmarkRotationAWS on the GCP driver and the
// in-process Secret Manager.
func BenchmarkRotationGCP(b *testing.B) {
	srv := gcpsmfake.Start(b)
	benchmarkRotation(b, gcp.New(srv.Client(b), "kw-rotation", gcp.Options{}), "kwbench-"+randomHex())
}
