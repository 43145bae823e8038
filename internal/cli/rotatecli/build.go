package rotatecli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/anthropic"
	"github.com/keywarden/keywarden/rotation/exec"
	"github.com/keywarden/keywarden/rotation/httpprobe"
	"github.com/keywarden/keywarden/rotation/pool"
	"github.com/keywarden/keywarden/rotation/promgate"
	"github.com/keywarden/keywarden/rotation/random"
)

// BuildOptions tune Build.
type BuildOptions struct {
	// Keys limits the rotator to these keys (default: every key with a
	// rotation section).
	Keys []string
	// Logger, Metrics, Holder and Notifiers go to rotation.Options.
	Logger    *slog.Logger
	Metrics   *rotation.Metrics
	Holder    string
	Notifiers []rotation.Notifier
	// AfterStep is rotation.Options.AfterStep, for crash tests.
	AfterStep func(ctx context.Context, key string, b rotation.Boundary) error
}

// Rotator is a rotation.Rotator built from a config, with the stores it
// opened.
type Rotator struct {
	*rotation.Rotator
	// Pools holds the pool of each key whose issuer has one.
	Pools   map[string]*pool.Pool
	closers []func() error
}

// Close closes the stores.
func (r *Rotator) Close() error {
	var errs []error
	for _, c := range r.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// RotatedKeys returns the names of the keys of c that have a rotation
// section, sorted.
func RotatedKeys(c *config.Config) []string {
	var out []string
	for _, n := range c.Names() {
		if c.Keys[n].Rotation != nil {
			out = append(out, n)
		}
	}
	return out
}

// Build opens the stores of the rotated keys of c and returns a Rotator of
// them. Errors are *rotation.Error of KindConfig (bad settings) or KindStore
// (a store that cannot be opened).
func Build(ctx context.Context, c *config.Config, o BuildOptions) (*Rotator, error) {
	names := o.Keys
	if len(names) == 0 {
		names = RotatedKeys(c)
	}
	if len(names) == 0 {
		return nil, &rotation.Error{Kind: rotation.KindConfig, Err: errors.New("keys: no key has a rotation section; add keys.NAME.rotation with an issuer (see docs/rotation.md)")}
	}
	out := &Rotator{Pools: map[string]*pool.Pool{}}
	var keys []*rotation.Key
	for _, name := range names {
		k, err := c.Key(name)
		if err != nil {
			out.Close()
			return nil, &rotation.Error{Kind: rotation.KindConfig, Err: err}
		}
		if k.Rotation == nil {
			out.Close()
			rotated := strings.Join(RotatedKeys(c), ", ")
			if rotated == "" {
				rotated = "none"
			}
			return nil, &rotation.Error{Kind: rotation.KindConfig, Err: fmt.Errorf("keys.%s: no rotation section (rotated keys: %s); add keys.%s.rotation with an issuer (see docs/rotation.md)", name, rotated, name)}
		}
		rk, err := out.key(ctx, c, k, o.Logger)
		if err != nil {
			out.Close()
			return nil, err
		}
		keys = append(keys, rk)
	}
	r, err := rotation.New(rotation.Options{
		Logger:    o.Logger,
		Holder:    o.Holder,
		Lease:     c.Rotator.Lease.D, // rotation owns the default and the validation
		Notifiers: o.Notifiers,
		Metrics:   o.Metrics,
		AfterStep: o.AfterStep,
	}, keys...)
	if err != nil {
		out.Close()
		return nil, err
	}
	out.Rotator = r
	return out, nil
}

// CheckConfig builds the rotator of c's rotated keys as the rotation
// commands do, and closes it: for `keywarden check`, so that a file the
// rotation commands would refuse (an on_probe_failure, a revoke gate, a
// lease, an issuer's settings, whose rules rotation.New and the issuers
// own) fails check too. Only bad settings are its business: a store that
// cannot be opened is not reported here.
func CheckConfig(ctx context.Context, c *config.Config) error {
	if len(RotatedKeys(c)) == 0 {
		return nil
	}
	r, err := Build(ctx, c, BuildOptions{})
	if err != nil {
		if rotation.KindOf(err) == rotation.KindConfig {
			return err
		}
		return nil
	}
	r.Close() // closing what was opened for the check: not a config error
	return nil
}

// openErr classifies a store open error: a bad URL is a configuration
// error, anything else a store error.
func openErr(field string, err error) error {
	kind := rotation.KindStore
	if codes.Is(err, codes.InvalidArgument) || codes.Is(err, codes.Unimplemented) || errors.Is(err, providers.ErrKeyless) {
		// A keyless store (wif://) holds nothing to rotate: the
		// configuration asks for the impossible.
		kind = rotation.KindConfig
	}
	return &rotation.Error{Kind: kind, Err: fmt.Errorf("%s: %w", field, err)}
}

func (out *Rotator) stager(ctx context.Context, field, url string) (driver.Stager, string, error) {
	st, name, err := providers.OpenStager(ctx, url)
	if err != nil {
		return nil, "", openErr(field, err)
	}
	out.closers = append(out.closers, st.Close)
	return st, name, nil
}

func (out *Rotator) key(ctx context.Context, c *config.Config, k *config.Key, logger *slog.Logger) (*rotation.Key, error) {
	r := k.Rotation
	p := "keys." + k.Name + ".rotation"
	cfgErr := func(err error) error {
		return &rotation.Error{Kind: rotation.KindConfig, Err: fmt.Errorf("%s: %w", p, err)}
	}
	st, secret, err := out.stager(ctx, "keys."+k.Name+".store", k.Store)
	if err != nil {
		return nil, err
	}
	rk := &rotation.Key{
		Name:           k.Name,
		Store:          st,
		Secret:         secret,
		Field:          k.FieldName(),
		Grace:          r.GraceInterval(k),
		OnProbeFailure: rotation.OnProbeFailure(r.OnProbeFailure),
		StartJitter:    r.StartJitter.D,
		Retry:          r.Probe.Retry(),
		PoolLow:        r.Issuer.PoolLow,
		// rotation.New checks it.
		RotateBeforeExpiry: r.RotateBeforeExpiry.D,
	}
	if r.Schedule != "" {
		if rk.Schedule, err = rotation.ParseSchedule(r.Schedule); err != nil {
			return nil, cfgErr(err)
		}
	}
	switch r.Issuer.Type {
	case "anthropic":
		pst, pname, err := out.stager(ctx, p+".issuer.pool_store", r.Issuer.PoolStore)
		if err != nil {
			return nil, err
		}
		adm, aname, params, err := providers.OpenDriver(ctx, r.Issuer.AdminKeyStore)
		if err != nil {
			return nil, openErr(p+".issuer.admin_key_store", err)
		}
		out.closers = append(out.closers, adm.Close)
		pl := pool.New(pst, pname)
		out.Pools[k.Name] = pl
		rk.Issuer, err = anthropic.NewIssuer(anthropic.IssuerOptions{
			BaseURL:      r.APIBaseURL(),
			Version:      r.Probe.AnthropicVersion,
			AdminKey:     anthropic.KeyFromStore(adm, aname, params.Get("field")),
			Pool:         pl,
			RevokeStatus: r.Issuer.RevokeStatus,
			MinValidity:  max(r.RotateBeforeExpiry.D, 0),
			Logger:       logger,
		})
		if err != nil {
			return nil, cfgErr(err)
		}
	case "exec":
		env := make([]string, 0, len(r.Issuer.Env))
		for n, v := range r.Issuer.Env {
			env = append(env, n+"="+v)
		}
		sort.Strings(env)
		rk.Issuer, err = exec.New(exec.Options{KeyName: k.Name, Command: r.Issuer.Command, RevokeCommand: r.Issuer.RevokeCommand, Timeout: r.Issuer.Timeout.D, Env: env})
		if err != nil {
			return nil, cfgErr(err)
		}
	case "random":
		rk.Issuer, err = random.New(random.Options{Bytes: r.Issuer.Bytes, Encoding: r.Issuer.Encoding, Prefix: r.Issuer.Prefix})
		if err != nil {
			return nil, cfgErr(err)
		}
	default:
		return nil, cfgErr(fmt.Errorf("issuer type %q", r.Issuer.Type))
	}
	switch r.ProbeType() {
	case "anthropic":
		rk.Probe = anthropic.NewProbe(anthropic.ProbeOptions{BaseURL: r.APIBaseURL(), Version: r.Probe.AnthropicVersion, Model: r.Probe.Model})
	case "http":
		rk.Probe, err = httpprobe.New(httpprobe.Options{Method: r.Probe.Method, URL: r.Probe.URL, Headers: r.Probe.Headers, ExpectStatus: r.Probe.ExpectStatus})
		if err != nil {
			return nil, cfgErr(err)
		}
	}
	if g := r.RevokeGate; g != nil {
		if rk.RevokeGate, err = revokeGate(g); err != nil {
			return nil, &rotation.Error{Kind: rotation.KindConfig, Err: fmt.Errorf("%s.revoke_gate: %w", p, err)}
		}
	}
	wh := r.Webhook
	if wh == nil {
		wh = c.Rotator.Webhook
	}
	if wh != nil {
		rk.Notifiers = append(rk.Notifiers, &rotation.Webhook{URL: wh.URL, Timeout: wh.Timeout.D})
	}
	return rk, nil
}

// revokeGate builds a key's revoke gate from its settings; promgate and
// rotation.New check them.
func revokeGate(g *config.RotationRevokeGate) (*rotation.RevokeGate, error) {
	o := promgate.Options{URL: g.PrometheusURL, BearerTokenFile: g.BearerTokenFile, Selector: g.Selector, Timeout: g.Timeout.D}
	if g.BasicAuth != nil {
		o.Username, o.PasswordFile = g.BasicAuth.Username, g.BasicAuth.PasswordFile
	}
	c, err := promgate.New(o)
	if err != nil {
		return nil, err
	}
	return &rotation.RevokeGate{Consumers: c, Checks: g.Checks, Interval: g.Interval.D, MaxWait: g.MaxWait.D, Policy: rotation.GatePolicy(g.Policy)}, nil
}
