package deploytest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var (
	rulesFile     = path("deploy", "monitoring", "keywarden-alerts.yaml")
	rulesTestFile = path("deploy", "monitoring", "keywarden-alerts.test.yaml")
)

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []struct {
			Alert       string            `json:"alert,omitempty"`
			Record      string            `json:"record,omitempty"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"rules"`
	} `json:"groups"`
}

// TestAlertRulesPromtool checks the rule file with `promtool check rules`
// and runs its unit tests with `promtool test rules`.
func TestAlertRulesPromtool(t *testing.T) {
	promtool := tool(t, "install-promtool.sh")
	out := mustRun(t, filepath.Dir(rulesFile), promtool, "check", "rules", filepath.Base(rulesFile))
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool check rules: %s", out)
	}
	t.Log(strings.TrimSpace(out))
	out = mustRun(t, filepath.Dir(rulesFile), promtool, "test", "rules", filepath.Base(rulesTestFile))
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules: %s", out)
	}
}

// TestAlertRules parses the rule file strictly and checks every alert: a
// severity, a summary, a description, a runbook that exists in
// docs/operations.md, a unit test, and only metrics that keywarden (or
// kube-state-metrics) exports.
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(b, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	tests, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := os.ReadFile(path("docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(string(ops))
	declared := declaredMetrics(t)
	t.Logf("%d metric names declared in keywarden's sources", len(declared))
	metricRE := regexp.MustCompile(`\b(keywarden_[a-z0-9_]+|kube_[a-z0-9_]+)`)
	want := []string{"KeywardenKeyTooOld", "KeywardenKeyRefreshFailing", "KeywardenRotationFailed", "KeywardenPoolLow", "KeywardenUpstream401Rate",
		"KeywardenSpendAnomaly", "KeywardenBudgetHigh", "KeywardenBudgetSpent", "KeywardenUpstreamAuthErrors", "KeywardenRateLimitHeadroomLow", "KeywardenUnpricedModel"}
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s", r.Alert, a)
				}
			}
			if _, anchor, _ := strings.Cut(r.Annotations["runbook_url"], "docs/operations.md#"); !anchors[anchor] {
				t.Errorf("%s: runbook %q is not a heading of docs/operations.md", r.Alert, r.Annotations["runbook_url"])
			}
			if !strings.Contains(string(tests), "alertname: "+r.Alert+"\n") {
				t.Errorf("%s has no unit test in %s", r.Alert, filepath.Base(rulesTestFile))
			}
			for _, m := range metricRE.FindAllString(r.Expr, -1) {
				if strings.HasPrefix(m, "kube_") {
					if m != "kube_cronjob_status_last_successful_time" {
						t.Errorf("%s uses %s: not a kube-state-metrics metric this file knows", r.Alert, m)
					}
				} else if !declared[m] {
					t.Errorf("%s uses %s, which keywarden does not export (declared: %v)", r.Alert, m, keys(declared))
				}
			}
		}
	}
	for _, w := range want {
		if !slices.Contains(alerts, w) {
			t.Errorf("no alert %s", w)
		}
	}
	t.Logf("%d alerts: %v", len(alerts), alerts)
}

// declaredMetrics returns the metric names keywarden's Go sources declare:
// prometheus.*Opts literals (Namespace, Subsystem, Name) and
// prometheus.NewDesc names, with package-level string constants resolved.
func declaredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	fset := token.NewFileSet()
	names := map[string]bool{}
	var files []*ast.File
	consts := map[string]map[string]string{} // dir -> const -> value
	dirs := map[*ast.File]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); p != root && (strings.HasPrefix(n, ".") || n == "deploy" || n == "testdata" || n == "bench" || n == "examples") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil && p != root {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		files = append(files, f)
		dir := filepath.Dir(p)
		dirs[f] = dir
		if consts[dir] == nil {
			consts[dir] = map[string]string{}
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							consts[dir][n.Name], _ = strconv.Unquote(lit.Value)
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		cs := consts[dirs[f]]
		locals := localStrings(f)
		var eval func(e ast.Expr) (string, bool)
		eval = func(e ast.Expr) (string, bool) {
			switch e := e.(type) {
			case *ast.BasicLit:
				s, err := strconv.Unquote(e.Value)
				return s, err == nil
			case *ast.Ident:
				if s, ok := cs[e.Name]; ok {
					return s, true
				}
				s, ok := locals[e.Name]
				return s, ok
			case *ast.BinaryExpr:
				a, ok1 := eval(e.X)
				b, ok2 := eval(e.Y)
				return a + b, ok1 && ok2 && e.Op == token.ADD
			}
			return "", false
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CompositeLit:
				sel, ok := n.Type.(*ast.SelectorExpr)
				if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
					return true
				}
				parts := map[string]string{}
				for _, el := range n.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok {
							v, ok := eval(kv.Value)
							if !ok && (k.Name == "Namespace" || k.Name == "Subsystem" || k.Name == "Name") {
								t.Errorf("%s: cannot resolve %s of a metric to a string", fset.Position(kv.Pos()), k.Name)
							}
							parts[k.Name] = v
						}
					}
				}
				if parts["Name"] != "" {
					var fq []string
					for _, p := range []string{parts["Namespace"], parts["Subsystem"], parts["Name"]} {
						if p != "" {
							fq = append(fq, p)
						}
					}
					names[strings.Join(fq, "_")] = true
				}
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "NewDesc" && len(n.Args) > 0 {
					if s, ok := eval(n.Args[0]); ok {
						names[s] = true
					}
				}
			}
			return true
		})
	}
	if len(names) == 0 {
		t.Fatal("found no metric declarations in the Go sources")
	}
	return names
}

// localStrings returns the variables of f assigned a string literal
// (x := "a", var x = "a"), inside functions too; a name assigned two
// different values is left out.
func localStrings(f *ast.File) map[string]string {
	vals := map[string]string{}
	bad := map[string]bool{}
	set := func(id ast.Expr, v ast.Expr) {
		name, ok := id.(*ast.Ident)
		lit, ok2 := v.(*ast.BasicLit)
		if !ok || !ok2 || lit.Kind != token.STRING {
			return
		}
		s, err := strconv.Unquote(lit.Value)
		if err != nil {
			return
		}
		if old, seen := vals[name.Name]; seen && old != s {
			bad[name.Name] = true
		}
		vals[name.Name] = s
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			if n.Tok == token.DEFINE && len(n.Lhs) == len(n.Rhs) {
				for i := range n.Lhs {
					set(n.Lhs[i], n.Rhs[i])
				}
			}
		case *ast.ValueSpec:
			for i, id := range n.Names {
				if i < len(n.Values) {
					set(id, n.Values[i])
				}
			}
		}
		return true
	})
	for name := range bad {
		delete(vals, name)
	}
	return vals
}

// markdownAnchors returns the GitHub anchors of a Markdown file's headings.
func markdownAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		a := strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")
		anchors[a] = true
	}
	return anchors
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
