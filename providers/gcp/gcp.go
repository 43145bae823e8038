// Package gcp is keywarden's GCP Secret Manager driver.
//
// URL form: gcpsm://projects/PROJECT/secrets/SECRET, with parameters
// endpoint (host:port of another Secret Manager endpoint), insecure=true
// (plaintext and no credentials, for a test server on this machine only:
// an endpoint elsewhere is refused) and
// disable_old=true (disable versions older than PREVIOUS after a promotion;
// versions are never destroyed). Credentials are Application Default
// Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, GKE Workload Identity,
// the metadata server).
//
// Stages are the Secret's version aliases "current", "pending" and
// "previous". Every stage change is one UpdateSecret carrying the Secret's
// etag, so of two concurrent promoters one fails (Secret Manager answers a
// stale etag with FAILED_PRECONDITION, mapped here to Aborted). The pending
// version's rotation token and the rotation record are Secret annotations,
// written under the same etag. A secret with no aliases and no keywarden
// annotation is hand-managed: readers read its latest version. Once
// keywarden writes a PENDING version it first pins "current", so the
// pending version (then the latest) is never what readers read.
package gcp

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Alias and annotation names.
const (
	AliasCurrent  = "current"
	AliasPending  = "pending"
	AliasPrevious = "previous"

	annManaged      = "keywarden-managed"
	annPendingToken = "keywarden-pending-token"
	annRecord       = "keywarden-record"
	annRecordRev    = "keywarden-record-rev"
)

// Options tune a Store.
type Options struct {
	// DisableOld disables versions older than PREVIOUS after a promotion.
	DisableOld bool
}

// Store is a GCP Secret Manager store in one project. It implements
// driver.Stager.
type Store struct {
	c       *secretmanager.Client
	project string
	opts    Options
	owns    bool

	closeOnce sync.Once
}

var _ driver.Stager = (*Store)(nil)

// New returns a Store for secrets of project, using c. Close does not close c.
func New(c *secretmanager.Client, project string, opts Options) *Store {
	return &Store{c: c, project: project, opts: opts}
}

// Close closes the client when the Store opened it. Safe to call twice.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.owns {
			err = s.c.Close()
		}
	})
	return err
}

func (s *Store) secretName(name string) string {
	return "projects/" + s.project + "/secrets/" + name
}

func (s *Store) versionName(name, v string) string { return s.secretName(name) + "/versions/" + v }

// getSecret reads the Secret (aliases, annotations, etag).
func (s *Store) getSecret(ctx context.Context, name string) (*secretmanagerpb.Secret, error) {
	sec, err := s.c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: s.secretName(name)})
	if err != nil {
		return nil, mapErr("get secret "+name, err)
	}
	return sec, nil
}

func managed(sec *secretmanagerpb.Secret) bool {
	return len(sec.GetVersionAliases()) > 0 || sec.GetAnnotations()[annManaged] != ""
}

// access reads version v (a number) with its creation time.
func (s *Store) access(ctx context.Context, name, v string) (*driver.Version, error) {
	meta, err := s.c.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: s.versionName(name, v)})
	if err != nil {
		return nil, mapErr("get version "+v+" of "+name, err)
	}
	resp, err := s.c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: meta.GetName()})
	if err != nil {
		return nil, mapErr("access version "+v+" of "+name, err)
	}
	id := resp.GetName()[strings.LastIndex(resp.GetName(), "/")+1:]
	out := &driver.Version{ID: id, Value: resp.GetPayload().GetData()}
	if t := meta.GetCreateTime(); t != nil {
		out.Created = t.AsTime()
	}
	return out, nil
}

// Read implements driver.Reader.
func (s *Store) Read(ctx context.Context, name string, stage driver.Stage) (*driver.Version, error) {
	alias, err := aliasOf(stage)
	if err != nil {
		return nil, err
	}
	sec, err := s.getSecret(ctx, name)
	if err != nil {
		return nil, err
	}
	n, ok := sec.GetVersionAliases()[alias]
	switch {
	case ok:
		v, err := s.access(ctx, name, strconv.FormatInt(n, 10))
		if err != nil {
			return nil, err
		}
		if stage == driver.Pending {
			v.Token = sec.GetAnnotations()[annPendingToken]
		}
		return v, nil
	case stage == driver.Current && !managed(sec):
		return s.access(ctx, name, "latest") // hand-managed secret
	}
	return nil, codes.Errorf(codes.NotFound, "gcp: secret %s has no %s version", name, stage)
}

