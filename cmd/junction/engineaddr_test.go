package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEngineAddrsFromConfig: the client commands' -c reads where the
// engine listens from its config, dialling a wildcard host on loopback.
func TestEngineAddrsFromConfig(t *testing.T) {
	tests := []struct {
		name, config, wantAPI string
		wantInputs            map[string]string
	}{
		{"defaults", "log: {level: info}\n", "http://127.0.0.1:8080", map[string]string{"pas": "127.0.0.1:2575", "pathology": "127.0.0.1:2576"}},
		{"other ports, wildcard hosts", "http:\n  listen: 0.0.0.0:48080\n  tokens: [{name: admin, token: env:X_TOKEN, roles: [operator]}]\n" +
			"inputs:\n  pas:\n    type: pas\n    listen: 0.0.0.0:42575\n  lab:\n    type: pathology\n    listen: '[::]:42576'\n  fhir:\n    type: fhir\n",
			"http://127.0.0.1:48080", map[string]string{"pas": "127.0.0.1:42575", "lab": "[::1]:42576"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "junction.yaml")
			if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			a, err := readEngineAddrs(path)
			if err != nil {
				t.Fatal(err)
			}
			if a.api != tc.wantAPI {
				t.Errorf("api %q, want %q", a.api, tc.wantAPI)
			}
			for name, want := range tc.wantInputs {
				if got, err := a.input(name); err != nil || got != want {
					t.Errorf("input %s: %q, %v; want %q", name, got, err, want)
				}
			}
			if _, err := a.input("fhir"); err == nil || !strings.Contains(err.Error(), "--input") {
				t.Errorf("an input without a listen address: %v, want an error naming --input", err)
			}
		})
	}
	// send -c to an input that takes TLS only, without TLS flags, says
	// so rather than send plain MLLP the listener drops.
	t.Run("send to a TLS input without TLS flags", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "junction.yaml")
		if err := os.WriteFile(path, []byte("inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:1\n    tls: {cert: file:/nonexistent/c, key: file:/nonexistent/k}\n  lab: {type: pathology, listen: 127.0.0.1:1}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := readEngineAddrs(path)
		if err != nil {
			t.Fatal(err)
		}
		if !a.inputTLS["pas"] || a.inputTLS["lab"] {
			t.Errorf("inputTLS = %v, want pas alone", a.inputTLS)
		}
		msg := filepath.Join(dir, "m.hl7")
		if err := os.WriteFile(msg, []byte("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\r"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := cliRun(t, "send", "-c", path, msg)
		if code == 0 || !strings.Contains(errOut, "input pas takes TLS only") {
			t.Errorf("send: exit %d, stderr %q; want a refusal naming the input's TLS", code, errOut)
		}
	})
	if _, err := readEngineAddrs(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("a missing config: %v, want an error naming it", err)
	}
}
