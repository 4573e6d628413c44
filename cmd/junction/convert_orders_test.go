package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

func TestConvertToOrder(t *testing.T) {
	src := filepath.Join("..", "..", "adapters", "pathology", "testdata", "orders", "fbc-encounter.bundle.json")
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("order bundle fixture: %v", err)
	}
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.json", `{"resourceType":"Bundle","entry":[]}`)
	settings := writeFile(t, dir, "order.yaml", "sending_application: EPR\nreceiving_application: LIMS\n")
	tests := []struct {
		name     string
		args     []string
		code     int
		msh9     string
		app      string
		version  string
		messages int
		stderr   string
	}{
		// As a pathology destination with no sending_application sends
		// it: MSH-3 empty.
		{"default OML 2.5", []string{"--to", "hl7v2-order", src}, 0, "OML^O21^OML_O21", "", "2.5", 1, ""},
		{"ORM 2.3 with settings", []string{"--to", "hl7v2-order", "--hl7-version", "2.3", "--message-type", "ORM^O01", "--dialect", settings, src}, 0, "ORM^O01", "EPR", "2.3", 1, ""},
		{"bad bundle among good", []string{"--to", "hl7v2-order", src, bad, src}, 1, "OML^O21^OML_O21", "", "2.5", 2, "bad.json: fhir.invalid-resource: order bundle has no ServiceRequest"},
		{"OML in 2.3 refused", []string{"--to", "hl7v2-order", "--hl7-version", "2.3", src}, 2, "", "", "", 0, "OML^O21 needs version 2.4"},
		{"unknown direction", []string{"--to", "xml", src}, 2, "", "", "", 0, "--to"},
		{"version without --to", []string{"--hl7-version", "2.4", src}, 2, "", "", "", 0, "need --to hl7v2-order"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := convertRun(t, "", all.Factories(), tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, stderr)
			}
			if tc.stderr != "" && !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr, tc.stderr)
			}
			if strings.Contains(stderr, "9990000018") {
				t.Errorf("stderr holds patient data")
			}
			if tc.messages == 0 {
				return
			}
			if strings.Contains(stdout, "\r") {
				t.Error("output holds carriage returns")
			}
			msgs := strings.SplitAfter(stdout, "\n")
			var starts []int
			for i, l := range msgs {
				if strings.HasPrefix(l, "MSH|") {
					starts = append(starts, i)
				}
			}
			if len(starts) != tc.messages {
				t.Fatalf("%d messages, want %d:\n%s", len(starts), tc.messages, stdout)
			}
			end := len(msgs)
			if len(starts) > 1 {
				end = starts[1]
			}
			m, err := hl7v2.Parse([]byte(strings.Join(msgs[starts[0]:end], "")))
			if err != nil {
				t.Fatalf("output does not parse: %v", err)
			}
			if got := m.Segment("MSH").Field(9); got != tc.msh9 {
				t.Errorf("MSH-9 %q, want %q", got, tc.msh9)
			}
			if got := m.SendingApp(); got != tc.app {
				t.Errorf("MSH-3 %q, want %q", got, tc.app)
			}
			if m.Version() != tc.version {
				t.Errorf("MSH-12 %q, want %q", m.Version(), tc.version)
			}
			if m.Segment("PID").Repetition(3, 1) != "9990000018^^^NHS^NH" {
				t.Errorf("PID-3 %q", m.Segment("PID").Repetition(3, 1))
			}
		})
	}
	// The same input gives the same output.
	_, a, _ := convertRun(t, "", all.Factories(), "--to", "hl7v2-order", src)
	_, b, _ := convertRun(t, "", all.Factories(), "--to", "hl7v2-order", src)
	if a != b || a == "" {
		t.Error("output not reproducible")
	}
}
