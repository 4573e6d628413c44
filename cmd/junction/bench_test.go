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

func TestParseCPU(t *testing.T) {
	tests := []struct {
		name string
		text string
		want float64
	}{
		{"present", "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 78.53\nprocess_cpu_seconds_totally 1\n", 78.53},
		{"absent", "junction_ingress_commits_total 5\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseCPU(tt.text); got != tt.want {
				t.Errorf("parseCPU = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseCommits(t *testing.T) {
	const text = `# HELP junction_ingress_commits_total Group-commit writes.
# TYPE junction_ingress_commits_total counter
junction_ingress_commits_total 21158
junction_ingress_commit_messages_total 73693
junction_ingress_commit_seconds_bucket{le="0.001"} 20000
junction_ingress_commit_seconds_sum 9.344907
junction_ingress_commit_seconds_count 21158
junction_ingress_commits_totally_other 5
`
	tests := []struct {
		name   string
		text   string
		before commitStats
		want   commitStats
	}{
		{"from start", text, commitStats{}, commitStats{21158, 73693, 9.344907, 21158}},
		{"since a scrape", text, commitStats{158, 693, 0.344907, 158}, commitStats{21000, 73000, 9, 21000}},
		{"group commit off", "junction_ingress_acks_total{adapter=\"pas\",code=\"AA\"} 5\n", commitStats{}, commitStats{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseCommits(tt.text).since(tt.before)
			const eps = 1e-9
			if d := got.seconds - tt.want.seconds; got.writes != tt.want.writes || got.messages != tt.want.messages || got.timed != tt.want.timed || d > eps || d < -eps {
				t.Errorf("parseCommits = %+v, want %+v", got, tt.want)
			}
		})
	}
}
