package telemetry_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keywarden/keywarden/internal/telemetry"
	"github.com/keywarden/keywarden/rotation"
	"github.com/keywarden/keywarden/rotation/promgate/promtest"
)

// dashboardFile is the Grafana dashboard shipped in deploy/monitoring.
var dashboardFile = filepath.Join("..", "..", "deploy", "monitoring", "keywarden-dashboard.json")

// dashDatasource is the only data source a panel or query may name: the
// dashboard's datasource variable, so that it works in any Grafana.
const dashDatasource = "${datasource}"

// dashRequired are the metrics the dashboard must show (the picture issue
// 12 asks for): spend and tokens, error types, latency, rate-limit headroom,
// budgets, key versions and rotations.
var dashRequired = []string{
	"keywarden_sidecar_cost_usd_total",
	"keywarden_sidecar_tokens_total",
	"keywarden_sidecar_client_requests_total",
	"keywarden_sidecar_upstream_duration_seconds_bucket",
	"keywarden_upstream_ratelimit_remaining",
	"keywarden_upstream_ratelimit_limit",
	"keywarden_sidecar_budget_used_ratio",
	"keywarden_key_info",
	"keywarden_rotation_runs_total",
}

// dashboard is the part of a Grafana dashboard model the tests read.
type dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []dashVariable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string          `json:"name"`
			Expr       string          `json:"expr"`
			Datasource *dashDataSource `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
}

type dashDataSource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashPanel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource *dashDataSource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Datasource *dashDataSource `json:"datasource"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // of a collapsed row
}

type dashVariable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Datasource *dashDataSource `json:"datasource"`
	AllValue   string          `json:"allValue"`
}

// dashQuery is one PromQL query of the dashboard, Grafana variables
// substituted.
type dashQuery struct {
	where string // e.g. `panel "Spend by client" target A`
	expr  string
}

// dashGrafanaVars are values for Grafana's built-in variables, as Grafana
// would substitute them.
var dashGrafanaVars = map[string]string{
	"__rate_interval": "1m", "__interval": "30s", "__interval_ms": "30000",
	"__range": "6h", "__range_s": "21600", "__range_ms": "21600000",
}

