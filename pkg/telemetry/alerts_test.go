package telemetry_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/junction-fhir/junction/pkg/telemetry"
)

// alertsFile is the alerting rules the project ships: a plain Prometheus
// rules file, which the Helm chart also renders as a PrometheusRule.
var alertsFile = filepath.Join("..", "..", "charts", "junction", "files", "alerts.yaml")

// alertsTestFile holds promtool's unit tests of alertsFile.
var alertsTestFile = filepath.Join("..", "..", "charts", "junction", "files", "alerts_test.yaml")

// ruleFile is the part of a Prometheus rules file the checks read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// targetLabels are the labels Prometheus gives every series it scrapes
// (job, instance), and Kubernetes service discovery namespace. A rule may
// group by them; it may name in an annotation only job and instance,
// since namespace is absent outside Kubernetes.
var (
	targetLabels   = []string{"job", "instance", "namespace"}
	templateLabels = []string{"job", "instance"}
)

var (
	metricNameRE = regexp.MustCompile(`\bjunction_[a-z0-9_]+\b`)
	selectorRE   = regexp.MustCompile(`\b(junction_[a-z0-9_]+)\s*\{([^}]*)\}`)
	matcherRE    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	groupingRE   = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	byRE         = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)
	templatedRE  = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// registeredLabels returns each series Junction registers, by the name it
// is exposed under (a histogram's _bucket, _sum and _count too), with its
// label names. The engine registers these on its registry (engine.New),
// beside the Go runtime's and junction_store_client_*, which no rule uses.
func registeredLabels(t *testing.T) map[string][]string {
	t.Helper()
	reg := prometheus.NewRegistry()
	touch(t, telemetry.NewMetrics(reg))
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string][]string{}
	for _, mf := range families {
		var labels []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, lp.GetName())
		}
		out[mf.GetName()] = labels
		if mf.GetType().String() == "HISTOGRAM" {
			out[mf.GetName()+"_bucket"] = append(slices.Clone(labels), "le")
			out[mf.GetName()+"_sum"] = labels
			out[mf.GetName()+"_count"] = labels
		}
	}
	return out
}

// splitLabels splits a grouping clause's label list.
func splitLabels(list string) []string {
	var out []string
	for l := range strings.SplitSeq(list, ",") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// checkRules returns what in a rules file does not fit the metrics
// registered (metric name to label names): a metric that is not
// registered, in an expression or named in an annotation; a label that
// none of the expression's metrics has, in a selector or a grouping; an
// annotation templating a label the alert's series do not carry; and an
// alert without a severity (critical or warning), a summary or a
// description.
func checkRules(doc []byte, registered map[string][]string) ([]string, error) {
	var f ruleFile
	if err := yaml.Unmarshal(doc, &f); err != nil {
		return nil, fmt.Errorf("reading the rules file: %w", err)
	}
	var problems []string
	report := func(r rule, format string, args ...any) {
		problems = append(problems, r.Alert+r.Record+": "+fmt.Sprintf(format, args...))
	}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			// The labels some metric of the expression has.
			var have []string
			for _, name := range metricNameRE.FindAllString(r.Expr, -1) {
				labels, ok := registered[name]
				if !ok {
					report(r, "expression names %s, which Junction does not register", name)
					continue
				}
				have = append(have, labels...)
			}
			for _, m := range selectorRE.FindAllStringSubmatch(r.Expr, -1) {
				for _, l := range matcherRE.FindAllStringSubmatch(m[2], -1) {
					if !slices.Contains(registered[m[1]], l[1]) && !slices.Contains(targetLabels, l[1]) {
						report(r, "selector of %s matches label %q, which it does not have", m[1], l[1])
					}
				}
			}
			for _, m := range groupingRE.FindAllStringSubmatch(r.Expr, -1) {
				for _, l := range splitLabels(m[2]) {
					if !slices.Contains(have, l) && !slices.Contains(targetLabels, l) {
						report(r, "%s (...) names label %q, which none of the expression's metrics has", m[1], l)
					}
				}
			}
			// What an annotation may name: with an aggregation, the labels
			// every by (...) keeps; without, the metrics' own and the
			// scrape's.
			kept := append(slices.Clone(have), templateLabels...)
			if strings.Contains(r.Expr, "absent(") {
				kept = nil
			}
			for _, m := range byRE.FindAllStringSubmatch(r.Expr, -1) {
				kept = slices.DeleteFunc(kept, func(l string) bool { return !slices.Contains(splitLabels(m[1]), l) })
			}
			for _, key := range slices.Sorted(maps.Keys(r.Annotations)) {
				text := r.Annotations[key]
				for _, m := range templatedRE.FindAllStringSubmatch(text, -1) {
					if !slices.Contains(kept, m[1]) || m[1] == "namespace" {
						report(r, "annotation %s templates label %q, which the alert's series do not carry", key, m[1])
					}
				}
				for _, name := range metricNameRE.FindAllString(text, -1) {
					if _, ok := registered[name]; !ok {
						report(r, "annotation %s names %s, which Junction does not register", key, name)
					}
				}
			}
			if r.Alert == "" {
				continue
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				report(r, "severity %q, want critical or warning", s)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					report(r, "no %s annotation", a)
				}
			}
		}
	}
	return problems, nil
}

// shippedAlerts reads the shipped rules file, and returns it and its
// alerting rules.
func shippedAlerts(t *testing.T) ([]byte, []rule) {
	t.Helper()
	doc, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatalf("reading the alerting rules: %v", err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(doc, &f); err != nil {
		t.Fatalf("reading the alerting rules: %v", err)
	}
	var alerts []rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts = append(alerts, r)
			}
		}
	}
	return doc, alerts
}

