package main

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

// TestChartRoutesPlanWithChartInputs checks that the Helm chart's default
// values start: every route file the chart ships plans against the inputs
// the chart configures, and the chart ships a route for each of the
// repository's shipped routes, so the two cannot drift apart unnoticed.
func TestChartRoutesPlanWithChartInputs(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "charts", "junction", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Junction struct {
			Inputs map[string]map[string]any `yaml:"inputs"`
		} `yaml:"junction"`
		Routes struct {
			Files map[string]string `yaml:"files"`
		} `yaml:"routes"`
	}
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes")
	if err := os.Mkdir(routes, 0o755); err != nil {
		t.Fatal(err)
	}
	var chartFiles []string
	for name, body := range values.Routes.Files {
		chartFiles = append(chartFiles, name)
		if err := os.WriteFile(filepath.Join(routes, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(chartFiles)
	shipped, err := filepath.Glob(filepath.Join(shippedRoutes(t), "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range shipped {
		want = append(want, filepath.Base(p))
	}
	if diff := cmp.Diff(want, chartFiles); diff != "" {
		t.Errorf("chart route files differ from routes/ (-routes +chart):\n%s", diff)
	}
	cfg := map[string]any{"data_dir": filepath.Join(dir, "data"), "routes": []string{routes}, "inputs": values.Junction.Inputs}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "junction.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	p, err := plan(path, nil, planChecks{}, &stderr)
	if err != nil {
		t.Fatalf("the chart's routes do not plan with its inputs: %v\n%s", err, strings.TrimSpace(stderr.String()))
	}
	if len(p.Routes) != len(chartFiles) {
		t.Errorf("%d routes planned from %d chart files", len(p.Routes), len(chartFiles))
	}
}
