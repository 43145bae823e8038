package aws

import (
	"context"
	"fmt"
	"slices"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// labels is a snapshot of a secret's staging labels.
type labels struct {
	on       map[string]string   // label -> VersionId holding it
	stages   map[string][]string // VersionId -> its labels
	versions int                 // number of versions with any label
}

// holder returns the version holding label, or "".
func (l *labels) holder(label string) string { return l.on[label] }

// finishedPromotion reports whether a version's staging labels are
// AWSPENDING together with AWSCURRENT. AWS's rotation protocol reads that as
// a finished promotion whose last label update did not happen (a Promote
// that stopped between its two calls), not as a PENDING version, and so does
// every part of the driver: this is the one place that says so.
func finishedPromotion(stages []string) bool {
	return slices.Contains(stages, labelPending) && slices.Contains(stages, labelCurrent)
}

// pending returns the version holding AWSPENDING unless it is a finished
// promotion, or "".
func (l *labels) pending() string {
	if p := l.on[labelPending]; !finishedPromotion(l.stages[p]) {
		return p
	}
	return ""
}

// leftover returns the version holding AWSPENDING when it is a finished
// promotion (AWSCURRENT is on it too), or "".
func (l *labels) leftover() string {
	if p := l.on[labelPending]; p != "" && finishedPromotion(l.stages[p]) {
		return p
	}
	return ""
}

// visible returns the version holding label unless it is a bookkeeping
// version, that is the version a reader sees in that stage, or "".
func (l *labels) visible(label string) string {
	if id := l.on[label]; !hidden(id) {
		return id
	}
	return ""
}

func (s *store) describe(ctx context.Context, name string) (*labels, error) {
	out, err := s.c.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: sdkaws.String(name)})
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("aws: describe secret %q", name), err)
	}
	l := &labels{on: map[string]string{}, stages: out.VersionIdsToStages, versions: len(out.VersionIdsToStages)}
	for id, stages := range out.VersionIdsToStages {
		for _, st := range stages {
			l.on[st] = id
		}
	}
	return l, nil
}

// ensureSecret makes sure secret name exists and has a version, creating it
// with the placeholder version when missing. Without a version, the next
// PutSecretValue would be the first one, and AWS attaches AWSCURRENT to the
// first version whatever labels the request names.
func (s *store) ensureSecret(ctx context.Context, name string) error {
	l, err := s.describe(ctx, name)
	switch {
	case codes.Is(err, codes.NotFound):
		in := &secretsmanager.CreateSecretInput{
			Name:               sdkaws.String(name),
			ClientRequestToken: sdkaws.String(baseID),
			SecretString:       sdkaws.String(baseValue),
			Description:        sdkaws.String("API key managed by keywarden"),
		}
		if s.kmsKeyID != "" {
			in.KmsKeyId = sdkaws.String(s.kmsKeyID)
		}
		_, err := s.c.CreateSecret(ctx, in)
		if err == nil {
			return nil
		}
		if !isAPI(err, "ResourceExistsException") {
			return wrap(ctx, fmt.Sprintf("aws: create secret %q", name), err)
		}
		// Created meanwhile by someone else: check it has a version.
		if l, err = s.describe(ctx, name); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	if l.versions > 0 {
		return nil
	}
	// An existing secret without any version, e.g. created with the CLI and
	// no value. KWBASE instead of AWSCURRENT: should a real version have
	// appeared meanwhile, the placeholder must not take its place.
	_, err = s.c.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId:           sdkaws.String(name),
		ClientRequestToken: sdkaws.String(baseID),
		SecretString:       sdkaws.String(baseValue),
		VersionStages:      []string{labelBase},
	})
	return wrap(ctx, fmt.Sprintf("aws: write placeholder version of secret %q", name), err)
}

