package engine_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/engine"
)

// TestPlaceholderWarnings: settings left at the placeholder systems
// under example-trust.nhs.uk are warned of, each at its place in the
// config (or its nearest section when it is a default), once a
// destination sends beyond Junction; with file destinations alone (the
// defaults) nothing is said.
func TestPlaceholderWarnings(t *testing.T) {
	const (
		inputs  = "inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n  pathology: {type: pathology, listen: 127.0.0.1:0}\n  fhir: {type: fhir}\n"
		fhirOut = "destinations:\n  fhir-store: {type: fhir, url: 'http://127.0.0.1:1/fhir'}\n  data-quality: {type: file, dir: dq}\n"
		limsOut = "destinations:\n  fhir-store: {type: file, dir: fs}\n  data-quality: {type: file, dir: dq}\n  lims: {type: pathology, address: '127.0.0.1:1'}\n"
	)
	tailFor := func(dests string) string {
		return ": a placeholder system under example-trust.nhs.uk: the receivers behind " + dests + " match records on system and value, so a second trust sending them the same placeholder would have its patients' records merged with yours; set your trust's own (https://fhir.<trust>.nhs.uk/...)"
	}
	tail := tailFor("fhir-store")
	ownPAS := "inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n    dialect:\n      local_identifier_system: https://fhir.rx1.nhs.uk/Id/local-patient-identifier\n      visit_number_system: https://fhir.example-trust.nhs.uk/Id/visit-number\n      identifier_systems: {NI: 'https://fhir.hmrc.gov.uk/Id/national-insurance-number'}\n" +
		"  pathology: {type: pathology, listen: 127.0.0.1:0}\n  fhir: {type: fhir}\n"
	pathology := func(at, tail string) []string {
		var out []string
		for _, s := range []string{"dialect.local_identifier_system", "dialect.visit_number_system", "lab.filler_order_system", "lab.local_code_system", "lab.placer_order_system", "lab.result_key_system"} {
			out = append(out, "F:"+at+": warning: inputs.pathology."+s+tail)
		}
		return out
	}
	tests := []struct {
		name string
		body string
		want []string // "F" stands for the file
	}{
		{"file destinations alone", "http: {listen: 127.0.0.1:0}\n" + inputs, nil},
		{"a FHIR destination", "http: {listen: 127.0.0.1:0}\n" + inputs + fhirOut, append([]string{
			"F:6:5: warning: inputs.pas.dialect.local_identifier_system" + tail,
			"F:6:5: warning: inputs.pas.dialect.visit_number_system" + tail,
		}, pathology("8:14", tail)...)},
		{"a trust's own systems", "http: {listen: 127.0.0.1:0}\n" + ownPAS + fhirOut, append([]string{
			"F:10:28: warning: inputs.pas.dialect.visit_number_system" + tail,
		}, pathology("12:14", tail)...)},
		{"an order destination", "http: {listen: 127.0.0.1:0}\n" + inputs + limsOut, append(append([]string{
			"F:6:5: warning: inputs.pas.dialect.local_identifier_system" + tailFor("lims"),
			"F:6:5: warning: inputs.pas.dialect.visit_number_system" + tailFor("lims"),
		}, pathology("8:14", tailFor("lims"))...),
			"F:13:9: warning: destinations.lims.order.local_code_system"+tailFor("lims"),
			"F:13:9: warning: destinations.lims.order.placer_order_system"+tailFor("lims"),
		)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := listenConfig(t, tt.body)
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := engine.NewPlan(cfg, engine.NewRegistry(all.Factories()...))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range plan.PlaceholderWarnings() {
				got = append(got, strings.ReplaceAll(w, path, "F"))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("PlaceholderWarnings (-want +got):\n%s", diff)
			}
		})
	}
}
