// Package exec is a rotation issuer that runs a command to create and revoke
// keys, for vendors that mint keys programmatically (an OpenAI Admin API
// service account, LiteLLM's /key/generate, an internal key service).
//
// The command gets everything on stdin and in its environment, never in its
// arguments (which any user of the machine can read in the process table):
//
//   - create: KEYWARDEN_ACTION=create, KEYWARDEN_KEY_NAME, and
//     KEYWARDEN_ROTATION_TOKEN (the same for every retry of one rotation, so
//     the command can be idempotent); stdin is
//     {"action":"create","key":NAME,"token":TOKEN}. It prints
//     {"api_key": "...", "key_id": "..."} on stdout and exits 0.
//   - revoke: KEYWARDEN_ACTION=revoke, KEYWARDEN_KEY_NAME and
//     KEYWARDEN_KEY_ID; stdin is {"action":"revoke","key":NAME,"key_id":ID,
//     "api_key":VALUE} (api_key when the store still held it, for services
//     that revoke by value). It exits 0, also when the key is already
//     revoked.
//
// Each run is bounded by a timeout; on expiry the command's whole process
// group is killed. Its stderr is kept (the last 4 KiB) for error messages,
// with every key value and anything shaped like a key redacted.
package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"strings"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/redact"
	"github.com/keywarden/keywarden/rotation"
)

// DefaultTimeout bounds one run of a command.
const DefaultTimeout = 30 * time.Second

const (
	maxStdout = 64 << 10
	maxStderr = 4 << 10
)

// Options configure an Issuer.
type Options struct {
	// KeyName is the configured key's name, passed as KEYWARDEN_KEY_NAME.
	KeyName string
	// Command is the create command: program and fixed arguments.
	Command []string
	// RevokeCommand is the revoke command (default: Command, told apart by
	// KEYWARDEN_ACTION).
	RevokeCommand []string
	// Timeout bounds each run (default 30s).
	Timeout time.Duration
	// Env adds NAME=VALUE entries to the environment the command inherits.
	Env []string
	// Dir is the working directory ("" for the rotator's).
	Dir string
}

// Issuer runs commands. It is safe for concurrent use.
type Issuer struct{ o Options }

var _ rotation.Issuer = (*Issuer)(nil)

// New returns an Issuer, or an error for bad options.
func New(o Options) (*Issuer, error) {
	if len(o.Command) == 0 || o.Command[0] == "" {
		return nil, errors.New("exec: no command")
	}
	if len(o.RevokeCommand) == 0 {
		o.RevokeCommand = o.Command
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	for _, e := range o.Env {
		if !strings.Contains(e, "=") {
			return nil, fmt.Errorf("exec: environment entry %q is not NAME=VALUE", e)
		}
	}
	return &Issuer{o: o}, nil
}

// Type returns "exec".
func (*Issuer) Type() string { return "exec" }

// output is what the create command prints.
type output struct {
	APIKey string `json:"api_key"`
	KeyID  string `json:"key_id"`
}

// Create runs the create command. The key it prints is checked by the
// rotator, as every issuer's is, before it is stored: one a consumer could
// not read is revoked at once (with this issuer's revoke command).
func (i *Issuer) Create(ctx context.Context, token string) (rotation.Credential, error) {
	in, _ := json.Marshal(map[string]string{"action": "create", "key": i.o.KeyName, "token": token})
	out, err := i.run(ctx, i.o.Command, []string{"KEYWARDEN_ACTION=create", "KEYWARDEN_ROTATION_TOKEN=" + token}, in, nil)
	if err != nil {
		return rotation.Credential{}, err
	}
	var o output
	dec := json.NewDecoder(bytes.NewReader(out))
	if err := dec.Decode(&o); err != nil {
		// The output may hold the key: never quote it.
		return rotation.Credential{}, fmt.Errorf("exec: %s: stdout is not a JSON object {\"api_key\": ..., \"key_id\": ...} (%d bytes)", i.o.Command[0], len(out))
	}
	o.APIKey = strings.TrimSpace(o.APIKey)
	if o.APIKey == "" {
		return rotation.Credential{}, fmt.Errorf("exec: %s: stdout has no api_key", i.o.Command[0])
	}
	return rotation.Credential{Key: providers.NewSecret(o.APIKey), KeyID: o.KeyID}, nil
}

// Revoke runs the revoke command.
func (i *Issuer) Revoke(ctx context.Context, c rotation.Credential) error {
	if c.KeyID == "" && c.Key.IsZero() {
		return errors.New("exec: revoke: neither a key id nor the key is known")
	}
	in, _ := json.Marshal(map[string]string{"action": "revoke", "key": i.o.KeyName, "key_id": c.KeyID, "api_key": c.Key.Reveal()})
	_, err := i.run(ctx, i.o.RevokeCommand, []string{"KEYWARDEN_ACTION=revoke", "KEYWARDEN_KEY_ID=" + c.KeyID}, in, []providers.Secret{c.Key})
	return err
}

// run runs argv with extra environment and stdin, and returns its stdout.
// Errors carry the exit status and the redacted tail of stderr.
func (i *Issuer) run(ctx context.Context, argv, env []string, stdin []byte, secrets []providers.Secret) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, i.o.Timeout)
	defer cancel()
	cmd := osexec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = i.o.Dir
	cmd.Env = append(append(append(os.Environ(), i.o.Env...), "KEYWARDEN_KEY_NAME="+i.o.KeyName), env...)
	cmd.Stdin = bytes.NewReader(stdin)
	stdout := &limited{max: maxStdout}
	stderr := &tail{max: maxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	setProcessGroup(cmd)
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if err == nil && stdout.over {
		err = fmt.Errorf("stdout is larger than %d bytes", maxStdout)
	}
	if err != nil {
		// Redact from stderr the keys involved (one the command may have
		// printed before failing included) and anything shaped like a key.
		var o output
		if json.Unmarshal(stdout.Bytes(), &o) == nil && o.APIKey != "" {
			secrets = append(secrets, providers.NewSecret(o.APIKey))
		}
		msg := strings.TrimSpace(redact.String(stderr.String(), secrets...))
		what := err.Error()
		if ctx.Err() == context.DeadlineExceeded {
			what = fmt.Sprintf("timed out after %v (process group killed)", i.o.Timeout)
		}
		if msg != "" {
			return nil, fmt.Errorf("exec: %s: %s; stderr: %s", argv[0], what, msg)
		}
		return nil, fmt.Errorf("exec: %s: %s", argv[0], what)
	}
	return stdout.Bytes(), nil
}

// limited keeps up to max bytes and notes whether more came. (It must not
// embed bytes.Buffer: io.Copy would use the buffer's ReadFrom and bypass
// the limit.)
type limited struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room < len(p) {
		l.over = true
		if room > 0 {
			l.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return l.buf.Write(p)
}

func (l *limited) Bytes() []byte { return l.buf.Bytes() }

// tail keeps the last max bytes written.
type tail struct {
	b   []byte
	max int
	cut bool // bytes before b were dropped
}

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
		t.cut = true
	}
	return len(p), nil
}

// String returns what was kept. When the start was cut, the word the cut
// fell in is dropped too: it may be the end of a key, which redaction
// (by value or by shape) no longer recognises without its start.
func (t *tail) String() string {
	if !t.cut {
		return string(t.b)
	}
	i := bytes.IndexAny(t.b, " \t\r\n")
	if i < 0 {
		return "…"
	}
	return "…" + string(t.b[i:])
}

var (
	_ io.Writer = (*tail)(nil)
	_ io.Writer = (*limited)(nil)
)