// PutPending writes value as a version labelled AWSPENDING whose VersionId
// (the ClientRequestToken) is derived from token.
func (s *store) PutPending(ctx context.Context, name, token string, value []byte) (*driver.Version, error) {
	id, err := pendingID(token)
	if err != nil {
		return nil, err
	}
	l, err := s.describe(ctx, name)
	switch {
	case codes.Is(err, codes.NotFound):
		if err := s.ensureSecret(ctx, name); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case l.versions == 0:
		if err := s.ensureSecret(ctx, name); err != nil {
			return nil, err
		}
	case l.pending() == id:
		// Written before with this token: the stored value wins.
		return s.getID(ctx, name, id)
	case l.pending() != "":
		return nil, codes.Errorf(codes.FailedPrecondition,
			"aws: secret %q: another rotation is pending (version %s); promote or discard it first", name, l.pending())
	}
	// A label left on AWSCURRENT by a finished promotion moves to the new
	// version with the write below, as AWS moves a label to its newest holder.
	in := &secretsmanager.PutSecretValueInput{
		SecretId:           sdkaws.String(name),
		ClientRequestToken: sdkaws.String(id),
		VersionStages:      []string{labelPending},
	}
	setValue(value, &in.SecretString, &in.SecretBinary)
	_, err = s.c.PutSecretValue(ctx, in)
	if err != nil && !isAPI(err, "ResourceExistsException") {
		return nil, wrap(ctx, fmt.Sprintf("aws: write PENDING version of secret %q", name), err)
	}
	// AWS moves AWSPENDING to the newest writer, and refuses (or ignores)
	// a token whose version exists already: check who holds PENDING now.
	v, gerr := s.getStage(ctx, name, labelPending)
	switch {
	case gerr == nil && v.ID == id:
		return v, nil
	case err != nil:
		return nil, codes.Wrap(codes.FailedPrecondition,
			fmt.Sprintf("aws: secret %q: rotation token already used for a version that is no longer PENDING", name), err)
	case gerr != nil && !codes.Is(gerr, codes.NotFound):
		return nil, gerr
	default:
		return nil, codes.Errorf(codes.FailedPrecondition,
			"aws: secret %q: a concurrent rotation took or discarded PENDING while version %s was written", name, id)
	}
}

// Promote moves AWSCURRENT from the version holding it to pendingID (AWS
// moves AWSPREVIOUS to the former), then removes AWSPENDING. A Promote
// interrupted between the two steps is completed by the next one.
func (s *store) Promote(ctx context.Context, name, pendingID, currentID string) error {
	if pendingID == "" || hidden(pendingID) {
		return codes.Errorf(codes.InvalidArgument, "aws: promote secret %q: %q is not a PENDING version id", name, pendingID)
	}
	l, err := s.describe(ctx, name)
	if err != nil {
		return err
	}
	if l.holder(labelCurrent) != pendingID {
		if p := l.pending(); p != pendingID {
			return codes.Errorf(codes.Aborted, "aws: promote secret %q: PENDING is %q, not %q", name, p, pendingID)
		}
		if c := l.visible(labelCurrent); c != currentID {
			return codes.Errorf(codes.Aborted, "aws: promote secret %q: CURRENT is %q, not %q", name, c, currentID)
		}
		in := &secretsmanager.UpdateSecretVersionStageInput{
			SecretId:        sdkaws.String(name),
			VersionStage:    sdkaws.String(labelCurrent),
			MoveToVersionId: sdkaws.String(pendingID),
		}
		if c := l.holder(labelCurrent); c != "" {
			// The compare-and-swap: AWS refuses when c no longer holds
			// AWSCURRENT.
			in.RemoveFromVersionId = sdkaws.String(c)
		}
		if _, err := s.c.UpdateSecretVersionStage(ctx, in); err != nil {
			if !isAPI(err, "InvalidParameterException") {
				return wrap(ctx, fmt.Sprintf("aws: promote secret %q: move %s", name, labelCurrent), err)
			}
			// Lost the race: fine only if the winner promoted the same.
			if l, err = s.describe(ctx, name); err != nil {
				return err
			}
			if l.holder(labelCurrent) != pendingID {
				return codes.Errorf(codes.Aborted, "aws: promote secret %q: CURRENT changed meanwhile (now %q)", name, l.visible(labelCurrent))
			}
		} else {
			// Checked, not assumed: the move must show.
			if l, err = s.describe(ctx, name); err != nil {
				return err
			}
			if c := l.holder(labelCurrent); c != pendingID {
				return codes.Errorf(codes.Internal, "aws: promote secret %q: %s was moved to %s but the secret shows it on %q", name, labelCurrent, pendingID, c)
			}
		}
	}
	// pendingID holds AWSCURRENT: promoted now, by a racing promoter, or by
	// an earlier call. It is a success when the version before it is the
	// one the caller saw as current.
	if p := l.visible(labelPrevious); p != currentID {
		return codes.Errorf(codes.Aborted, "aws: promote secret %q: version %s is CURRENT already, over %q, not %q", name, pendingID, p, currentID)
	}
	if l.holder(labelPending) != pendingID {
		return nil
	}
	// Should this last call not happen (a crash) or not apply, AWSPENDING
	// stays on the AWSCURRENT version: a finished promotion (see pending).
	_, err = s.c.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
		SecretId:            sdkaws.String(name),
		VersionStage:        sdkaws.String(labelPending),
		RemoveFromVersionId: sdkaws.String(pendingID),
	})
	if err != nil && isAPI(err, "InvalidParameterException") {
		// Removed meanwhile by a racing promoter.
		if l, derr := s.describe(ctx, name); derr == nil && l.holder(labelPending) != pendingID {
			return nil
		}
	}
	return wrap(ctx, fmt.Sprintf("aws: promote secret %q: clear %s", name, labelPending), err)
}

