// Command vaultserver starts a real Vault server (the Vault core's own test
// cluster, one core) on a loopback port for keywarden's tests and end-to-end
// runs. It lives in its own Go module so that the main module never imports
// the Vault core.
//
// The server has a KV v2 engine mounted at secret/, the AppRole auth method
// enabled at approle/ and the Kubernetes auth method enabled at kubernetes/
// (unconfigured: a test configures it with the address of its own token
// review endpoint). When it is ready, vaultserver prints one JSON line to
// standard output:
//
//	{"addr":"https://127.0.0.1:PORT","ca_file":"/tmp/.../ca.pem","token":"hvs....","kv_mount":"secret"}
//
// token is the root token. The server runs until standard input closes or
// the process gets SIGINT or SIGTERM, and then removes its files.
//
// With -exec, vaultserver instead runs the command after "--" with the
// server in its environment (KEYWARDEN_VAULT_ADDR, KEYWARDEN_VAULT_TOKEN,
// KEYWARDEN_VAULT_CACERT, which providers/vault/vaulttest uses instead of
// starting a server of its own), stops the server when the command ends, and
// exits with the command's status. The JSON line then goes to stderr.
//
// Usage:
//
//	go run .                                   # from internal/vaultserver
//	go build -o ../../bin/vaultserver .
//	bin/vaultserver -exec -- go test ./...     # one server for every package
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	kv "github.com/hashicorp/vault-plugin-secrets-kv"
	"github.com/hashicorp/vault/api"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/vault"
)

// ready is the line printed on standard output once the server serves.
type ready struct {
	Addr    string   `json:"addr"`
	CAFile  string   `json:"ca_file"`
	Token   string   `json:"token"`
	KVMount string   `json:"kv_mount"`
	Auth    []string `json:"auth"`
}

func main() {
	execute := flag.Bool("exec", false, "run the command after -- with the server in its environment, then stop")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: vaultserver [-exec -- command args...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *execute && flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	code, err := run(flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "vaultserver:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

// run starts the server, then runs command (when not empty) or waits for
// the end of standard input or a signal, and returns the exit status.
func run(command []string) (int, error) {
	dir, err := os.MkdirTemp("", "keywarden-vaultserver-")
	if err != nil {
		return 0, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	tb := newFakeTB("keywarden-vaultserver")
	logger := hclog.New(&hclog.LoggerOptions{Name: "vault", Level: hclog.Error, Output: os.Stderr})
	conf := &vault.CoreConfig{
		LogicalBackends:    map[string]logical.Factory{"kv": kv.Factory},
		CredentialBackends: credentialBackends(),
		Logger:             logger,
	}
	cluster := vault.NewTestCluster(tb, conf, &vault.TestClusterOptions{
		HandlerFunc: vaulthttp.Handler,
		NumCores:    1,
		KVVersion:   "2", // secret/ is a KV v2 mount
		Logger:      logger,
		TempDir:     filepath.Join(dir, "cluster"),
	})
	defer tb.cleanup()
	defer cluster.Cleanup()
	cluster.Start()
	core := cluster.Cores[0]
	vault.TestWaitActive(tb, core.Core)
	client := core.Client

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var auth []string
	for _, m := range authMounts() {
		if err := client.Sys().EnableAuthWithOptionsWithContext(ctx, m, &api.EnableAuthOptions{Type: m}); err != nil {
			return 0, fmt.Errorf("enable auth %s: %w", m, err)
		}
		auth = append(auth, m)
	}
	if err := waitKVv2(ctx, client, "secret"); err != nil {
		return 0, err
	}

	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, cluster.CACertPEM, 0o600); err != nil {
		return 0, fmt.Errorf("write CA file: %w", err)
	}
	r := ready{Addr: client.Address(), CAFile: caFile, Token: cluster.RootToken, KVMount: "secret", Auth: auth}
	line, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	if len(command) > 0 {
		fmt.Fprintf(os.Stderr, "%s\n", line)
		return runCommand(command, r)
	}
	if _, err := fmt.Fprintf(os.Stdout, "%s\n", line); err != nil {
		return 0, fmt.Errorf("write ready line: %w", err)
	}
	waitForStop()
	return 0, nil
}

// runCommand runs command with the server in its environment, passing
// SIGINT and SIGTERM on, and returns its exit status.
func runCommand(command []string, r ready) (int, error) {
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(),
		"KEYWARDEN_VAULT_ADDR="+r.Addr, "KEYWARDEN_VAULT_TOKEN="+r.Token, "KEYWARDEN_VAULT_CACERT="+r.CAFile)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", command[0], err)
	}
	go func() {
		for s := range sig {
			_ = cmd.Process.Signal(s)
		}
	}()
	err := cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	}
	return 0, err
}

// waitKVv2 writes and deletes a probe secret until the KV v2 mount has
// finished its upgrade and accepts writes.
func waitKVv2(ctx context.Context, c *api.Client, mount string) error {
	kv := c.KVv2(mount)
	var last error
	for {
		_, err := kv.Put(ctx, "vaultserver/ready", map[string]any{"ok": "1"})
		if err == nil {
			return kv.DeleteMetadata(ctx, "vaultserver/ready")
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("the KV v2 mount %s/ did not become writable: %w", mount, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitForStop returns when standard input reaches EOF (the parent closed the
// pipe or died) or a SIGINT or SIGTERM arrives.
func waitForStop() {
	stop := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop <- struct{}{}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-stop:
	case <-sig:
	}
}
