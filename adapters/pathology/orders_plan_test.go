package pathology_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/adapters/pathology"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/engine"
)

// TestOrderDestinationPlan checks a "pathology" destination is decoded
// from the config file, strictly, with the compiled-in adapters.
func TestOrderDestinationPlan(t *testing.T) {
	tests := []struct {
		name, dest, err string
	}{
		{"valid", `
    type: pathology
    address: lims.example.nhs.uk:2575
    ack_timeout: 20s
    order:
      version: "2.4"
      message_type: ORM^O01
      sending_application: EPR
      receiving_application: LIMS
      placer_namespace: EPR`, ""},
		{"unknown key", `
    type: pathology
    address: lims.example.nhs.uk:2575
    order: {version: "2.5", colour: red}`, "colour"},
		{"invalid order settings", `
    type: pathology
    address: lims.example.nhs.uk:2575
    order: {version: "2.3", message_type: OML^O21}`, "OML^O21 needs version 2.4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "routes"), 0o700); err != nil {
				t.Fatal(err)
			}
			body := "data_dir: " + dir + "\nroutes: [" + filepath.Join(dir, "routes") + "]\ndestinations:\n  lims:" + tc.dest + "\n"
			path := filepath.Join(dir, "junction.yaml")
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatalf("config: %v", err)
			}
			p, err := engine.NewPlan(cfg, engine.NewRegistry(all.Factories()...))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("plan error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			c, ok := p.Destinations["lims"].Config.(*pathology.OrdersConfig)
			if !ok {
				t.Fatalf("config is %T", p.Destinations["lims"].Config)
			}
			if c.Order.Version != "2.4" || c.Order.MessageType != pathology.MessageTypeORM || c.Order.SendingApplication != "EPR" ||
				c.Order.TimeZone != "Europe/London" || c.Address != "lims.example.nhs.uk:2575" || c.AckTimeout.Seconds() != 20 {
				t.Errorf("decoded %+v", c)
			}
		})
	}
}