// DiscardPending removes AWSPENDING from pendingID. The version stays, without
// labels, until AWS deletes it as deprecated.
func (s *store) DiscardPending(ctx context.Context, name, pendingID string) error {
	l, err := s.describe(ctx, name)
	if codes.Is(err, codes.NotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if lo := l.leftover(); lo != "" {
		// No PENDING version, only the label a finished promotion left on
		// CURRENT: clear it, so that tools reading labels see no PENDING.
		return s.removePending(ctx, name, lo)
	}
	switch p := l.holder(labelPending); {
	case p == "":
		return nil
	case p != pendingID:
		return codes.Errorf(codes.Aborted, "aws: discard PENDING of secret %q: PENDING is %q, not %q", name, p, pendingID)
	}
	return s.removePending(ctx, name, pendingID)
}

// removePending removes AWSPENDING from version id and checks that it is
// gone from there: AWS answers UpdateSecretVersionStage without the labels,
// so the result is read back with a describe.
func (s *store) removePending(ctx context.Context, name, id string) error {
	_, err := s.c.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
		SecretId:            sdkaws.String(name),
		VersionStage:        sdkaws.String(labelPending),
		RemoveFromVersionId: sdkaws.String(id),
	})
	if err != nil && !isAPI(err, "InvalidParameterException") {
		return wrap(ctx, fmt.Sprintf("aws: discard PENDING of secret %q", name), err)
	}
	// Refused (moved or removed meanwhile) or done: the labels tell.
	l, derr := s.describe(ctx, name)
	if derr != nil {
		return derr
	}
	switch p := l.holder(labelPending); {
	case p == "" || p != id && p == l.holder(labelCurrent):
		return nil
	case p == id:
		if err != nil {
			return wrap(ctx, fmt.Sprintf("aws: discard PENDING of secret %q", name), err)
		}
		return codes.Errorf(codes.Internal, "aws: discard PENDING of secret %q: %s is still on version %s after its removal", name, labelPending, id)
	default:
		return codes.Errorf(codes.Aborted, "aws: discard PENDING of secret %q: PENDING is %q, not %q", name, p, id)
	}
}
