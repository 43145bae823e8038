// Package crashtest stops a process after exactly the k-th call it makes to
// a secret store, for crash-point tests: a test binary re-runs itself as a
// child process armed by environment variables, the child runs one store
// operation and exits (os.Exit, a real process exit) right after the answer
// to its k-th store call arrived, so the store has applied the call and the
// process never learns it did. The parent then checks what the store holds
// and runs the next command on it.
//
// The counter sits at each client's own extension point: a smithy Finalize
// middleware for aws-sdk-go-v2 (Counter.AWS), a gRPC unary client
// interceptor for GCP (Counter.UnaryClientInterceptor), a wrapping
// http.RoundTripper for the Vault API client (Counter.Transport), and the
// file store's AfterIO hook (Counter.TickFile), called after each write and
// rename. Each tells calls that may change the store from reads, so that
// a harness knows which crash points leave the same state as the one
// before. The same counter makes the other calls of an operation crash
// points: an HTTP API's (the Claude Admin API's, through
// Counter.Transport: every method but GET, HEAD and LIST counts as a
// change), and any other call a wrapper ticks after its answer (Tick for
// one that changes something, such as an issuer minting or revoking a key;
// TickRead for one that only reads, such as a probe).
//
// A child first runs with k = 0: it counts its calls and reports the count
// (Report), so that the parent covers every k without hard-coding any.
// rotation/rotationtest.RunCrash drives every store operation of keywarden
// (driver calls, put, the key pool, whole rotations) through it on a
// backend; a new driver gets it by adding its backend there.
package crashtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
	"google.golang.org/grpc"
)

// Environment variables that arm a child.
const (
	// EnvAt holds k: the child exits after its k-th store call; 0 counts.
	EnvAt = "KEYWARDEN_CRASH_AT"
	// EnvCase names what the child runs (the parent's choice of backend and
	// operation); its presence makes a process a child.
	EnvCase = "KEYWARDEN_CRASH_CASE"
	// EnvPrefix starts every other variable the parent passes to a child.
	EnvPrefix = "KEYWARDEN_CRASH_"
)

// ExitCrash is the exit status of a child stopped by its counter.
const ExitCrash = 86

// reportPrefix starts the line on which a counting child reports its count.
const reportPrefix = "crashtest: calls="

// Counter counts store and API calls and, when armed with k > 0, exits the
// process after the k-th. It is safe for concurrent use; a nil *Counter counts
// nothing.
type Counter struct {
	at    int64
	armed atomic.Bool
	n     atomic.Int64

	mu     sync.Mutex
	writes []bool // per call counted: did it change the store?
}

// FromEnv returns the counter of a child process (k from EnvAt), not armed
// yet: arm it after the set-up calls (login, opening a client) that do not
// belong to the operation under test.
func FromEnv() (*Counter, error) {
	k, err := strconv.ParseInt(os.Getenv(EnvAt), 10, 64)
	if err != nil || k < 0 {
		return nil, fmt.Errorf("crashtest: %s=%q is not a call count", EnvAt, os.Getenv(EnvAt))
	}
	return &Counter{at: k}, nil
}

// IsChild reports whether this process is a crash-test child.
func IsChild() bool { return os.Getenv(EnvCase) != "" }

// Case returns the case a child runs (EnvCase).
func Case() string { return os.Getenv(EnvCase) }

// Arm starts counting.
func (c *Counter) Arm() {
	if c != nil {
		c.armed.Store(true)
	}
}

// Tick counts one call that may have changed the store or the service it
// went to, whose answer arrived, and exits the process with ExitCrash when
// it is the k-th.
func (c *Counter) Tick() { c.tick(true) }

// TickRead counts one call that only read, as Tick does.
func (c *Counter) TickRead() { c.tick(false) }

// TickFile is the file store's AfterIO hook (file.Options): a write of the
// temporary file leaves the store as it was, a rename changes it.
func (c *Counter) TickFile(changed bool) { c.tick(changed) }

