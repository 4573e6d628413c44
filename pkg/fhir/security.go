package fhir

import (
	"encoding/json"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// SystemObservationValue is the HL7 v3 ObservationValue code system, whose
// code CodeRedacted is the security label of a resource with elements
// removed on purpose.
const SystemObservationValue = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"

// CodeRedacted is the security label code "redacted".
const CodeRedacted = "REDACTED"

// SystemJunctionSource is the code system of the Bundle.meta.tag with
// which Junction's translators mark what they made from another format;
// CodeSourceHL7v2 is the tag of a Bundle translated from HL7 v2. A tag
// on the Bundle survives routes' transform steps, which may drop the
// MessageHeader.
const (
	SystemJunctionSource = "https://junction-fhir.github.io/source"
	CodeSourceHL7v2      = "hl7v2"
)

// FromHL7v2 reports whether the Bundle b carries the Bundle.meta.tag
// CodeSourceHL7v2: Junction translated it from HL7 v2, whose fields left
// empty mean no change.
func FromHL7v2(b *models.Bundle) bool {
	if b == nil || b.Meta == nil {
		return false
	}
	for _, t := range b.Meta.Tag {
		if t.System != nil && *t.System == SystemJunctionSource && t.Code != nil && *t.Code == CodeSourceHL7v2 {
			return true
		}
	}
	return false
}

// LabelRedacted adds the REDACTED security label to the meta.security of
// res (a JSON-shaped resource), once.
func LabelRedacted(res map[string]any) {
	meta, _ := res["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		res["meta"] = meta
	}
	sec, _ := meta["security"].([]any)
	for _, x := range sec {
		if c, _ := x.(map[string]any); c["system"] == SystemObservationValue && c["code"] == CodeRedacted {
			return
		}
	}
	meta["security"] = append(sec, map[string]any{"system": SystemObservationValue, "code": CodeRedacted, "display": "redacted"})
}

// IsRedacted reports whether the resource raw carries the REDACTED
// security label.
func IsRedacted(raw []byte) bool {
	var head struct {
		Meta struct {
			Security []struct {
				System string `json:"system"`
				Code   string `json:"code"`
			} `json:"security"`
		} `json:"meta"`
	}
	if json.Unmarshal(raw, &head) != nil {
		return false
	}
	for _, c := range head.Meta.Security {
		if c.System == SystemObservationValue && c.Code == CodeRedacted {
			return true
		}
	}
	return false
}
