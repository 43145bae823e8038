package config

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/keywarden/keywarden/providers/file"
)

// DefaultKeyName is the key name of the embedded default config.
const DefaultKeyName = "default"

// DefaultStorePath returns the file store of the embedded default:
// $KEYWARDEN_HOME/keys.json, or .keywarden/keys.json in the working directory.
func DefaultStorePath() string {
	if h := os.Getenv("KEYWARDEN_HOME"); h != "" {
		return filepath.Join(h, "keys.json")
	}
	return filepath.Join(".keywarden", "keys.json")
}

// PlaceholderPrefix starts the placeholder key written on first run. It is
// not a valid Claude key: replace it with `keywarden pool add` or by editing
// the file.
const PlaceholderPrefix = "sk-ant-api03-placeholder-"

// Default returns the embedded default config: one key, "default", in a
// local file store that is created on first run with a placeholder key.
// created reports whether this call created the store.
func Default(ctx context.Context) (c *Config, created bool, err error) {
	path, err := filepath.Abs(DefaultStorePath())
	if err != nil {
		return nil, false, fmt.Errorf("config: default store: %w", err)
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		st := file.New(path)
		if err := st.PutByHand(ctx, DefaultKeyName, []byte(PlaceholderPrefix+hex.EncodeToString(b))); err != nil {
			return nil, false, fmt.Errorf("config: create default store %s: %w", path, err)
		}
		created = true
	} else if err != nil {
		return nil, false, fmt.Errorf("config: default store: %w", err)
	}
	c = &Config{Keys: map[string]*Key{DefaultKeyName: {
		Name:  DefaultKeyName,
		Store: "file://" + path + "?name=" + DefaultKeyName,
	}}}
	if err := c.validate(); err != nil {
		return nil, false, err
	}
	return c, created, nil
}
