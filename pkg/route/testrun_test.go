package route

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/jsonmap"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// fakeTranslator makes a small bundle: from HL7 v2 a MessageHeader, a
// Patient with PID-3's first identifier as NHS number and an Encounter;
// FHIR input is wrapped in a collection bundle unless it is one.
type fakeTranslator struct{}

func (fakeTranslator) Translate(env *envelope.Envelope) (*adapter.Translation, error) {
	if env.ContentType == envelope.ContentTypeFHIR {
		var res map[string]any
		if err := json.Unmarshal(env.Raw, &res); err != nil {
			return nil, err
		}
		b := res
		if res["resourceType"] != "Bundle" {
			b = map[string]any{"resourceType": "Bundle", "type": "collection", "entry": []any{map[string]any{"resource": res}}}
		}
		out, err := json.Marshal(b)
		return &adapter.Translation{Bundle: out}, err
	}
	m, err := hl7v2.Parse(env.Raw)
	if err != nil {
		return nil, err
	}
	nhsNumber := m.Get("PID-3[1].1")
	b := fmt.Sprintf(`{"resourceType":"Bundle","type":"message","entry":[`+
		`{"resource":{"resourceType":"MessageHeader","eventCoding":{"code":%q}}},`+
		`{"resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":%q}]}},`+
		`{"resource":{"resourceType":"Encounter","status":"in-progress"}}]}`, m.Event(), nhsNumber)
	return &adapter.Translation{Bundle: []byte(b), Event: m.Event(), V2: m, PatientKey: nhsNumber}, nil
}

func loadRunTests(t *testing.T, path string) *Route {
	t.Helper()
	r, err := Load(path, testEnv(t), testCatalog)
	if err != nil {
		t.Fatalf("Load:\n%v", err)
	}
	return r
}

type testOutcome struct {
	Name     string
	Failures []string
	Updated  []string
}

func outcomes(rs []TestResult) []testOutcome {
	var out []testOutcome
	for _, r := range rs {
		out = append(out, testOutcome{Name: r.Route + " / " + r.Name, Failures: r.Failures, Updated: r.Updated})
	}
	return out
}

func TestRunTestsPass(t *testing.T) {
	env := testEnv(t)
	dir := filepath.Join("testdata", "runtests")
	for _, file := range []string{"pass.yaml", "deny.yaml", "patient.yaml"} {
		t.Run(file, func(t *testing.T) {
			r := loadRunTests(t, filepath.Join(dir, file))
			res := r.RunTests(context.Background(), fakeTranslator{}, env, *update)
			if len(res) != len(r.Tests) {
				t.Fatalf("%d results for %d tests", len(res), len(r.Tests))
			}
			for _, tr := range res {
				if !tr.Passed() {
					t.Errorf("%s failed:\n%s", tr.Name, strings.Join(tr.Failures, "\n"))
				}
				if len(tr.Updated) > 0 && !*update {
					t.Errorf("%s updated %v without update", tr.Name, tr.Updated)
				}
			}
		})
	}
}

