package rotation

import (
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the rotator's Prometheus metrics. Create them with NewMetrics
// and pass them in Options; a nil *Metrics records nothing. No metric
// carries a key value.
type Metrics struct {
	runs      *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	lastOK    *prometheus.GaugeVec
	revokeDue *prometheus.GaugeVec
	pool      *prometheus.GaugeVec
	probes    *prometheus.CounterVec
	holders   *prometheus.GaugeVec
	timeouts  *prometheus.CounterVec
	expires   *prometheus.GaugeVec
	poolExp   *prometheus.GaugeVec
	left      *prometheus.GaugeVec
	lastRun   *prometheus.GaugeVec

	mu         sync.Mutex
	poolSeries map[string][][]string // label values of poolExp's series, by key
}

// NewMetrics creates the rotator's metrics and registers them with reg
// (nothing is registered when reg is nil):
//
//   - keywarden_rotation_runs_total{key,outcome}: runs by outcome (rotated,
//     revoked, grace, gate (the revoke gate waits for holders), nothing_due,
//     or a failure kind: probe_failed (the new key parked or discarded),
//     conflict, store_error, issuer_error, pool_empty, gate_held,
//     config_error, failed).
//   - keywarden_rotation_duration_seconds{key}: time a run worked, grace
//     waits excluded.
//   - keywarden_rotation_last_success_timestamp_seconds{key}: when a new key
//     was last promoted (also read from the rotation record by Status).
//   - keywarden_rotation_last_run_timestamp_seconds{key,outcome}: when a
//     run last ended with this outcome (the outcomes of runs_total); the
//     gauge that stands in for runs_total where counters mean nothing, as
//     in the one-run-per-process pushes of `keywarden rotate
//     --push-gateway`, whose group holds the last run's outcome only.
//   - keywarden_rotation_revoke_due_timestamp_seconds{key}: when the old key
//     of the rotation in grace is due for revocation (0 when none; Status
//     sets it too).
//   - keywarden_rotation_probe_attempts_total{key,result}: probe attempts.
//   - keywarden_pool_keys{key}: keys left in the issuer's pool that a draw
//     can use: for an issuer that is a PoolInspector (anthropic), archived,
//     expired and soon-expiring keys (within rotate_before_expiry) and keys
//     its API does not know are counted out; otherwise every waiting key.
//   - keywarden_pool_key_expiry_timestamp_seconds{key,fingerprint,usable}:
//     when each key waiting in the pool expires at its issuer (0: never;
//     usable "false": a draw would skip it), read with the pool count; one
//     series per pool key (a handful), labelled by fingerprint as
//     keywarden_key_info is; the series of a key that left the pool is
//     deleted.
//   - keywarden_rotation_gate_holders{key}: consumers that reported the
//     old key at the revoke gate's last check (or when Status asked).
//   - keywarden_rotation_gate_timeouts_total{key,policy}: revoke gates
//     whose max_wait ended with the old key still held (policy hold: the
//     key stays valid; revoke: it was revoked anyway).
//   - keywarden_key_expiry_timestamp_seconds{key}: when the CURRENT key
//     expires at its issuer (0: never), read when a run checks whether a
//     rotation is due.
//   - keywarden_rotation_keys_left_valid{key}: keys that rotations ended
//     leaving valid at the issuer (rolled_back, not_revoked, abandoned),
//     as listed in the rotation record: set on every read and write of the
//     record (a restarted daemon exports it at its first look at the key),
//     above 0 until `rotate --revoke-left-valid` or `--forget-left-valid`
//     clears the list.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keywarden", Subsystem: "rotation", Name: "runs_total",
			Help: "Rotation runs by key and outcome.",
		}, []string{"key", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "keywarden", Subsystem: "rotation", Name: "duration_seconds",
			Help:    "Time a rotation run worked, grace waits excluded.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"key"}),
		lastOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "keywarden", Subsystem: "rotation", Name: "last_success_timestamp_seconds",
			Help: "Unix time of the last promotion of a new key.",
		}, []string{"key"}),
		revokeDue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "keywarden", Subsystem: "rotation", Name: "revoke_due_timestamp_seconds",
			Help: "Unix time the old key of a rotation in grace is due for revocation; 0 when none.",
		}, []string{"key"}),
		pool: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "keywarden", Name: "pool_keys",
			Help: "Keys left in the issuer's pool that a draw can use (archived, expired and soon-expiring keys counted out when the issuer can tell).",
		}, []string{"key"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keywarden", Subsystem: "rotation", Name: "probe_attempts_total",
			Help: "Probe attempts of new keys, by result (pass or fail).",
		}, []string{"key", "result"}),
		holders: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "keywarden", Subsystem: "rotation", Name: "gate_holders",
			Help: "Consumers that reported the old key at the revoke gate's last check.",
		}, []string{"key"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keywarden", Subsystem: "rotation", Name: "gate_timeouts_total",
			Help: "Revoke gates whose max_wait ended with the old key still held, by policy (hold or revoke).",
		}, []string{"key", "policy"}),
		expires: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "keywarden", Subsystem: "key", Name: "expiry_timestamp_seconds",
			Help: "Unix time the CURRENT key expires at its issuer; 0 when it never does.",
		}, []string{"key"}),
		poolExp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "keywarden", Subsystem: "pool_key", Name: "expiry_timestamp_seconds",
			Help: "Unix time a key waiting in the pool expires at its issuer; 0 when it never does. usable=false: a draw would skip it.",
		}, []string{"key", "fingerprint", "usable"}),
		left: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "keywarden", Subsystem: "rotation", Name: "keys_left_valid",
			Help: "Keys that rotations ended leaving valid at the issuer, as listed in the rotation record; cleared by rotate --revoke-left-valid or --forget-left-valid.",
		}, []string{"key"}),
		lastRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "keywarden", Subsystem: "rotation", Name: "last_run_timestamp_seconds",
			Help: "Unix time a rotation run last ended with this outcome.",
		}, []string{"key", "outcome"}),
		poolSeries: map[string][][]string{},
	}
	if reg != nil {
		reg.MustRegister(m.runs, m.duration, m.lastOK, m.revokeDue, m.pool, m.probes, m.holders, m.timeouts, m.expires, m.poolExp, m.left, m.lastRun)
	}
	return m
}

