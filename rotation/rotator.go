package rotation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/driver"
)

// OnProbeFailure says what happens to a new key that fails its probe.
type OnProbeFailure string

// The probe failure policies.
const (
	// Park keeps the new key PENDING; the next run probes it again.
	Park OnProbeFailure = "park"
	// Discard drops the new key: it is revoked at the issuer and its PENDING
	// stage removed; the next run starts a new rotation.
	Discard OnProbeFailure = "discard"
)

// Key is one key the rotator rotates.
type Key struct {
	// Name is the key's name (in the config, logs, events, metrics).
	Name string
	// Store is the key's store; the rotation record lives there too.
	Store driver.Stager
	// Secret is the secret's name in Store.
	Secret string
	// Field is the JSON field of the payload holding the key
	// (providers.DefaultField when "").
	Field string
	// Issuer creates and revokes keys. Required.
	Issuer Issuer
	// Probe verifies a new key before promotion; nil skips the probe.
	Probe Probe
	// Retry bounds the probe's attempts.
	Retry Retry
	// Grace is how long the old key stays valid after the promotion: at
	// least the consumers' longest refresh gap (refresh + jitter).
	Grace time.Duration
	// OnProbeFailure is Park (default) or Discard.
	OnProbeFailure OnProbeFailure
	// Schedule says when the key is due; nil means every run rotates.
	Schedule Schedule
	// StartJitter delays each scheduled run by a random time up to it, so
	// that many rotators do not hit an issuer at once (daemon only).
	StartJitter time.Duration
	// Notifiers receive this key's events, besides Options.Notifiers.
	Notifiers []Notifier
	// PoolLow is the pool size at or below which a warning and an
	// EventPoolLow are emitted (default 1; issuers with a pool only).
	PoolLow int
	// RotateBeforeExpiry makes a rotation due, whatever the schedule says,
	// when CURRENT expires within it (issuers that are ExpiryReporters;
	// zero: only the schedule counts).
	RotateBeforeExpiry time.Duration
	// RevokeGate, when set, holds the revocation of the old key after the
	// grace until no consumer reports it any more (see RevokeGate).
	RevokeGate *RevokeGate
}

// Boundary names a point between two steps of a rotation, where a run can
// die and a later run must resume. See Options.AfterStep.
type Boundary string

// The boundaries, in the order a rotation passes them.
const (
	AfterLease          Boundary = "lease"           // record: creating, with a token
	AfterCreate         Boundary = "create"          // the issuer returned a new key
	AfterPutPending     Boundary = "put_pending"     // the new key is PENDING
	AfterRecordProbing  Boundary = "record_probing"  // record: probing
	AfterCommit         Boundary = "commit"          // the issuer forgot the key (pool)
	AfterActivate       Boundary = "activate"        // the issuer activated the key
	AfterProbe          Boundary = "probe"           // the probe passed
	AfterRecordPromote  Boundary = "record_promote"  // record: promoting
	AfterPromote        Boundary = "promote"         // PENDING is CURRENT, old is PREVIOUS
	AfterRecordGrace    Boundary = "record_grace"    // record: grace
	AfterRecordRevoking Boundary = "record_revoking" // record: revoking
	AfterRevoke         Boundary = "revoke"          // the issuer revoked the old key
	AfterDone           Boundary = "done"            // record: idle, revoked
	// AfterGateCheck: a revoke gate check was recorded (keys with a
	// RevokeGate only; not in Boundaries).
	AfterGateCheck Boundary = "gate_check"
	// Failure paths.
	AfterRecordParked     Boundary = "record_parked"     // record: parked
	AfterRecordDiscarding Boundary = "record_discarding" // record: discarding
	AfterRevokeNew        Boundary = "revoke_new"        // the issuer revoked the failed new key
	AfterDiscard          Boundary = "discard"           // PENDING removed
	// AfterRevokeLeftValid: `rotate --revoke-left-valid` revoked a key a
	// rotation had left valid (its entry is dropped at AfterDone).
	AfterRevokeLeftValid Boundary = "revoke_left_valid"
)

// Boundaries lists the boundaries of a successful rotation, in order.
var Boundaries = []Boundary{
	AfterLease, AfterCreate, AfterPutPending, AfterRecordProbing, AfterCommit,
	AfterActivate, AfterProbe, AfterRecordPromote, AfterPromote, AfterRecordGrace,
	AfterRecordRevoking, AfterRevoke, AfterDone,
}

// DiscardBoundaries lists the boundaries of a rotation whose probe failed
// under the Discard policy, in order.
var DiscardBoundaries = []Boundary{
	AfterLease, AfterCreate, AfterPutPending, AfterRecordProbing, AfterCommit,
	AfterActivate, AfterRecordDiscarding, AfterRevokeNew, AfterDiscard, AfterDone,
}