func (c *Counter) tick(write bool) {
	if c == nil || !c.armed.Load() {
		return
	}
	c.mu.Lock()
	c.writes = append(c.writes, write)
	c.mu.Unlock()
	if n := c.n.Add(1); c.at > 0 && n == c.at {
		os.Exit(ExitCrash)
	}
}

// Calls returns the number of calls counted.
func (c *Counter) Calls() int64 {
	if c == nil {
		return 0
	}
	return c.n.Load()
}

// Report writes the count for the parent to stdout, with which calls
// wrote ("w") and which only read ("r").
func (c *Counter) Report() {
	c.mu.Lock()
	kinds := make([]byte, len(c.writes))
	for i, w := range c.writes {
		kinds[i] = 'r'
		if w {
			kinds[i] = 'w'
		}
	}
	c.mu.Unlock()
	fmt.Printf("\n%s%d %s\n", reportPrefix, c.Calls(), kinds)
}

// AWS is an aws-sdk-go-v2 API option (secretsmanager.Options.APIOptions)
// that adds a Finalize middleware ticking after each attempt's answer.
func (c *Counter) AWS(stack *middleware.Stack) error {
	return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("KeywardenCrashCounter",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleFinalize(ctx, in)
			op := awsmiddleware.GetOperationName(ctx)
			c.tick(!strings.HasPrefix(op, "Get") && !strings.HasPrefix(op, "Describe") && !strings.HasPrefix(op, "List"))
			return out, md, err
		}), middleware.After)
}

// UnaryClientInterceptor returns a gRPC interceptor ticking after each
// call's answer.
func (c *Counter) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		name := method[strings.LastIndex(method, "/")+1:]
		c.tick(!strings.HasPrefix(name, "Get") && !strings.HasPrefix(name, "Access") && !strings.HasPrefix(name, "List"))
		return err
	}
}

// Transport wraps base (http.DefaultTransport when nil) to tick after each
// response arrived (its body read): the Vault client's, an API client's.
func (c *Counter) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper{c: c, base: base}
}

type roundTripper struct {
	c    *Counter
	base http.RoundTripper
}

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(r)
	if err == nil {
		// The answer arrived once its body is read; Vault's are small.
		var body bytes.Buffer
		_, rerr := body.ReadFrom(resp.Body)
		resp.Body.Close()
		resp.Body = readCloser{&body}
		if rerr != nil {
			return nil, rerr
		}
	}
	rt.c.tick(r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != "LIST")
	return resp, err
}

type readCloser struct{ *bytes.Buffer }

func (readCloser) Close() error { return nil }

// Result is how a child ended.
type Result struct {
	// Crashed reports an exit by the counter.
	Crashed bool
	// Calls is the count a child reported when it ran to its end.
	Calls int64
	// Writes tells, per call of such a child, whether it may have changed
	// the store (a read leaves the state the call before it left).
	Writes []bool
	// Output is the child's combined output, for failure messages.
	Output string
}

// Spawn runs the test named test (a top-level test of this binary) again
// as a child with env added (EnvCase and EnvAt among it), and waits for it.
// A child ending otherwise than by its counter or with success is an error.
func Spawn(ctx context.Context, test string, env []string) (Result, error) {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.timeout=2m")
	// The race detector sleeps a second at exit unless told not to.
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	out, err := cmd.CombinedOutput()
	res := Result{Output: string(out)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() == ExitCrash:
		res.Crashed = true
		return res, nil
	case err != nil:
		return res, fmt.Errorf("crashtest: child %s: %w\n%s", test, err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), reportPrefix); ok {
			n, kinds, _ := strings.Cut(s, " ")
			res.Calls, _ = strconv.ParseInt(n, 10, 64)
			for _, k := range kinds {
				res.Writes = append(res.Writes, k == 'w')
			}
			return res, nil
		}
	}
	return res, fmt.Errorf("crashtest: child %s reported no count\n%s", test, out)
}
