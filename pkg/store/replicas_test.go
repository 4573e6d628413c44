package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestReplicasSeeALostServer runs a store on a real three-node cluster
// and stops one server holding a copy of the ingress stream: the store
// keeps storing (two of three are a majority) and the probe's counts
// show the loss, one copy unreachable and two current, where readiness
// alone shows nothing.
func TestReplicasSeeALostServer(t *testing.T) {
	c := jstest.StartCluster(t, "replicas-test", func(o *server.Options) { o.SyncAlways = true })
	cfg := clusterConfig(c)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	s, err := store.Open(ctx, cfg, t.TempDir(), nil, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitReplicas(t, s, store.Replicas{Current: 3})

	st, err := c.JS.Stream(ctx, store.StreamIngress)
	if err != nil {
		t.Fatal(err)
	}
	leader := st.CachedInfo().Cluster.Leader
	for _, srv := range c.Servers {
		if srv.Name() != leader {
			srv.Shutdown()
			srv.WaitForShutdown()
			break
		}
	}
	waitReplicas(t, s, store.Replicas{Current: 2, Unreachable: 1})
	if !s.Healthy() {
		t.Error("the store is not healthy with two of three servers up")
	}
}

// waitReplicas waits up to 30 s for the store's probe to count want.
func waitReplicas(t *testing.T, s *store.Store, want store.Replicas) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := s.Replicas()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Replicas = %+v, want %+v", got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// clusterConfig is the store's defaults with three replicas on c, each of
// its servers named for clients and monitoring.
func clusterConfig(c *jstest.Cluster) store.Config {
	cfg := store.DefaultConfig()
	cfg.Replicas = 3
	var urls []string
	for _, srv := range c.Servers {
		urls = append(urls, srv.ClientURL())
		cfg.MonitorURLs = append(cfg.MonitorURLs, monitorURLs(srv)...)
	}
	cfg.URL = strings.Join(urls, ",")
	return cfg
}