func aliasOf(stage driver.Stage) (string, error) {
	switch stage {
	case driver.Current:
		return AliasCurrent, nil
	case driver.Pending:
		return AliasPending, nil
	case driver.Previous:
		return AliasPrevious, nil
	}
	return "", codes.Errorf(codes.InvalidArgument, "gcp: unknown stage %q", stage)
}

// ReadPending implements driver.Stager.
func (s *Store) ReadPending(ctx context.Context, name string) (*driver.Version, error) {
	return s.Read(ctx, name, driver.Pending)
}

// update writes the Secret's aliases and annotations under its etag. A
// stale etag is Aborted. The answer is checked, not assumed: when it does
// not show the aliases and keywarden annotations written (a backend that
// drops aliases silently), update writes the Secret's previous aliases and
// annotations back, so that readers keep the CURRENT they had, and fails
// with FailedPrecondition.
func (s *Store) update(ctx context.Context, sec *secretmanagerpb.Secret, aliases map[string]int64, ann map[string]string) (*secretmanagerpb.Secret, error) {
	out, err := s.write(ctx, sec.GetName(), sec.GetEtag(), aliases, ann)
	if err != nil {
		return nil, err
	}
	if applied(out, aliases, ann) {
		return out, nil
	}
	// Undo, best effort: should the undo be dropped too, the secret is no
	// worse off than the backend made it.
	if back, uerr := s.write(context.WithoutCancel(ctx), sec.GetName(), out.GetEtag(), sec.GetVersionAliases(), sec.GetAnnotations()); uerr != nil || !applied(back, sec.GetVersionAliases(), sec.GetAnnotations()) {
		return nil, codes.Errorf(codes.FailedPrecondition, "gcp: update %s: the answer does not show the aliases written (%v, want %v) and restoring the previous ones failed: %v; check the secret's aliases", sec.GetName(), out.GetVersionAliases(), aliases, uerr)
	}
	return nil, codes.Errorf(codes.FailedPrecondition, "gcp: update %s: the store did not apply the version aliases (it answered %v, want %v); the previous aliases are restored; does this endpoint support version aliases?", sec.GetName(), out.GetVersionAliases(), aliases)
}

// write is one UpdateSecret of the aliases and annotations under etag.
func (s *Store) write(ctx context.Context, name, etag string, aliases map[string]int64, ann map[string]string) (*secretmanagerpb.Secret, error) {
	out, err := s.c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
		Secret: &secretmanagerpb.Secret{
			Name: name, Etag: etag, VersionAliases: aliases, Annotations: ann,
		},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"version_aliases", "annotations"}},
	})
	if err != nil {
		return nil, mapEtagErr("update "+name, err)
	}
	return out, nil
}

// applied reports whether sec shows exactly the aliases, and keywarden's
// annotations as in ann.
func applied(sec *secretmanagerpb.Secret, aliases map[string]int64, ann map[string]string) bool {
	if !maps.Equal(sec.GetVersionAliases(), aliases) {
		return false
	}
	for _, k := range []string{annManaged, annPendingToken, annRecord, annRecordRev} {
		if sec.GetAnnotations()[k] != ann[k] {
			return false
		}
	}
	return true
}

// ensure returns the Secret, creating it (marked managed) when missing.
func (s *Store) ensure(ctx context.Context, name string) (*secretmanagerpb.Secret, error) {
	sec, err := s.getSecret(ctx, name)
	if !codes.Is(err, codes.NotFound) {
		return sec, err
	}
	sec, err = s.c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
		Parent:   "projects/" + s.project,
		SecretId: name,
		Secret: &secretmanagerpb.Secret{
			Replication: &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}}},
			Annotations: map[string]string{annManaged: "true"},
		},
	})
	if err != nil {
		if codes.Is(mapErr("", err), codes.Aborted) { // created meanwhile
			return s.getSecret(ctx, name)
		}
		return nil, mapErr("create secret "+name, err)
	}
	return sec, nil
}

const casAttempts = 8

