package telemetry

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keywarden/keywarden/providers"
)

var (
	descInfo = prometheus.NewDesc(Namespace+"_key_info",
		"The CURRENT key of each configured key, by store version and fingerprint (never the value); always 1.",
		[]string{"key", "version", "fingerprint"}, nil)
	descAge = prometheus.NewDesc(Namespace+"_key_age_seconds",
		"Seconds since the store created the CURRENT key version (when the store records it).",
		[]string{"key"}, nil)
	descRefresh = prometheus.NewDesc(Namespace+"_key_refresh_total",
		"Store reads of the key, by result: success or failure.",
		[]string{"key", "result"}, nil)
	descLast = prometheus.NewDesc(Namespace+"_key_last_refresh_timestamp_seconds",
		"Unix time of the last successful store read.",
		[]string{"key"}, nil)
	descLastFail = prometheus.NewDesc(Namespace+"_key_last_refresh_failure_timestamp_seconds",
		"Unix time of the last failed store read (0: none).",
		[]string{"key"}, nil)
	descTokenExpiry = prometheus.NewDesc(Namespace+"_token_expiry_timestamp_seconds",
		"Unix time at which the short-lived token a keyless source (wif://) holds expires; absent for keys.",
		[]string{"key"}, nil)
	descNextRefresh = prometheus.NewDesc(Namespace+"_key_next_refresh_timestamp_seconds",
		"Unix time of the next scheduled background read (for a token: its next exchange); absent when none is scheduled.",
		[]string{"key"}, nil)
	descStale = prometheus.NewDesc(Namespace+"_key_stale",
		"1 when the last good read is older than max_stale, else 0.",
		[]string{"key"}, nil)
)

// keyCollector reads each watched Source at scrape time.
type keyCollector struct {
	mu   sync.Mutex
	srcs map[string]*providers.Source
}

func (k *keyCollector) add(name string, src *providers.Source) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.srcs == nil {
		k.srcs = map[string]*providers.Source{}
	}
	k.srcs[name] = src
}

// Describe sends the descriptors of the key metrics.
func (k *keyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descAge, descRefresh, descLast, descLastFail, descStale, descTokenExpiry, descNextRefresh} {
		ch <- d
	}
}

// Collect sends the current state of every watched Source.
func (k *keyCollector) Collect(ch chan<- prometheus.Metric) {
	type watched struct {
		name string
		src  *providers.Source
	}
	k.mu.Lock()
	list := make([]watched, 0, len(k.srcs))
	for n, s := range k.srcs {
		list = append(list, watched{n, s})
	}
	k.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].name < list[j].name })
	now := time.Now()
	for _, w := range list {
		name, src := w.name, w.src
		st := src.Stats()
		if cur := st.Current; cur != nil {
			ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, name, cur.VersionID, cur.Fingerprint)
			if !cur.Created.IsZero() {
				ch <- prometheus.MustNewConstMetric(descAge, prometheus.GaugeValue, now.Sub(cur.Created).Seconds(), name)
			}
			if !cur.Expires.IsZero() {
				ch <- prometheus.MustNewConstMetric(descTokenExpiry, prometheus.GaugeValue, unix(cur.Expires), name)
			}
		}
		if next := src.NextRefresh(); !next.IsZero() {
			ch <- prometheus.MustNewConstMetric(descNextRefresh, prometheus.GaugeValue, unix(next), name)
		}
		ch <- prometheus.MustNewConstMetric(descRefresh, prometheus.CounterValue, float64(st.Reads), name, "success")
		ch <- prometheus.MustNewConstMetric(descRefresh, prometheus.CounterValue, float64(st.Failures), name, "failure")
		ch <- prometheus.MustNewConstMetric(descLast, prometheus.GaugeValue, unix(st.LastSuccess), name)
		ch <- prometheus.MustNewConstMetric(descLastFail, prometheus.GaugeValue, unix(st.LastFailure), name)
		stale := 0.0
		if src.CheckHealth() != nil {
			stale = 1
		}
		ch <- prometheus.MustNewConstMetric(descStale, prometheus.GaugeValue, stale, name)
	}
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
