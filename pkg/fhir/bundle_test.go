package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestDeterministicUUID(t *testing.T) {
	tests := []struct {
		name string
		a, b []string
		same bool
	}{
		{"same parts", []string{"msg-1", "Patient"}, []string{"msg-1", "Patient"}, true},
		{"different kind", []string{"msg-1", "Patient"}, []string{"msg-1", "Encounter"}, false},
		{"different id", []string{"msg-1", "Patient"}, []string{"msg-2", "Patient"}, false},
		{"boundaries matter", []string{"ab", "c"}, []string{"a", "bc"}, false},
		{"empty part counts", []string{"a", ""}, []string{"a"}, false},
		{"no parts", nil, nil, true},
		{"separator not confusable", []string{"a\x00b"}, []string{"a", "b"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := DeterministicUUID(tt.a...), DeterministicUUID(tt.b...)
			for _, u := range []string{a, b} {
				if !uuidPattern.MatchString(u) {
					t.Fatalf("%q is not a version 5 RFC 4122 UUID", u)
				}
			}
			if (a == b) != tt.same {
				t.Errorf("DeterministicUUID(%q) = %s, DeterministicUUID(%q) = %s; same = %v, want %v", tt.a, a, tt.b, b, a == b, tt.same)
			}
		})
	}
}

// TestDeterministicUUIDStable pins one value: fullUrls of replayed
// messages must not change between releases. Change this only with a
// release note.
func TestDeterministicUUIDStable(t *testing.T) {
	got := DeterministicUUID("01J0000000000000000000000", "Patient")
	const want = "ee46fd27-77d7-5a5e-bbc6-0e5aed6c1466"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DeterministicUUID changed (-want +got):\n%s", diff)
	}
}

func TestDeterministicUUIDDistinct(t *testing.T) {
	seen := map[string]int{}
	for i := range 20000 {
		u := DeterministicUUID("msg", string(rune('a'+i%26)), strings.Repeat("x", i/26))
		if j, ok := seen[u]; ok {
			t.Fatalf("inputs %d and %d share UUID %s", j, i, u)
		}
		seen[u] = i
	}
}

func refTo[T any](v T) *T { return &v }

func TestEntryFor(t *testing.T) {
	mh := models.MessageHeader{
		EventCoding: models.Coding{System: refTo("http://terminology.hl7.org/CodeSystem/v2-0003"), Code: refTo("A01")},
		Source:      models.MessageHeaderSource{Name: refTo("PAS"), Endpoint: "urn:example:pas"},
	}
	e, err := EntryFor(mh, "urn:uuid:"+DeterministicUUID("m", "MessageHeader"))
	if err != nil {
		t.Fatalf("EntryFor: %v", err)
	}
	if e.FullUrl == nil || !strings.HasPrefix(*e.FullUrl, "urn:uuid:") {
		t.Errorf("fullUrl = %v", e.FullUrl)
	}
	if !bytes.HasPrefix(e.Resource, []byte(`{"resourceType":"MessageHeader",`)) {
		t.Errorf("resourceType is not the first member: %s", e.Resource)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(e.Resource, &members); err != nil {
		t.Fatalf("resource is not an object: %v", err)
	}
	if _, ok := members["eventUri"]; ok {
		t.Errorf("empty eventUri kept: %s", e.Resource)
	}
	if got, _ := ResourceType(e.Resource); got != "MessageHeader" {
		t.Errorf("resourceType = %q", got)
	}
	back, err := models.UnmarshalMessageHeader(e.Resource)
	if err != nil {
		t.Fatalf("UnmarshalMessageHeader: %v", err)
	}
	if diff := cmp.Diff(mh, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}

	noURL, err := EntryFor(models.Patient{Id: refTo("p")}, "")
	if err != nil {
		t.Fatalf("EntryFor without fullUrl: %v", err)
	}
	if noURL.FullUrl != nil {
		t.Errorf("fullUrl = %q, want none", *noURL.FullUrl)
	}
}

func TestEntryForRejectsNonResources(t *testing.T) {
	tests := []struct {
		name string
		v    any
	}{
		{"map without resourceType", map[string]string{"id": "x"}},
		{"string", "Patient"},
		{"unmarshalable", func() {}},
		{"empty resourceType", map[string]string{"resourceType": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := EntryFor(tt.v, "urn:uuid:x"); err == nil {
				t.Errorf("EntryFor(%T) succeeded", tt.v)
			}
		})
	}
}

func TestResourceType(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr error
	}{
		{"first member", `{"resourceType":"Patient","id":"x"}`, "Patient", nil},
		{"after other members", `{"id":"x","meta":{"profile":["a"]},"resourceType":"Encounter"}`, "Encounter", nil},
		{"nested one ignored", `{"contained":[{"resourceType":"Practitioner"}],"resourceType":"Patient"}`, "Patient", nil},
		{"whitespace", " \n{ \"resourceType\" : \"Bundle\" }", "Bundle", nil},
		{"missing", `{"id":"x"}`, "", ErrNoResourceType},
		{"nested only", `{"entry":[{"resourceType":"Patient"}]}`, "", ErrNoResourceType},
		{"number", `{"resourceType":1}`, "", ErrNoResourceType},
		{"empty string", `{"resourceType":""}`, "", ErrNoResourceType},
		{"array", `[{"resourceType":"Patient"}]`, "", ErrNotResource},
		{"string", `"Patient"`, "", ErrNotResource},
		{"empty", ``, "", ErrNotResource},
		{"broken", `{"id":`, "", ErrNotResource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResourceType([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("ResourceType error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ResourceType = %q, want %q", got, tt.want)
			}
		})
	}
}

