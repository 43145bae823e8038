package aws

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// recordKind tags the JSON of a record version.
const recordKind = "keywarden-record/v1"

// recordBody is the content of a record version. Nonce makes the contents of
// two writers of the same revision differ, so AWS refuses the second one
// instead of taking it for a retry of the first.
type recordBody struct {
	Kind  string            `json:"kind"`
	Nonce string            `json:"nonce"`
	Data  map[string]string `json:"data"`
}

// ReadRecord reads the version labelled KWRECORD.
func (s *store) ReadRecord(ctx context.Context, name string) (*driver.Record, error) {
	out, err := s.c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
		SecretId:     sdkaws.String(name),
		VersionStage: sdkaws.String(labelRecord),
	})
	if err != nil {
		err = wrap(ctx, fmt.Sprintf("aws: read rotation record of secret %q", name), err)
		if codes.Is(err, codes.NotFound) {
			return &driver.Record{Data: map[string]string{}}, nil
		}
		return nil, err
	}
	id := sdkaws.ToString(out.VersionId)
	var body recordBody
	if !strings.HasPrefix(id, recordPrefix) ||
		out.SecretString == nil || json.Unmarshal([]byte(*out.SecretString), &body) != nil || body.Kind != recordKind {
		// Say nothing of the content: it might be a key labelled by mistake.
		return nil, codes.Errorf(codes.Internal,
			"aws: secret %q: version %s labelled %s is not a keywarden rotation record; remove the label", name, id, labelRecord)
	}
	if body.Data == nil {
		body.Data = map[string]string{}
	}
	return &driver.Record{Rev: id, Data: body.Data}, nil
}

// WriteRecord writes data as the record revision following rev. The
// revision is compared first; the write itself is the compare-and-swap: its
// VersionId is derived from rev, and AWS creates a VersionId only once.
func (s *store) WriteRecord(ctx context.Context, name, rev string, data map[string]string) (*driver.Record, error) {
	cur, err := s.ReadRecord(ctx, name)
	if err != nil {
		return nil, err
	}
	if cur.Rev != rev {
		return nil, codes.Errorf(codes.Aborted, "aws: write rotation record of secret %q: revision is %q, not %q", name, cur.Rev, rev)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, codes.Wrap(codes.Internal, "aws: record nonce", err)
	}
	b, err := json.Marshal(recordBody{Kind: recordKind, Nonce: hex.EncodeToString(nonce), Data: data})
	if err != nil {
		return nil, codes.Wrap(codes.Internal, "aws: encode rotation record", err)
	}
	id := recordID(rev)
	in := &secretsmanager.PutSecretValueInput{
		SecretId:           sdkaws.String(name),
		ClientRequestToken: sdkaws.String(id),
		SecretString:       sdkaws.String(string(b)),
		VersionStages:      []string{labelRecord},
	}
	_, err = s.c.PutSecretValue(ctx, in)
	if err != nil && rev == "" && isAPI(err, "ResourceNotFoundException") {
		if err := s.ensureSecret(ctx, name); err != nil {
			return nil, err
		}
		_, err = s.c.PutSecretValue(ctx, in)
	}
	if err != nil {
		if isAPI(err, "ResourceExistsException") {
			return nil, codes.Wrap(codes.Aborted,
				fmt.Sprintf("aws: write rotation record of secret %q: another writer wrote the revision after %q first", name, rev), err)
		}
		return nil, wrap(ctx, fmt.Sprintf("aws: write rotation record of secret %q", name), err)
	}
	out := maps.Clone(data)
	if out == nil {
		out = map[string]string{}
	}
	return &driver.Record{Rev: id, Data: out}, nil
}
