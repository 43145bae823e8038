// Package mototest runs one moto server (python3 -m moto.server) per test
// binary, on a free loopback port, and hands tests real AWS SDK clients
// pointed at it with dummy credentials.
//
// Use it from a test:
//
//	func TestMain(m *testing.M) { mototest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		sm := mototest.SecretsManager(t) // *secretsmanager.Client on moto
//		...
//	}
//
// The server starts on first use and Main stops it when the tests end. When
// the environment variable KEYWARDEN_MOTO_ENDPOINT is set (e.g.
// http://127.0.0.1:5000), that server is used and nothing is started. When
// moto cannot start, tests are skipped, unless CI=true, where they fail.
//
// Every test shares the server, so tests must use unique resource names.
package mototest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/internal/tailbuf"
)

// EnvEndpoint names the environment variable holding the endpoint of an
// already running moto server to use instead of starting one.
const EnvEndpoint = "KEYWARDEN_MOTO_ENDPOINT"

// Region is the region of the configs this package returns.
const Region = "us-east-1"

// startTimeout bounds how long Start waits for a new server to answer, and
// externalTimeout how long it waits for the one named by EnvEndpoint.
const (
	startTimeout    = 60 * time.Second
	externalTimeout = 10 * time.Second
)

var (
	once sync.Once

	// mu guards srv and the process state after once ran.
	mu  sync.Mutex
	srv *server
	err error // why the server could not start
)

// Start returns the endpoint (http://127.0.0.1:port) of the moto server of
// this test binary, starting it on first use. When moto cannot start it skips
// the test, or fails it when the environment variable CI is "true".
func Start(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		s, e := start()
		mu.Lock()
		srv, err = s, e
		mu.Unlock()
	})
	mu.Lock()
	s, e := srv, err
	mu.Unlock()
	if e != nil {
		unavailable(t, e)
	}
	return s.endpoint
}

// unavailable skips the test because moto could not start, or fails it
// when the environment variable CI is "true".
func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("mototest: %v", err)
	}
	t.Skipf("mototest: skipping, moto is not available: %v (set CI=true to fail instead)", err)
}

// Config returns an AWS SDK config for the moto server: region us-east-1,
// static dummy credentials and the server as base endpoint. It reads nothing
// from the environment or shared config files.
func Config(t testing.TB) aws.Config {
	t.Helper()
	ep := Start(t)
	return aws.Config{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", "testing"),
		BaseEndpoint: aws.String(ep),
	}
}

// SecretsManager returns a real Secrets Manager client pointed at the moto
// server.
func SecretsManager(t testing.TB) *secretsmanager.Client {
	t.Helper()
	return secretsmanager.NewFromConfig(Config(t))
}

// Main runs the tests of m and then stops the moto server if one was
// started, and exits with the tests' status. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the moto server started by this package, if any. It is safe to
// call more than once; Start does not restart a stopped server.
func Stop() {
	mu.Lock()
	s := srv
	mu.Unlock()
	if s != nil {
		s.stop()
	}
}

type server struct {
	endpoint string
	cmd      *exec.Cmd // nil for an external server
	done     chan struct{}
	stopOnce sync.Once
}

func start() (*server, error) {
	if ep := os.Getenv(EnvEndpoint); ep != "" {
		ctx, cancel := context.WithTimeout(context.Background(), externalTimeout)
		defer cancel()
		if err := waitReady(ctx, ep, nil); err != nil {
			return nil, fmt.Errorf("server at %s=%s does not answer: %w", EnvEndpoint, ep, err)
		}
		return &server{endpoint: ep}, nil
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		return nil, fmt.Errorf("python3 not found: %w", err)
	}
	// The port is chosen by binding :0 and released before moto binds it;
	// another process may take it in between, so try a few times.
	var last error
	for range 3 {
		s, err := launch(py, nil)
		if err == nil {
			return s, nil
		}
		last = err
	}
	return nil, last
}

// launch starts a moto server on a free port: python3 -m moto.server, or,
// when script is not nil, python3 -c script with moto.server's arguments.
func launch(py string, script []byte) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	out := &tailbuf.Buffer{Max: 4096}
	run := []string{"-m", "moto.server"}
	if script != nil {
		run = []string{"-c", string(script)}
	}
	cmd := exec.Command(py, append(run, "-H", "127.0.0.1", "-p", strconv.Itoa(port))...)
	cmd.Stdout = out
	cmd.Stderr = out
	// Dummy credentials and no real AWS config for the server itself.
	cmd.Env = append(os.Environ(),
		"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_SESSION_TOKEN=testing",
		"AWS_DEFAULT_REGION="+Region, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"PYTHONUNBUFFERED=1")
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start python3 -m moto.server: %w", err)
	}
	s := &server{endpoint: "http://127.0.0.1:" + strconv.Itoa(port), cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := waitReady(ctx, s.endpoint, s.done); err != nil {
		s.stop()
		return nil, fmt.Errorf("moto server on port %d did not start: %w (output: %s)", port, err, out.String())
	}
	return s, nil
}

func (s *server) stop() {
	if s.cmd == nil {
		return
	}
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls the moto API until it answers, the process exits (done
// closes) or ctx ends.
func waitReady(ctx context.Context, endpoint string, done <-chan struct{}) error {
	c := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/moto-api/", nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /moto-api/: status %d", resp.StatusCode)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-done:
			return errors.New("the moto process exited")
		case <-tick.C:
		}
	}
}
