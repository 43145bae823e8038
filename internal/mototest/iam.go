package mototest

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed" // iamserver.py
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// AccountID is the account of moto's resources: ARNs in policies for an IAM
// server name it.
const AccountID = "123456789012"

// iamServerScript starts moto.server with the resource of Secrets Manager
// requests and IAM's wildcards filled into moto's evaluator; its docstring
// lists what moto still does not evaluate.
//
//go:embed iamserver.py
var iamServerScript []byte

// IAMServer is a moto server of its own, apart from the shared one of
// Start, that authenticates every request (SigV4 with an access key of its
// IAM) and authorizes it against the caller's IAM policies. Secrets Manager
// requests are evaluated against the secret's ARN.
//
// moto's evaluator is basic: it applies Allow and Deny statements of the
// user's policies with Action and Resource wildcards, but no conditions
// (a statement with a Condition is not a grant), no KMS permissions (its
// Secrets Manager never calls KMS), no resource-based policies and no
// permission boundaries. A test passing on it proves actions and resource
// ARNs, not the rest of a policy.
type IAMServer struct {
	// Endpoint is http://127.0.0.1:PORT.
	Endpoint string
	// Admin holds the credentials of a user allowed everything, for setting
	// up and inspecting resources.
	Admin aws.Credentials
}

// StartIAM starts a new moto server that enforces IAM, stopped when the
// test ends. It skips the test when moto cannot start, or fails it when
// the environment variable CI is "true". It always starts its own server:
// the endpoint of EnvEndpoint is not used, since enforcement applies to a
// whole server.
func StartIAM(t testing.TB) *IAMServer {
	t.Helper()
	s, err := startIAM(t)
	if err != nil {
		unavailable(t, fmt.Errorf("IAM server: %w", err))
	}
	return s
}

func startIAM(t testing.TB) (*IAMServer, error) {
	py, err := exec.LookPath("python3")
	if err != nil {
		return nil, fmt.Errorf("python3 not found: %w", err)
	}
	var srv *server
	for range 3 {
		if srv, err = launch(py, iamServerScript); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	t.Cleanup(srv.stop)
	s := &IAMServer{Endpoint: srv.endpoint}
	ctx := context.Background()
	// Until enforcement starts, moto takes any signature: the dummy
	// credentials create the admin user.
	bootstrap := aws.Credentials{AccessKeyID: "testing", SecretAccessKey: "testing"}
	admin, err := s.createUser(ctx, bootstrap, "mototest-admin",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`)
	if err != nil {
		return nil, err
	}
	s.Admin = admin
	// From now on every request is checked (moto's /moto-api/reset-auth
	// sets INITIAL_NO_AUTH_ACTION_COUNT and restarts its count).
	if _, err := post(ctx, s.Endpoint+"/moto-api/reset-auth", "text/plain", "0", nil); err != nil {
		return nil, fmt.Errorf("enable IAM enforcement: %w", err)
	}
	return s, nil
}

// User creates an IAM user called name with policy (a JSON policy
// document) as its inline policy, and returns an access key of it. It fails
// the test when moto refuses, e.g. a malformed policy document.
func (s *IAMServer) User(t testing.TB, name, policy string) aws.Credentials {
	t.Helper()
	c, err := s.createUser(context.Background(), s.Admin, name, policy)
	if err != nil {
		t.Fatalf("mototest: %v", err)
	}
	return c
}

// Config returns an AWS SDK config for the server with creds, region
// us-east-1, reading nothing from the environment.
func (s *IAMServer) Config(creds aws.Credentials) aws.Config {
	return aws.Config{
		Region:       Region,
		Credentials:  credentials.StaticCredentialsProvider{Value: creds},
		BaseEndpoint: aws.String(s.Endpoint),
	}
}

// SecretsManager returns a Secrets Manager client acting with creds.
func (s *IAMServer) SecretsManager(creds aws.Credentials) *secretsmanager.Client {
	return secretsmanager.NewFromConfig(s.Config(creds))
}

func (s *IAMServer) createUser(ctx context.Context, as aws.Credentials, name, policy string) (aws.Credentials, error) {
	if _, err := s.iam(ctx, as, url.Values{"Action": {"CreateUser"}, "UserName": {name}}); err != nil {
		return aws.Credentials{}, err
	}
	if _, err := s.iam(ctx, as, url.Values{"Action": {"PutUserPolicy"}, "UserName": {name},
		"PolicyName": {name}, "PolicyDocument": {policy}}); err != nil {
		return aws.Credentials{}, err
	}
	body, err := s.iam(ctx, as, url.Values{"Action": {"CreateAccessKey"}, "UserName": {name}})
	if err != nil {
		return aws.Credentials{}, err
	}
	var out struct {
		ID     string `xml:"CreateAccessKeyResult>AccessKey>AccessKeyId"`
		Secret string `xml:"CreateAccessKeyResult>AccessKey>SecretAccessKey"`
	}
	if err := xml.Unmarshal(body, &out); err != nil || out.ID == "" || out.Secret == "" {
		return aws.Credentials{}, fmt.Errorf("iam CreateAccessKey for %s: no access key in the answer (%v)", name, err)
	}
	return aws.Credentials{AccessKeyID: out.ID, SecretAccessKey: out.Secret}, nil
}

// iam calls the IAM Query API, signed with creds, and returns the answer.
// The SDK's IAM client is not a dependency of the module for these three
// calls.
func (s *IAMServer) iam(ctx context.Context, creds aws.Credentials, q url.Values) ([]byte, error) {
	q.Set("Version", "2010-05-08")
	form := q.Encode()
	sum := sha256.Sum256([]byte(form))
	sign := func(r *http.Request) error {
		return v4.NewSigner().SignHTTP(ctx, creds, r, hex.EncodeToString(sum[:]), "iam", Region, time.Now())
	}
	body, err := post(ctx, s.Endpoint+"/", "application/x-www-form-urlencoded; charset=utf-8", form, sign)
	if err != nil {
		return nil, fmt.Errorf("iam %s: %w", q.Get("Action"), err)
	}
	return body, nil
}

// post sends body and returns the answer's body; a status other than 200
// is an error quoting the start of the answer (moto's error document).
func post(ctx context.Context, u, contentType, body string, sign func(*http.Request) error) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	if sign != nil {
		if err := sign(req); err != nil {
			return nil, fmt.Errorf("sign: %w", err)
		}
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New("status " + resp.Status + ": " + string(bytes.TrimSpace(b[:min(len(b), 500)])))
	}
	return b, nil
}
