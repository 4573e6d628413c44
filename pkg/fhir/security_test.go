package fhir

import (
	"encoding/json"
	"testing"
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

func TestFromV2Event(t *testing.T) {
	tests := []struct {
		name, bundle string
		want         bool
	}{
		{"v2 event", `{"resourceType":"Bundle","type":"message","entry":[{"resource":{"resourceType":"MessageHeader","eventCoding":{"system":"` + SystemV2Event + `","code":"A02"}}}]}`, true},
		{"FHIR event", `{"resourceType":"Bundle","type":"message","entry":[{"resource":{"resourceType":"MessageHeader","eventUri":"https://example.org/event"}}]}`, false},
		{"transaction", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient"}}]}`, false},
		{"not a bundle", `{"resourceType":"Patient"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FromV2Event([]byte(tt.bundle)); got != tt.want {
				t.Errorf("FromV2Event = %v, want %v", got, tt.want)
			}
		})
	}
}
