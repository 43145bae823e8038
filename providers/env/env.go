// Package env is keywarden's read-only environment-variable driver, for
// programs that already receive their key in the environment.
//
// URL form: env://ANTHROPIC_API_KEY. The variable's value is the payload: the
// bare key, or a JSON object (see providers.DecodePayload).
package env

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"regexp"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Scheme is the URL scheme of the env driver.
const Scheme = "env"

func init() { providers.Register(Scheme, openURL) }

var validName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func openURL(_ context.Context, u *url.URL) (driver.Reader, string, error) {
	name := u.Host
	if name == "" {
		name = u.Opaque
	}
	if u.Path != "" && u.Path != "/" {
		return nil, "", codes.Errorf(codes.InvalidArgument, "env: URL %q has a path; want env://VARIABLE_NAME", providers.Redact(u))
	}
	if err := providers.NewQuery(u.Query()).Done(); err != nil {
		return nil, "", fmt.Errorf("env: %w", err)
	}
	if !validName.MatchString(name) {
		return nil, "", codes.Errorf(codes.InvalidArgument, "env: %q is not an environment variable name; want env://VARIABLE_NAME", name)
	}
	return New(), name, nil
}

// Reader reads keys from environment variables. It implements driver.Reader
// only: an environment cannot hold stages or rotation records.
type Reader struct {
	lookup func(string) (string, bool)
}

var _ driver.Reader = (*Reader)(nil)

// New returns a Reader of the process environment.
func New() *Reader { return &Reader{lookup: os.LookupEnv} }

// NewLookup returns a Reader that looks variables up with lookup, for tests
// and for environments other than the process's own.
func NewLookup(lookup func(string) (string, bool)) *Reader { return &Reader{lookup: lookup} }

// Read returns the variable's value as the CURRENT version, with version id
// "env". PREVIOUS is always NotFound.
func (r *Reader) Read(ctx context.Context, name string, stage driver.Stage) (*driver.Version, error) {
	if err := ctx.Err(); err != nil {
		return nil, codes.FromContext(err)
	}
	if stage != driver.Current {
		return nil, codes.Errorf(codes.NotFound, "env: %s has no %s version: an environment holds only one", name, stage)
	}
	v, ok := r.lookup(name)
	if !ok || v == "" {
		return nil, codes.Errorf(codes.NotFound, "env: variable %s is not set or empty", name)
	}
	return &driver.Version{ID: "env", Value: []byte(v)}, nil
}

// Close does nothing.
func (r *Reader) Close() error { return nil }
