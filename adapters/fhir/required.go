package fhir

import (
	"bytes"
	"encoding/json"
	"strings"
)

// requiredElements lists, for the resource types suppliers post most, the
// top-level elements FHIR R4 requires (minimum cardinality 1), in the
// order a refusal names them. "[x]" marks a choice (medication[x]: any
// medicationCodeableConcept or medicationReference). The FHIR JSON schema
// cannot require a primitive (it may come as "_status" with only an
// extension), so even with input.schema set an Observation without status
// passed; this check takes either form.
var requiredElements = map[string][]string{
	"AllergyIntolerance": {"patient"},
	"Appointment":        {"status", "participant"},
	"Composition":        {"status", "type", "date", "author", "title"},
	"Condition":          {"subject"},
	"Consent":            {"status", "scope", "category"},
	"DiagnosticReport":   {"status", "code"},
	"DocumentReference":  {"status", "content"},
	"Encounter":          {"status", "class"},
	"Flag":               {"status", "code", "subject"},
	"Immunization":       {"status", "vaccineCode", "patient", "occurrence[x]"},
	"MedicationRequest":  {"status", "intent", "medication[x]", "subject"},
	"MessageHeader":      {"event[x]", "source"},
	"Observation":        {"status", "code"},
	"Procedure":          {"status", "subject"},
	"RelatedPerson":      {"patient"},
	"ServiceRequest":     {"status", "intent", "subject"},
}

// missingRequired returns the first element FHIR R4 requires of a
// resourceType resource that raw (its JSON object) lacks, or "". An
// element counts as present when it is given and not null or empty, or,
// for a primitive, when its "_" form is given.
func missingRequired(resourceType string, raw []byte) string {
	req := requiredElements[resourceType]
	if len(req) == 0 {
		return ""
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) != nil {
		return "" // the model decoding has said what is wrong
	}
	present := func(key string) bool {
		v, ok := top[key]
		if !ok {
			v, ok = top["_"+key]
		}
		s := strings.TrimSpace(string(v))
		return ok && s != "null" && s != "[]" && s != `""`
	}
	for _, el := range req {
		if prefix, ok := strings.CutSuffix(el, "[x]"); ok {
			found := false
			for k := range top {
				k = strings.TrimPrefix(k, "_")
				if rest, ok := strings.CutPrefix(k, prefix); ok && rest != "" && rest[0] >= 'A' && rest[0] <= 'Z' && present(k) {
					found = true
					break
				}
			}
			if !found {
				return el
			}
			continue
		}
		if !present(el) {
			return el
		}
	}
	return ""
}

// nestedContained reports whether a contained resource of res contains
// resources itself, which FHIR R4 forbids (dom-2): a receiver may refuse
// the resource, or read what it holds differently.
func nestedContained(res []byte) bool {
	if !bytes.Contains(res, []byte(`"contained"`)) {
		return false
	}
	var r struct {
		Contained []struct {
			Contained json.RawMessage `json:"contained"`
		} `json:"contained"`
	}
	if json.Unmarshal(res, &r) != nil {
		return false // the model decoding has said what is wrong
	}
	for _, c := range r.Contained {
		if len(c.Contained) > 0 {
			return true
		}
	}
	return false
}
