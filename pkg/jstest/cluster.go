package jstest

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a JetStream cluster run in process.
type Cluster struct {
	// Servers are its servers, n1 first.
	Servers []*server.Server
	// JS is a JetStream handle on the servers' client URLs.
	JS jetstream.JetStream
	// opts are the servers' options, for Restart.
	opts []server.Options
}

// StartCluster runs a three-node JetStream cluster named name in process,
// as nats-server's own tests do, each server with an HTTP monitoring
// endpoint and with its options changed by tweak when that is not nil,
// and waits until it can place a three-replica stream. The servers stop
// when the test ends.
func StartCluster(tb testing.TB, name string, tweak func(*server.Options)) *Cluster {
	tb.Helper()
	return StartClusterOf(tb, name, 3, tweak)
}

// StartClusterOf is StartCluster with n servers, n1 to n<n>. With more
// servers than a stream's replicas, streams are placed on some of them
// (by placement tags, which tweak can give each server by its
// ServerName), so that losing servers can take one stream's quorum and
// leave another's.
func StartClusterOf(tb testing.TB, name string, n int, tweak func(*server.Options)) *Cluster {
	tb.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(tb)
	}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: "127.0.0.1:" + strconv.Itoa(p)})
	}
	c := &Cluster{}
	// One cleanup for every server, registered before anything the test
	// starts on the cluster, so that servers restarted later (Restart)
	// stop after it too, not before.
	tb.Cleanup(func() {
		for _, srv := range c.Servers {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	})
	var urls []string
	for i, p := range ports {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1, HTTPHost: "127.0.0.1", HTTPPort: -1,
			JetStream: true, StoreDir: tb.TempDir(), NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: p},
			Routes:  routes,
		}
		if tweak != nil {
			tweak(opts)
		}
		c.opts = append(c.opts, *opts)
		srv := c.run(tb, i)
		c.Servers = append(c.Servers, srv)
		urls = append(urls, srv.ClientURL())
	}
	c.JS = Connect(tb, strings.Join(urls, ","))
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.JS.CreateOrUpdateStream(tb.Context(), jetstream.StreamConfig{Name: "READY", Replicas: 3, Storage: jetstream.MemoryStorage})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("cluster not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := c.JS.DeleteStream(tb.Context(), "READY"); err != nil {
		tb.Fatalf("removing the readiness stream: %v", err)
	}
	return c
}

// freePort returns a loopback port nothing listens on now.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// run starts server i (from 0) with its options and waits until it
// takes connections. The cluster's cleanup stops it once it is in
// Servers.
func (c *Cluster) run(tb testing.TB, i int) *server.Server {
	tb.Helper()
	opts := c.opts[i]
	srv, err := server.NewServer(&opts)
	if err != nil {
		tb.Fatalf("configuring server %d: %v", i+1, err)
	}
	srv.Start()
	// Five servers starting on two busy cores can take a while.
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		tb.Fatalf("server %d did not become ready", i+1)
	}
	return srv
}

// Restart starts server i (from 0), stopped by the test, again on its
// store and cluster port, as a server restarted after a crash; its
// client and monitoring ports are new. Servers[i] becomes the new one.
func (c *Cluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	c.Servers[i] = c.run(tb, i)
}
