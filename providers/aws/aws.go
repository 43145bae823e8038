// Package aws is the keywarden driver for AWS Secrets Manager. Importing it
// registers the URL scheme "awssm":
//
//	awssm://anthropic/prod?region=us-east-1
//	awssm:///arn:aws:secretsmanager:us-east-1:123456789012:secret:anthropic/prod-AbCdEf
//
// Host and path form the secret's name (use the triple-slash form for an ARN
// or a name holding characters that a URL host cannot). Parameters: region
// (default: the SDK's, e.g. AWS_REGION, or the ARN's; shaped like us-east-1,
// checked at open), endpoint (an endpoint URL, e.g. a VPC endpoint or a
// local test server: https, or plain http only to this machine, without
// user info), profile (a shared config profile) and kms_key (the KMS key of
// secrets the driver creates).
// Credentials come from the SDK's default chain: environment, shared config
// and SSO, web identity (EKS IRSA), ECS task role and EC2 instance role.
//
// # Stages
//
// CURRENT, PENDING and PREVIOUS are the staging labels AWSCURRENT, AWSPENDING
// and AWSPREVIOUS, so the AWS console, the CLI and AWS's own rotation
// conventions see keywarden's rotations as they expect. A version written by
// PutPending has a VersionId derived from the rotation token, so a retried
// PutPending finds its version again and the token can be read back.
//
// Promote moves AWSCURRENT with UpdateSecretVersionStage and
// RemoveFromVersionId set to the version the caller saw as current: AWS
// refuses the move when that version no longer holds AWSCURRENT, which makes
// the CURRENT side of Promote an atomic compare-and-swap (AWS moves
// AWSPREVIOUS along). The PENDING side is checked before the move: a
// DiscardPending racing a Promote of the same version may lose; rotators
// serialise such steps through the rotation record.
//
// # Rotation record
//
// AWS has no conditional writes on tags or metadata, so the rotation record
// lives in versions of the same secret, labelled KWRECORD, with VersionIds
// "kwrec-" followed by a hash of the previous revision. Two writers of the
// same next revision send the same ClientRequestToken with different contents
// (each record carries a random nonce) and AWS refuses the second with
// ResourceExistsException, reported as Aborted. The revision is read and
// compared before the write, so the successor id never existed before, and
// a retry of one write by the SDK (same token, same content) is idempotent.
// Each record write is a secret version: AWS advises fewer than one version
// per 10 minutes on average, which a rotator writing a few records per
// rotation keeps far below.
//
// # What readers see
//
// Readers read AWSCURRENT and AWSPREVIOUS only. Versions keywarden writes for
// its own bookkeeping (records, and the placeholder that a secret created by
// the driver starts with, so that a PENDING version never becomes the first
// and therefore AWSCURRENT version) are never returned by Read: a secret
// holding nothing else reads as NotFound.
package aws

import (
	"context"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/providers/driver"
)

// Client is the subset of the Secrets Manager API the driver uses. A
// *secretsmanager.Client satisfies it. Readers only call GetSecretValue.
type Client interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
	DescribeSecret(ctx context.Context, in *secretsmanager.DescribeSecretInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.DescribeSecretOutput, error)
	PutSecretValue(ctx context.Context, in *secretsmanager.PutSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.PutSecretValueOutput, error)
	CreateSecret(ctx context.Context, in *secretsmanager.CreateSecretInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.CreateSecretOutput, error)
	UpdateSecretVersionStage(ctx context.Context, in *secretsmanager.UpdateSecretVersionStageInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.UpdateSecretVersionStageOutput, error)
}

var _ Client = (*secretsmanager.Client)(nil)

// Options configures a driver made by New. The zero value is valid.
type Options struct {
	// KMSKeyID is the KMS key (id, ARN or alias) of secrets the driver
	// creates; empty means the account's aws/secretsmanager key. Existing
	// secrets keep their key.
	KMSKeyID string
}

// New returns a driver on client. opts may be nil. The driver is safe for
// concurrent use.
func New(client Client, opts *Options) driver.Stager {
	s := &store{c: client}
	if opts != nil {
		s.kmsKeyID = opts.KMSKeyID
	}
	return s
}

type store struct {
	c        Client
	kmsKeyID string
}

var _ driver.Stager = (*store)(nil)

// Close does nothing: the SDK client holds no resources that need release.
// It is safe to call more than once.
func (s *store) Close() error { return nil }

// setValue puts value into in as a string when it is valid UTF-8, as keys
// and JSON are, and as binary otherwise.
func setValue(value []byte, str **string, bin *[]byte) {
	if utf8.Valid(value) {
		v := string(value)
		*str = &v
		return
	}
	*bin = append([]byte(nil), value...)
}
