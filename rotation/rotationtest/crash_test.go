package rotationtest_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keywarden/keywarden/internal/gcpsmfake"
	"github.com/keywarden/keywarden/internal/mototest"
	"github.com/keywarden/keywarden/providers/aws"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/file"
	"github.com/keywarden/keywarden/providers/gcp"
	"github.com/keywarden/keywarden/providers/providertest/crashtest"
	"github.com/keywarden/keywarden/providers/vault"
	"github.com/keywarden/keywarden/providers/vault/vaulttest"
	"github.com/keywarden/keywarden/rotation/rotationtest"
)

// Where children find the file stores (a folder, one file per secret) and
// the GCP fake.
const (
	envCrashFile = crashtest.EnvPrefix + "FILE"
	envCrashGCP  = crashtest.EnvPrefix + "GCP_ADDR"
)

// TestCrash stops every store operation after each of its store calls, on
// every backend, in a real child process, and checks that every state it
// leaves converges; see rotationtest.RunCrash.
func TestCrash(t *testing.T) {
	if testing.Short() && !crashtest.IsChild() {
		t.Skip("the crash-point harness spawns hundreds of processes")
	}
	rotationtest.RunCrash(t, crashFile, crashAWS, crashGCP, crashVault)
}

var crashFile = rotationtest.CrashBackend{
	Name: "file",
	Start: func(t testing.TB) []string {
		return []string{envCrashFile + "=" + t.TempDir()}
	},
	Open: func(_ testing.TB, c *crashtest.Counter, secret string) driver.Stager {
		var o file.Options
		if c != nil {
			o.AfterIO = c.TickFile
		}
		return file.NewWithOptions(filepath.Join(os.Getenv(envCrashFile), secret+".json"), o)
	},
}

var crashAWS = rotationtest.CrashBackend{
	Name: "aws",
	Start: func(t testing.TB) []string {
		return []string{mototest.EnvEndpoint + "=" + mototest.Start(t)}
	},
	Open: func(t testing.TB, c *crashtest.Counter, _ string) driver.Stager {
		sm := secretsmanager.NewFromConfig(mototest.Config(t), func(o *secretsmanager.Options) {
			if c != nil {
				o.APIOptions = append(o.APIOptions, c.AWS)
			}
		})
		return aws.New(sm, nil)
	},
}

var crashGCP = rotationtest.CrashBackend{
	Name: "gcp",
	Start: func(t testing.TB) []string {
		return []string{envCrashGCP + "=" + gcpsmfake.Start(t).Addr()}
	},
	Open: func(t testing.TB, c *crashtest.Counter, _ string) driver.Stager {
		opts := []option.ClientOption{
			option.WithEndpoint(os.Getenv(envCrashGCP)),
			option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		}
		if c != nil {
			opts = append(opts, option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(c.UnaryClientInterceptor())))
		}
		cl, err := secretmanager.NewClient(context.Background(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return gcp.New(cl, "kw-crash", gcp.Options{})
	},
}

var crashVault = rotationtest.CrashBackend{
	Name:   "vault",
	Prefix: "anthropic/",
	Start: func(t testing.TB) []string {
		addr, ca, tok := vaulttest.Start(t)
		return []string{vaulttest.EnvAddr + "=" + addr, vaulttest.EnvCACert + "=" + ca, vaulttest.EnvToken + "=" + tok}
	},
	Open: func(t testing.TB, c *crashtest.Counter, _ string) driver.Stager {
		var wrap func(http.RoundTripper) http.RoundTripper
		if c != nil {
			wrap = c.Transport
		}
		cl, err := vaulttest.NewClientWrapped(os.Getenv(vaulttest.EnvAddr), os.Getenv(vaulttest.EnvCACert), os.Getenv(vaulttest.EnvToken), wrap)
		if err != nil {
			t.Fatal(err)
		}
		st, err := vault.New(context.Background(), vault.Options{Client: cl})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	},
}
