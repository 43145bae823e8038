// Package pushgw pushes a key's rotation state gauges to a Prometheus
// Pushgateway, for `keywarden rotate` run from a CronJob: a process that
// lives for one run and that Prometheus cannot scrape. The rotator daemon
// serves the same gauges on /metrics and does not need this package.
//
// Each rotated key is one group: job "keywarden-rotate", grouping label
// "rotation" (the key's name; "key" itself cannot be a grouping label, as
// every pushed series carries it) and the extra Labels (e.g. namespace).
// A complete state replaces the group (PUT), so series that no longer
// hold (a pool key gone, a revocation done) disappear; a partial one
// replaces only the metrics it has (POST), so what could not be read keeps
// its last pushed value. Only gauges are pushed: a counter or histogram of
// one run means nothing to a gateway that keeps the last push only.
package pushgw

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"

	"github.com/keywarden/keywarden/internal/netrule"
	"github.com/keywarden/keywarden/providers"
)

// Job is the job label of every group keywarden pushes.
const Job = "keywarden-rotate"

// GroupLabel is the grouping label that holds the key's name.
const GroupLabel = "rotation"

// DefaultTimeout bounds a push when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// reserved are the label names Labels cannot use: the job, the grouping
// label, the labels of the pushed metrics (client_golang refuses a
// grouping label that a pushed series carries), and the ones Prometheus
// reserves.
var reserved = []string{"job", GroupLabel, "key", "outcome", "fingerprint", "usable"}

// Options say where to push.
type Options struct {
	// URL is the Pushgateway's base URL, e.g.
	// http://pushgateway.monitoring:9091 ("" pushes nothing).
	URL string
	// Labels are added to each group's grouping key, e.g. namespace (with
	// honor_labels: true they win over the gateway's own target labels).
	Labels map[string]string
	// Timeout bounds each push (default DefaultTimeout).
	Timeout time.Duration
}

// Enabled reports whether there is a gateway to push to.
func (o Options) Enabled() bool { return o.URL != "" }

// Check validates the options: an http(s) URL without credentials or a
// path below the base, and label names that can be grouping labels.
func (o Options) Check() error {
	if o.URL == "" {
		if len(o.Labels) > 0 {
			return errors.New("pushgw: labels given without a Pushgateway URL")
		}
		return nil
	}
	// The URL is not echoed before it is known to hold no credentials.
	u, err := url.Parse(o.URL)
	if err != nil || !netrule.IsHTTP(u) {
		return errors.New("pushgw: the Pushgateway URL is not an http(s) URL (e.g. http://pushgateway.monitoring:9091)")
	}
	if u.User != nil {
		return errors.New("pushgw: the Pushgateway URL must not carry credentials")
	}
	if strings.Contains(u.Path, "/metrics") {
		return fmt.Errorf("pushgw: %q: give the Pushgateway's base URL, without /metrics/job/...", o.URL)
	}
	if o.Timeout < 0 {
		return fmt.Errorf("pushgw: timeout %v is negative", o.Timeout)
	}
	for _, n := range sortedNames(o.Labels) {
		if !model.LabelName(n).IsValidLegacy() || strings.HasPrefix(n, "__") {
			return fmt.Errorf("pushgw: label %q is not a valid label name", n)
		}
		if slices.Contains(reserved, n) {
			return fmt.Errorf("pushgw: label %q is taken (reserved: %s)", n, strings.Join(reserved, ", "))
		}
		if o.Labels[n] == "" {
			return fmt.Errorf("pushgw: label %q has an empty value", n)
		}
		// The value goes to the gateway (its URL, every pushed series):
		// one shaped like a key was pasted by mistake, and is not quoted.
		if providers.KeyShaped(o.Labels[n]) {
			return fmt.Errorf("pushgw: label %q: the value is %s; give the label's value (a namespace, a cluster), never a key", n, providers.KeyShapes)
		}
	}
	return nil
}

func sortedNames(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Push pushes the gauges of g whose key label is key to the key's group.
// complete says they are the key's whole state: the group is replaced
// (PUT); otherwise only the metrics pushed are (POST). Counters and
// histograms in g are left out. ctx is honoured, within Options.Timeout.
func Push(ctx context.Context, o Options, g prometheus.Gatherer, key string, complete bool) error {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p := push.New(o.URL, Job).Gatherer(keyGauges(g, key)).Grouping(GroupLabel, key)
	for _, n := range sortedNames(o.Labels) {
		p.Grouping(n, o.Labels[n])
	}
	var err error
	if complete {
		err = p.PushContext(ctx)
	} else {
		err = p.AddContext(ctx)
	}
	if err != nil {
		return fmt.Errorf("pushgw: push key %s to %s: %w", key, o.URL, err)
	}
	return nil
}

// keyGauges gathers the gauge series of g labelled key=key.
func keyGauges(g prometheus.Gatherer, key string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		if err != nil {
			return nil, err
		}
		var out []*dto.MetricFamily
		for _, mf := range mfs {
			if mf.GetType() != dto.MetricType_GAUGE {
				continue
			}
			var ms []*dto.Metric
			for _, m := range mf.GetMetric() {
				if hasLabel(m, "key", key) {
					ms = append(ms, m)
				}
			}
			if len(ms) > 0 {
				mf.Metric = ms
				out = append(out, mf)
			}
		}
		return out, nil
	})
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}
