package rotationtest_test

import (
	"testing"

	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/providers/aws"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

func TestAWS(t *testing.T) {
	st := aws.New(mototest.SecretsManager(t), nil)
	rotationtest.Run(t, rotationtest.Harness{Stager: st})
}
