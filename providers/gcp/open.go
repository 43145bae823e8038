package gcp

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	gbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keywarden/keywarden/internal/netrule"
	"github.com/keywarden/keywarden/internal/secretfile"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Scheme is the URL scheme of the driver.
const Scheme = "gcpsm"

func init() { providers.Register(Scheme, openURL) }

// The shapes of project and secret ids, with their lengths checked apart:
// a counted repetition ({1,255}) compiles into a program with one copy of
// the class per count, hundreds of kilobytes held from start-up on.
var (
	projectID = regexp.MustCompile(`^[a-z0-9][a-z0-9.:-]*$`)
	secretID  = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// parseURL reads gcpsm://projects/P/secrets/S.
func parseURL(u *url.URL) (project, name string, err error) {
	parts := strings.Split(strings.Trim(u.Host+u.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "projects" || parts[2] != "secrets" {
		return "", "", codes.Errorf(codes.InvalidArgument, "gcp: want gcpsm://projects/PROJECT/secrets/SECRET, got %s", providers.Redact(u))
	}
	if len(parts[1]) > 63 || !projectID.MatchString(parts[1]) {
		return "", "", codes.Errorf(codes.InvalidArgument, "gcp: %q is not a project id", parts[1])
	}
	if len(parts[3]) > 255 || !secretID.MatchString(parts[3]) {
		return "", "", codes.Errorf(codes.InvalidArgument, "gcp: secret id %q must be 1-255 letters, digits, '-' or '_'", parts[3])
	}
	return parts[1], parts[3], nil
}

// reconnect is how the client reconnects after its connection broke: at
// most maxReconnectDelay between attempts, so that a store back after a
// long outage is reached again within a second or two, well inside any
// refresh interval (gRPC's default grows the wait up to two minutes).
var reconnect = grpc.ConnectParams{
	Backoff: gbackoff.Config{
		BaseDelay:  100 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   maxReconnectDelay,
	},
	MinConnectTimeout: 5 * time.Second,
}

// maxReconnectDelay caps the wait between two reconnection attempts.
const maxReconnectDelay = time.Second

// clientOptions are the client options of a store URL: endpoint ("" for
// Google's), plaintext without credentials (local test servers only), and
// the reconnection backoff.
func clientOptions(endpoint string, plaintext bool) []option.ClientOption {
	co := []option.ClientOption{option.WithGRPCDialOption(grpc.WithConnectParams(reconnect))}
	if endpoint != "" {
		co = append(co, option.WithEndpoint(endpoint))
	}
	if plaintext {
		co = append(co, option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	}
	return co
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
	if plaintext && endpoint == "" {
		return nil, "", codes.Errorf(codes.InvalidArgument, "gcp: insecure=true needs endpoint= (a local test server); Google's endpoint is always TLS")
	}
	if plaintext && !netrule.IsLoopback(endpoint) {
		// Without TLS the secret comes back in clear text: netrule's rule
		// allows that only on this machine.
		return nil, "", codes.Errorf(codes.InvalidArgument, "gcp: insecure=true would read the secret in clear text over the network: it is only for an endpoint on this machine (localhost:PORT, 127.0.0.1:PORT, [::1]:PORT); use TLS (leave insecure out) for any other")
	}
	// The client reads the file of Application Default Credentials itself
	// (os.ReadFile: a named pipe there blocked the open for ever).
	if err := secretfile.CheckEnv("GOOGLE_APPLICATION_CREDENTIALS"); err != nil {
		return nil, "", codes.Wrap(codes.InvalidArgument, "gcp", err)
	}
	c, err := secretmanager.NewClient(ctx, clientOptions(endpoint, plaintext)...)
	if err != nil {
		return nil, "", mapErr("client (Application Default Credentials)", err)
	}
	s := New(c, project, opts)
	s.owns = true
	return s, name, nil
}
