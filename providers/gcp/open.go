package gcp

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Scheme is the URL scheme of the driver.
const Scheme = "gcpsm"

func init() { providers.Register(Scheme, openURL) }

var (
	projectID = regexp.MustCompile(`^[a-z0-9][a-z0-9.:-]{0,62}$`)
	secretID  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)
)

// parseURL reads gcpsm://projects/P/secrets/S.
func parseURL(u *url.URL) (project, name string, err error) {
	parts := strings.Split(strings.Trim(u.Host+u.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "projects" || parts[2] != "secrets" {
		return "", "", codes.Errorf(codes.InvalidArgument, "gcp: want gcpsm://projects/PROJECT/secrets/SECRET, got %s", providers.Redact(u))
	}
	if !projectID.MatchString(parts[1]) {
		return "", "", codes.Errorf(codes.InvalidArgument, "gcp: %q is not a project id", parts[1])
	}
	if !secretID.MatchString(parts[3]) {
		return "", "", codes.Errorf(codes.InvalidArgument, "gcp: secret id %q must be 1-255 letters, digits, '-' or '_'", parts[3])
	}
	return parts[1], parts[3], nil
}

func openURL(ctx context.Context, u *url.URL) (driver.Reader, string, error) {
	project, name, err := parseURL(u)
	if err != nil {
		return nil, "", err
	}
	q := providers.NewQuery(u.Query())
	endpoint := q.String("endpoint", "")
	plaintext := q.Bool("insecure", false)
	opts := Options{DisableOld: q.Bool("disable_old", false)}
	if err := q.Done("endpoint", "insecure", "disable_old"); err != nil {
		return nil, "", fmt.Errorf("gcp: %w", err)
	}
	var co []option.ClientOption
	if endpoint != "" {
		co = append(co, option.WithEndpoint(endpoint))
	}
	if plaintext {
		if endpoint == "" {
			return nil, "", codes.Errorf(codes.InvalidArgument, "gcp: insecure=true needs endpoint= (a local test server); Google's endpoint is always TLS")
		}
		co = append(co, option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	}
	c, err := secretmanager.NewClient(ctx, co...)
	if err != nil {
		return nil, "", mapErr("client (Application Default Credentials)", err)
	}
	s := New(c, project, opts)
	s.owns = true
	return s, name, nil
}