// dashVarRE matches $name, ${name}, ${name:format} and [[name]].
var dashVarRE = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]`)

// readDashboard reads and decodes the dashboard file.
func readDashboard(t *testing.T) ([]byte, *dashboard) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := decodeDashboard(b)
	if err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return b, d
}

func decodeDashboard(b []byte) (*dashboard, error) {
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		return nil, err
	}
	return &d, nil
}

// dashQueries checks the dashboard's structure and returns its PromQL
// queries (panel targets, variable queries, annotations) with variables
// substituted, or the problems found.
func dashQueries(raw []byte, d *dashboard) ([]dashQuery, []string) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if bytes.Contains(raw, []byte("sk-ant-")) {
		bad("the dashboard holds an sk-ant- string (a key value)")
	}
	if d.UID == "" || d.Title == "" {
		bad("no uid or title")
	}
	if d.SchemaVersion < 36 {
		bad("schemaVersion %d, want 36 or later", d.SchemaVersion)
	}
	// Variables: a Prometheus datasource variable, and query variables
	// on it; each query variable substitutes as its "All" value.
	vars := map[string]string{}
	for k, v := range dashGrafanaVars {
		vars[k] = v
	}
	hasDS := false
	var varQueries []dashQuery
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			var q string
			if err := json.Unmarshal(v.Query, &q); err != nil || q != "prometheus" {
				bad("variable %s: datasource query %s, want \"prometheus\"", v.Name, v.Query)
			}
			hasDS = hasDS || v.Name == strings.Trim(dashDatasource, "${}")
		case "query":
			vars[v.Name] = v.AllValue
			if v.AllValue == "" {
				vars[v.Name] = "x"
			}
			if v.Datasource == nil || v.Datasource.UID != dashDatasource {
				bad("variable %s: datasource %+v, want uid %s", v.Name, v.Datasource, dashDatasource)
			}
			q, err := variableQuery(v.Query)
			if err != nil {
				bad("variable %s: %v", v.Name, err)
				continue
			}
			if v.Definition != "" && v.Definition != q {
				bad("variable %s: definition %q differs from its query %q", v.Name, v.Definition, q)
			}
			expr, err := labelValuesSelector(q)
			if err != nil {
				bad("variable %s: %v", v.Name, err)
				continue
			}
			if expr != "" {
				varQueries = append(varQueries, dashQuery{where: "variable " + v.Name, expr: expr})
			}
		default:
			bad("variable %s: type %s not checked by this test", v.Name, v.Type)
		}
	}
	if !hasDS {
		bad("no datasource variable %q", strings.Trim(dashDatasource, "${}"))
	}
	var queries []dashQuery
	add := func(where, expr string) {
		if strings.TrimSpace(expr) == "" {
			bad("%s: no expr", where)
			return
		}
		s, err := substitute(expr, vars)
		if err != nil {
			bad("%s: %v", where, err)
			return
		}
		queries = append(queries, dashQuery{where: where, expr: s})
	}
	for _, q := range varQueries {
		add(q.where, q.expr)
	}
	for _, a := range d.Annotations.List {
		if a.Expr == "" {
			continue // Grafana's built-in annotations
		}
		if a.Datasource == nil || a.Datasource.UID != dashDatasource {
			bad("annotation %q: datasource %+v, want uid %s", a.Name, a.Datasource, dashDatasource)
		}
		add(fmt.Sprintf("annotation %q", a.Name), a.Expr)
	}
	ids := map[int]bool{}
	var walk func(ps []dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				bad("panel %q: id %d used twice", p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
				bad("panel %q: gridPos %+v outside the 24 columns", p.Title, p.GridPos)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != dashDatasource {
				bad("panel %q: datasource %+v, want uid %s", p.Title, p.Datasource, dashDatasource)
			}
			if len(p.Targets) == 0 {
				bad("panel %q: no targets", p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Datasource != nil && tg.Datasource.UID != dashDatasource {
					bad("panel %q target %s: datasource %+v, want uid %s", p.Title, tg.RefID, tg.Datasource, dashDatasource)
				}
				add(fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.Expr)
			}
		}
	}
	walk(d.Panels)
	return queries, problems
}

// variableQuery returns a query variable's query: a string, or the
// "query" field of the Prometheus variable editor's object.
func variableQuery(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var o struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(raw, &o); err != nil || o.Query == "" {
		return "", fmt.Errorf("query %s is neither a string nor an object with a query", raw)
	}
	return o.Query, nil
}

// labelValuesSelector returns the PromQL a Grafana Prometheus variable
// query runs: the selector of label_values(selector, label) (none for
// label_values(label)) or the query of query_result(query).
func labelValuesSelector(q string) (string, error) {
	q = strings.TrimSpace(q)
	if inner, ok := strings.CutPrefix(q, "query_result("); ok && strings.HasSuffix(inner, ")") {
		return strings.TrimSuffix(inner, ")"), nil
	}
	inner, ok := strings.CutPrefix(q, "label_values(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return "", fmt.Errorf("query %q: want label_values(...) or query_result(...)", q)
	}
	inner = strings.TrimSuffix(inner, ")")
	i := strings.LastIndex(inner, ",")
	if i < 0 {
		return "", nil // label_values(label): every series
	}
	label := strings.TrimSpace(inner[i+1:])
	if !regexp.MustCompile(`^[a-zA-Z_]\w*$`).MatchString(label) {
		return "", fmt.Errorf("query %q: %q is not a label name", q, label)
	}
	return strings.TrimSpace(inner[:i]), nil
}

// substitute replaces Grafana variables in expr with vars; an unknown
// variable is an error.
func substitute(expr string, vars map[string]string) (string, error) {
	var unknown []string
	out := dashVarRE.ReplaceAllStringFunc(expr, func(m string) string {
		sm := dashVarRE.FindStringSubmatch(m)
		name := sm[1] + sm[2] + sm[3]
		v, ok := vars[name]
		if !ok {
			unknown = append(unknown, m)
			return m
		}
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown variables %v in %q", unknown, expr)
	}
	return out, nil
}

// promqlKeywords are PromQL words that are not metric names when not
// followed by "(": operators, modifiers and aggregations (which may be
// followed by "by"/"without" first).
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true,
	"sum": true, "avg": true, "count": true, "min": true, "max": true, "group": true, "stddev": true,
	"stdvar": true, "topk": true, "bottomk": true, "quantile": true, "count_values": true,
	"limitk": true, "limit_ratio": true,
}

// promqlLabelLists are the words followed by a parenthesised list of
// label names.
var promqlLabelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// metricNames returns the metric names a PromQL expression selects, in
// order of appearance. It skips strings, label matchers ({...}), ranges
// and subqueries ([...]), numbers and durations, function and aggregation
// names, keywords, and the label lists of by/without/on/ignoring/group_*.
// A selector by __name__ is an error: it hides the name from this check.
func metricNames(expr string) ([]string, error) {
	var names []string
	i, n := 0, len(expr)
	skipString := func(q byte) error {
		for i++; i < n; i++ {
			switch {
			case expr[i] == '\\' && q != '`':
				i++
			case expr[i] == q:
				i++
				return nil
			}
		}
		return fmt.Errorf("unterminated string in %q", expr)
	}
	// skipTo skips to after the close bracket matching the open one at i.
	skipTo := func(closer byte) (string, error) {
		start := i
		for i++; i < n; {
			switch c := expr[i]; {
			case c == '"' || c == '\'' || c == '`':
				if err := skipString(c); err != nil {
					return "", err
				}
			case c == closer:
				i++
				return expr[start:i], nil
			default:
				i++
			}
		}
		return "", fmt.Errorf("unclosed %q in %q", expr[start], expr)
	}
	nextNonSpace := func(j int) int {
		for j < n && (expr[j] == ' ' || expr[j] == '\t' || expr[j] == '\n' || expr[j] == '\r') {
			j++
		}
		return j
	}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	for i < n {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(c); err != nil {
				return nil, err
			}
		case c == '#':
			for i < n && expr[i] != '\n' {
				i++
			}
		case c == '{':
			m, err := skipTo('}')
			if err != nil {
				return nil, err
			}
			if regexp.MustCompile(`\b__name__\s*(=|!=|=~|!~)`).MatchString(m) {
				return nil, fmt.Errorf("%q selects by __name__: name the metric", expr)
			}
		case c == '[':
			if _, err := skipTo(']'); err != nil {
				return nil, err
			}
		case isDigit(c) || c == '.' && i+1 < n && isDigit(expr[i+1]):
			for i < n && (isIdent(expr[i]) || expr[i] == '.' ||
				(expr[i] == '+' || expr[i] == '-') && (expr[i-1] == 'e' || expr[i-1] == 'E')) {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < n && isIdent(expr[i]) {
				i++
			}
			word := expr[start:i]
			j := nextNonSpace(i)
			switch {
			case promqlLabelLists[strings.ToLower(word)]:
				if j < n && expr[j] == '(' {
					i = j
					if _, err := skipTo(')'); err != nil {
						return nil, err
					}
				}
			case promqlKeywords[strings.ToLower(word)]:
			case j < n && expr[j] == '(':
				// a function call
			default:
				names = append(names, word)
			}
		default:
			i++
		}
	}
	return names, nil
}

