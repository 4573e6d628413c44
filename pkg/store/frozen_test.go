package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

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
	c, cfg := startCluster(t, "frozen-test")
	proxy := testnet.NewProxy(t, strings.TrimPrefix(c.Servers[0].ClientURL(), "nats://"))
	cfg.URL = "nats://" + proxy.Addr()
	s := openSettled(t, cfg, discardLog())
	if got := s.NC.ConnectedUrl(); got != cfg.URL {
		t.Fatalf("connected to %s, want the proxy %s", got, cfg.URL)
	}

	proxy.Freeze()
	// Wait (up to the minute: nats.go's defaults would take four) for a
	// request answered through another server.
	waitFor(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := s.JS.Stream(ctx, store.StreamIngress)
		if err == nil && s.NC.ConnectedUrl() != cfg.URL {
			return nil
		}
		return fmt.Errorf("still on the frozen server %s after a minute (last request: %v)", s.NC.ConnectedUrl(), err)
	})
}
