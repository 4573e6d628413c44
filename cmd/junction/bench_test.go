package main

import "testing"

func TestParseDelivered(t *testing.T) {
	const text = `# HELP junction_delivery_messages_total Deliveries by outcome.
# TYPE junction_delivery_messages_total counter
junction_delivery_messages_total{destination="data-quality",outcome="delivered"} 7
junction_delivery_messages_total{destination="fhir-store",outcome="dead_lettered"} 2
junction_delivery_messages_total{destination="fhir-store",outcome="delivered"} 24287
junction_delivery_messages_total{destination="fhir-store-2",outcome="delivered"} 5
`
	tests := []struct {
		name, text, dest string
		want             float64
	}{
		{"delivered, not dead-lettered", text, "fhir-store", 24287},
		{"exact destination, not a prefix", text, "fhir-store-2", 5},
		{"other destination", text, "data-quality", 7},
		{"absent destination", text, "ehr", 0},
		{"labels in another order", `junction_delivery_messages_total{outcome="delivered",destination="ehr"} 3e+06`, "ehr", 3e6},
		{"empty exposition", "", "fhir-store", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseDelivered(tt.text, tt.dest); got != tt.want {
				t.Errorf("parseDelivered = %v, want %v", got, tt.want)
			}
		})
	}
}