// dashRecorder is a prometheus.Registerer that keeps what is registered,
// to describe collectors that are not exposed otherwise.
type dashRecorder struct{ cs []prometheus.Collector }

var _ prometheus.Registerer = (*dashRecorder)(nil)

func (r *dashRecorder) Register(c prometheus.Collector) error {
	r.cs = append(r.cs, c)
	return nil
}

func (r *dashRecorder) MustRegister(cs ...prometheus.Collector) { r.cs = append(r.cs, cs...) }

func (r *dashRecorder) Unregister(prometheus.Collector) bool { return false }

var descNameRE = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)

// describedNames returns the metric names c describes.
func describedNames(t *testing.T, c prometheus.Collector) []string {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var names []string
	for d := range ch {
		m := descNameRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		names = append(names, m[1])
	}
	return names
}

// addSeries adds the series names of a metric family of type typ
// (client_model's names: HISTOGRAM, SUMMARY, COUNTER, ...): a histogram's
// _bucket, _sum and _count, a summary's quantiles (the family name), _sum
// and _count, else the family name.
func addSeries(names map[string]bool, family, typ string) {
	switch typ {
	case "HISTOGRAM", "GAUGE_HISTOGRAM":
		names[family+"_bucket"], names[family+"_sum"], names[family+"_count"] = true, true, true
	case "SUMMARY":
		names[family], names[family+"_sum"], names[family+"_count"] = true, true, true
	default:
		names[family] = true
	}
}