// unixSeconds is t as a gauge value: Unix seconds, 0 for the zero time.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func (m *Metrics) run(key, outcome string, end time.Time, d time.Duration) {
	if m == nil {
		return
	}
	m.runs.WithLabelValues(key, outcome).Inc()
	m.duration.WithLabelValues(key).Observe(d.Seconds())
	m.lastRun.WithLabelValues(key, outcome).Set(unixSeconds(end))
}

func (m *Metrics) rotated(key string, at time.Time, revokeDue time.Time) {
	m.lastSuccess(key, at)
	m.due(key, revokeDue)
}

// lastSuccess exports when a new key was last promoted; a zero at (never)
// exports nothing.
func (m *Metrics) lastSuccess(key string, at time.Time) {
	if m == nil || at.IsZero() {
		return
	}
	m.lastOK.WithLabelValues(key).Set(unixSeconds(at))
}

func (m *Metrics) due(key string, t time.Time) {
	if m == nil {
		return
	}
	m.revokeDue.WithLabelValues(key).Set(unixSeconds(t))
}

func (m *Metrics) poolKeys(key string, n int) {
	if m == nil {
		return
	}
	m.pool.WithLabelValues(key).Set(float64(n))
}

func (m *Metrics) probe(key string, attempts int, ok bool) {
	if m == nil || attempts == 0 {
		return
	}
	if ok {
		m.probes.WithLabelValues(key, "pass").Inc()
		attempts--
	}
	if attempts > 0 {
		m.probes.WithLabelValues(key, "fail").Add(float64(attempts))
	}
}

func (m *Metrics) gateHolders(key string, n int) {
	if m == nil {
		return
	}
	m.holders.WithLabelValues(key).Set(float64(n))
}

func (m *Metrics) gateTimeout(key string, p GatePolicy) {
	if m == nil {
		return
	}
	m.timeouts.WithLabelValues(key, string(p)).Inc()
}

func (m *Metrics) leftValid(key string, n int) {
	if m == nil {
		return
	}
	m.left.WithLabelValues(key).Set(float64(n))
}

func (m *Metrics) expiry(key string, t time.Time) {
	if m == nil {
		return
	}
	m.expires.WithLabelValues(key).Set(unixSeconds(t))
}

// poolKeyExpiry exports the expiry of each pool key whose expiry is known
// and deletes the series of keys no longer listed.
func (m *Metrics) poolKeyExpiry(key string, keys []PoolKey) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var now [][]string
	for _, k := range keys {
		if !k.ExpiryKnown {
			continue
		}
		lv := []string{key, k.Fingerprint, strconv.FormatBool(k.Unusable == "")}
		m.poolExp.WithLabelValues(lv...).Set(unixSeconds(k.ExpiresAt))
		now = append(now, lv)
	}
	for _, old := range m.poolSeries[key] {
		if !slices.ContainsFunc(now, func(lv []string) bool { return slices.Equal(lv, old) }) {
			m.poolExp.DeleteLabelValues(old...)
		}
	}
	m.poolSeries[key] = now
}
