package engine_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// TestProbesAnswerWhileStarting starts an engine on a NATS server without
// JetStream, where the store waits for its streams: meanwhile the HTTP
// listener answers /healthz, /readyz (503, starting) and /metrics, and
// refuses the rest with 503 (an OperationOutcome under /fhir). Before,
// the listener opened last, so an engine waiting on its store refused
// connections, with no metrics or reason to read. A start given up
// closes the listener.
func TestProbesAnswerWhileStarting(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	routes, err := filepath.Abs("../../routes")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	body := strings.Replace(engineConfig(dir, routes), "listen: 127.0.0.1:0\nroutes", "listen: "+addr+"\nroutes", 1) +
		fmt.Sprintf("nats:\n  url: %s\n  monitor_urls: [http://127.0.0.1:1]\n", srv.ClientURL())
	e := engineFromConfig(t, dir, body)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- e.Start(ctx) }()

	base := "http://" + addr
	get := func(path string) (int, string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get(base + path)
			if err == nil {
				defer resp.Body.Close()
				var b strings.Builder
				buf := make([]byte, 4096)
				for {
					n, err := resp.Body.Read(buf)
					b.Write(buf[:n])
					if err != nil {
						break
					}
				}
				return resp.StatusCode, b.String()
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s while starting: %v", path, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, tt := range []struct {
		path   string
		status int
		want   string
	}{
		{"/healthz", http.StatusOK, `"ok"`},
		{"/readyz", http.StatusServiceUnavailable, `"starting"`},
		{"/metrics", http.StatusOK, "junction_engine_ready 0"},
		{"/fhir/metadata", http.StatusServiceUnavailable, `"OperationOutcome"`},
		{"/api/deadletters", http.StatusServiceUnavailable, `"starting"`},
	} {
		t.Run(strings.TrimPrefix(tt.path, "/"), func(t *testing.T) {
			st, b := get(tt.path)
			if st != tt.status || !strings.Contains(b, tt.want) {
				t.Errorf("GET %s: %d %s, want %d with %s", tt.path, st, b, tt.status, tt.want)
			}
		})
	}
	select {
	case err := <-started:
		t.Fatalf("Start returned while the store had no JetStream: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-started:
		if err == nil {
			t.Fatal("Start succeeded without JetStream")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Start did not give up when its context ended")
	}
	if resp, err := http.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("the HTTP listener is still open after a failed start")
	}
}
