package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
)

// TestRunExitsWithoutServing covers the paths that return without starting
// a server: version, help, bad flags and configuration checks.
func TestRunExitsWithoutServing(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.conf")
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(good, []byte("port: 4222\njetstream {\n  store_dir: "+filepath.Join(dir, "js")+"\n  sync_interval: always\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("jetstream {\n  sync_intervall: always\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // a substring
		wantStderr string // a substring
	}{
		{name: "version", args: []string{"--version"}, wantCode: 0, wantStdout: "nats-server: v" + server.VERSION + "\n"},
		{name: "help", args: []string{"--help"}, wantCode: 0, wantStdout: "-jetstream"},
		{name: "tls help", args: []string{"--help_tls"}, wantCode: 0, wantStdout: "--tlscert"},
		{name: "unknown flag", args: []string{"--no-such-flag"}, wantCode: 2, wantStderr: "no-such-flag"},
		{name: "valid config", args: []string{"-t", "-c", good}, wantCode: 0, wantStderr: "is valid"},
		{name: "config with an unknown key", args: []string{"-t", "-c", bad}, wantCode: 2, wantStderr: "sync_intervall"},
		{name: "missing config", args: []string{"-t", "-c", filepath.Join(dir, "absent.conf")}, wantCode: 2, wantStderr: "absent.conf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if diff := cmp.Diff(tt.wantCode, code); diff != "" {
				t.Errorf("exit code (-want +got):\n%s\nstderr: %s", diff, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}
