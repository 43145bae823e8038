package vault

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keywarden/keywarden/providers/codes"
)

// kvVersion is one version of a KV v2 secret as read.
type kvVersion struct {
	version int
	data    map[string]any // nil when the version is deleted or destroyed
	created time.Time
	gone    bool // deleted or destroyed
}

// call runs a request with the driver's token. When Vault answers 403
// because the token died (revoked, expired before renewal), the session logs
// in again and the request runs once more.
func call[T any](ctx context.Context, s *Store, op string, fn func() (T, error)) (T, error) {
	tok := s.c.Token()
	v, err := fn()
	err = mapErr(op, err)
	if codes.Is(err, codes.PermissionDenied) && ctx.Err() == nil && s.sess.reloginAfterDenied(ctx, tok) {
		v, err = fn()
		err = mapErr(op, err)
	}
	return v, err
}

func (s *Store) dataPath(p string) string { return s.mount + "/data/" + p }
func (s *Store) metaPath(p string) string { return s.mount + "/metadata/" + p }

// readKV reads version ver (0: the latest) of the secret at p. It returns
// nil and no error when the secret does not exist.
func (s *Store) readKV(ctx context.Context, p string, ver int) (*kvVersion, error) {
	var q map[string][]string
	if ver > 0 {
		q = map[string][]string{"version": {strconv.Itoa(ver)}}
	}
	op := "read " + s.dataPath(p)
	sec, err := call(ctx, s, op, func() (*api.Secret, error) {
		return s.c.Logical().ReadWithDataWithContext(ctx, s.dataPath(p), q)
	})
	if err != nil {
		return nil, err
	}
	if sec == nil || sec.Data == nil {
		return nil, nil
	}
	v := &kvVersion{}
	meta, _ := sec.Data["metadata"].(map[string]any)
	if meta == nil {
		return nil, codes.Errorf(codes.FailedPrecondition, "vault: %s: no KV v2 metadata in the answer: is %s/ a KV version 2 mount?", op, s.mount)
	}
	if v.version, err = intOf(meta["version"]); err != nil {
		return nil, codes.Errorf(codes.Internal, "vault: %s: version: %w", op, err)
	}
	if t, ok := meta["created_time"].(string); ok {
		v.created, _ = time.Parse(time.RFC3339Nano, t)
	}
	d, _ := meta["destroyed"].(bool)
	del, _ := meta["deletion_time"].(string)
	v.data, _ = sec.Data["data"].(map[string]any)
	v.gone = d || del != "" || v.data == nil
	if v.gone {
		v.data = nil
	}
	return v, nil
}

// writeKV writes data as a new version of the secret at p when its current
// version is cas (0: the secret does not exist), and returns the new version.
// A mismatch is Aborted.
func (s *Store) writeKV(ctx context.Context, p string, data map[string]any, cas int) (*kvVersion, error) {
	body := map[string]any{"data": data, "options": map[string]any{"cas": cas}}
	op := "write " + s.dataPath(p)
	sec, err := call(ctx, s, op, func() (*api.Secret, error) {
		return s.c.Logical().WriteWithContext(ctx, s.dataPath(p), body)
	})
	if err != nil {
		return nil, err
	}
	if sec == nil || sec.Data == nil {
		return nil, codes.Errorf(codes.Internal, "vault: %s: empty answer", op)
	}
	v := &kvVersion{data: data}
	if v.version, err = intOf(sec.Data["version"]); err != nil {
		return nil, codes.Errorf(codes.Internal, "vault: %s: version: %w", op, err)
	}
	if t, ok := sec.Data["created_time"].(string); ok {
		v.created, _ = time.Parse(time.RFC3339Nano, t)
	}
	return v, nil
}

// latest returns the current version number of the secret at p and whether
// that version is readable (not deleted or destroyed); 0 when the secret
// does not exist.
func (s *Store) latest(ctx context.Context, p string) (int, bool, error) {
	op := "read " + s.metaPath(p)
	sec, err := call(ctx, s, op, func() (*api.Secret, error) {
		return s.c.Logical().ReadWithContext(ctx, s.metaPath(p))
	})
	if err != nil || sec == nil || sec.Data == nil {
		return 0, false, err
	}
	cur, err := intOf(sec.Data["current_version"])
	if err != nil {
		return 0, false, codes.Errorf(codes.Internal, "vault: %s: current_version: %w", op, err)
	}
	vs, _ := sec.Data["versions"].(map[string]any)
	vm, _ := vs[strconv.Itoa(cur)].(map[string]any)
	d, _ := vm["destroyed"].(bool)
	del, _ := vm["deletion_time"].(string)
	return cur, vm != nil && !d && del == "", nil
}

// patchCustomMetadata merges m into the custom_metadata of the secret at p;
// nil values remove keys.
func (s *Store) patchCustomMetadata(ctx context.Context, p string, m map[string]any) error {
	_, err := call(ctx, s, "patch "+s.metaPath(p), func() (*api.Secret, error) {
		return s.c.Logical().JSONMergePatch(ctx, s.metaPath(p), map[string]any{"custom_metadata": m})
	})
	return err
}

// intOf reads a JSON number as the client decodes it (json.Number).
func intOf(v any) (int, error) {
	switch n := v.(type) {
	case json.Number:
		i, err := strconv.Atoi(n.String())
		return i, err
	case float64:
		return int(n), nil
	case int:
		return n, nil
	case string:
		return strconv.Atoi(n)
	}
	return 0, fmt.Errorf("not a number: %T", v)
}

// checkName accepts secret names of path segments made of letters, digits
// and -_.@+=, with no empty, "." or ".." segment.
func checkName(name string) error {
	if name == "" {
		return codes.Errorf(codes.InvalidArgument, "vault: empty secret name; write vault://MOUNT/NAME, e.g. vault://secret/anthropic/prod")
	}
	if len(name) > 512 {
		return codes.Errorf(codes.InvalidArgument, "vault: secret name longer than 512 characters")
	}
	return checkPath("secret name", name)
}

// check validates name and refuses names inside the driver's state folder.
func (s *Store) check(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if name == s.prefix || strings.HasPrefix(name, s.prefix+"/") {
		return codes.Errorf(codes.InvalidArgument, "vault: secret name %q is inside %s/, where the driver keeps its stage documents and records", name, s.prefix)
	}
	return nil
}

// checkPath checks a mount, prefix or name: path segments of letters, digits
// and -_.@+=.
func checkPath(what, p string) error {
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return codes.Errorf(codes.InvalidArgument, "vault: %s %q has an empty, \".\" or \"..\" path segment", what, p)
		}
		for _, r := range seg {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.@+=", r)) {
				return codes.Errorf(codes.InvalidArgument, "vault: %s %q has the character %q; use letters, digits, / and -_.@+=", what, p, r)
			}
		}
	}
	return nil
}
