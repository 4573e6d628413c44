package fhir

import "encoding/json"

// SystemObservationValue is the HL7 v3 ObservationValue code system, whose
// code CodeRedacted is the security label of a resource with elements
// removed on purpose.
const SystemObservationValue = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"

// CodeRedacted is the security label code "redacted".
const CodeRedacted = "REDACTED"

// SystemV2Event is HL7 table 0003, the v2 trigger events: the
// MessageHeader.eventCoding system of a bundle translated from HL7 v2.
const SystemV2Event = "http://terminology.hl7.org/CodeSystem/v2-0003"

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

// FromV2Event reports whether bundle is a message Bundle whose
// MessageHeader names an HL7 v2 trigger event (SystemV2Event): one
// translated from HL7 v2.
func FromV2Event(bundle []byte) bool {
	hs, err := FindResources(bundle, "MessageHeader")
	if err != nil || len(hs) == 0 {
		return false
	}
	var h struct {
		EventCoding struct {
			System string `json:"system"`
		} `json:"eventCoding"`
	}
	return json.Unmarshal(hs[0], &h) == nil && h.EventCoding.System == SystemV2Event
}
