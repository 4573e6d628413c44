package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"
)

func TestConformanceCommand(t *testing.T) {
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	corporaDir := filepath.Join(repo, "..", "shared", "corpora")
	if _, err := os.Stat(corporaDir); err != nil {
		corpustest.Missing(t, "the third-party corpora are absent at %s; skipping", corporaDir)
	}
	code, stdout, stderr := cliRun(t, "conformance", "--repo", repo, "--max-failures", "3")
	for _, want := range []string{"Junction conformance scorecard", "schema", "references", "ukcore", "cdc", "robustness"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("scorecard lacks %q", want)
		}
	}
	if code != 0 {
		t.Errorf("exit %d: the suite found failures (the conformance package's tests list them); stderr %s", code, stderr)
	}
}

func TestConformanceCommandNoCorpora(t *testing.T) {
	code, _, stderr := cliRun(t, "conformance", "--corpora", filepath.Join(t.TempDir(), "absent"))
	if code != 1 || !strings.Contains(stderr, "corpora not found") {
		t.Fatalf("code %d, stderr %q; want 1 and a clear message", code, stderr)
	}
}
