package aws

import (
	"context"
	"fmt"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Read returns the version holding AWSCURRENT (stage Current) or AWSPREVIOUS
// (stage Previous). A hand-managed secret's latest value holds AWSCURRENT, as
// AWS moves it on every write without explicit labels.
func (s *store) Read(ctx context.Context, name string, stage driver.Stage) (*driver.Version, error) {
	var label string
	switch stage {
	case driver.Current:
		label = labelCurrent
	case driver.Previous:
		label = labelPrevious
	default:
		return nil, codes.Errorf(codes.InvalidArgument, "aws: Read of stage %q: want %s or %s", stage, driver.Current, driver.Previous)
	}
	v, err := s.getStage(ctx, name, label)
	if err != nil {
		return nil, err
	}
	if hidden(v.ID) {
		return nil, codes.Errorf(codes.NotFound, "aws: secret %q has no %s version yet (no key was promoted)", name, stage)
	}
	return v, nil
}

// ReadPending returns the version holding AWSPENDING. A finished promotion
// (see finishedPromotion) is no PENDING version: NotFound.
func (s *store) ReadPending(ctx context.Context, name string) (*driver.Version, error) {
	out, err := s.c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
		SecretId:     sdkaws.String(name),
		VersionStage: sdkaws.String(labelPending),
	})
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("aws: read %s of secret %q", labelPending, name), err)
	}
	if finishedPromotion(out.VersionStages) {
		return nil, codes.Errorf(codes.NotFound, "aws: secret %q has no PENDING version (%s is left on the %s version %s: a finished promotion)", name, labelPending, labelCurrent, sdkaws.ToString(out.VersionId))
	}
	v := toVersion(out)
	if hidden(v.ID) {
		return nil, codes.Errorf(codes.Internal, "aws: secret %q: %s is on keywarden's bookkeeping version %s", name, labelPending, v.ID)
	}
	return v, nil
}

// getStage reads the version holding a staging label.
func (s *store) getStage(ctx context.Context, name, label string) (*driver.Version, error) {
	out, err := s.c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
		SecretId:     sdkaws.String(name),
		VersionStage: sdkaws.String(label),
	})
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("aws: read %s of secret %q", label, name), err)
	}
	return toVersion(out), nil
}

// getID reads one version by VersionId.
func (s *store) getID(ctx context.Context, name, id string) (*driver.Version, error) {
	out, err := s.c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
		SecretId:  sdkaws.String(name),
		VersionId: sdkaws.String(id),
	})
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("aws: read version %s of secret %q", id, name), err)
	}
	return toVersion(out), nil
}

func toVersion(out *secretsmanager.GetSecretValueOutput) *driver.Version {
	v := &driver.Version{
		ID:      sdkaws.ToString(out.VersionId),
		Created: sdkaws.ToTime(out.CreatedDate),
	}
	v.Token = tokenOf(v.ID)
	if out.SecretString != nil {
		v.Value = []byte(*out.SecretString)
	} else {
		v.Value = out.SecretBinary
	}
	return v
}
