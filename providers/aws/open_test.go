package aws_test

import (
	"context"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// hermeticEnv points the SDK's default chain at dummy credentials and away
// from the user's AWS files and instance metadata.
func hermeticEnv(t *testing.T, region string) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "testing",
		"AWS_SECRET_ACCESS_KEY":       "testing",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_REGION":                  region,
		"AWS_DEFAULT_REGION":          "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_ENDPOINT_URL":            "",
	} {
		t.Setenv(k, v)
	}
}

// A URL opens a working driver through the registry and the SDK's default
// chain.
func TestOpenURLEndToEnd(t *testing.T) {
	ep := mototest.Start(t)
	hermeticEnv(t, "")
	ctx := context.Background()
	name := uniqueName("open") + "/prod"
	st, got, err := providers.OpenStager(ctx, "awssm://"+name+"?region=us-east-1&endpoint="+ep)
	if err != nil {
		t.Fatalf("OpenStager: %v", err)
	}
	defer st.Close()
	if got != name {
		t.Fatalf("secret name %q, want %q", got, name)
	}
	val := fakeKey()
	v, err := st.PutPending(ctx, name, token(), val)
	if err != nil {
		t.Fatalf("PutPending: %v", err)
	}
	if err := st.Promote(ctx, name, v.ID, ""); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	// The secret is visible to a plain SDK client: it is a normal secret.
	sm := mototest.SecretsManager(t)
	if l := labelsOf(t, sm, name); holderOf(l, "AWSCURRENT") != v.ID {
		t.Fatalf("AWSCURRENT is not on the promoted version: %v", l)
	}
	cur, err := st.Read(ctx, name, driver.Current)
	if err != nil || string(cur.Value) != string(val) {
		t.Fatalf("Read(CURRENT) through the URL driver: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestOpenURLErrors(t *testing.T) {
	hermeticEnv(t, "")
	cases := []struct {
		url  string
		want string // part of the message
	}{
		{"awssm://x?region=us-east-1&colour=red", "unknown parameter(s) colour"},
		{"awssm://x?region=us-east-1&endpoint=ftp://h", "not an absolute http(s) URL"},
		{"awssm://x?region=us-east-1&endpoint=localhost:4566", "not an absolute http(s) URL"},
		// netrule: no credentials in the URL, no clear text off this machine.
		{"awssm://x?region=us-east-1&endpoint=http://admin:S3CRETPASS@127.0.0.1:1", "endpoint: must not carry credentials"},
		{"awssm://x?region=us-east-1&endpoint=http://evil.example.com", "endpoint: would cross the network in clear text"},
		{"awssm://x?region=us-east-1&endpoint=https://127.0.0.1:0", "port"},
		{"awssm://x?region=us-east-1&endpoint=" + url.QueryEscape("http://a:S3CRETPASS@h:%zz"), "endpoint is not a URL"},
		{"awssm://x", "no AWS region"},
		// A region that is not shaped like one was a store failure (exit 1)
		// on the first call, not bad input.
		{"awssm://x?region=us+east+1", `parameter region "us east 1" is not an AWS region name`},
		{"awssm://x?region=US-EAST-1", "is not an AWS region name"},
		{"awssm://x?region=us-east-1.evil.example", "is not an AWS region name"},
		{"awssm:///arn:aws:secretsmanager:us_east:123456789012:secret:a", "is not an AWS region name"},
		{"awssm:x?region=us-east-1", "awssm://NAME"},
		{"awssm:///?region=us-east-1", "1 to 512 characters"},
		{"awssm:///has%20space?region=us-east-1", "has the character"},
		{"awssm:///arn:aws:s3:::bucket", "not a Secrets Manager secret ARN"},
		{"awssm://x?profile=no-such-profile-kw", "profile"},
	}
	for _, c := range cases {
		t.Run(c.url, func(t *testing.T) {
			_, _, err := providers.OpenStager(context.Background(), c.url)
			if !codes.Is(err, codes.InvalidArgument) {
				t.Fatalf("OpenStager(%s): %v (code %v), want InvalidArgument", c.url, err, codes.Of(err))
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("OpenStager(%s): %q does not say %q", c.url, err, c.want)
			}
			if strings.Contains(err.Error(), "S3CRETPASS") {
				t.Fatalf("OpenStager(%s): the error shows the password: %v", c.url, err)
			}
		})
	}
}

// TestOpenURLRegionFromEnvironment: a region from AWS_REGION is checked
// like the URL's.
func TestOpenURLRegionFromEnvironment(t *testing.T) {
	hermeticEnv(t, "us east 1")
	_, _, err := providers.OpenStager(context.Background(), "awssm://x")
	if !codes.Is(err, codes.InvalidArgument) || !strings.Contains(err.Error(), `region (from AWS_REGION or the shared configuration) "us east 1" is not an AWS region name`) {
		t.Fatalf("OpenStager with AWS_REGION=us east 1: %v, want InvalidArgument", err)
	}
}

func TestOpenURLNames(t *testing.T) {
	hermeticEnv(t, "eu-west-1")
	arn := "arn:aws:secretsmanager:ap-south-1:123456789012:secret:anthropic/prod-AbCdEf"
	cases := []struct{ url, name string }{
		{"awssm://anthropic/prod", "anthropic/prod"},
		{"awssm://anthropic", "anthropic"},
		{"awssm://Team_A/claude.key-1", "Team_A/claude.key-1"},
		{"awssm:///team+ops@corp/key=1", "team+ops@corp/key=1"},
		{"awssm:///" + arn, arn},
		{"awssm:///" + arn + "?endpoint=http://127.0.0.1:1", arn},
	}
	for _, c := range cases {
		t.Run(c.url, func(t *testing.T) {
			d, name, err := providers.OpenStager(context.Background(), c.url)
			if err != nil {
				t.Fatalf("OpenStager(%s): %v", c.url, err)
			}
			defer d.Close()
			if name != c.name {
				t.Fatalf("name %q, want %q", name, c.name)
			}
		})
	}
}

// With no credentials anywhere in the default chain, calls fail with
// Unauthenticated, and fail fast.
func TestOpenURLNoCredentials(t *testing.T) {
	ep := mototest.Start(t)
	hermeticEnv(t, "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	st, name, err := providers.OpenStager(context.Background(), "awssm://"+uniqueName("nocreds")+"?endpoint="+ep)
	if err != nil {
		t.Fatalf("OpenStager: %v", err)
	}
	defer st.Close()
	_, err = st.Read(context.Background(), name, driver.Current)
	if !codes.Is(err, codes.Unauthenticated) {
		t.Fatalf("Read without credentials: %v (code %v), want Unauthenticated", err, codes.Of(err))
	}
}