// TestRunTestsSayWhyFiltered checks that a test expecting a delivery of a
// message the route filtered says why: its events do not take the
// message's type, or its match, named where it is written, was false.
func TestRunTestsSayWhyFiltered(t *testing.T) {
	file := filepath.Join("testdata", "runtests", "filtered.yaml")
	r := loadRunTests(t, file)
	got := outcomes(r.RunTests(context.Background(), fakeTranslator{}, testEnv(t), false))
	tests := []struct {
		name string
		want []string
	}{
		{"another event", []string{
			file + ":13:11: expected filtered=false, got filtered=true (source.events does not take ADT^A02)",
			file + ":13:11: expected deliveries [fhir-store], got []",
		}},
		{"match false", []string{
			file + ":17:11: expected filtered=false, got filtered=true (match at " + file + ":5:8 was false)",
			file + ":17:11: expected deliveries [fhir-store], got []",
		}},
		{"delivered, not filtered", []string{
			file + ":21:11: expected filtered=true, got filtered=false",
			file + ":21:11: expected deliveries [], got [fhir-store]",
		}},
	}
	if len(got) != len(tests) {
		t.Fatalf("%d results, want %d: %v", len(got), len(tests), got)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, got[i].Failures); diff != "" {
				t.Errorf("failures (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunTestsFail(t *testing.T) {
	dir := filepath.Join("testdata", "runtests")
	file := filepath.Join(dir, "fail.yaml")
	r := loadRunTests(t, file)
	got := outcomes(r.RunTests(context.Background(), fakeTranslator{}, testEnv(t), false))
	want := []testOutcome{
		{Name: "runtests-fail / wrong expectations", Failures: []string{
			file + ":15:11: expected filtered=true, got filtered=false",
			file + ":15:11: expected deliveries [data-quality], got [fhir-store]",
			file + ":15:11: expected consent denials [fhir-store], got []",
			file + ":22:11: assert[0] on fhir-store does not hold: resource(bundle, \"Encounter\").status == \"finished\"",
			file + ":23:11: assert[1] on fhir-store: rule.eval: evaluation failed (detail: no such key: nope)",
			"fhir-store: payload differs from golden wrong.fhir-store.json (run with --update after reviewing)",
			`  entry[0]: golden (absent), got {"resource":{"eventCoding":{"code":"A01"},"resourceType":"MessageHeader"}}`,
			`  entry[1]: golden (absent), got {"resource":{"identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","val...`,
			`  entry[2]: golden (absent), got {"resource":{"resourceType":"Encounter","status":"in-progress"}}`,
			"golden given for data-quality, which received nothing",
		}},
		{Name: "runtests-fail / expected an error", Failures: []string{
			file + ":27:11: expected routing to fail with rule.eval, but it succeeded",
		}},
		{Name: "runtests-fail / input file missing", Failures: []string{
			file + ":33:19: input: open " + filepath.Join(dir, "nowhere.hl7") + ": no such file or directory",
		}},
		{Name: "runtests-fail / unparseable input", Failures: []string{
			file + ":36:11: expected error code rule.eval, got hl7.parse (hl7.parse: an MLLP input refuses it before storing: it is not an HL7 v2 message: hl7.parse: segment 1 is not MSH)",
		}},
		{Name: "runtests-fail / raw payloads are checked too", Failures: []string{
			file + ":49:11: assert[0] on data-quality does not hold: destination.name == \"fhir-store\"",
			"data-quality: raw payload differs from golden wrong.data-quality.hl7 (run with --update after reviewing)",
			"  segment 3: PID-5 differs",
		}},
		// The route takes A01 and A03 only: an input that is no message
		// at all is not filtered, but refused, as an MLLP input refuses it.
		{Name: "runtests-fail / garbage is not filtered", Failures: []string{
			file + ":54:12: input: hl7.parse: an MLLP input refuses it before storing: it is not an HL7 v2 message: hl7.parse: segment 1 is not MSH",
		}},
		{Name: "runtests-fail / two messages are not one input", Failures: []string{
			file + ":59:7: input: hl7.parse: an MLLP input refuses it before storing: it holds 2 messages (MSH segments); give a test one message",
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, o := range got {
		for _, f := range o.Failures {
			if strings.Contains(f, "9990000018") {
				t.Errorf("failure text %q quotes the NHS number", f)
			}
		}
	}
}

func TestRunTestsWrongErrorCode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "route.yaml")
	src := routeHead + "match: bundle.nope == \"x\"\n" + permit + "destinations:\n  - name: fhir-store\n" +
		"tests:\n  - name: wrong code\n    input: {inline: '{\"resourceType\": \"Patient\"}'}\n    expect: {error: translate.failed}\n" +
		"  - name: unexpected error\n    input: {inline: '{\"resourceType\": \"Patient\"}'}\n    expect: {deliver: [fhir-store]}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r := loadRunTests(t, path)
	got := outcomes(r.RunTests(context.Background(), fakeTranslator{}, testEnv(t), false))
	want := []testOutcome{
		{Name: "test-route / wrong code", Failures: []string{path + ":12:11: expected error code translate.failed, got rule.eval (route test-route match: rule.eval: evaluation failed)"}},
		// At the expression that failed (line 4), naming the test.
		{Name: "test-route / unexpected error", Failures: []string{path + `:4:8: match failed for test "unexpected error": route test-route match: rule.eval: evaluation failed (detail: no such key: nope)`}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestRunTestsPointAtFailingStep: a transform step failing at run time
// is reported at its expression, as a match is.
func TestRunTestsPointAtFailingStep(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "route.yaml")
	src := routeHead + permit + "transform:\n  - keep: resource.nope == \"x\"\n" + "destinations:\n  - name: fhir-store\n" +
		"tests:\n  - name: keeps\n    input: {inline: '{\"resourceType\": \"Patient\"}'}\n    expect: {deliver: [fhir-store]}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r := loadRunTests(t, path)
	got := outcomes(r.RunTests(context.Background(), fakeTranslator{}, testEnv(t), false))
	line := strings.Count(routeHead+permit, "\n") + 2
	if len(got) != 1 || len(got[0].Failures) != 1 || !strings.HasPrefix(got[0].Failures[0], fmt.Sprintf("%s:%d:", path, line)) ||
		!strings.Contains(got[0].Failures[0], `failed for test "keeps"`) {
		t.Errorf("failures %+v, want one at line %d, the keep step", got, line)
	}
}

func TestRunTestsSaysWhyConsentDenied(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "route.yaml")
	src := "name: research-route\nsource:\n  adapter: fhir\nconsent:\n  purpose: research\n  legal_basis: s251\n  default: permit\n" +
		"destinations:\n  - name: fhir-store\ntests:\n  - name: expects delivery\n" +
		"    input: {inline: '{\"resourceType\": \"Patient\", \"identifier\": [{\"system\": \"https://fhir.nhs.uk/Id/nhs-number\", \"value\": \"9990000018\"}]}'}\n" +
		"    expect: {deliver: [fhir-store]}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r := loadRunTests(t, path)
	got := outcomes(r.RunTests(context.Background(), fakeTranslator{}, testEnv(t), false))
	want := []testOutcome{{Name: "research-route / expects delivery", Failures: []string{
		path + ":11:11: expected deliveries [fhir-store], got []",
		path + ":11:11: expected consent denials [], got [fhir-store]",
		"  fhir-store denied by gate:opt-out:stale: the national data opt-out list is stale",
		"  (a test decides with no opt-out list unless it gives one: opt_outs: [] for an empty list)",
	}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestRunTestsOptOuts checks that a test's opt_outs is the opt-out list
// its consent decisions read: a research route delivers for a patient
// not on it, and is denied for one on it or when the test gives no list.
func TestRunTestsOptOuts(t *testing.T) {
	const patient = `'{"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}]}'`
	tests := []struct {
		name, optOuts string
		deliver       bool
		failures      []string
	}{
		{"an empty list", "    opt_outs: []\n", true, nil},
		{"another patient on the list", "    opt_outs: [\"999 000 0026\"]\n", true, nil},
		{"the patient on the list", "    opt_outs: [\"9990000018\"]\n", false, nil},
		{"the patient on the list, expecting delivery", "    opt_outs: [\"9990000018\"]\n", true, []string{
			"expected deliveries [fhir-store], got []",
			"expected consent denials [], got [fhir-store]",
			"  fhir-store denied by gate:opt-out: the patient has opted out of research",
		}},
		{"no list", "", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "route.yaml")
			expect := "    expect: {denied: [fhir-store]}\n"
			if tt.deliver {
				expect = "    expect: {deliver: [fhir-store]}\n"
			}
			src := "name: research-route\nsource:\n  adapter: fhir\nconsent:\n  purpose: research\n  legal_basis: s251\n  default: permit\n" +
				"destinations:\n  - name: fhir-store\ntests:\n  - name: t\n    input: {inline: " + patient + "}\n" + tt.optOuts + expect
			if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			r := loadRunTests(t, path)
			res := r.RunTests(context.Background(), fakeTranslator{}, testEnv(t), false)
			if len(res) != 1 {
				t.Fatalf("%d results, want 1", len(res))
			}
			var got []string
			for _, f := range res[0].Failures {
				// Without the file:line:col of the test's name.
				if _, after, ok := strings.Cut(f, ":11:11: "); ok {
					f = after
				}
				got = append(got, f)
			}
			if diff := cmp.Diff(tt.failures, got); diff != "" {
				t.Errorf("failures (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadOptOutsChecked checks that an opt_outs entry that is not a
// valid NHS number is a load error at its place, which does not quote it.
func TestLoadOptOutsChecked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "route.yaml")
	src := "name: research-route\nsource:\n  adapter: fhir\nconsent:\n  purpose: research\n  legal_basis: s251\n  default: permit\n" +
		"destinations:\n  - name: fhir-store\ntests:\n  - name: t\n" +
		"    input: {inline: '{\"resourceType\": \"Patient\"}'}\n    opt_outs: [\"9990000018\", \"9990000019\"]\n    expect: {deliver: [fhir-store]}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, testEnv(t), testCatalog)
	want := path + ":13:30: tests[0].opt_outs[1]: not a valid NHS number"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "9990000019") {
		t.Fatalf("Load error %v, want one containing %q and not the number", err, want)
	}
}

// TestRunTestsUpdateKeepsFailingTestsGoldens: --update rewrites the
// goldens of the tests that otherwise pass, and leaves a failing test's
// as they are, saying so, so it never records wrong output as expected.
func TestRunTestsUpdateKeepsFailingTestsGoldens(t *testing.T) {
	src := filepath.Join("testdata", "runtests")
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(src, "pass.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const good, bad = `nhsNumber(bundle) == "9990000018"`, `nhsNumber(bundle) == "9990000026"`
	if bytes.Count(b, []byte(good)) != 1 {
		t.Fatalf("pass.yaml has no single %s to break", good)
	}
	b = bytes.Replace(b, []byte(good), []byte(bad), 1)
	a01, err := os.ReadFile(filepath.Join(src, "adt_a01.hl7"))
	if err != nil {
		t.Fatal(err)
	}
	stale := []byte("{}\n")
	files := map[string][]byte{"pass.yaml": b, "adt_a01.hl7": a01, "adt_a01.fhir-store.json": stale}
	for f, data := range files {
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := loadRunTests(t, filepath.Join(dir, "pass.yaml"))
	res := r.RunTests(context.Background(), fakeTranslator{}, testEnv(t), true)
	golden := filepath.Join(dir, "adt_a01.fhir-store.json")
	failures := strings.Join(res[0].Failures, "\n")
	if !strings.Contains(failures, "does not hold") || !strings.Contains(failures, "golden "+golden+" not updated") || len(res[0].Updated) != 0 {
		t.Errorf("failing test: failures %q, updated %v; want the assert's failure, the golden not updated", failures, res[0].Updated)
	}
	if got, _ := os.ReadFile(golden); !bytes.Equal(got, stale) {
		t.Errorf("failing test's golden rewritten: %q", got)
	}
	// The next test passes, so its golden is written.
	if want := []string{filepath.Join(dir, "a03_invalid.data-quality.hl7")}; !res[1].Passed() || !slices.Equal(res[1].Updated, want) {
		t.Errorf("passing test: failures %v, updated %v; want a pass updating %v", res[1].Failures, res[1].Updated, want)
	}
}

func TestRunTestsUpdateGolden(t *testing.T) {
	src := filepath.Join("testdata", "runtests")
	dir := t.TempDir()
	for _, f := range []string{"pass.yaml", "adt_a01.hl7"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := testEnv(t)
	r := loadRunTests(t, filepath.Join(dir, "pass.yaml"))
	golden := filepath.Join(dir, "adt_a01.fhir-store.json")
	ctx := context.Background()

	// Without the golden file the test fails and says how to create it.
	first := r.RunTests(ctx, fakeTranslator{}, env, false)
	if first[0].Passed() || !strings.Contains(strings.Join(first[0].Failures, "\n"), "run with --update to create it") {
		t.Fatalf("without golden: %v, want a failure suggesting --update", first[0].Failures)
	}

	// --update writes it, as indented JSON, and passes.
	upd := r.RunTests(ctx, fakeTranslator{}, env, true)
	if !upd[0].Passed() {
		t.Fatalf("update run failed: %v", upd[0].Failures)
	}
	if diff := cmp.Diff([]string{golden}, upd[0].Updated); diff != "" {
		t.Errorf("updated (-want +got):\n%s", diff)
	}
	written, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(src, "adt_a01.fhir-store.json"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(written)); diff != "" {
		t.Errorf("written golden differs from testdata's (-want +got):\n%s", diff)
	}

	// Updating again changes nothing and reports nothing.
	if again := r.RunTests(ctx, fakeTranslator{}, env, true); !again[0].Passed() || len(again[0].Updated) != 0 {
		t.Errorf("second update: failures %v, updated %v; want a pass that updates nothing", again[0].Failures, again[0].Updated)
	}

	// The next run passes against it.
	for _, res := range r.RunTests(ctx, fakeTranslator{}, env, false) {
		if !res.Passed() {
			t.Errorf("after update, %s failed: %v", res.Name, res.Failures)
		}
	}

	// A changed golden is a mismatch; whitespace alone is not.
	var v any
	if err := json.Unmarshal(written, &v); err != nil {
		t.Fatal(err)
	}
	compact, _ := json.Marshal(v)
	if err := os.WriteFile(golden, compact, 0o644); err != nil {
		t.Fatal(err)
	}
	if res := r.RunTests(ctx, fakeTranslator{}, env, false); !res[0].Passed() {
		t.Errorf("reformatted golden: %v, want a pass", res[0].Failures)
	}
	if err := os.WriteFile(golden, []byte(strings.Replace(string(written), "9990000018", "9990000042", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	res := r.RunTests(ctx, fakeTranslator{}, env, false)
	wantFail := []string{"fhir-store: payload differs from golden adt_a01.fhir-store.json (run with --update after reviewing)",
		`  entry[0].resource.identifier[0].value: golden "9990000042", got "9990000018"`}
	if diff := cmp.Diff(wantFail, res[0].Failures); diff != "" {
		t.Errorf("changed golden (-want +got):\n%s", diff)
	}
}

func str(s string) yamlx.String { return yamlx.String{Value: s} }

func TestTestInput(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.json"), []byte(`  {"resourceType": "Patient"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "in.hl7"), []byte("MSH|^~\\&|A\nPID|1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      InputSpec
		raw, ct string
	}{
		{"json file", InputSpec{File: str("in.json")}, `  {"resourceType": "Patient"}`, envelope.ContentTypeFHIR},
		{"hl7 file kept as is", InputSpec{File: str("in.hl7")}, "MSH|^~\\&|A\nPID|1\n", envelope.ContentTypeHL7v2},
		{"absolute file path", InputSpec{File: str(filepath.Join(dir, "in.json"))}, `  {"resourceType": "Patient"}`, envelope.ContentTypeFHIR},
		{"inline hl7 gets CR segment ends", InputSpec{Inline: str("MSH|^~\\&|A\nPID|1\n")}, "MSH|^~\\&|A\rPID|1", envelope.ContentTypeHL7v2},
		{"inline json by its brace", InputSpec{Inline: str("\ufeff\n {\"a\": 1}\n")}, "\ufeff\n {\"a\": 1}\n", envelope.ContentTypeFHIR},
		{"content type given", InputSpec{Inline: str("{x"), ContentType: envelope.ContentTypeHL7v2}, "{x", envelope.ContentTypeHL7v2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, ct, err := testInput(dir, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{tt.raw, tt.ct}, []string{string(raw), ct}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestJSONDiff(t *testing.T) {
	many := func(n int) string {
		var b strings.Builder
		b.WriteString("[")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "%d", i)
		}
		b.WriteString("]")
		return b.String()
	}
	tests := []struct {
		name      string
		want, got string
		diff      []string
	}{
		{"equal, keys reordered", `{"a":1,"b":[true]}`, `{"b":[true],"a":1}`, nil},
		{"value", `{"a":{"b":"x"}}`, `{"a":{"b":"y"}}`, []string{`a.b: golden "x", got "y"`}},
		{"absent on either side", `{"a":1}`, `{"b":2}`, []string{`a: golden 1, got (absent)`, `b: golden (absent), got 2`}},
		{"type", `{"a":[1]}`, `{"a":{"x":1}}`, []string{`a: golden [1], got {"x":1}`}},
		{"bounded", many(0), many(12), append(func() []string {
			var out []string
			for i := range 10 {
				out = append(out, fmt.Sprintf("[%d]: golden (absent), got %d", i, i))
			}
			return out
		}(), "and 2 more differences")},
		{"bad golden", `{`, `{}`, []string{"golden is not valid JSON"}},
		{"root", `[1]`, `{}`, []string{`(root): golden [1], got {}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.diff, jsonDiff([]byte(tt.want), []byte(tt.got))); diff != "" {
				t.Errorf("jsonDiff (-want +got):\n%s", diff)
			}
		})
	}
}

// listingTranslator is fakeTranslator for an MLLP input that lists the
// types it translates and relays, as the pas and pathology translators
// do.
type listingTranslator struct {
	fakeTranslator
	events, relay []string
}

func (l listingTranslator) Events() []string     { return l.events }
func (l listingTranslator) RelayTypes() []string { return l.relay }

// TestRunTestsRefuseWhatTheInputRefuses checks that a test's input an
// MLLP input would refuse before storing it (a FHIR resource, a type it
// neither translates nor relays) fails at the input, with the code the
// sender would get, rather than passing as filtered.
func TestRunTestsRefuseWhatTheInputRefuses(t *testing.T) {
	msg := func(typ string) string {
		return `"MSH|^~\\&|PAS|RX1|JUNCTION|RX1|20261123093000||` + typ + `|MSG1|P|2.4\rPID|1||9990000018^^^NHS^NH\r"`
	}
	path := filepath.Join(t.TempDir(), "route.yaml")
	src := routeHead[:len(routeHead)-1] + "\n  events: [ADT^A01]\n" + permit + "destinations:\n  - name: fhir-store\n" +
		"tests:\n" +
		"  - name: a FHIR resource\n    input: {inline: '{\"resourceType\": \"Patient\"}'}\n    expect: {filtered: true}\n" +
		"  - name: a type the input does not take\n    input: {inline: " + msg("ORU^R01") + "}\n    expect: {filtered: true}\n" +
		"  - name: an event the input does not take\n    input: {inline: " + msg("ADT^A17") + "}\n    expect: {filtered: true}\n" +
		"  - name: the refusal expected\n    input: {inline: " + msg("ORU^R01") + "}\n    expect: {error: hl7.unsupported-message}\n" +
		"  - name: a type the input relays\n    input: {inline: " + msg("SIU^S12") + "}\n    expect: {filtered: true}\n" +
		"  - name: a type it translates and the route does not take\n    input: {inline: " + msg("ADT^A03") + "}\n    expect: {filtered: true}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r := loadRunTests(t, path)
	tr := listingTranslator{events: []string{"ADT^A01", "ADT^A03"}, relay: []string{"SIU^*"}}
	got := outcomes(r.RunTests(context.Background(), tr, testEnv(t), false))
	refused := ": input: hl7.unsupported-message: an MLLP input refuses it before storing: it takes ADT^A01, ADT^A03, SIU^* (a type it does not translate can be listed in its relay setting)"
	want := []testOutcome{
		{Name: "test-route / a FHIR resource", Failures: []string{path + ":13:12: input: hl7.parse: an MLLP input refuses it before storing: it is not an HL7 v2 message: hl7.parse: segment 1 is not MSH"}},
		{Name: "test-route / a type the input does not take", Failures: []string{path + ":16:12" + refused}},
		{Name: "test-route / an event the input does not take", Failures: []string{path + ":19:12" + refused}},
		{Name: "test-route / the refusal expected"},
		{Name: "test-route / a type the input relays"},
		{Name: "test-route / a type it translates and the route does not take"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// localKeyTranslator translates a FHIR input as fakeTranslator does,
// with the Patient's first identifier's value as the patient key, as
// the adapters give a local identifier's when there is no NHS number.
type localKeyTranslator struct{ fakeTranslator }

func (t localKeyTranslator) Translate(env *envelope.Envelope) (*adapter.Translation, error) {
	tr, err := t.fakeTranslator.Translate(env)
	if err != nil {
		return nil, err
	}
	b, err := jsonmap.Decode(tr.Bundle)
	if err != nil {
		return nil, err
	}
	res := b["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
	tr.PatientKey = res["identifier"].([]any)[0].(map[string]any)["value"].(string)
	return tr, nil
}

// TestRunTestsLocalKeyThatPassesTheCheckDigit checks that a test decides
// as the engine does (LocalKey) for a patient named by a
// hospital number of ten digits that passes the NHS number check: as a
// patient whose NHS number is unknown, not as the person who has that NHS
// number, whom an empty opt-out list would let a research route reach.
func TestRunTestsLocalKeyThatPassesTheCheckDigit(t *testing.T) {
	const patient = `'{"resourceType": "Patient", "identifier": [{"system": "https://trust.example/Id/mrn", "value": "9990000018"}]}'`
	path := filepath.Join(t.TempDir(), "route.yaml")
	src := "name: research-route\nsource:\n  adapter: fhir\nconsent:\n  purpose: research\n  legal_basis: s251\n  default: permit\n" +
		"destinations:\n  - name: fhir-store\ntests:\n  - name: t\n    input: {inline: " + patient + "}\n    opt_outs: []\n    expect: {denied: [fhir-store]}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r := loadRunTests(t, path)
	res := r.RunTests(context.Background(), localKeyTranslator{}, testEnv(t), false)
	if len(res) != 1 {
		t.Fatalf("%d results, want 1", len(res))
	}
	if len(res[0].Failures) > 0 {
		t.Errorf("failures:\n%s", strings.Join(res[0].Failures, "\n"))
	}
}
