package conformance

import (
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/junction-fhir/junction/adapters/all"
)

// repoRoot is the repository root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var (
	runOnce   sync.Once
	runReport *Report
	runErr    error
)

// report runs the suite once for all tests in this package, or skips
// when the corpora are absent.
func report(t *testing.T) *Report {
	t.Helper()
	root := repoRoot(t)
	runOnce.Do(func() {
		runReport, runErr = Run(Options{RepoRoot: root, Corpora: DefaultCorpora(root), Factories: all.Factories()})
	})
	if errors.Is(runErr, ErrNoCorpora) {
		corpustest.Missing(t, "conformance suites need the third-party corpora at %s, which are absent; skipping", DefaultCorpora(root))
	}
	if runErr != nil {
		t.Fatal(runErr)
	}
	return runReport
}

// listFailures reports each failure of a check as a test error.
func listFailures(t *testing.T, c *Check) {
	t.Helper()
	for _, f := range c.Failures {
		t.Errorf("%s", f)
	}
}

func TestScorecard(t *testing.T) {
	rep := report(t)
	var b strings.Builder
	if err := rep.WriteScorecard(&b, 20); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
	if rep.Messages == 0 {
		t.Fatal("no HL7 v2 messages found in the corpora")
	}
	if len(rep.Adapters) == 0 {
		t.Fatal("no HL7 v2 translator registered")
	}
}

// TestSchemaValid: every bundle Junction produces is valid against the
// FHIR R4 JSON schema.
func TestSchemaValid(t *testing.T) {
	c := report(t).Check("schema")
	if c.Total == 0 {
		t.Fatal("no bundles were produced")
	}
	listFailures(t, c)
	t.Logf("%d of %d bundles schema-valid", c.Passed, c.Total)
}

// TestReferencesResolve: every reference resolves inside its bundle.
func TestReferencesResolve(t *testing.T) {
	c := report(t).Check("references")
	if c.Total == 0 {
		t.Fatal("no bundles were produced")
	}
	listFailures(t, c)
	t.Logf("%d of %d bundles with every reference resolved", c.Passed, c.Total)
}

// TestRobustness: every corpus message converts or is rejected with a
// coded reason by every translator, and nothing panics.
func TestRobustness(t *testing.T) {
	c := report(t).Check("robustness")
	if c.Total == 0 {
		t.Fatal("no translations ran")
	}
	listFailures(t, c)
	for _, tl := range c.Breakdown {
		t.Logf("%-50s %d", tl.Name, tl.Passed+tl.Failed)
	}
}

// TestUKCore: every bundle Junction produces meets every UK Core rule
// checked (see ukcore.go).
func TestUKCore(t *testing.T) {
	c := report(t).Check("ukcore")
	if c.Total == 0 {
		t.Fatal("no bundles were checked against UK Core")
	}
	for _, tl := range c.Breakdown {
		t.Logf("%4d passed %4d failed  %s", tl.Passed, tl.Failed, tl.Name)
	}
	listFailures(t, c)
	t.Logf("%d of %d bundles meet every UK Core rule checked", c.Passed, c.Total)
}