func testBundle(t *testing.T) []byte {
	t.Helper()
	var entries []models.BundleEntry
	for i, r := range []any{
		models.MessageHeader{EventCoding: models.Coding{Code: refTo("A01")}, Source: models.MessageHeaderSource{Endpoint: "urn:x"}},
		models.Patient{Id: refTo("p1")},
		models.Encounter{Id: refTo("e1"), Class: models.Coding{Code: refTo("IMP")}},
		models.Patient{Id: refTo("p2")},
	} {
		e, err := EntryFor(r, "urn:uuid:"+DeterministicUUID("b", string(rune('0'+i))))
		if err != nil {
			t.Fatalf("EntryFor: %v", err)
		}
		entries = append(entries, e)
	}
	entries = append(entries, models.BundleEntry{FullUrl: refTo("urn:uuid:none")})
	raw, err := json.Marshal(models.Bundle{Type: models.BundleTypeMessage, Entry: entries})
	if err != nil {
		t.Fatalf("marshal bundle: %v", err)
	}
	return raw
}

func TestFindResources(t *testing.T) {
	bundle := testBundle(t)
	ids := func(raws []json.RawMessage) []string {
		var out []string
		for _, r := range raws {
			var v struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
			}
			if err := json.Unmarshal(r, &v); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			out = append(out, v.ResourceType+"/"+v.ID)
		}
		return out
	}
	tests := []struct {
		typ  string
		want []string
	}{
		{"Patient", []string{"Patient/p1", "Patient/p2"}},
		{"Encounter", []string{"Encounter/e1"}},
		{"Observation", nil},
		{"", []string{"MessageHeader/", "Patient/p1", "Encounter/e1", "Patient/p2"}},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			got, err := FindResources(bundle, tt.typ)
			if err != nil {
				t.Fatalf("FindResources: %v", err)
			}
			if diff := cmp.Diff(tt.want, ids(got)); diff != "" {
				t.Errorf("FindResources(%q) (-want +got):\n%s", tt.typ, diff)
			}
		})
	}
}

func TestFindResourcesErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
	}{
		{"not a bundle", `{"resourceType":"Patient"}`, ErrNotBundle},
		{"not json", `nope`, ErrNotResource},
		{"entry without type", `{"resourceType":"Bundle","entry":[{"resource":{"id":"x"}}]}`, ErrNoResourceType},
		{"entry wrong shape", `{"resourceType":"Bundle","entry":{"resource":1}}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FindResources([]byte(tt.in), "Patient")
			if err == nil {
				t.Fatal("FindResources succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestFindResourcesErrorHidesContent(t *testing.T) {
	_, err := FindResources([]byte(`{"resourceType":"Bundle","entry":[{"resource":"TESTPATIENT ALEX"}]}`), "")
	if err == nil || strings.Contains(err.Error(), "TESTPATIENT") {
		t.Errorf("error = %v; want an error without payload content", err)
	}
}

func TestPruneEmpty(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"drops empties", `{"a":"","b":{"c":[]},"d":[{"e":""}],"f":1.50,"g":false,"h":null}`, `{"f":1.50,"g":false}`},
		{"keeps order", `{"z":1,"a":{"y":"v","b":""},"m":[1,"",2]}`, `{"z":1,"a":{"y":"v"},"m":[1,2]}`},
		{"keeps escapes", `{"a":"x\"<y>\u00e9\\"}`, `{"a":"x\"<y>\u00e9\\"}`},
		{"whitespace only string kept", `{"a":" "}`, `{"a":" "}`},
		{"all empty", `{"a":{"b":[{}]}}`, ``},
		{"zero kept", `{"a":0,"b":true}`, `{"a":0,"b":true}`},
		{"resourceType first", `{"id":"x","meta":{"a":""},"resourceType":"Patient"}`, `{"resourceType":"Patient","id":"x"}`},
		{"nested resourceType stays", `{"id":"x","contained":[{"id":"y","resourceType":"Practitioner"}],"resourceType":"Patient"}`, `{"resourceType":"Patient","id":"x","contained":[{"id":"y","resourceType":"Practitioner"}]}`},
		{"array top level", `["",{"a":""},1]`, `[1]`},
		{"string top level", `"x"`, `"x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pruneEmpty([]byte(tt.in))
			if err != nil {
				t.Fatalf("pruneEmpty: %v", err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("pruneEmpty (-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range []string{`{"a":1} x`, `{"a":`, `{"a" 1}`, ``} {
		if _, err := pruneEmpty([]byte(bad)); err == nil {
			t.Errorf("pruneEmpty(%q) succeeded", bad)
		}
	}
}

func FuzzResourceType(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Patient"}`))
	f.Add([]byte(`{"contained":[{"resourceType":"X"}],"resourceType":"Patient"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"}}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := ResourceType(raw)
		if _, ferr := FindResources(raw, ""); ferr == nil && got != "Bundle" {
			t.Fatalf("FindResources accepted a %q", got)
		}
		if err != nil || !json.Valid(raw) || bytes.Count(raw, []byte("resourceType")) != 1 || bytes.ContainsRune(raw, '\\') {
			return
		}
		var v map[string]any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("ResourceType accepted a non-object: %v", err)
		}
		if v["resourceType"] != got {
			t.Fatalf("ResourceType = %q, decoded %v", got, v["resourceType"])
		}
	})
}

func FuzzPruneEmpty(f *testing.F) {
	f.Add([]byte(`{"a":"","b":{"c":[]},"d":[{"e":""}],"f":1.50}`))
	f.Add([]byte(`{"resourceType":"Patient","name":[{"given":["A",""]}]}`))
	f.Add([]byte(`[1,2,{"x":null}]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, err := pruneEmpty(raw)
		if err != nil {
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("pruneEmpty accepted invalid JSON")
		}
		if len(out) == 0 {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("pruneEmpty produced invalid JSON %q", out)
		}
		again, err := pruneEmpty(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("pruneEmpty not idempotent: %q then %q (%v)", out, again, err)
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("decode pruned: %v", err)
		}
		if path, ok := findEmpty(v, "$"); ok {
			t.Fatalf("pruneEmpty left an empty value at %s in %q", path, out)
		}
	})
}

// findEmpty returns the path of the first "", null, {} or [] in v.
func findEmpty(v any, path string) (string, bool) {
	switch x := v.(type) {
	case nil:
		return path, true
	case string:
		return path, x == ""
	case []any:
		if len(x) == 0 {
			return path, true
		}
		for i, item := range x {
			if p, ok := findEmpty(item, fmt.Sprintf("%s[%d]", path, i)); ok {
				return p, true
			}
		}
	case map[string]any:
		if len(x) == 0 {
			return path, true
		}
		for k, item := range x {
			if p, ok := findEmpty(item, path+"."+k); ok {
				return p, true
			}
		}
	}
	return "", false
}

func BenchmarkEntryFor(b *testing.B) {
	p := models.Patient{
		Id:        refTo("p"),
		Meta:      &models.Meta{Profile: []string{"https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"}},
		Name:      []models.HumanName{{Family: refTo("TESTPATIENT"), Given: []string{"ALEX"}}},
		BirthDate: refTo("1970-01-01"),
	}
	for b.Loop() {
		if _, err := EntryFor(p, "urn:uuid:x"); err != nil {
			b.Fatal(err)
		}
	}
}
