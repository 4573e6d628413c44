package fhir

import (
	"encoding/json"
	"testing"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

func TestLabelRedacted(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int // REDACTED labels after labelling
	}{
		{"no meta", `{"resourceType":"Patient"}`, 1},
		{"other labels kept", `{"resourceType":"Patient","meta":{"security":[{"system":"s","code":"R"}]}}`, 1},
		{"labelled once", `{"resourceType":"Patient","meta":{"security":[{"system":"` + SystemObservationValue + `","code":"REDACTED"}]}}`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var res map[string]any
			if err := json.Unmarshal([]byte(tt.in), &res); err != nil {
				t.Fatal(err)
			}
			if IsRedacted([]byte(tt.in)) != (tt.name == "labelled once") {
				t.Errorf("IsRedacted before = %v", !(tt.name == "labelled once"))
			}
			LabelRedacted(res)
			out, _ := json.Marshal(res)
			if !IsRedacted(out) {
				t.Errorf("not labelled: %s", out)
			}
			n := 0
			sec := res["meta"].(map[string]any)["security"].([]any)
			for _, x := range sec {
				if x.(map[string]any)["code"] == CodeRedacted {
					n++
				}
			}
			if n != tt.want || (tt.name == "other labels kept" && len(sec) != 2) {
				t.Errorf("labels %v", sec)
			}
		})
	}
}

func TestFromHL7v2(t *testing.T) {
	tag := `"meta":{"tag":[{"system":"` + SystemJunctionSource + `","code":"hl7v2"}]}`
	tests := []struct {
		name, bundle string
		want         bool
	}{
		{"translated message", `{"resourceType":"Bundle",` + tag + `,"type":"message","entry":[{"resource":{"resourceType":"MessageHeader"}}]}`, true},
		{"its header dropped by a keep step", `{"resourceType":"Bundle",` + tag + `,"type":"collection","entry":[{"resource":{"resourceType":"Patient"}}]}`, true},
		{"a supplier's message with a v2 event", `{"resourceType":"Bundle","type":"message","entry":[{"resource":{"resourceType":"MessageHeader","eventCoding":{"system":"http://terminology.hl7.org/CodeSystem/v2-0003","code":"A02"}}}]}`, false},
		{"other tags", `{"resourceType":"Bundle","meta":{"tag":[{"system":"x","code":"hl7v2"}]},"type":"transaction"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b models.Bundle
			if err := json.Unmarshal([]byte(tt.bundle), &b); err != nil {
				t.Fatal(err)
			}
			if got := FromHL7v2(&b); got != tt.want {
				t.Errorf("FromHL7v2 = %v, want %v", got, tt.want)
			}
		})
	}
}
