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
// Usage:
//
//	go run .            # from internal/vaultserver
//	go build -o vaultserver . && ./vaultserver </dev/tty
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
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
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vaultserver:", err)
		os.Exit(1)
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "keywarden-vaultserver-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
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
			return fmt.Errorf("enable auth %s: %w", m, err)
		}
		auth = append(auth, m)
	}
	if err := waitKVv2(ctx, client, "secret"); err != nil {
		return err
	}

	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, cluster.CACertPEM, 0o600); err != nil {
		return fmt.Errorf("write CA file: %w", err)
	}
	line, err := json.Marshal(ready{Addr: client.Address(), CAFile: caFile, Token: cluster.RootToken, KVMount: "secret", Auth: auth})
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(os.Stdout, "%s\n", line); err != nil {
		return fmt.Errorf("write ready line: %w", err)
	}

	waitForStop()
	return nil
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