// exportedMetrics returns every series name keywarden exports, built from
// the real collectors: the sidecar's (telemetry.New, with a budget
// registered and a latency observed so that every family shows its type)
// and the rotator's (rotation.NewMetrics).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	m := telemetry.New()
	m.Budget("dashboard", func() float64 { return 0.5 })
	m.Route("/").Upstream.Observe(0.1)
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, mf := range mfs {
		types[mf.GetName()] = mf.GetType().String()
	}
	// Every registered family, also vectors without children yet (their
	// type is unknown: counted as a counter or gauge).
	for _, n := range describedNames(t, m.Registry) {
		addSeries(names, n, types[n])
	}
	rec := &dashRecorder{}
	rotation.NewMetrics(rec)
	if len(rec.cs) == 0 {
		t.Fatal("rotation.NewMetrics registered nothing")
	}
	for _, c := range rec.cs {
		typ := ""
		switch c.(type) {
		case *prometheus.HistogramVec, prometheus.Histogram:
			typ = "HISTOGRAM"
		case *prometheus.SummaryVec, prometheus.Summary:
			typ = "SUMMARY"
		}
		for _, n := range describedNames(t, c) {
			addSeries(names, n, typ)
		}
	}
	return names
}

// checkDashboardMetrics returns the problems of a dashboard: structure,
// queries that do not lex, metrics keywarden does not export, required
// metrics missing.
func checkDashboardMetrics(raw []byte, d *dashboard, exported map[string]bool) []string {
	queries, problems := dashQueries(raw, d)
	used := map[string]bool{}
	for _, q := range queries {
		names, err := metricNames(q.expr)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", q.where, err))
			continue
		}
		if len(names) == 0 {
			problems = append(problems, fmt.Sprintf("%s: %q selects no metric", q.where, q.expr))
		}
		for _, name := range names {
			used[name] = true
			if !exported[name] {
				problems = append(problems, fmt.Sprintf("%s: %s is not a metric keywarden exports", q.where, name))
			}
		}
	}
	for _, r := range dashRequired {
		if !used[r] {
			problems = append(problems, fmt.Sprintf("no panel shows %s", r))
		}
	}
	return problems
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
		bad  bool
	}{
		{expr: `up`, want: []string{"up"}},
		{expr: `sum by (client, model) (rate(a_total{client=~"x|y}", route="/"}[5m])) * 3600`, want: []string{"a_total"}},
		{expr: `histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m])))`, want: []string{"h_bucket"}},
		{expr: `a / on (namespace, key) group_left (pod) b > bool 1e-3`, want: []string{"a", "b"}},
		{expr: `max_over_time(sum without (pod) (rate(c[1h]))[1d:10m] offset 15m) and d unless e or f`, want: []string{"c", "d", "e", "f"}},
		{expr: `time() - max by (key) (g > 0) + vector(1) * Inf - NaN`, want: []string{"g"}},
		{expr: `count_values("v", h) + topk(3, i) + quantile(0.5, j) + 0x1F + .5 + 1.5e+3`, want: []string{"h", "i", "j"}},
		{expr: "k{a='}\\''} # comment m\n+ l", want: []string{"k", "l"}},
		{expr: `rule:name_total:rate5m`, want: []string{"rule:name_total:rate5m"}},
		{expr: `{__name__="x"}`, bad: true},
		{expr: `x{a="b}`, bad: true},
		{expr: `rate(x[5m)`, bad: true},
	} {
		got, err := metricNames(tc.expr)
		if (err != nil) != tc.bad {
			t.Errorf("metricNames(%q): error %v, want error %v", tc.expr, err, tc.bad)
			continue
		}
		if !tc.bad && !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

func TestSubstitute(t *testing.T) {
	vars := map[string]string{"client": ".*", "__rate_interval": "1m"}
	got, err := substitute(`rate(x{client=~"$client",c=~"${client:regex}",d=~"[[client]]"}[$__rate_interval])`, vars)
	if want := `rate(x{client=~".*",c=~".*",d=~".*"}[1m])`; err != nil || got != want {
		t.Errorf("substitute = %q, %v; want %q", got, err, want)
	}
	if _, err := substitute(`x{a=~"$nosuch"}`, vars); err == nil {
		t.Error("an unknown variable is substituted")
	}
}

// TestDashboardMetrics checks that every query of the dashboard (panels,
// variables, annotations) names only metrics keywarden's collectors
// export, that it shows the metrics it must, uses only the datasource
// variable, and holds no key; and that the check fails when a panel names
// a metric that does not exist.
func TestDashboardMetrics(t *testing.T) {
	raw, d := readDashboard(t)
	exported := exportedMetrics(t)
	for _, want := range []string{"keywarden_sidecar_upstream_duration_seconds_bucket", "keywarden_rotation_duration_seconds_count", "keywarden_key_info", "keywarden_sidecar_budget_used_ratio"} {
		if !exported[want] {
			t.Fatalf("the collectors do not export %s: %v", want, sortedKeys(exported))
		}
	}
	queries, _ := dashQueries(raw, d)
	var ours []string
	for _, n := range sortedKeys(exported) {
		if strings.HasPrefix(n, telemetry.Namespace+"_") {
			ours = append(ours, n)
		}
	}
	t.Logf("%d queries; %d exported series names, keywarden's: %v", len(queries), len(exported), ours)
	for _, p := range checkDashboardMetrics(raw, d, exported) {
		t.Error(p)
	}

	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"a panel names an unknown metric", "keywarden_sidecar_cost_usd_total", "keywarden_sidecar_spend_usd_total", "keywarden_sidecar_spend_usd_total is not a metric keywarden exports"},
		{"a histogram without its suffix", "keywarden_sidecar_upstream_duration_seconds_bucket", "keywarden_sidecar_upstream_duration_seconds", "keywarden_sidecar_upstream_duration_seconds is not a metric"},
		{"a variable names an unknown metric", "label_values(keywarden_sidecar_requests_total, route)", "label_values(keywarden_sidecar_nosuch_total, route)", "variable route: keywarden_sidecar_nosuch_total is not a metric"},
		{"an undefined variable", `client=~\"$client\"`, `client=~\"$customer\"`, "unknown variables [$customer]"},
		{"a fixed datasource", `"uid": "${datasource}"`, `"uid": "P1809F7CD0C75ACF3"`, "want uid ${datasource}"},
		{"a key in the dashboard", `"title": "keywarden"`, `"title": "sk-ant-api03-AAAA"`, "sk-ant-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broken := bytes.ReplaceAll(raw, []byte(tc.from), []byte(tc.to))
			if bytes.Equal(broken, raw) {
				t.Fatalf("%q is not in the dashboard", tc.from)
			}
			bd, err := decodeDashboard(broken)
			if err != nil {
				t.Fatal(err)
			}
			problems := checkDashboardMetrics(broken, bd, exported)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("no problem reported containing %q; got %q", tc.want, problems)
			}
		})
	}
}

