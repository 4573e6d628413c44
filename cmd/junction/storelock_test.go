//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCLIAuditRefusesWhileServing runs "serve" in process with the
// embedded store, then the commands that open the store themselves: each
// refuses, naming the store directory, rather than start a second server
// on it and read stale data. Once serve has stopped, they run.
func TestCLIAuditRefusesWhileServing(t *testing.T) {
	const nhsNumber = "9990000018"
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	storeDir := filepath.Join(dataDir, "jetstream")
	httpAddr := freeAddr(t)
	cfgPath := filepath.Join(dir, "junction.yaml")
	cfgText := fmt.Sprintf(`data_dir: %q
log:
  level: error
memory_limit_mib: 0
http:
  listen: %q
routes: [%q]
inputs:
  pas: {type: pas, listen: 127.0.0.1:0}
  pathology: {type: pathology, listen: 127.0.0.1:0}
  fhir: {type: fhir}
`, dataDir, httpAddr, shippedRoutes(t))
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(context.Background())
	var serveOut, serveErr bytes.Buffer
	served := make(chan int, 1)
	go func() { served <- run(ctx, []string{"serve", "-c", cfgPath}, &serveOut, &serveErr) }()
	// stopServe stops serve and waits for it (also when the test fails
	// early, before its data directory is removed).
	var stopOnce sync.Once
	stopServe := func() {
		stopOnce.Do(func() {
			stop()
			select {
			case code := <-served:
				if code != 0 {
					t.Errorf("serve: exit %d\n%s", code, serveErr.String())
				}
			case <-time.After(time.Minute):
				t.Error("serve did not stop within a minute")
			}
		})
	}
	t.Cleanup(stopServe)
	waitReady(t, httpAddr, served)

	for _, tc := range []struct {
		name string
		args []string
		code int
		// hint is what the command suggests instead.
		hint string
	}{
		{"verify", []string{"audit", "verify", "-c", cfgPath}, exitVerifyFailed, "no admin API equivalent"},
		{"disclosures", []string{"audit", "disclosures", "-c", cfgPath, "--nhs-number", nhsNumber}, 1, "GET /api/patients/{nhs}/disclosures"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := cliRun(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if strings.Contains(out, "ok: every chain verifies") {
				t.Errorf("reported a verdict on a store the engine holds:\n%s", out)
			}
			for _, want := range []string{storeDir, "in use", "junction serve", "stop it first", tc.hint} {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr %q does not contain %q", errOut, want)
				}
			}
			if strings.Contains(errOut, nhsNumber) {
				t.Errorf("stderr repeats the NHS number: %q", errOut)
			}
		})
	}
	// The refusals left the engine serving.
	if resp, err := http.Get("http://" + httpAddr + "/readyz"); err != nil {
		t.Errorf("engine after the refusals: %v", err)
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("engine after the refusals: /readyz %s", resp.Status)
		}
	}

	stopServe()
	if code, out, errOut := cliRun(t, "audit", "verify", "-c", cfgPath); code != 0 || !strings.Contains(out, "ok: every chain verifies") {
		t.Errorf("verify after serve stopped: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

// waitReady waits until the engine's /readyz answers 200, failing if
// serve exits first.
func waitReady(t *testing.T, addr string, served <-chan int) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case code := <-served:
			t.Fatalf("serve exited %d before it was ready", code)
		default:
		}
		if resp, err := client.Get("http://" + addr + "/readyz"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("serve not ready within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
