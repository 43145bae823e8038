package aws

import (
	"context"
	"errors"
	"net/url"
	"regexp"
	"strings"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/internal/netrule"
	"github.com/keywarden/keywarden/internal/secretfile"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Scheme is the URL scheme of the driver.
const Scheme = "awssm"

func init() { providers.Register(Scheme, openURL) }

// urlConfig is what a store URL says.
type urlConfig struct {
	name     string // secret name or ARN
	region   string
	endpoint string
	profile  string
	kmsKey   string
}

// parseURL reads an awssm URL; see the package documentation.
func parseURL(u *url.URL) (*urlConfig, error) {
	if u.Opaque != "" {
		return nil, codes.Errorf(codes.InvalidArgument, "aws: write the secret as awssm://NAME or awssm:///NAME-OR-ARN, not awssm:%s", u.Opaque)
	}
	c := &urlConfig{name: strings.TrimPrefix(u.Host+u.Path, "/")}
	if err := checkName(c.name); err != nil {
		return nil, err
	}
	q := providers.NewQuery(u.Query())
	c.region = q.String("region", "")
	c.endpoint = q.String("endpoint", "")
	c.profile = q.String("profile", "")
	c.kmsKey = q.String("kms_key", "")
	if err := q.Done("region", "endpoint", "profile", "kms_key"); err != nil {
		return nil, codes.Wrap(codes.InvalidArgument, "aws", err)
	}
	if c.region == "" && strings.HasPrefix(c.name, "arn:") {
		c.region = strings.Split(c.name, ":")[3]
	}
	if c.region != "" {
		if err := checkRegion("parameter region", c.region); err != nil {
			return nil, err
		}
	}
	if c.endpoint != "" {
		// The endpoint receives the request signature and sends the secret
		// back: netrule's rule for where a secret may travel. Neither
		// error quotes it: it may hold a password.
		e, err := url.Parse(c.endpoint)
		if err != nil {
			return nil, codes.Errorf(codes.InvalidArgument, "aws: parameter endpoint is not a URL such as https://secretsmanager.us-east-1.amazonaws.com")
		}
		if err := netrule.CheckSecure(e); err != nil {
			return nil, codes.Errorf(codes.InvalidArgument, "aws: parameter endpoint: %w (such as https://secretsmanager.us-east-1.amazonaws.com, or http://127.0.0.1:PORT for a local test server)", err)
		}
	}
	return c, nil
}

// regionShape is the shape of an AWS region name (us-east-1,
// us-gov-west-1, eusc-de-east-1): lowercase letters, digits and '-', a
// valid DNS label, since the SDK puts it in the endpoint's host name.
var regionShape = regexp.MustCompile(`^[a-z][a-z0-9-]*[a-z0-9]$`)

// checkRegion refuses a region (from where, for the message) that is not
// shaped like one, as bad input: the SDK would take it and fail every call
// as a store failure.
func checkRegion(where, region string) error {
	if len(region) > 63 || !regionShape.MatchString(region) {
		return codes.Errorf(codes.InvalidArgument, "aws: %s %q is not an AWS region name such as us-east-1 (lowercase letters, digits and '-')", where, region)
	}
	return nil
}

// checkName accepts a secret name (1 to 512 of letters, digits and
// /_+=.@-) or a Secrets Manager ARN.
func checkName(name string) error {
	if strings.HasPrefix(name, "arn:") {
		p := strings.SplitN(name, ":", 7)
		if len(p) != 7 || p[2] != "secretsmanager" || p[3] == "" || p[5] != "secret" || p[6] == "" {
			return codes.Errorf(codes.InvalidArgument, "aws: %q is not a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)", name)
		}
		return nil
	}
	if name == "" || len(name) > 512 {
		return codes.Errorf(codes.InvalidArgument, "aws: secret name must have 1 to 512 characters (got %d); write awssm://NAME", len(name))
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/_+=.@-", r)) {
			return codes.Errorf(codes.InvalidArgument, "aws: secret name %q has the character %q; AWS allows letters, digits and /_+=.@-", name, r)
		}
	}
	return nil
}

func openURL(ctx context.Context, u *url.URL) (driver.Reader, string, error) {
	c, err := parseURL(u)
	if err != nil {
		return nil, "", err
	}
	client, err := newClient(ctx, c)
	if err != nil {
		return nil, "", err
	}
	return New(client, &Options{KMSKeyID: c.kmsKey}), c.name, nil
}

// sdkFiles are the variables naming files the SDK reads itself, with
// os.ReadFile: a named pipe at one blocked the open, or every credential
// refresh, for ever.
var sdkFiles = []string{"AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
	"AWS_CA_BUNDLE", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"}

// newClient loads the SDK's default configuration (credential chain, region,
// retries) with the URL's overrides.
func newClient(ctx context.Context, c *urlConfig) (*secretsmanager.Client, error) {
	var opts []func(*config.LoadOptions) error
	if c.region != "" {
		opts = append(opts, config.WithRegion(c.region))
	}
	if c.profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(c.profile))
	}
	if err := secretfile.CheckEnv(sdkFiles...); err != nil {
		return nil, codes.Wrap(codes.InvalidArgument, "aws", err)
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		var pe config.SharedConfigProfileNotExistError
		if errors.As(err, &pe) {
			return nil, codes.Wrap(codes.InvalidArgument, "aws: parameter profile", err)
		}
		return nil, codes.Wrap(codes.FailedPrecondition, "aws: load AWS configuration", err)
	}
	if cfg.Region == "" {
		return nil, codes.Errorf(codes.InvalidArgument, "aws: no AWS region for secret %q: add ?region=REGION to the URL or set AWS_REGION", c.name)
	}
	if err := checkRegion("region (from AWS_REGION or the shared configuration)", cfg.Region); err != nil {
		return nil, err
	}
	if cfg.Credentials != nil {
		cfg.Credentials = credentials{p: cfg.Credentials}
	}
	return secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) {
		if c.endpoint != "" {
			o.BaseEndpoint = sdkaws.String(c.endpoint)
		}
	}), nil
}
