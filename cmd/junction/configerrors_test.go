package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCLIConfigErrorsPlaced: lint and serve report these config errors
// each once, at the file, line and column of the setting, with nothing
// else: a component without a type (said once, not again without a
// place), a routes entry that cannot be read, and (serve) listen
// addresses already taken, all of them before anything starts.
func TestCLIConfigErrorsPlaced(t *testing.T) {
	dir := t.TempDir()
	routes := shippedRoutes(t)
	data := filepath.Join(dir, "data")
	var taken []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		taken = append(taken, ln.Addr().String())
	}
	noType := cliWrite(t, filepath.Join(dir, "no-type.yaml"), fmt.Sprintf("data_dir: %q\nroutes: [%q]\ndestinations:\n  fhir-store: {type: file}\n  data-quality:\n    dir: out\n", data, routes))
	missingRoutes := filepath.Join(dir, "missing-routes.yaml")
	gone := filepath.Join(dir, "no-such-routes")
	cliWrite(t, missingRoutes, fmt.Sprintf("data_dir: %q\nroutes:\n  - %q\n  - %q\n", data, routes, gone))
	mixedInput := cliWrite(t, filepath.Join(dir, "mixed-input.yaml"), fmt.Sprintf("data_dir: %q\nroutes: [%q]\ninputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n    listen: 127.0.0.1:1\n    max_segments: many\n    dialect: {time_zone: Mars/Olympus}\n  pathology: {type: pathology, listen: 127.0.0.1:0}\n  fhir: {type: fhir}\n", data, routes))
	noListen := cliWrite(t, filepath.Join(dir, "no-listen.yaml"), fmt.Sprintf("data_dir: %q\nroutes: [%q]\ninputs:\n  fhir: {type: fhir}\n  pathology: {type: pathology, listen: 127.0.0.1:0}\n  pas: {type: pas, listen: }\n", data, routes))
	exposed := cliWrite(t, filepath.Join(dir, "exposed.yaml"), fmt.Sprintf("data_dir: %q\nroutes: [%q]\nhttp:\n  listen: 10.1.2.3:8080\n  tokens: [{name: ops, role: operator, token: env:JUNCTION_TEST_UNSET}]\n", data, routes))
	inUse := cliWrite(t, filepath.Join(dir, "in-use.yaml"), fmt.Sprintf("data_dir: %q\nlog: {level: error}\nmemory_limit_mib: 0\nroutes: [%q]\nhttp:\n  listen: %s\ninputs:\n  pas: {type: pas, listen: 127.0.0.1:0}\n  pathology:\n    type: pathology\n    listen: %s\n  fhir: {type: fhir}\n", data, routes, taken[0], taken[1]))
	inUseMsg := "address already in use (by another process, another Junction, or another of these settings)"
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"component without a type, lint", []string{"lint", "-c", noType}, []string{
			noType + `:6:5: missing required field "type" in destinations.data-quality`,
		}},
		{"component without a type, serve", []string{"serve", "-c", noType}, []string{
			noType + `:6:5: missing required field "type" in destinations.data-quality`,
		}},
		{"routes entry missing", []string{"lint", "-c", missingRoutes}, []string{
			missingRoutes + ":4:5: routes[1]: stat " + gone + ": no such file or directory",
		}},
		{"a key twice, a wrong type and an invalid value in one input", []string{"lint", "-c", mixedInput}, []string{
			mixedInput + `:7:5: duplicate key "listen" in inputs.pas (first defined at line 6)`,
			mixedInput + `:8:19: inputs.pas.max_segments: expected an integer, got "many"`,
			mixedInput + `:9:26: inputs.pas: dialect.time_zone: unknown zone "Mars/Olympus"`,
		}},
		{"an input's listen written without a value", []string{"lint", "-c", noListen}, []string{
			noListen + ":6:28: inputs.pas.listen: no value: give one, or leave the key out",
		}},
		{"default FHIR input exposed", []string{"lint", "--secrets=false", "-c", exposed}, []string{
			exposed + ":4:11: inputs.fhir: bearer_token: required when http.listen is not a loopback address, since anyone reaching the endpoint could post patient data; or set http.tls.client_ca so client certificates authenticate senders; set allow_unauthenticated: true only when something in front authenticates senders",
		}},
		{"listen addresses taken", []string{"serve", "-c", inUse}, []string{
			inUse + fmt.Sprintf(":6:11: http.listen: cannot listen on %s: %s", taken[0], inUseMsg),
			inUse + fmt.Sprintf(":11:13: inputs.pathology.listen: cannot listen on %s: %s", taken[1], inUseMsg),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cliRun(t, tt.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1; stdout:\n%s", code, out)
			}
			if diff := cmp.Diff(tt.want, strings.Split(strings.TrimSpace(errOut), "\n")); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}