// TestDashboardQueriesParse sends every query of the dashboard, Grafana
// variables substituted, to a real Prometheus (Debian's, on loopback): each
// must parse and evaluate (status success). A broken query is refused, so
// the check can fail.
func TestDashboardQueriesParse(t *testing.T) {
	raw, d := readDashboard(t)
	queries, problems := dashQueries(raw, d)
	for _, p := range problems {
		t.Error(p)
	}
	prom := promtest.Start(t, time.Minute)
	query := func(expr string) (status, msg string) {
		resp, err := http.PostForm(prom.URL+"/api/v1/query", url.Values{"query": {expr}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct {
			Status    string `json:"status"`
			ErrorType string `json:"errorType"`
			Error     string `json:"error"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatalf("query %q: %s: %v", expr, resp.Status, err)
		}
		return r.Status, r.ErrorType + ": " + r.Error
	}
	if status, _ := query(`sum(rate(keywarden_sidecar_cost_usd_total[5m])`); status == "success" {
		t.Fatal("Prometheus accepts a query with an unclosed parenthesis: the check cannot fail")
	}
	for _, q := range queries {
		if status, msg := query(q.expr); status != "success" {
			t.Errorf("%s: %q: %s %s", q.where, q.expr, status, msg)
		}
	}
	t.Logf("%d queries parsed by Prometheus", len(queries))
}

func sortedKeys(m map[string]bool) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
