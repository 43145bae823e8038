package aws_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/providers/aws"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// awsErrorServer answers every request with an AWS JSON 1.1 error, as
// Secrets Manager does, for codes moto cannot produce.
func awsErrorServer(t *testing.T, status int, code string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.Header().Set("X-Amzn-Requestid", "00000000-0000-0000-0000-000000000000")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"__type":"%s","message":"synthetic %s"}`, code, code)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// sdkClient is a real SDK client on endpoint, with one attempt per call so
// that retryable codes fail fast.
func sdkClient(endpoint string, creds sdkaws.CredentialsProvider) *secretsmanager.Client {
	if creds == nil {
		creds = credentials.NewStaticCredentialsProvider("testing", "testing", "")
	}
	return secretsmanager.New(secretsmanager.Options{
		Region:           "us-east-1",
		Credentials:      creds,
		BaseEndpoint:     sdkaws.String(endpoint),
		RetryMaxAttempts: 1,
	})
}

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		status int
		code   string
		want   codes.Code
	}{
		{400, "ResourceNotFoundException", codes.NotFound},
		{400, "AccessDeniedException", codes.PermissionDenied},
		{400, "UnrecognizedClientException", codes.Unauthenticated},
		{400, "ExpiredTokenException", codes.Unauthenticated},
		{400, "InvalidSignatureException", codes.Unauthenticated},
		{400, "ThrottlingException", codes.ResourceExhausted},
		{400, "LimitExceededException", codes.ResourceExhausted},
		{400, "DecryptionFailure", codes.FailedPrecondition},
		{400, "EncryptionFailure", codes.FailedPrecondition},
		{400, "InvalidRequestException", codes.FailedPrecondition},
		{400, "InvalidParameterException", codes.InvalidArgument},
		{400, "ValidationException", codes.InvalidArgument},
		{400, "ResourceExistsException", codes.Aborted},
		{500, "InternalServiceError", codes.Unavailable},
		{503, "ServiceUnavailable", codes.Unavailable},
		{500, "SomeFutureServerFault", codes.Unavailable},
		{400, "SomeFutureClientFault", codes.Unknown},
	}
	for _, c := range cases {
		t.Run(c.code, func(t *testing.T) {
			srv := awsErrorServer(t, c.status, c.code)
			st := aws.New(sdkClient(srv.URL, nil), nil)
			_, err := st.Read(context.Background(), "kwt-errors", driver.Current)
			if got := codes.Of(err); got != c.want {
				t.Fatalf("Read against %d %s: code %v (%v), want %v", c.status, c.code, got, err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "aws: ") || !strings.Contains(err.Error(), c.code) {
				t.Fatalf("error %q: want the prefix \"aws: \" and the AWS code", err)
			}
		})
	}
}

// Every operation maps errors, and no error carries the value written.
func TestErrorsOfEveryOperation(t *testing.T) {
	srv := awsErrorServer(t, 400, "AccessDeniedException")
	st := aws.New(sdkClient(srv.URL, nil), nil)
	ctx := context.Background()
	val := fakeKey()
	ops := map[string]func() error{
		"Read":        func() error { _, err := st.Read(ctx, "kwt-x", driver.Previous); return err },
		"ReadPending": func() error { _, err := st.ReadPending(ctx, "kwt-x"); return err },
		"PutPending":  func() error { _, err := st.PutPending(ctx, "kwt-x", token(), val); return err },
		"Promote":     func() error { return st.Promote(ctx, "kwt-x", "kw01-a000000000000000000000000000", "") },
		"Discard":     func() error { return st.DiscardPending(ctx, "kwt-x", "kw01-a000000000000000000000000000") },
		"ReadRecord":  func() error { _, err := st.ReadRecord(ctx, "kwt-x"); return err },
		"WriteRecord": func() error {
			_, err := st.WriteRecord(ctx, "kwt-x", "", map[string]string{"k": string(val)})
			return err
		},
	}
	for name, op := range ops {
		err := op()
		if !codes.Is(err, codes.PermissionDenied) {
			t.Errorf("%s: %v (code %v), want PermissionDenied", name, err, codes.Of(err))
			continue
		}
		if strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), string(val)) {
			t.Errorf("%s: the error holds the value", name)
		}
	}
}

func TestTransportAndContextErrors(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	stop := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
			http.Error(w, "reached the server", http.StatusTeapot)
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(stop) })

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	noCreds := sdkaws.CredentialsProviderFunc(func(context.Context) (sdkaws.Credentials, error) {
		return sdkaws.Credentials{}, errors.New("no credentials in the chain")
	})
	cases := []struct {
		name     string
		ctx      context.Context
		endpoint string
		creds    sdkaws.CredentialsProvider
		want     codes.Code
	}{
		{"connection refused", context.Background(), closed.URL, nil, codes.Unavailable},
		{"canceled", canceled, hang.URL, nil, codes.Canceled},
		{"deadline", short, hang.URL, nil, codes.DeadlineExceeded},
		{"no credentials", context.Background(), closed.URL, noCreds, codes.Unauthenticated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := aws.New(sdkClient(c.endpoint, c.creds), nil)
			_, err := st.Read(c.ctx, "kwt-transport", driver.Current)
			if got := codes.Of(err); got != c.want {
				t.Fatalf("code %v (%v), want %v", got, err, c.want)
			}
		})
	}
}

// An answer whose error the SDK cannot decode (a proxy's page, a refusal in
// another protocol's shape) is classified by its status: a refusal is not
// retried as Unknown, a 429 backs off; a 404 from something that is not AWS
// does not say that the secret is missing.
func TestUndecodableRefusals(t *testing.T) {
	for _, c := range []struct {
		status int
		want   codes.Code
	}{{401, codes.Unauthenticated}, {403, codes.PermissionDenied}, {429, codes.ResourceExhausted}, {502, codes.Unavailable}, {404, codes.Unknown}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(c.status)
			fmt.Fprint(w, "<html>proxy says no</html>")
		}))
		_, err := aws.New(sdkClient(srv.URL, nil), nil).Read(context.Background(), "kwt-errors", driver.Current)
		srv.Close()
		if got := codes.Of(err); got != c.want {
			t.Errorf("status %d with an HTML body: code %v (%v), want %v", c.status, got, err, c.want)
		}
	}
}

// A refusal tells the operator where to look: the policies, and that AWS
// also refuses a missing secret to a policy naming its ARN.
func TestPermissionDeniedHint(t *testing.T) {
	srv := awsErrorServer(t, 400, "AccessDeniedException")
	_, err := aws.New(sdkClient(srv.URL, nil), nil).Read(context.Background(), "kwt-x", driver.Current)
	for _, want := range []string{`aws: read AWSCURRENT of secret "kwt-x" (denied:`, "deploy/policies/aws-reader.json", "does not exist", "AccessDeniedException"} {
		if !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("error %q: want %q in it", err, want)
		}
	}
}