// PutPending implements driver.Stager.
func (s *Store) PutPending(ctx context.Context, name, token string, value []byte) (*driver.Version, error) {
	if token == "" {
		return nil, codes.Errorf(codes.InvalidArgument, "gcp: PutPending needs a rotation token")
	}
	added := int64(0) // the version this call added, reused across etag retries
	for attempt := 0; attempt < casAttempts; attempt++ {
		sec, err := s.ensure(ctx, name)
		if err != nil {
			return nil, err
		}
		aliases, ann := maps.Clone(sec.GetVersionAliases()), maps.Clone(sec.GetAnnotations())
		if aliases == nil {
			aliases = map[string]int64{}
		}
		if ann == nil {
			ann = map[string]string{}
		}
		if p, ok := aliases[AliasPending]; ok {
			if ann[annPendingToken] == token {
				s.disableOrphan(ctx, name, added, p)
				return s.ReadPending(ctx, name)
			}
			s.disableOrphan(ctx, name, added, 0)
			return nil, codes.Errorf(codes.FailedPrecondition, "gcp: secret %s already has a PENDING version %d from another rotation", name, p)
		}
		if ann[annManaged] == "" {
			// Pin CURRENT before adding a newer version, so that readers
			// of a hand-managed secret never read the pending one.
			if _, ok := aliases[AliasCurrent]; !ok {
				if latest, err := s.c.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: s.versionName(name, "latest")}); err == nil {
					aliases[AliasCurrent] = int64(versionNumber(latest.GetName()))
				} else if !codes.Is(mapErr("", err), codes.NotFound) {
					return nil, mapErr("get latest version of "+name, err)
				}
			}
			ann[annManaged] = "true"
			if _, err := s.update(ctx, sec, aliases, ann); err != nil {
				if codes.Is(err, codes.Aborted) {
					continue
				}
				return nil, err
			}
			continue // re-read with the new etag
		}
		if added == 0 {
			if err := ctx.Err(); err != nil {
				return nil, codes.FromContext(err)
			}
			v, err := s.c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{
				Parent: sec.GetName(), Payload: &secretmanagerpb.SecretPayload{Data: value},
			})
			if err != nil {
				return nil, mapErr("add version to "+name, err)
			}
			added = int64(versionNumber(v.GetName()))
		}
		aliases[AliasPending] = added
		ann[annPendingToken] = token
		if _, err := s.update(ctx, sec, aliases, ann); err != nil {
			if codes.Is(err, codes.Aborted) {
				continue
			}
			s.disableOrphan(ctx, name, added, 0)
			return nil, err
		}
		return s.ReadPending(ctx, name)
	}
	s.disableOrphan(ctx, name, added, 0)
	return nil, codes.Errorf(codes.Aborted, "gcp: PutPending %s: the secret kept changing (%d attempts)", name, casAttempts)
}

// disableOrphan disables a version this call added that did not become
// PENDING (keep is the PENDING version, never disabled). Best effort.
func (s *Store) disableOrphan(ctx context.Context, name string, added, keep int64) {
	if added == 0 || added == keep {
		return
	}
	_, _ = s.c.DisableSecretVersion(context.WithoutCancel(ctx), &secretmanagerpb.DisableSecretVersionRequest{
		Name: s.versionName(name, strconv.FormatInt(added, 10)),
	})
}

func versionNumber(name string) int {
	n, _ := strconv.Atoi(name[strings.LastIndex(name, "/")+1:])
	return n
}

// currentID is the id readers see as CURRENT ("" for none).
func currentID(sec *secretmanagerpb.Secret) string {
	if n, ok := sec.GetVersionAliases()[AliasCurrent]; ok {
		return strconv.FormatInt(n, 10)
	}
	return ""
}

func aliasID(sec *secretmanagerpb.Secret, alias string) string {
	if n, ok := sec.GetVersionAliases()[alias]; ok {
		return strconv.FormatInt(n, 10)
	}
	return ""
}

// Promote implements driver.Stager: one etag-guarded UpdateSecret.
func (s *Store) Promote(ctx context.Context, name, pendingID, currentWant string) error {
	sec, err := s.getSecret(ctx, name)
	if codes.Is(err, codes.NotFound) {
		return codes.Errorf(codes.Aborted, "gcp: promote %s: secret does not exist", name)
	}
	if err != nil {
		return err
	}
	cur, pend, prev := currentID(sec), aliasID(sec, AliasPending), aliasID(sec, AliasPrevious)
	if cur == pendingID && prev == currentWant && pend == "" {
		return nil // a retried promote
	}
	if pend == "" || pend != pendingID {
		return codes.Errorf(codes.Aborted, "gcp: promote %s: version %s is not PENDING (PENDING is %q)", name, pendingID, pend)
	}
	if cur != currentWant {
		return codes.Errorf(codes.Aborted, "gcp: promote %s: CURRENT is %q, not %q", name, cur, currentWant)
	}
	aliases, ann := maps.Clone(sec.GetVersionAliases()), maps.Clone(sec.GetAnnotations())
	delete(aliases, AliasPending)
	delete(ann, annPendingToken)
	aliases[AliasCurrent] = sec.GetVersionAliases()[AliasPending]
	if currentWant != "" {
		aliases[AliasPrevious] = sec.GetVersionAliases()[AliasCurrent]
	} else {
		delete(aliases, AliasPrevious)
	}
	if _, err := s.update(ctx, sec, aliases, ann); err != nil {
		return fmt.Errorf("gcp: promote %s: %w", name, err)
	}
	if s.opts.DisableOld {
		s.disableOlder(ctx, name, aliases)
	}
	return nil
}

