package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/store"
)

// TestReplicasSeeALostServer runs a store on a real three-node cluster
// and stops one server holding a copy of the ingress stream: the store
// keeps storing (two of three are a majority) and the probe's counts
// show the loss, one copy unreachable and two current, where readiness
// alone shows nothing.
func TestReplicasSeeALostServer(t *testing.T) {
	c, cfg := startCluster(t, "replicas-test")
	s := openSettled(t, cfg, discardLog())
	waitReplicas(t, s, store.Replicas{Current: 3})

	st, err := c.JS.Stream(t.Context(), store.StreamIngress)
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
	waitFor(t, 30*time.Second, func() error {
		if got := s.Replicas(); got != want {
			return fmt.Errorf("Replicas = %+v, want %+v", got, want)
		}
		return nil
	})
}