// Options configure a Rotator.
type Options struct {
	// Logger receives structured logs (slog.Default()); never key values.
	Logger *slog.Logger
	// Holder identifies this rotator in leases (default host-pid-random). A
	// rotator restarted with the same Holder resumes its own rotation at
	// once instead of waiting for its lease to expire.
	Holder string
	// Lease is how long a rotator's hold on a key lasts without renewal
	// (default DefaultLease, at least MinLease). A run renews its lease in
	// the background every Lease/3 while it works (a long probe included),
	// so a live holder never loses it and a dead one (kill -9, a lost node)
	// is taken over within Lease. `rotate --break-lease` frees it at once.
	Lease time.Duration
	// Notifiers receive every key's events (a webhook, a test's recorder).
	Notifiers []Notifier
	// Metrics records runs; nil records nothing.
	Metrics *Metrics
	// Now is the clock (time.Now).
	Now func() time.Time
	// AfterStep, when set, is called at every boundary a run passes. When it
	// returns an error the run stops there at once, with that error, as if
	// the process had been killed: nothing more is written. For tests of
	// crash safety.
	AfterStep func(ctx context.Context, key string, b Boundary) error
}

// Bounds of Options.Lease.
const (
	// DefaultLease is the default Options.Lease: a dead holder's rotation
	// is taken over within it.
	DefaultLease = 45 * time.Second
	// MinLease is the shortest Options.Lease: a renewal (one record write)
	// must fit in a third of it with room to spare.
	MinLease = 10 * time.Second
)

// Rotator rotates keys. It is safe for concurrent use; runs of the same key
// are serialised through the lease in the key's rotation record, across
// processes.
type Rotator struct {
	opts Options
	keys map[string]*Key
	log  *slog.Logger
	// renewEvery is how often a run renews its lease (Lease/3).
	renewEvery time.Duration
}

// New returns a Rotator of keys.
func New(opts Options, keys ...*Key) (*Rotator, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Holder == "" {
		opts.Holder = defaultHolder()
	}
	switch {
	case opts.Lease == 0:
		opts.Lease = DefaultLease
	case opts.Lease < MinLease:
		return nil, failf(KindConfig, "rotation: lease %v is shorter than %v; a renewal must fit in a third of it", opts.Lease, MinLease)
	}
	r := &Rotator{opts: opts, keys: map[string]*Key{}, log: opts.Logger, renewEvery: opts.Lease / 3}
	for _, k := range keys {
		switch {
		case k == nil || k.Name == "":
			return nil, failf(KindConfig, "rotation: a key has no name")
		case r.keys[k.Name] != nil:
			return nil, failf(KindConfig, "rotation: key %q given twice", k.Name)
		case k.Store == nil:
			return nil, failf(KindConfig, "rotation: key %s has no store", k.Name)
		case k.Issuer == nil:
			return nil, failf(KindConfig, "rotation: key %s has no issuer", k.Name)
		case k.RotateBeforeExpiry < 0:
			return nil, failf(KindConfig, "rotation: key %s: rotate_before_expiry %v is negative", k.Name, k.RotateBeforeExpiry)
		case k.Grace < 0:
			return nil, failf(KindConfig, "rotation: key %s: grace %v is negative", k.Name, k.Grace)
		case k.OnProbeFailure != "" && k.OnProbeFailure != Park && k.OnProbeFailure != Discard:
			return nil, failf(KindConfig, "rotation: key %s: on_probe_failure %q: want park or discard", k.Name, k.OnProbeFailure)
		}
		if k.Schedule != nil {
			if err := checkFires(k.Schedule, opts.Now()); err != nil {
				return nil, fail(KindConfig, fmt.Errorf("rotation: key %s: schedule: %w", k.Name, err))
			}
		}
		if k.RevokeGate != nil {
			if err := k.RevokeGate.validate("key " + k.Name); err != nil {
				return nil, err
			}
		}
		r.keys[k.Name] = k
	}
	return r, nil
}

