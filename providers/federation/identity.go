package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/secretfile"
	"github.com/keywarden/keywarden/providers/codes"
)

// IdentitySource supplies the workload's identity token (a JWT signed by its
// platform: the assertion of the exchange). It is asked again on every
// exchange, as platforms rotate these tokens. The token is a secret:
// implementations never put it into an error or a log. Implementations are
// safe for concurrent use.
type IdentitySource interface {
	// IdentityToken returns the current identity token.
	IdentityToken(ctx context.Context) (string, error)
	// String describes the source for messages (a path, a variable name),
	// never the token.
	String() string
}

// maxIdentityToken bounds an identity token read from any source; real
// ones are a few kilobytes.
const maxIdentityToken = 64 << 10

// identityTimeout bounds a metadata request or a command when the caller's
// context has no earlier deadline.
const identityTimeout = 30 * time.Second

// checkToken trims white space around a token and refuses an empty or
// oversized one, or one with white space or control characters inside.
// The error names the source, never the token.
func checkToken(src fmt.Stringer, b []byte) (string, error) {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return "", codes.Errorf(codes.Unavailable, "federation: identity token from %s is empty", src)
	case len(b) > maxIdentityToken:
		return "", codes.Errorf(codes.InvalidArgument, "federation: identity token from %s is longer than %d bytes", src, maxIdentityToken)
	}
	for i, c := range b {
		if c <= ' ' || c == 0x7f {
			return "", codes.Errorf(codes.InvalidArgument, "federation: identity token from %s has white space or a control character at offset %d; want one JWT", src, i)
		}
	}
	return string(b), nil
}

// File reads the identity token from a file on every exchange: a
// Kubernetes projected service account token (which the kubelet rotates in
// place), or any file a platform agent keeps fresh.
type File struct{ Path string }

// IdentityToken reads the file.
func (f File) IdentityToken(context.Context) (string, error) {
	b, fi, err := secretfile.Read(f.Path)
	if err != nil {
		c := codes.Unavailable // a projected volume may not be mounted yet
		switch {
		case errors.Is(err, os.ErrPermission):
			c = codes.PermissionDenied
		case fi != nil:
			c = codes.InvalidArgument // a FIFO, a directory: never a token
		}
		return "", codes.Wrap(c, "federation: read identity token", err)
	}
	return checkToken(f, b)
}

func (f File) String() string { return "file " + f.Path }

// Env reads the identity token from an environment variable on every
// exchange.
type Env struct {
	Name string
	// Lookup replaces os.LookupEnv, for tests.
	Lookup func(string) (string, bool)
}

// IdentityToken reads the variable.
func (e Env) IdentityToken(context.Context) (string, error) {
	lookup := e.Lookup
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, ok := lookup(e.Name)
	if !ok {
		return "", codes.Errorf(codes.Unavailable, "federation: environment variable %s is not set", e.Name)
	}
	return checkToken(e, []byte(v))
}

func (e Env) String() string { return "environment variable " + e.Name }

// Command runs a program on every exchange and takes its standard output as
// the identity token (e.g. a cloud CLI printing an identity token). It runs
// without a shell; its standard error is not kept, as it might echo the
// token.
type Command struct{ Argv []string }

// IdentityToken runs the command.
func (c Command) IdentityToken(ctx context.Context) (string, error) {
	if len(c.Argv) == 0 {
		return "", codes.Errorf(codes.InvalidArgument, "federation: identity token command is empty")
	}
	ctx, cancel := context.WithTimeout(ctx, identityTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	var out limitedBuffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", codes.Wrap(codes.Unavailable, "federation: identity token "+c.String(), ctx.Err())
		}
		// The error of a failed command holds its exit status only.
		return "", codes.Wrap(codes.Unavailable, "federation: identity token "+c.String(), err)
	}
	if out.over {
		return "", codes.Errorf(codes.InvalidArgument, "federation: identity token %s printed more than %d bytes", c, maxIdentityToken)
	}
	return checkToken(c, out.b.Bytes())
}

func (c Command) String() string {
	if len(c.Argv) == 0 {
		return "command"
	}
	return "command " + c.Argv[0]
}

