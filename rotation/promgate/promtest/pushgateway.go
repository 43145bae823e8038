package promtest

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Pushgateway is a running Prometheus Pushgateway that keeps what it is
// pushed in memory only (no persistence file).
type Pushgateway struct {
	// URL is its base URL, e.g. http://127.0.0.1:41234.
	URL string
}

// StartPushgateway starts a Pushgateway on a free loopback port: the
// binary is $PUSHGATEWAY, pushgateway or prometheus-pushgateway (Debian's
// name) on PATH, or what scripts/install-pushgateway.sh installs; missing,
// the test skips, or fails under CI=true. It stops when the test ends.
func StartPushgateway(t testing.TB) *Pushgateway {
	t.Helper()
	bin := Tool(t, "PUSHGATEWAY", "install-pushgateway.sh", "pushgateway", "prometheus-pushgateway")
	addr := freeAddr(t)
	startProcess(t, bin, t.TempDir(), "http://"+addr+"/-/ready", "--web.listen-address="+addr)
	return &Pushgateway{URL: "http://" + addr}
}

// Sample is one series the gateway serves and its value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Samples returns the gauge, counter and untyped series the gateway serves on
// /metrics (what was pushed, and its own push_time_seconds and
// push_failure_time_seconds per group), and the body as text.
func (p *Pushgateway) Samples(t testing.TB) ([]Sample, string) {
	t.Helper()
	resp, err := http.Get(p.URL + "/metrics")
	if err != nil {
		t.Fatalf("promtest: pushgateway /metrics: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("promtest: pushgateway /metrics: %v", err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("promtest: pushgateway /metrics: %v", err)
	}
	var out []Sample
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			s := Sample{Name: name, Labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.Labels[l.GetName()] = l.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				s.Value = m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				s.Value = m.GetUntyped().GetValue()
			case dto.MetricType_COUNTER:
				s.Value = m.GetCounter().GetValue()
			default:
				continue
			}
			out = append(out, s)
		}
	}
	return out, string(body)
}

// Find returns the samples named name whose labels include labels.
func Find(samples []Sample, name string, labels map[string]string) []Sample {
	var out []Sample
	for _, s := range samples {
		if s.Name != name {
			continue
		}
		match := true
		for k, v := range labels {
			if s.Labels[k] != v {
				match = false
				break
			}
		}
		if match {
			out = append(out, s)
		}
	}
	return out
}
