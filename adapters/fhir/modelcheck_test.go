package fhir

import (
	"reflect"
	"testing"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// TestModelProblem checks where modelProblem finds what the models'
// decode lets through, and that it finds nothing in sound resources.
func TestModelProblem(t *testing.T) {
	obs := reflect.TypeFor[models.Observation]()
	bundle := reflect.TypeFor[models.Bundle]()
	tests := []struct {
		name  string
		typ   reflect.Type
		body  string
		where string // "" when sound
	}{
		{"sound", obs, `{"resourceType":"Observation","status":"final","code":{"text":"Hb"},"valueQuantity":{"value":72.50},"component":[{"code":{"text":"a"},"valueInteger":3}]}`, ""},
		{"decimal as a string", obs, `{"resourceType":"Observation","valueQuantity":{"value":"72.5"}}`, "Observation.valueQuantity.value"},
		{"decimal as a string in a list", obs, `{"resourceType":"Observation","referenceRange":[{"low":{"value":1}},{"high":{"value":"2"}}]}`, "Observation.referenceRange[1].high.value"},
		{"two value[x]", obs, `{"resourceType":"Observation","valueString":"x","valueBoolean":true}`, "Observation.value[x]"},
		{"one value[x] and its extension", obs, `{"resourceType":"Observation","valueString":"x","_valueString":{"id":"a"}}`, ""},
		{"two effective[x]", obs, `{"resourceType":"Observation","effectiveDateTime":"2026-01-01","effectivePeriod":{"start":"2026-01-01"}}`, "Observation.effective[x]"},
		{"a contained resource's decimal", obs, `{"resourceType":"Observation","contained":[{"resourceType":"Observation","valueQuantity":{"value":"1"}}]}`, "Observation.contained[0].valueQuantity.value"},
		{"a contained resource of an unchecked type", obs, `{"resourceType":"Observation","contained":[{"resourceType":"Substance","anything":"1"}]}`, ""},
		{"a nested Bundle's entry", bundle, `{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation","valueQuantity":{"value":"1"}}}]}}]}`, "Bundle.entry[0].resource.entry[0].resource.valueQuantity.value"},
		{"Task's two instantiates elements", reflect.TypeFor[models.Task](), `{"resourceType":"Task","instantiatesCanonical":"http://x.example/a","instantiatesUri":"http://x.example/b"}`, ""},
		{"ClinicalImpression finding's two item elements", reflect.TypeFor[models.ClinicalImpression](), `{"resourceType":"ClinicalImpression","finding":[{"itemCodeableConcept":{"text":"a"},"itemReference":{"reference":"Condition/1"}}]}`, ""},
		{"an unknown code", reflect.TypeFor[models.Patient](), `{"resourceType":"Patient","gender":"M"}`, "Patient.gender"},
		{"an unknown code in a list", reflect.TypeFor[models.Patient](), `{"resourceType":"Patient","telecom":[{"system":"phone","value":"1"},{"system":"mobile","value":"2"}]}`, "Patient.telecom[1].system"},
		{"an unknown code in a Bundle's entry", bundle, `{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation","status":"done","code":{"text":"x"}}}]}`, "Bundle.entry[0].resource.status"},
		{"a code that JSON would escape", obs, `{"resourceType":"Observation","valueQuantity":{"value":1,"comparator":"<"}}`, ""},
		{"a birth date in a locale's order", reflect.TypeFor[models.Patient](), `{"resourceType":"Patient","birthDate":"01/02/1970"}`, "Patient.birthDate"},
		{"a dateTime choice without a time zone", obs, `{"resourceType":"Observation","effectiveDateTime":"2026-12-06T10:00:00"}`, "Observation.effectiveDateTime"},
		{"a Period's end", reflect.TypeFor[models.Encounter](), `{"resourceType":"Encounter","period":{"start":"2026-12-06","end":"6 Dec 2026"}}`, "Encounter.period.end"},
		{"an instant", obs, `{"resourceType":"Observation","issued":"yesterday"}`, "Observation.issued"},
		{"a date in a Bundle's entry", bundle, `{"resourceType":"Bundle","timestamp":"2026-12-06T10:00:00Z","entry":[{"resource":{"resourceType":"Patient","birthDate":"1970-13-01"}}]}`, "Bundle.entry[0].resource.birthDate"},
		{"dates as FHIR writes them", obs, `{"resourceType":"Observation","effectivePeriod":{"start":"2026","end":"2026-12-06T10:00:00.5+01:00"},"issued":"2026-12-06T10:00:00Z","meta":{"lastUpdated":"2026-12-06T10:00:00Z"},"valueDateTime":"2026-12"}`, ""},
		{"30 February", reflect.TypeFor[models.Patient](), `{"resourceType":"Patient","birthDate":"2026-02-30"}`, "Patient.birthDate"},
		{"29 February of a common year", reflect.TypeFor[models.Patient](), `{"resourceType":"Patient","birthDate":"2025-02-29"}`, "Patient.birthDate"},
		{"29 February of a leap year", reflect.TypeFor[models.Patient](), `{"resourceType":"Patient","birthDate":"2024-02-29"}`, ""},
		{"31 June in a dateTime", obs, `{"resourceType":"Observation","effectiveDateTime":"2026-06-31T10:00:00+01:00"}`, "Observation.effectiveDateTime"},
		{"31 April in a Period", reflect.TypeFor[models.Encounter](), `{"resourceType":"Encounter","period":{"start":"2026-04-31"}}`, "Encounter.period.start"},
		{"an element in another case", reflect.TypeFor[models.Patient](), `{"resourceType":"Patient","birthdate":"1970-01-01"}`, "Patient.birthDate"},
		{"an element in another case deeper down", obs, `{"resourceType":"Observation","valueQuantity":{"Value":1}}`, "Observation.valueQuantity.value"},
		{"a primitive's extensions in another case", reflect.TypeFor[models.Patient](), `{"resourceType":"Patient","_BirthDate":{"id":"a"}}`, "Patient._birthDate"},
		{"a primitive's extensions", reflect.TypeFor[models.Patient](), `{"resourceType":"Patient","birthDate":"1970","_birthDate":{"id":"a"}}`, ""},
		{"known codes", reflect.TypeFor[models.Patient](), `{"resourceType":"Patient","gender":"female","telecom":[{"system":"phone","value":"1"}]}`, ""},
		{"an unknown key is not shown", obs, `{"resourceType":"Observation","component":[{"valueString":"a","valueInteger":1}],"smithjohn":{"value":"1"}}`, "Observation.component[0].value[x]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			where, what, bad := modelProblem([]byte(tt.body), tt.typ, tt.typ.Name())
			if bad != (tt.where != "") || where != tt.where {
				t.Errorf("modelProblem = %q at %q (%v), want a problem at %q", what, where, bad, tt.where)
			}
		})
	}
}