type limitedBuffer struct {
	b    bytes.Buffer
	over bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxIdentityToken + 1 - l.b.Len(); len(p) > room {
		l.over = true
		l.b.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return l.b.Write(p)
}

// DefaultMetadataHost is the GCP metadata server's address; the
// GCE_METADATA_HOST environment variable overrides it, as in Google's own
// clients.
const DefaultMetadataHost = "169.254.169.254"

// GCPMetadata asks the GCP metadata server (GCE, GKE Workload Identity,
// Cloud Run) for an identity token with the audience of the federation
// rule, on every exchange.
type GCPMetadata struct {
	Audience string
	// Host is the metadata server's host[:port] (GCE_METADATA_HOST, else
	// DefaultMetadataHost, when empty).
	Host string
	// Client sends the request (http.DefaultClient when nil).
	Client *http.Client
}

// IdentityToken requests
// /computeMetadata/v1/instance/service-accounts/default/identity.
func (g GCPMetadata) IdentityToken(ctx context.Context) (string, error) {
	host := g.Host
	if host == "" {
		host = os.Getenv("GCE_METADATA_HOST")
	}
	if host == "" {
		host = DefaultMetadataHost
	}
	u := "http://" + host + "/computeMetadata/v1/instance/service-accounts/default/identity?audience=" +
		url.QueryEscape(g.Audience) + "&format=full"
	return httpToken(ctx, g.Client, g, u, http.Header{"Metadata-Flavor": {"Google"}}, false)
}

func (g GCPMetadata) String() string { return "GCP metadata server" }

// GitHubActions requests an OIDC token for the job from GitHub Actions, with
// the audience of the federation rule, on every exchange. The job needs
// `permissions: id-token: write`, which sets ACTIONS_ID_TOKEN_REQUEST_URL
// and ACTIONS_ID_TOKEN_REQUEST_TOKEN.
type GitHubActions struct {
	Audience string
	// Lookup replaces os.LookupEnv, for tests.
	Lookup func(string) (string, bool)
	// Client sends the request (http.DefaultClient when nil).
	Client *http.Client
}

// IdentityToken requests the token from ACTIONS_ID_TOKEN_REQUEST_URL.
func (g GitHubActions) IdentityToken(ctx context.Context) (string, error) {
	lookup := g.Lookup
	if lookup == nil {
		lookup = os.LookupEnv
	}
	reqURL, ok1 := lookup("ACTIONS_ID_TOKEN_REQUEST_URL")
	bearer, ok2 := lookup("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
	if !ok1 || !ok2 || reqURL == "" || bearer == "" {
		return "", codes.Errorf(codes.FailedPrecondition,
			"federation: ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: give the job `permissions: id-token: write`")
	}
	u, err := url.Parse(reqURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return "", codes.Errorf(codes.InvalidArgument, "federation: ACTIONS_ID_TOKEN_REQUEST_URL is not an http(s) URL")
	}
	if g.Audience != "" {
		q := u.Query()
		q.Set("audience", g.Audience)
		u.RawQuery = q.Encode()
	}
	return httpToken(ctx, g.Client, g, u.String(), http.Header{"Authorization": {"Bearer " + bearer}}, true)
}

func (g GitHubActions) String() string { return "GitHub Actions OIDC" }

// httpToken GETs an identity token: the body itself, or with jsonValue the
// "value" field of a JSON object.
func httpToken(ctx context.Context, c *http.Client, src fmt.Stringer, u string, h http.Header, jsonValue bool) (string, error) {
	if c == nil {
		c = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, identityTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", codes.Errorf(codes.InvalidArgument, "federation: %s: bad request URL", src)
	}
	req.Header = h
	resp, err := c.Do(req)
	if err != nil {
		// url.Error quotes the URL, which holds no secret here (the
		// request token travels in a header).
		return "", codes.Wrap(codes.Unavailable, fmt.Sprintf("federation: %s", src), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxIdentityToken+1))
	if err != nil {
		return "", codes.Wrap(codes.Unavailable, fmt.Sprintf("federation: %s: read answer", src), err)
	}
	if resp.StatusCode != http.StatusOK {
		c := codes.Unavailable
		if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusNotFound {
			c = codes.PermissionDenied
		}
		// The body is not quoted: a server might echo credentials.
		return "", codes.Errorf(c, "federation: %s answered status %d", src, resp.StatusCode)
	}
	if jsonValue {
		var v struct {
			Value string `json:"value"`
		}
		if err := json.Unmarshal(b, &v); err != nil || v.Value == "" {
			return "", codes.Errorf(codes.Internal, "federation: %s: the answer is not a JSON object with a value", src)
		}
		b = []byte(v.Value)
	}
	if strings.HasPrefix(string(b), "{") {
		return "", codes.Errorf(codes.Internal, "federation: %s: the answer is not a JWT", src)
	}
	return checkToken(src, b)
}