// TestAlertRulesNameRegisteredMetrics keeps the shipped alerting rules
// true to the engine: a metric or label renamed or removed fails the
// build rather than silencing an alert.
func TestAlertRulesNameRegisteredMetrics(t *testing.T) {
	doc, alerts := shippedAlerts(t)
	if len(alerts) == 0 {
		t.Error("the alerting rules file has no alerts")
	}
	problems, err := checkRules(doc, registeredLabels(t))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string(nil), problems); diff != "" {
		t.Errorf("alerting rules (-want +got):\n%s", diff)
	}
}

// TestCheckRulesFindsProblems shows the check above failing on the
// mistakes it is there to catch.
func TestCheckRulesFindsProblems(t *testing.T) {
	registered := registeredLabels(t)
	tests := []struct {
		name string
		rule string
		want []string
	}{
		{
			name: "fits",
			rule: `{alert: A, expr: 'max by (job, destination) (junction_delivery_queue_age_seconds{destination="ehr"}) > 900', labels: {severity: warning}, annotations: {summary: "{{ $labels.destination }}", description: "see junction_delivery_attempts_total"}}`,
		},
		{
			name: "a histogram's buckets",
			rule: `{alert: A, expr: 'histogram_quantile(0.9, sum by (le, destination) (rate(junction_delivery_send_latency_seconds_bucket[5m]))) > 10', labels: {severity: warning}, annotations: {summary: s, description: d}}`,
		},
		{
			name: "renamed metric",
			rule: `{alert: A, expr: 'junction_engine_readiness == 0', labels: {severity: critical}, annotations: {summary: s, description: d}}`,
			want: []string{"A: expression names junction_engine_readiness, which Junction does not register"},
		},
		{
			name: "label a metric does not have",
			rule: `{alert: A, expr: 'junction_delivery_queue_age_seconds{route="adt"} > 900', labels: {severity: warning}, annotations: {summary: s, description: d}}`,
			want: []string{`A: selector of junction_delivery_queue_age_seconds matches label "route", which it does not have`},
		},
		{
			name: "grouping by a label no metric has",
			rule: `{alert: A, expr: 'max by (route) (junction_delivery_queue_age_seconds) > 900', labels: {severity: warning}, annotations: {summary: s, description: d}}`,
			want: []string{`A: by (...) names label "route", which none of the expression's metrics has`},
		},
		{
			name: "templating a label the aggregation drops",
			rule: `{alert: A, expr: 'max by (destination) (junction_delivery_queue_age_seconds) > 900', labels: {severity: warning}, annotations: {summary: "{{ $labels.instance }}", description: d}}`,
			want: []string{`A: annotation summary templates label "instance", which the alert's series do not carry`},
		},
		{
			name: "templating namespace, absent outside Kubernetes",
			rule: `{alert: A, expr: 'junction_engine_ready == 0', labels: {severity: warning}, annotations: {summary: "{{ $labels.namespace }}", description: d}}`,
			want: []string{`A: annotation summary templates label "namespace", which the alert's series do not carry`},
		},
		{
			name: "templating a label of absent()",
			rule: `{alert: A, expr: 'absent(junction_engine_ready)', labels: {severity: critical}, annotations: {summary: "{{ $labels.instance }}", description: d}}`,
			want: []string{`A: annotation summary templates label "instance", which the alert's series do not carry`},
		},
		{
			name: "annotation naming a metric that does not exist",
			rule: `{alert: A, expr: 'junction_engine_ready == 0', labels: {severity: critical}, annotations: {summary: s, description: "see junction_engine_up"}}`,
			want: []string{"A: annotation description names junction_engine_up, which Junction does not register"},
		},
		{
			name: "no severity, summary or description",
			rule: `{alert: A, expr: 'junction_engine_ready == 0', labels: {severity: page}}`,
			want: []string{`A: severity "page", want critical or warning`, "A: no summary annotation", "A: no description annotation"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := "groups:\n  - name: g\n    rules:\n      - " + tt.rule + "\n"
			got, err := checkRules([]byte(doc), registered)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAlertRulesEachTested keeps promtool's unit tests covering every
// alert: each is shown firing at some time, and not firing at another.
func TestAlertRulesEachTested(t *testing.T) {
	_, alerts := shippedAlerts(t)
	tdoc, err := os.ReadFile(alertsTestFile)
	if err != nil {
		t.Fatalf("reading the alerting rules' tests: %v", err)
	}
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(tdoc, &tests); err != nil {
		t.Fatalf("reading the alerting rules' tests: %v", err)
	}
	if diff := cmp.Diff([]string{filepath.Base(alertsFile)}, tests.RuleFiles); diff != "" {
		t.Errorf("rule_files (-want +got):\n%s", diff)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				firing[at.Alertname] = true
			} else {
				quiet[at.Alertname] = true
			}
		}
	}
	for _, r := range alerts {
		if !firing[r.Alert] {
			t.Errorf("%s: no test shows it firing", r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("%s: no test shows it not firing", r.Alert)
		}
	}
}

// TestREADMEListsEveryAlert keeps README's Alerting table complete: every
// alert the rules file holds is named in it.
func TestREADMEListsEveryAlert(t *testing.T) {
	sec := readmeSection(t, "\n### Alerting\n", "\n## ")
	_, alerts := shippedAlerts(t)
	for _, r := range alerts {
		if !strings.Contains(sec, "| `"+r.Alert+"` |") {
			t.Errorf("README's Alerting table does not list %s", r.Alert)
		}
	}
}
