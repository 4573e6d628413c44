package patient

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/go-cmp/cmp"
)

func TestSourceAfter(t *testing.T) {
	tests := []struct {
		name string
		a, b Source
		want bool
	}{
		{"later receipt", src(2), src(1), true},
		{"earlier receipt", src(1), src(2), false},
		{"same", src(1), src(1), false},
		{"same time, greater id", Source{MessageID: "B", Received: base}, Source{MessageID: "A", Received: base}, true},
		{"same time, smaller id", Source{MessageID: "A", Received: base}, Source{MessageID: "B", Received: base}, false},
		{"anything after zero", src(0), Source{}, true},
		{"zero after nothing", Source{}, src(0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.After(tt.b); got != tt.want {
				t.Errorf("After = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCEL evaluates expressions over the view, as pkg/rules will: the
// values must be CEL-compatible and the keys the documented ones.
func TestCEL(t *testing.T) {
	now := base.Add(time.Hour)
	r := &Record{
		NHSNumber: num(t, 0), Identifiers: []Identifier{local("H1")}, Family: "TESTPATIENT", Given: []string{"ALEX", "J"},
		BirthDate: "1980-02-03", Gender: "female", Postcode: "LS1 4AB", GPPractice: "Y99999", GP: "G9999991",
		Flags: []Flag{
			{System: "https://example.org/f", Code: "CPP", Start: base, Origin: "socialcare/test"},
			{System: "https://example.org/f", Code: "OLD", Start: base, End: base.Add(time.Minute)},
		},
		Consent:    ConsentSummary{HasActiveConsent: true},
		Restricted: true, UpdatedAt: base, MessageID: "01TESTMSG",
	}
	env, err := cel.NewEnv(cel.Variable("patient", cel.MapType(cel.StringType, cel.DynType)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		expr string
		rec  *Record
		want any
	}{
		{`patient.gpPractice == "Y99999" && patient.gp == "G9999991"`, r, true},
		{`"CPP" in patient.activeFlags && !("OLD" in patient.activeFlags)`, r, true},
		{`patient.flags.exists(f, f.code == "OLD" && !f.active && f.end != "")`, r, true},
		{`patient.flags.filter(f, f.active).map(f, f.origin)`, r, []any{"socialcare/test"}},
		{`patient.restricted && patient.consent.hasActiveConsent && !patient.consent.optedOut`, r, true},
		{`patient.merged`, r, false},
		{`patient.merged`, &Record{NHSNumber: num(t, 0), ResolvedFrom: num(t, 1)}, true},
		{`patient.given.size() == 2 && patient.identifiers[0].value == "H1"`, r, true},
		{`has(patient.nhsNumber)`, nil, false},
		{`patient.updated`, r, "2026-03-01T09:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			ast, iss := env.Compile(tt.expr)
			if iss.Err() != nil {
				t.Fatal(iss.Err())
			}
			prg, err := env.Program(ast)
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := prg.Eval(map[string]any{"patient": tt.rec.CELAt(now)})
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			got := out.Value()
			if _, isList := tt.want.([]any); isList {
				if got, err = out.ConvertToNative(reflect.TypeFor[[]any]()); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestPASBundles applies the PAS translator's golden output, so a change
// to what the translator emits that the index no longer reads fails here.
func TestPASBundles(t *testing.T) {
	dir := filepath.Join("..", "..", "adapters", "pas", "testdata")
	read := func(t *testing.T, name string) []byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("PAS golden file (in the repository, adapters/pas/testdata): %v", err)
		}
		return data
	}
	js := startJetStream(t)
	t.Run("A01 with registered GP", func(t *testing.T) {
		ix := openIndex(t, js, "PATIENTS_PAS_A01")
		res, err := ix.ApplyJSON(t.Context(), read(t, "a01-full-segments.fhir.json"), src(1))
		if err != nil {
			t.Fatal(err)
		}
		wantResult(t, res, Result{Event: "A01", Updated: 1})
		r := get(t, ix, "9990000093")
		if r.GPPractice != "Y99999" || r.GP != "G9999991" || r.Family == "" || r.BirthDate == "" {
			t.Errorf("practice %q gp %q family set %v birth date set %v", r.GPPractice, r.GP, r.Family != "", r.BirthDate != "")
		}
	})
	t.Run("A40 with two groups", func(t *testing.T) {
		ix := openIndex(t, js, "PATIENTS_PAS_A40")
		res, err := ix.ApplyJSON(t.Context(), read(t, "a40-merge-two-groups.fhir.json"), src(1))
		if err != nil {
			t.Fatal(err)
		}
		wantResult(t, res, Result{Event: "A40", Updated: 2, Merged: 2})
		for old, survivor := range map[string]string{"9990000220": "9990000212"} {
			if r := get(t, ix, old); r.NHSNumber != survivor {
				t.Errorf("old number resolves elsewhere")
			}
		}
		if r, err := ix.GetByIdentifier(t.Context(), local("H399940")); err != nil || r.NHSNumber != "9990000212" {
			t.Errorf("old hospital number: %v", err)
		}
	})
	t.Run("A34 with an old record known only by hospital number", func(t *testing.T) {
		ix := openIndex(t, js, "PATIENTS_PAS_A34")
		old := num(t, 7)
		apply(t, ix, bundle(t, "A01", pat{nhsNumber: old, ids: []Identifier{local("H399934")}}), src(1))
		res, err := ix.ApplyJSON(t.Context(), read(t, "a34-merge-id-only.fhir.json"), src(2))
		if err != nil {
			t.Fatal(err)
		}
		wantResult(t, res, Result{Event: "A34", Updated: 1, Merged: 1})
		if r := get(t, ix, old); r.NHSNumber != "9990000204" {
			t.Error("old record not merged into the survivor")
		}
	})
}
