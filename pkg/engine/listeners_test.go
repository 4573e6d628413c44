package engine_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/engine"
)

// listenConfig writes a config with the shipped routes, the inputs they
// name and body's settings, and returns its path.
func listenConfig(t *testing.T, body string) string {
	t.Helper()
	routes, err := filepath.Abs("../../routes")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "junction.yaml")
	src := fmt.Sprintf("data_dir: %s\nroutes: [%s]\n%s", filepath.Dir(path), routes, body)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPlanRefusesSharedListenAddress: two listeners given one address
// (or one port, a host being a wildcard) are refused when planning, so
// lint finds them, at the later one's setting; the embedded server's
// nats.listen counts.
func TestPlanRefusesSharedListenAddress(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string // "F" stands for the file
	}{
		{"distinct", "http: {listen: 127.0.0.1:19001}\ninputs:\n  pas: {type: pas, listen: 127.0.0.1:19002}\n  pathology: {type: pathology, listen: 127.0.0.1:19003}\n  fhir: {type: fhir}\n", nil},
		{"any port", "http: {listen: 127.0.0.1:0}\ninputs:\n  pas: {type: pas, listen: 127.0.0.1:0}\n  pathology: {type: pathology, listen: 127.0.0.1:0}\n  fhir: {type: fhir}\n", nil},
		{"other hosts", "http: {listen: 127.0.0.1:19001}\ninputs:\n  pas: {type: pas, listen: '127.0.0.2:19001'}\n  pathology: {type: pathology, listen: 127.0.0.1:19003}\n  fhir: {type: fhir}\n", nil},
		{"two inputs", "http: {listen: 127.0.0.1:19001}\ninputs:\n  pas: {type: pas, listen: 127.0.0.1:19002}\n  pathology:\n    type: pathology\n    listen: 127.0.0.1:19002\n  fhir: {type: fhir}\n",
			[]string{"F:8:13: inputs.pathology.listen: 127.0.0.1:19002 is also inputs.pas.listen's address (127.0.0.1:19002); each listener needs a port of its own"}},
		{"input default and http", "http: {listen: 127.0.0.1:2575}\n",
			[]string{"F:3:16: inputs.pas.listen: 127.0.0.1:2575 (its default) is also http.listen's address (127.0.0.1:2575); each listener needs a port of its own"}},
		{"wildcard", "http: {listen: 127.0.0.1:19001}\nnats: {listen: 127.0.0.1:19004}\ninputs:\n  pas: {type: pas, listen: '0.0.0.0:19004'}\n  pathology: {type: pathology, listen: '[::]:19001'}\n  fhir: {type: fhir}\n",
			[]string{
				"F:6:28: inputs.pas.listen: 0.0.0.0:19004 is also nats.listen's address (127.0.0.1:19004); each listener needs a port of its own",
				"F:7:40: inputs.pathology.listen: [::]:19001 is also http.listen's address (127.0.0.1:19001); each listener needs a port of its own",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := listenConfig(t, tt.body)
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = engine.NewPlan(cfg, engine.NewRegistry(all.Factories()...))
			var got []string
			if err != nil {
				got = strings.Split(strings.ReplaceAll(err.Error(), path, "F"), "\n")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("NewPlan errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCheckListeners: every address the engine would listen on that it
// cannot is reported at once, each at its setting, before anything
// starts.
func TestCheckListeners(t *testing.T) {
	var taken []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		taken = append(taken, ln.Addr().String())
	}
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"free", "http: {listen: 127.0.0.1:0}\ninputs:\n  pas: {type: pas, listen: 127.0.0.1:0}\n  pathology: {type: pathology, listen: 127.0.0.1:0}\n  fhir: {type: fhir}\n", nil},
		{"taken", fmt.Sprintf("http: {listen: 127.0.0.1:0}\nnats: {listen: %s}\ninputs:\n  pas: {type: pas, listen: 127.0.0.1:0}\n  pathology:\n    type: pathology\n    listen: %s\n  fhir: {type: fhir}\n", taken[0], taken[1]),
			[]string{
				fmt.Sprintf("F:4:16: nats.listen: cannot listen on %s: address already in use (by another process, another Junction, or another of these settings)", taken[0]),
				fmt.Sprintf("F:9:13: inputs.pathology.listen: cannot listen on %s: address already in use (by another process, another Junction, or another of these settings)", taken[1]),
			}},
	}
	// One address in other words: the planning check cannot tell, but
	// trying them does.
	free := freeLoopbackPort(t)
	if addrs, err := net.LookupHost("localhost"); err != nil || !slices.Contains(addrs, "127.0.0.1") {
		free = "" // localhost is not 127.0.0.1 here
	}
	tests = append(tests, struct {
		name string
		body string
		want []string
	}{"one address in other words", fmt.Sprintf("http: {listen: '127.0.0.1:%s'}\ninputs:\n  pas: {type: pas, listen: 'localhost:%s'}\n  pathology: {type: pathology, listen: 127.0.0.1:0}\n  fhir: {type: fhir}\n", free, free),
		[]string{fmt.Sprintf("F:5:28: inputs.pas.listen: cannot listen on localhost:%s: address already in use (by another process, another Junction, or another of these settings)", free)}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "one address in other words" && free == "" {
				t.Skip("localhost does not resolve to 127.0.0.1 here")
			}
			path := listenConfig(t, tt.body)
			var got []string
			for _, err := range loadPlan(t, path).CheckListeners() {
				got = append(got, strings.ReplaceAll(err.Error(), path, "F"))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("CheckListeners (-want +got):\n%s", diff)
			}
		})
	}
}

// freeLoopbackPort returns a port nothing listens on at 127.0.0.1.
func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}
