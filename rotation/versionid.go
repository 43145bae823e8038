package rotation

import (
	"context"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// readStage reads the version of secret at stage in st (PENDING through
// ReadPending), as the store gives it.
func readStage(ctx context.Context, st driver.Stager, secret string, stage driver.Stage) (*driver.Version, error) {
	if stage == driver.Pending {
		return st.ReadPending(ctx, secret)
	}
	return st.Read(ctx, secret, stage)
}

// version reads the key's version at stage, nil when there is none. One
// whose id is shaped like a key is refused (providers.CheckVersionID), before the
// run writes or prints anything of it.
func (ru *run) version(ctx context.Context, stage driver.Stage) (*driver.Version, error) {
	v, err := readStage(ctx, ru.k.Store, ru.k.Secret, stage)
	switch {
	case codes.Is(err, codes.NotFound):
		return nil, nil
	case err != nil:
		return nil, ru.storeErr("read "+string(stage), err)
	}
	if err := providers.CheckVersionID(v.ID); err != nil {
		return nil, ru.storeErr("read "+string(stage), err)
	}
	return v, nil
}

// shownID returns a version id as rotation may print it: one shaped like a
// key, which a record written before rotation refused such ids may hold,
// as providers.RedactKeys shows it (the key's fingerprint).
func shownID(id string) string {
	if providers.KeyShaped(id) {
		return providers.RedactKeys(id)
	}
	return id
}
