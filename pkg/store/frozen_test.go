package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/testnet"
)

// TestStoreLeavesAFrozenServer connects a store to a three-node cluster
// through one server that then freezes (a SIGSTOP on a real cluster):
// its TCP connection stays up and nothing comes back. On a cluster, with
// nats.go's default pings (every 2 minutes, two unanswered before the
// connection counts as stale), a Junction on such a server stored
// nothing for the whole 40 s of a SIGSTOP while the other two servers
// stored for the other Junction. The store must notice the silence and
// move to a server that answers.
func TestStoreLeavesAFrozenServer(t *testing.T) {
	c := jstest.StartCluster(t, "frozen-test", func(o *server.Options) { o.SyncAlways = true })
	proxy := testnet.NewProxy(t, strings.TrimPrefix(c.Servers[0].ClientURL(), "nats://"))
	cfg := store.DefaultConfig()
	cfg.Replicas = 3
	cfg.URL = "nats://" + proxy.Addr()
	for _, srv := range c.Servers {
		cfg.MonitorURLs = append(cfg.MonitorURLs, monitorURLs(srv)...)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	s, err := store.Open(ctx, cfg, t.TempDir(), nil, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.NC.ConnectedUrl(); got != cfg.URL {
		t.Fatalf("connected to %s, want the proxy %s", got, cfg.URL)
	}

	proxy.Freeze()
	// Wait (up to the minute: nats.go's defaults would take four) for a
	// request answered through another server.
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := s.JS.Stream(rctx, store.StreamIngress)
		rcancel()
		if err == nil && s.NC.ConnectedUrl() != cfg.URL {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("still on the frozen server %s after a minute (last request: %v)", s.NC.ConnectedUrl(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
