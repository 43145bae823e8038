package vault

import (
	"context"
	"strconv"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// stages is the stage document of a secret: which KV versions hold CURRENT,
// PENDING and PREVIOUS, and the rotation tokens they were written with.
// Empty strings mean "none".
type stages struct {
	Current, CurrentToken   string
	Pending, PendingToken   string
	Previous, PreviousToken string
}

var stageFields = []struct {
	key string
	get func(*stages) *string
}{
	{"current", func(s *stages) *string { return &s.Current }},
	{"current_token", func(s *stages) *string { return &s.CurrentToken }},
	{"pending", func(s *stages) *string { return &s.Pending }},
	{"pending_token", func(s *stages) *string { return &s.PendingToken }},
	{"previous", func(s *stages) *string { return &s.Previous }},
	{"previous_token", func(s *stages) *string { return &s.PreviousToken }},
}

func (st stages) data() map[string]any {
	m := make(map[string]any, len(stageFields))
	for _, f := range stageFields {
		m[f.key] = *f.get(&st)
	}
	return m
}

func stagesOf(m map[string]any) stages {
	var st stages
	for _, f := range stageFields {
		v, _ := m[f.key].(string)
		*f.get(&st) = v
	}
	return st
}

// beforeStagesWrite, when set by a test, runs between the read of a stage
// document and its check-and-set write, to let another writer in.
var beforeStagesWrite func(name string)

func (s *Store) stagesPath(name string) string { return s.prefix + "/stages/" + name }

// readStages returns the stage document of name, its KV version (the CAS
// revision; 0 when it never existed), and whether it exists. A deleted stage
// document does not exist, but its version still counts for CAS.
func (s *Store) readStages(ctx context.Context, name string) (stages, int, bool, error) {
	v, err := s.readKV(ctx, s.stagesPath(name), 0)
	if err != nil || v == nil {
		return stages{}, 0, false, err
	}
	if v.gone {
		return stages{}, v.version, false, nil
	}
	return stagesOf(v.data), v.version, true, nil
}

// writeStages writes st when the stage document is still at version rev,
// mirrors it into the secret's custom_metadata, and returns the new version.
func (s *Store) writeStages(ctx context.Context, name string, st stages, rev int) (int, error) {
	if beforeStagesWrite != nil {
		beforeStagesWrite(name)
	}
	v, err := s.writeKV(ctx, s.stagesPath(name), st.data(), rev)
	if err != nil {
		if codes.Is(err, codes.Aborted) {
			return 0, codes.Wrap(codes.Aborted, "vault: "+name+": the stages changed meanwhile (another rotator?)", err)
		}
		return 0, err
	}
	// Checked, not assumed: a check-and-set write at rev makes version
	// rev+1. Any other answer means the store did not apply the write as
	// asked (check-and-set not enforced, another writer in between).
	if v.version != rev+1 {
		return 0, codes.Errorf(codes.Internal, "vault: %s: the stage document was written as version %d, not %d: the store did not honour check-and-set", name, v.version, rev+1)
	}
	s.mirror(ctx, name, st, v.version)
	return v.version, nil
}

// mirror copies the stage map into the secret's custom_metadata for people
// reading it in the UI or CLI. It is best effort: the stage document is the
// truth, and a rotator without the patch capability still works.
func (s *Store) mirror(ctx context.Context, name string, st stages, rev int) {
	m := map[string]any{"keywarden-stages-rev": strconv.Itoa(rev)}
	for _, f := range []struct {
		key string
		val string
	}{
		{"keywarden-current", st.Current},
		{"keywarden-pending", st.Pending},
		{"keywarden-pending-token", st.PendingToken},
		{"keywarden-previous", st.Previous},
	} {
		if f.val == "" {
			m[f.key] = nil // JSON merge patch: remove
		} else {
			m[f.key] = f.val
		}
	}
	_ = s.patchCustomMetadata(ctx, name, m)
}

// Read returns the version holding stage. Without a stage document the
// secret is hand-managed and its latest version is CURRENT.
func (s *Store) Read(ctx context.Context, name string, stage driver.Stage) (*driver.Version, error) {
	if err := s.check(name); err != nil {
		return nil, err
	}
	if stage != driver.Current && stage != driver.Previous {
		return nil, codes.Errorf(codes.InvalidArgument, "vault: Read of stage %q (want CURRENT or PREVIOUS; use ReadPending)", stage)
	}
	st, _, ok, err := s.readStages(ctx, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		if stage == driver.Previous {
			return nil, codes.Errorf(codes.NotFound, "vault: %s/%s has no PREVIOUS version (not managed by keywarden)", s.mount, name)
		}
		return s.readVersion(ctx, name, 0, "", stage)
	}
	id, tok := st.Current, st.CurrentToken
	if stage == driver.Previous {
		id, tok = st.Previous, st.PreviousToken
	}
	if id == "" {
		return nil, codes.Errorf(codes.NotFound, "vault: %s/%s has no %s version", s.mount, name, stage)
	}
	return s.readVersion(ctx, name, versionNumber(id), tok, stage)
}

// ReadPending returns the PENDING version, or NotFound.
func (s *Store) ReadPending(ctx context.Context, name string) (*driver.Version, error) {
	if err := s.check(name); err != nil {
		return nil, err
	}
	st, _, ok, err := s.readStages(ctx, name)
	if err != nil {
		return nil, err
	}
	if !ok || st.Pending == "" {
		return nil, codes.Errorf(codes.NotFound, "vault: %s/%s has no PENDING version", s.mount, name)
	}
	return s.readVersion(ctx, name, versionNumber(st.Pending), st.PendingToken, driver.Pending)
}

// readVersion reads version ver (0: latest) of name as a driver.Version.
func (s *Store) readVersion(ctx context.Context, name string, ver int, token string, stage driver.Stage) (*driver.Version, error) {
	v, err := s.readKV(ctx, name, ver)
	if err != nil {
		return nil, err
	}
	switch {
	case v == nil && ver == 0:
		return nil, codes.Errorf(codes.NotFound, "vault: secret %s/%s not found", s.mount, name)
	case v == nil:
		return nil, codes.Errorf(codes.NotFound, "vault: version %d of %s/%s (%s) not found", ver, s.mount, name, stage)
	case v.gone:
		return nil, codes.Errorf(codes.FailedPrecondition, "vault: version %d of %s/%s (%s) is deleted or destroyed; undelete it or rotate", v.version, s.mount, name, stage)
	}
	val, err := decodeValue(v.data)
	if err != nil {
		return nil, codes.Errorf(codes.Internal, "vault: version %d of %s/%s: %w", v.version, s.mount, name, err)
	}
	return &driver.Version{ID: strconv.Itoa(v.version), Value: val, Created: v.created, Token: token}, nil
}

// versionNumber parses a version id; a malformed id reads as 0, which no
// stage document holds.
func versionNumber(id string) int {
	n, err := strconv.Atoi(id)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// PutPending writes value as a new version and marks it PENDING with token.
// See the package documentation for the order of the writes.
func (s *Store) PutPending(ctx context.Context, name, token string, value []byte) (*driver.Version, error) {
	if err := s.check(name); err != nil {
		return nil, err
	}
	if token == "" {
		return nil, codes.Errorf(codes.InvalidArgument, "vault: PutPending needs a rotation token")
	}
	st, rev, ok, err := s.readStages(ctx, name)
	if err != nil {
		return nil, err
	}
	if st.Pending != "" {
		if st.PendingToken != token {
			return nil, codes.Errorf(codes.FailedPrecondition,
				"vault: %s/%s already has PENDING version %s of another rotation (token %s); finish or discard it first", s.mount, name, st.Pending, st.PendingToken)
		}
		return s.readVersion(ctx, name, versionNumber(st.Pending), token, driver.Pending)
	}
	latest, readable, err := s.latest(ctx, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		// Take the secret over: pin CURRENT to the version readers see now,
		// before anything is written, so the new version never shows as
		// the latest of a hand-managed secret.
		st = stages{}
		if readable {
			st.Current = strconv.Itoa(latest)
		}
		if rev, err = s.writeStages(ctx, name, st, rev); err != nil {
			return nil, err
		}
	}
	v, err := s.writeKV(ctx, name, encodeValue(value), latest)
	if err != nil {
		if codes.Is(err, codes.Aborted) {
			return nil, codes.Wrap(codes.Aborted, "vault: "+name+": a new version was written meanwhile", err)
		}
		return nil, err
	}
	st.Pending, st.PendingToken = strconv.Itoa(v.version), token
	if _, err := s.writeStages(ctx, name, st, rev); err != nil {
		return nil, err // the new version stays unstaged in the history
	}
	return &driver.Version{ID: st.Pending, Value: append([]byte(nil), value...), Created: v.created, Token: token}, nil
}

// Promote moves CURRENT to pendingID and PREVIOUS to the old CURRENT with
// one check-and-set write of the stage document.
func (s *Store) Promote(ctx context.Context, name, pendingID, currentID string) error {
	if err := s.check(name); err != nil {
		return err
	}
	st, rev, ok, err := s.readStages(ctx, name)
	if err != nil {
		return err
	}
	if ok && st.Current == pendingID && st.Previous == currentID && pendingID != "" {
		return nil // a retry of a promotion that landed
	}
	switch {
	case !ok || st.Pending == "":
		return codes.Errorf(codes.Aborted, "vault: promote %s/%s: no PENDING version (want %s)", s.mount, name, pendingID)
	case st.Pending != pendingID:
		return codes.Errorf(codes.Aborted, "vault: promote %s/%s: PENDING is version %s, not %s", s.mount, name, st.Pending, pendingID)
	case st.Current != currentID:
		return codes.Errorf(codes.Aborted, "vault: promote %s/%s: CURRENT is version %q, not %q", s.mount, name, st.Current, currentID)
	}
	next := stages{
		Current: st.Pending, CurrentToken: st.PendingToken,
		Previous: st.Current, PreviousToken: st.CurrentToken,
	}
	_, err = s.writeStages(ctx, name, next, rev)
	return err
}

// DiscardPending clears PENDING when it holds pendingID.
func (s *Store) DiscardPending(ctx context.Context, name, pendingID string) error {
	if err := s.check(name); err != nil {
		return err
	}
	st, rev, ok, err := s.readStages(ctx, name)
	if err != nil {
		return err
	}
	switch {
	case !ok || st.Pending == "":
		return nil
	case st.Pending != pendingID:
		return codes.Errorf(codes.Aborted, "vault: discard %s/%s: PENDING is version %s, not %s", s.mount, name, st.Pending, pendingID)
	}
	st.Pending, st.PendingToken = "", ""
	_, err = s.writeStages(ctx, name, st, rev)
	return err
}
