package rotationtest_test

import (
	"path/filepath"
	"testing"

	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

func TestFile(t *testing.T) {
	st := file.New(filepath.Join(t.TempDir(), "keys.json"))
	rotationtest.Run(t, rotationtest.Harness{Stager: st})
}