// disableOlder disables enabled versions older than every aliased one.
// Best effort: a failure leaves versions enabled, never readers broken.
func (s *Store) disableOlder(ctx context.Context, name string, aliases map[string]int64) {
	oldest := int64(-1)
	for _, n := range aliases {
		if oldest < 0 || n < oldest {
			oldest = n
		}
	}
	it := s.c.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{Parent: s.secretName(name), Filter: "state:ENABLED"})
	for {
		v, err := it.Next()
		if err != nil {
			return
		}
		if n := int64(versionNumber(v.GetName())); n < oldest && v.GetState() == secretmanagerpb.SecretVersion_ENABLED {
			_, _ = s.c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: v.GetName(), Etag: v.GetEtag()})
		}
	}
}

// DiscardPending implements driver.Stager. The discarded version is
// disabled, never destroyed.
func (s *Store) DiscardPending(ctx context.Context, name, pendingID string) error {
	for attempt := 0; attempt < casAttempts; attempt++ {
		sec, err := s.getSecret(ctx, name)
		if codes.Is(err, codes.NotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		pend := aliasID(sec, AliasPending)
		switch {
		case pend == "":
			return nil
		case pend != pendingID:
			return codes.Errorf(codes.Aborted, "gcp: discard %s: PENDING is version %s, not %s", name, pend, pendingID)
		}
		aliases, ann := maps.Clone(sec.GetVersionAliases()), maps.Clone(sec.GetAnnotations())
		delete(aliases, AliasPending)
		delete(ann, annPendingToken)
		if _, err := s.update(ctx, sec, aliases, ann); err != nil {
			if codes.Is(err, codes.Aborted) {
				continue
			}
			return err
		}
		_, _ = s.c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: s.versionName(name, pendingID)})
		return nil
	}
	return codes.Errorf(codes.Aborted, "gcp: discard %s: the secret kept changing", name)
}

// ReadRecord implements driver.Stager.
func (s *Store) ReadRecord(ctx context.Context, name string) (*driver.Record, error) {
	sec, err := s.getSecret(ctx, name)
	if codes.Is(err, codes.NotFound) {
		return &driver.Record{}, nil
	}
	if err != nil {
		return nil, err
	}
	return recordOf(sec)
}

func recordOf(sec *secretmanagerpb.Secret) (*driver.Record, error) {
	ann := sec.GetAnnotations()
	rec := &driver.Record{Rev: ann[annRecordRev], Data: map[string]string{}}
	if raw := ann[annRecord]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &rec.Data); err != nil {
			return nil, codes.Errorf(codes.Internal, "gcp: %s: annotation %s is not a JSON object", sec.GetName(), annRecord)
		}
	}
	return rec, nil
}

// WriteRecord implements driver.Stager: compare-and-swap on the record's
// revision, written under the Secret's etag. An etag conflict caused by
// another change (a promotion) is retried; one caused by another record
// writer is Aborted.
func (s *Store) WriteRecord(ctx context.Context, name, rev string, data map[string]string) (*driver.Record, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return nil, codes.Wrap(codes.InvalidArgument, "gcp: record", err)
	}
	for attempt := 0; attempt < casAttempts; attempt++ {
		sec, err := s.ensure(ctx, name)
		if err != nil {
			return nil, err
		}
		have := sec.GetAnnotations()[annRecordRev]
		if have != rev {
			return nil, codes.Errorf(codes.Aborted, "gcp: record of %s changed (revision %q, expected %q)", name, have, rev)
		}
		next := strconv.FormatInt(time.Now().UnixNano(), 36)
		if n, err := strconv.Atoi(have); err == nil || have == "" {
			next = strconv.Itoa(n + 1)
		}
		ann := maps.Clone(sec.GetAnnotations())
		if ann == nil {
			ann = map[string]string{}
		}
		ann[annRecord], ann[annRecordRev] = string(b), next
		if _, err := s.update(ctx, sec, sec.GetVersionAliases(), ann); err != nil {
			if codes.Is(err, codes.Aborted) {
				continue
			}
			return nil, err
		}
		return &driver.Record{Rev: next, Data: maps.Clone(data)}, nil
	}
	return nil, codes.Errorf(codes.Aborted, "gcp: record of %s: the secret kept changing", name)
}