// TestMappingInventory logs the agreement rate with the mapping
// inventory. It asserts that the comparison ran and that every
// disagreement has a reason: a category other than "differs" (a value
// difference no rule in cdcRules explains, which must be explained there
// and in README.md, or fixed in the translator).
func TestMappingInventory(t *testing.T) {
	c := report(t).Check("cdc")
	if c.Total == 0 {
		t.Fatal("no mapping inventory case was compared")
	}
	if c.Passed > c.Total {
		t.Fatalf("passed %d > total %d", c.Passed, c.Total)
	}
	for _, f := range c.Failures {
		if f.Category == "" {
			t.Errorf("disagreement without a category: %s", f)
		}
		switch f.Category {
		case catUSOnly, catUKOverride, catNotSupported, catChoice, catInventory, catGap:
		case catDiffers:
			t.Errorf("unexplained disagreement (add a rule to cdcRules and README.md, or fix the translator): %s", f)
		default:
			t.Errorf("disagreement in unknown category %q: %s", f.Category, f)
		}
	}
	t.Logf("mapping inventory: %d of %d cases agree (%.1f%%)", c.Passed, c.Total, c.Percent())
	for _, tl := range c.Breakdown {
		t.Logf("  %s: %d agree, %d disagree", tl.Name, tl.Passed, tl.Failed)
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		name     string
		data     string
		lines    []int
		firsts   []string
		preamble bool
	}{
		{"cr", "MSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\rPID|2\r", []int{1, 3}, []string{"MSH|^~\\&|A\rPID|1\r", "MSH|^~\\&|B\rPID|2\r"}, false},
		{"lf", "MSH|^~\\&|A\nPID|1\n\nMSH|^~\\&|B\n", []int{1, 4}, []string{"MSH|^~\\&|A\nPID|1\n\n", "MSH|^~\\&|B\n"}, false},
		{"crlf", "MSH|^~\\&|A\r\nPID|1\r\nMSH|^~\\&|B", []int{1, 3}, []string{"MSH|^~\\&|A\r\nPID|1\r\n", "MSH|^~\\&|B"}, false},
		{"bom", "\xEF\xBB\xBFMSH|^~\\&|A\r", []int{1}, []string{"MSH|^~\\&|A\r"}, false},
		{"preamble", "/* comment */\nMSH|^~\\&|A\n", []int{2}, []string{"MSH|^~\\&|A\n"}, true},
		{"not msh", "MSH MSH:9\nMSHX|y\n", nil, nil, true},
		{"mixed", "MSH|^~\\&|A\rPID|1\nMSH|^~\\&|B\r\nPID|2", []int{1, 3}, []string{"MSH|^~\\&|A\rPID|1\n", "MSH|^~\\&|B\r\nPID|2"}, false},
		{"empty", "", nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, pre := Split([]byte(tt.data))
			if pre != tt.preamble {
				t.Errorf("preamble = %v, want %v", pre, tt.preamble)
			}
			if len(msgs) != len(tt.lines) {
				t.Fatalf("%d messages, want %d", len(msgs), len(tt.lines))
			}
			for i, m := range msgs {
				if m.Line != tt.lines[i] || string(m.Raw) != tt.firsts[i] {
					t.Errorf("message %d: line %d %q, want line %d %q", i, m.Line, m.Raw, tt.lines[i], tt.firsts[i])
				}
			}
		})
	}
}

func TestEnvelopeID(t *testing.T) {
	a, b := EnvelopeID("x.hl7", 1), EnvelopeID("x.hl7", 2)
	if a == b || a != EnvelopeID("x.hl7", 1) || len(a) != 26 {
		t.Fatalf("ids %q %q: want distinct, stable, 26 characters", a, b)
	}
	if strings.Trim(a, crockford) != "" {
		t.Fatalf("id %q has characters outside Crockford base32", a)
	}
}

func TestUnresolvedReferences(t *testing.T) {
	bundle := map[string]any{
		"resourceType": "Bundle",
		"entry": []any{
			map[string]any{"fullUrl": "urn:uuid:1", "resource": map[string]any{"resourceType": "Patient", "id": "p1"}},
			map[string]any{"fullUrl": "urn:uuid:2", "resource": map[string]any{
				"resourceType":    "Encounter",
				"contained":       []any{map[string]any{"resourceType": "Location", "id": "loc"}},
				"subject":         map[string]any{"reference": "urn:uuid:1"},
				"basedOn":         []any{map[string]any{"reference": "Patient/p1"}},
				"location":        []any{map[string]any{"location": map[string]any{"reference": "#loc"}}},
				"partOf":          map[string]any{"reference": "urn:uuid:9"},
				"serviceProvider": map[string]any{"reference": "#nope"},
			}},
		},
	}
	got, n := unresolvedReferences(bundle)
	if n != 5 {
		t.Errorf("counted %d references, want 5", n)
	}
	var paths []string
	for _, u := range got {
		paths = append(paths, u.path)
	}
	want := "Bundle.entry[1].resource(Encounter).partOf.reference,Bundle.entry[1].resource(Encounter).serviceProvider.reference"
	if strings.Join(paths, ",") != want {
		t.Errorf("unresolved %v, want %s", paths, want)
	}
}

func TestNoCorpora(t *testing.T) {
	_, err := Run(Options{Corpora: filepath.Join(t.TempDir(), "absent")})
	if !errors.Is(err, ErrNoCorpora) {
		t.Fatalf("err = %v, want ErrNoCorpora", err)
	}
}

// FuzzSplit checks that Split never panics, that messages start with MSH
// at their line, and that they appear in order without overlapping.
func FuzzSplit(f *testing.F) {
	f.Add([]byte("MSH|^~\\&|A\rPID|1\r\nMSH|^~\\&|B\n"))
	f.Add([]byte("\xEF\xBB\xBFMSH|^~\\&|A"))
	f.Add([]byte("junk\r\rMSH^x\nMSH|"))
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, _ := Split(data)
		last := 0
		for _, m := range msgs {
			if len(m.Raw) < 4 || string(m.Raw[:3]) != "MSH" {
				t.Fatalf("message does not start with MSH: %q", m.Raw)
			}
			if m.Line <= last {
				t.Fatalf("line %d after %d", m.Line, last)
			}
			last = m.Line
		}
	})
}
