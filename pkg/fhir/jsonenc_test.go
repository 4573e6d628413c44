package fhir

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// encodingJSONString is s as encoding/json writes it, with or without
// HTML escaping.
func encodingJSONString(t testing.TB, s string, escapeHTML bool) string {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(escapeHTML)
	if err := enc.Encode(s); err != nil {
		t.Fatalf("encode: %v", err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// stringSeeds place every byte that needs escaping at each position of an
// 8-byte word, and mix in multi-byte and invalid UTF-8.
func stringSeeds() []string {
	seeds := []string{"", "a", "plain ascii text of some length", "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient",
		"é", "日本語テキスト", "\u2028\u2029", "\xff", "a\xffb", "\xe2\x80", "O'BRIEN", "tab\there", "\x7f\x00\x1f"}
	for _, c := range []string{`"`, `\`, "<", ">", "&", "\n", "\r", "\b", "\f", "\x01", "\x1f", "é", "\u2028", "\xff"} {
		for pos := 0; pos < 17; pos++ {
			seeds = append(seeds, strings.Repeat("x", pos)+c+strings.Repeat("y", 16-pos))
		}
	}
	return seeds
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range stringSeeds() {
		for _, html := range []bool{true, false} {
			want := encodingJSONString(t, s, html)
			if got := string(AppendJSONString(nil, s, html)); got != want {
				t.Errorf("AppendJSONString(%q, escapeHTML %v) = %s, want %s", s, html, got, want)
			}
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range stringSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, html := range []bool{true, false} {
			want := encodingJSONString(t, s, html)
			if got := string(AppendJSONString(nil, s, html)); got != want {
				t.Fatalf("AppendJSONString(%q, escapeHTML %v) = %s, want %s", s, html, got, want)
			}
		}
	})
}

// filler sets random values in samply models: unset, empty and set
// pointers, strings, enums (sometimes out of range), numbers, booleans
// and slices, to a bounded depth.
type filler struct {
	r *rand.Rand
}

var fillStrings = []string{"", "", "x", "a plain string", "urn:uuid:0b8c5f1e-0000-5000-8000-000000000000",
	`C<1>&"q"`, "tab\tnew\nline", "\u2028", "\xff", "Zoë"}

func (f *filler) fill(v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Pointer:
		if depth > 5 || f.r.IntN(3) == 0 {
			return
		}
		p := reflect.New(v.Type().Elem())
		f.fill(p.Elem(), depth+1)
		v.Set(p)
	case reflect.String:
		if v.Type() == reflect.TypeFor[json.Number]() {
			v.SetString([]string{"0", "1.50", "-2", "135", "1e3"}[f.r.IntN(5)])
			return
		}
		v.SetString(fillStrings[f.r.IntN(len(fillStrings))])
	case reflect.Bool:
		v.SetBool(f.r.IntN(2) == 1)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(int64(f.r.IntN(6)))
	case reflect.Slice:
		if v.Type() == reflect.TypeFor[json.RawMessage]() || depth > 5 {
			return
		}
		switch f.r.IntN(4) {
		case 0: // nil
		case 1:
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		default:
			n := 1 + f.r.IntN(2)
			s := reflect.MakeSlice(v.Type(), n, n)
			for i := range n {
				f.fill(s.Index(i), depth+1)
			}
			v.Set(s)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() && (depth == 0 || f.r.IntN(3) == 0) {
				f.fill(v.Field(i), depth+1)
			}
		}
	}
}

// resourceTypes are the models Junction's translators write.
func resourceTypes() []reflect.Type {
	return []reflect.Type{
		reflect.TypeFor[models.Bundle](), reflect.TypeFor[models.MessageHeader](), reflect.TypeFor[models.Patient](),
		reflect.TypeFor[models.Encounter](), reflect.TypeFor[models.Location](), reflect.TypeFor[models.Practitioner](),
		reflect.TypeFor[models.Organization](), reflect.TypeFor[models.RelatedPerson](), reflect.TypeFor[models.AllergyIntolerance](),
		reflect.TypeFor[models.Condition](), reflect.TypeFor[models.Provenance](), reflect.TypeFor[models.Observation](),
		reflect.TypeFor[models.DiagnosticReport](), reflect.TypeFor[models.Specimen](), reflect.TypeFor[models.ServiceRequest](),
	}
}

// TestModelEncoderMatchesEncodingJSON compares the encoder with
// MarshalResource (Prune) and with the model's MarshalJSON, resourceType
// moved first (no Prune), over randomly filled resources.
func TestModelEncoderMatchesEncodingJSON(t *testing.T) {
	var enc ModelEncoder
	f := filler{r: rand.New(rand.NewPCG(1, 2))}
	checked := 0
	for _, typ := range resourceTypes() {
		t.Run(typ.Name(), func(t *testing.T) {
			for i := range 60 {
				v := reflect.New(typ)
				if i > 0 {
					f.fill(v.Elem(), 0)
				}
				resource := v.Interface()

				want, err := MarshalResource(resource)
				if err != nil {
					t.Fatalf("MarshalResource: %v", err)
				}
				got := enc.AppendResource(nil, resource, EncodeOptions{Prune: true, EscapeHTML: true})
				if diff := cmp.Diff(string(want), string(got)); diff != "" {
					t.Fatalf("pruned %s #%d differs from MarshalResource (-want +got):\n%s", typ.Name(), i, diff)
				}

				raw, err := json.Marshal(resource)
				if err != nil {
					t.Fatalf("json.Marshal: %v", err)
				}
				wantModel := moveResourceTypeFirst(t, raw, typ.Name())
				gotModel := enc.AppendResource(nil, resource, EncodeOptions{EscapeHTML: true})
				if diff := cmp.Diff(wantModel, string(gotModel)); diff != "" {
					t.Fatalf("unpruned %s #%d differs from MarshalJSON (-want +got):\n%s", typ.Name(), i, diff)
				}
				checked++
			}
		})
	}
	if checked != 60*len(resourceTypes()) {
		t.Errorf("checked %d resources", checked)
	}
}

// moveResourceTypeFirst turns a samply MarshalJSON result, which ends
// with resourceType, into one that starts with it.
func moveResourceTypeFirst(t *testing.T, raw []byte, name string) string {
	t.Helper()
	tail := `"resourceType":"` + name + `"}`
	s := string(raw)
	if !strings.HasSuffix(s, tail) {
		t.Fatalf("MarshalJSON does not end with resourceType: %.200s", s)
	}
	body := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(s, tail), "{"), ",")
	if body == "" {
		return "{" + tail
	}
	return `{"resourceType":"` + name + `",` + body + "}"
}

func TestModelEncoderHTMLEscaping(t *testing.T) {
	var enc ModelEncoder
	q := &models.Observation{ValueQuantity: &models.Quantity{Comparator: ptrTo(models.QuantityComparatorLessThan), Unit: ptrTo("a&b")}}
	tests := []struct {
		name string
		opts EncodeOptions
		want string
	}{
		{"escaped", EncodeOptions{Prune: true, EscapeHTML: true}, `{"resourceType":"Observation","status":"registered","valueQuantity":{"comparator":"\u003c","unit":"a\u0026b"}}`},
		{"unescaped", EncodeOptions{Prune: true}, `{"resourceType":"Observation","status":"registered","valueQuantity":{"comparator":"<","unit":"a&b"}}`},
		{"unpruned", EncodeOptions{}, `{"resourceType":"Observation","status":"registered","code":{},"valueQuantity":{"comparator":"<","unit":"a&b"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(enc.AppendResource(nil, q, tt.opts)); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestModelEncoderValuesAndPointers(t *testing.T) {
	var enc ModelEncoder
	p := models.Patient{Id: ptrTo("p1"), Active: ptrTo(false)}
	want := `{"resourceType":"Patient","id":"p1","active":false}`
	opts := EncodeOptions{Prune: true, EscapeHTML: true}
	pp := &p
	for name, v := range map[string]any{"value": p, "pointer": &p, "pointer to pointer": &pp} {
		if got := string(enc.AppendResource(nil, v, opts)); got != want {
			t.Errorf("%s: got %s, want %s", name, got, want)
		}
	}
	if got := string(enc.AppendResource([]byte("x"), (*models.Patient)(nil), opts)); got != "xnull" {
		t.Errorf("nil resource: got %s, want xnull", got)
	}
}

func TestDeterministicURN(t *testing.T) {
	long := strings.Repeat("long part ", 40) // past the stack buffer
	for _, parts := range [][]string{nil, {"msg-1", "Patient"}, {"msg-1", "Observation/1/2"}, {long, long}} {
		if got, want := DeterministicURN(parts...), "urn:uuid:"+DeterministicUUID(parts...); got != want {
			t.Errorf("DeterministicURN(%q) = %s, want %s", parts, got, want)
		}
		if got, want := string(AppendDeterministicURN([]byte("x"), parts...)), "xurn:uuid:"+DeterministicUUID(parts...); got != want {
			t.Errorf("AppendDeterministicURN(x, %q) = %s, want %s", parts, got, want)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }

// BenchmarkAppendJSONString writes strings typical of a bundle: URLs,
// urn:uuid references, codes and names.
func BenchmarkAppendJSONString(b *testing.B) {
	strs := []string{"https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient", "urn:uuid:0b8c5f1e-1234-5000-8000-000000000000",
		"Patient", "male", "9990000093", "https://fhir.nhs.uk/Id/nhs-number", "TESTPATIENT", "JORDAN", "2024-07-16T10:15:00+01:00", "I", "http://terminology.hl7.org/CodeSystem/v2-0004"}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = buf[:0]
		for _, s := range strs {
			buf = AppendJSONString(buf, s, true)
		}
	}
}

// TestModelEncoderConcurrent encodes with one fresh encoder from many
// goroutines, so that plans are compiled while others read them (run
// with -race).
func TestModelEncoderConcurrent(t *testing.T) {
	var enc ModelEncoder
	f := filler{r: rand.New(rand.NewPCG(5, 6))}
	var resources []any
	for _, typ := range resourceTypes() {
		v := reflect.New(typ)
		f.fill(v.Elem(), 0)
		resources = append(resources, v.Interface())
	}
	want := make([]string, len(resources))
	for i, r := range resources {
		raw, err := MarshalResource(r)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = string(raw)
	}
	errs := make(chan string, 8*len(resources))
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for k := range resources {
				i := (k + g) % len(resources)
				if got := string(enc.AppendResource(nil, resources[i], EncodeOptions{Prune: true, EscapeHTML: true})); got != want[i] {
					errs <- got
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
	close(errs)
	for got := range errs {
		t.Errorf("concurrent encoding differs: %.200s", got)
	}
}
