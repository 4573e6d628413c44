package fhir

import (
	"encoding/json"
	"testing"
)

func TestInsertPrimitiveExtension(t *testing.T) {
	const ext = `"_birthDate":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient-birthTime","valueDateTime":"1980-07-02T15:30:00+01:00"}]}`
	tests := []struct {
		name string
		in   string
		want string // "" when nothing is inserted
	}{
		{"after the member", `{"resourceType":"Patient","birthDate":"1980-07-02","gender":"female"}`,
			`{"resourceType":"Patient","birthDate":"1980-07-02",` + ext + `,"gender":"female"}`},
		{"last member", `{"resourceType":"Patient","birthDate":"1980-07-02"}`,
			`{"resourceType":"Patient","birthDate":"1980-07-02",` + ext + `}`},
		{"nested member ignored", `{"resourceType":"Patient","contact":[{"birthDate":"x"}],"name":[{"birthDate":"y"}],"birthDate":"1980-07-02"}`,
			`{"resourceType":"Patient","contact":[{"birthDate":"x"}],"name":[{"birthDate":"y"}],"birthDate":"1980-07-02",` + ext + `}`},
		{"key inside a string value ignored", `{"resourceType":"Patient","id":"\",\"birthDate\":\"","birthDate":"1980-07-02"}`,
			`{"resourceType":"Patient","id":"\",\"birthDate\":\"","birthDate":"1980-07-02",` + ext + `}`},
		{"value equal to the key name", `{"resourceType":"Patient","gender":"birthDate"}`, ""},
		{"no member", `{"resourceType":"Patient","gender":"female"}`, ""},
		{"not a string", `{"resourceType":"Patient","birthDate":19800702}`, ""},
		{"nested only", `{"resourceType":"Patient","contact":[{"birthDate":"1980-07-02"}]}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A prefix and spare capacity, as in a bundle buffer.
			buf := append(make([]byte, 0, 512), `{"entry":[`...)
			buf = append(buf, tt.in...)
			got, ok := InsertPrimitiveExtension(buf[len(`{"entry":[`):], "birthDate", ExtensionPatientBirthTime, "valueDateTime", "1980-07-02T15:30:00+01:00")
			want := tt.want
			if want == "" {
				want = tt.in
			}
			if ok != (tt.want != "") || string(got) != want {
				t.Fatalf("got %v %s\nwant %v %s", ok, got, tt.want != "", want)
			}
			if !json.Valid(got) {
				t.Errorf("result is not JSON: %s", got)
			}
			if string(buf[:len(`{"entry":[`)]) != `{"entry":[` {
				t.Error("prefix changed")
			}
		})
	}
}