// Keys returns the names of the keys, sorted.
func (r *Rotator) Keys() []string {
	names := make([]string, 0, len(r.keys))
	for n := range r.keys {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Key returns the named key, or nil.
func (r *Rotator) Key(name string) *Key { return r.keys[name] }

// Holder returns the rotator's lease identity.
func (r *Rotator) Holder() string { return r.opts.Holder }

func (r *Rotator) key(name string) (*Key, error) {
	k := r.keys[name]
	if k == nil {
		return nil, failf(KindConfig, "rotation: key %q is not configured for rotation (rotated keys: %s); give it a rotation: section", name, strings.Join(r.Keys(), ", "))
	}
	return k, nil
}

// RunOptions modify one run.
type RunOptions struct {
	// DryRun reports what the run would do and touches nothing.
	DryRun bool
	// Wait waits out a grace period and revokes, instead of returning when
	// the revocation is not due yet.
	Wait bool
	// Force starts a rotation even when the schedule says it is not due.
	Force bool
	// Abandon drops a parked rotation, or a PENDING version that no recorded
	// rotation wrote: the new key is revoked at the issuer (when known) and
	// PENDING discarded. CURRENT is untouched.
	Abandon bool
	// BreakLease frees the key's lease first, whoever holds it, logging the
	// holder and its expiry and emitting EventLeaseBroken; the run then
	// goes on as it would (resume, --abandon, --force). A live holder
	// notices at its next renewal or write and stops with a conflict. For
	// a holder known dead that must not be waited for.
	BreakLease bool
	// RevokeLeftValid revokes, under the lease, the keys that rotations
	// left valid (listed in the record, see LeftValidKey) and drops them
	// from the list: each one that has an issuer id or whose value
	// PREVIOUS still holds, is neither CURRENT's nor PENDING's key, and no
	// consumer holds (with a RevokeGate). Others stay listed, and the run
	// says why. Nothing else is done: no rotation starts.
	RevokeLeftValid bool
	// ForgetLeftValid drops from the list the key left valid with this
	// fingerprint or issuer id, revoking nothing: for a key an operator
	// revoked by hand. Nothing else is done. See Rotator.ForgetLeftValid.
	ForgetLeftValid string
}

// Result is what a run did.
type Result struct {
	Key     string `json:"key"`
	Outcome string `json:"outcome"` // see Outcome*; a failed run has its Kind's name
	Phase   Phase  `json:"phase"`   // the phase the run left the record in
	Message string `json:"message"` // one line for people
	// Plan lists, for a dry run, what a real run would do.
	Plan []string `json:"plan,omitempty"`

	NewVersion     string `json:"new_version,omitempty"`
	NewFingerprint string `json:"new_fingerprint,omitempty"`
	NewKeyID       string `json:"new_key_id,omitempty"`
	OldVersion     string `json:"old_version,omitempty"`
	OldFingerprint string `json:"old_fingerprint,omitempty"`
	OldKeyID       string `json:"old_key_id,omitempty"`

	// RevokeDue is when the old key is due for revocation, while in grace.
	RevokeDue time.Time `json:"revoke_due,omitzero"`
	// NextDue is when the next rotation is due, when nothing was.
	NextDue time.Time `json:"next_due,omitzero"`
	// ProbeAttempts counts the probe's attempts in this run.
	ProbeAttempts int `json:"probe_attempts,omitempty"`
	// Active is how long the run worked, grace waits excluded.
	Active time.Duration `json:"active_ns"`
	// Steps lists the boundaries the run passed, in order.
	Steps []Boundary `json:"steps,omitempty"`
	// GateHolders lists the consumers that still held the old key when the
	// revoke gate stopped the run.
	GateHolders []Holder `json:"gate_holders,omitempty"`
	// Gate is "forced" when the old key was revoked after the gate's
	// max_wait although consumers still reported it (policy revoke).
	Gate string `json:"gate,omitempty"`
	// LeftValid is how many keys the record lists as left valid at the
	// issuer after the run (see `rotate --revoke-left-valid`), so that a
	// CronJob's output and log say it on every run, not only the daemon's
	// gauge.
	LeftValid int `json:"left_valid,omitempty"`
}

// Run runs one rotation step sequence for the named key: it resumes a
// rotation under way (or parked), finishes a revocation whose grace is
// over, or starts a new rotation when one is due (or o.Force). It returns
// what it did; a failed run returns an *Error whose Kind gives the exit
// code, together with a Result describing the state.
//
// The Result's text (Message, Plan) is redacted (providers.RedactKeys):
// it quotes errors of issuers, probes, stores and gates, and what an
// operator typed, and it is printed as it is (`rotate --json`), unlike an
// error, which the CLI redacts.
func (r *Rotator) Run(ctx context.Context, name string, o RunOptions) (*Result, error) {
	res, err := r.runKey(ctx, name, o)
	res.Message = providers.RedactKeys(res.Message)
	for i, p := range res.Plan {
		res.Plan[i] = providers.RedactKeys(p)
	}
	return res, err
}

func (r *Rotator) runKey(ctx context.Context, name string, o RunOptions) (*Result, error) {
	k, err := r.key(name)
	if err != nil {
		return &Result{Key: name, Outcome: KindConfig.String(), Message: err.Error()}, err
	}
	if o.ForgetLeftValid != "" || o.RevokeLeftValid {
		if (o.ForgetLeftValid != "" && (o.RevokeLeftValid || o.DryRun)) || o.Abandon || o.Force || o.Wait {
			err := fail(KindConfig, fmt.Errorf("rotation: %s: %w", name, errLeftValidMode))
			return &Result{Key: name, Outcome: KindConfig.String(), Message: err.Error()}, err
		}
		if o.ForgetLeftValid != "" {
			// Recorded as a run like any other (last_run's series, which a
			// push of the key's state would otherwise drop).
			begun := r.opts.Now()
			res, err := r.ForgetLeftValid(ctx, name, o.ForgetLeftValid)
			if err != nil && res.Outcome == "" {
				// The outcome only: the error may quote what the operator
				// typed (a key pasted by mistake), and the CLI prints it
				// redacted; a Message would print it as it is.
				res.Outcome = KindOf(err).String()
			}
			end := r.opts.Now()
			res.Active = end.Sub(begun)
			r.opts.Metrics.run(name, res.Outcome, end, res.Active)
			return res, err
		}
	}
	ru := &run{r: r, k: k, o: o, begun: r.opts.Now(), res: &Result{Key: name}}
	var res *Result
	if o.DryRun {
		res, err = ru.do(ctx)
	} else {
		res, err = ru.doRenewing(ctx)
	}
	res.Active = r.opts.Now().Sub(ru.begun) - ru.waited
	if err != nil {
		res.Outcome = KindOf(err).String()
		res.Message = err.Error()
		level := slog.LevelError
		if errors.Is(err, ErrInProgress) {
			// Another rotator is at work: not a failure to alert on.
			level = slog.LevelInfo
		} else if !ru.crashed {
			ru.release(ctx, err)
			ru.emit(ctx, Event{Type: EventFailed, Outcome: res.Outcome, Reason: err.Error(), ExitCode: ExitCode(err)})
		}
		r.log.LogAttrs(ctx, level, "rotation run failed", slog.String("key", name), slog.String("outcome", res.Outcome),
			slog.String("phase", string(res.Phase)), slog.String("error", err.Error()))
	} else if !o.DryRun {
		r.log.LogAttrs(ctx, slog.LevelInfo, "rotation run", slog.String("key", name), slog.String("outcome", res.Outcome),
			slog.String("phase", string(res.Phase)), slog.String("message", res.Message), slog.Duration("active", res.Active))
	}
	if s := ru.state(); s != nil && len(s.LeftValid) > 0 {
		res.LeftValid = len(s.LeftValid)
		if !o.DryRun {
			var names []string
			for _, e := range s.LeftValid {
				names = append(names, e.describe())
			}
			r.log.LogAttrs(ctx, slog.LevelWarn, "keys that rotations left valid are still valid at the issuer", slog.String("key", name),
				slog.Int("left_valid", len(s.LeftValid)), slog.String("keys", strings.Join(names, "; ")),
				slog.String("fix", "keywarden rotate --key "+name+" --revoke-left-valid"))
		}
	}
	if !o.DryRun && !ru.crashed {
		r.opts.Metrics.run(name, res.Outcome, r.opts.Now(), res.Active)
	}
	return res, err
}

// doRenewing runs ru.do while a background loop renews the lease the run
// holds. When the lease is lost meanwhile, the run's context is cancelled
// and its error is a conflict.
func (ru *run) doRenewing(ctx context.Context) (*Result, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ru.mu.Lock()
	ru.cancel = cancel
	ru.mu.Unlock()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		ru.renewLoop(rctx, stop)
	}()
	res, err := ru.do(rctx)
	close(stop)
	<-done
	ru.mu.Lock()
	lost := ru.leaseLost
	ru.mu.Unlock()
	if lost && err != nil && ctx.Err() == nil {
		err = ru.errLeaseLost()
	}
	return res, err
}

func defaultHolder() string {
	h, _ := os.Hostname()
	if h == "" {
		h = "rotator"
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", h, os.Getpid(), hex.EncodeToString(b))
}

// newToken returns a random UUID (version 4) as a rotation token.
func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// fingerprintOf returns the fingerprint of a stored payload.
func fingerprintOf(v *driver.Version, field string) (providers.Payload, string) {
	p, err := providers.DecodePayload(v.Value, field)
	if err != nil {
		return providers.Payload{}, providers.Fingerprint(string(v.Value))
	}
	return p, p.Key.Fingerprint()
}
