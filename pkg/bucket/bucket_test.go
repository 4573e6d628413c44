package bucket_test

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/bucket"
)

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCluster runs a three-node JetStream cluster in process, as
// nats-server's own tests do, and returns a JetStream handle on it.
func startCluster(t *testing.T) jetstream.JetStream {
	t.Helper()
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: "127.0.0.1:" + strconv.Itoa(p)})
	}
	var urls []string
	for i, p := range ports {
		srv, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "bucket-test", Host: "127.0.0.1", Port: p},
			Routes:  routes,
		})
		if err != nil {
			t.Fatalf("configuring server %d: %v", i+1, err)
		}
		srv.Start()
		t.Cleanup(func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		})
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatalf("server %d did not become ready", i+1)
		}
		urls = append(urls, srv.ClientURL())
	}
	nc, err := nats.Connect(urls[0] + "," + urls[1] + "," + urls[2])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// The cluster is ready when it can place a three-replica stream.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := js.CreateOrUpdateStream(t.Context(), jetstream.StreamConfig{Name: "READY", Replicas: 3, Storage: jetstream.MemoryStorage})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return js
}

func replicas(t *testing.T, js jetstream.JetStream, name string) int {
	t.Helper()
	st, err := js.Stream(t.Context(), "KV_"+name)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config.Replicas
}

// TestOpenNeverLowersReplicas: a process configured with one replica
// opens a bucket the others made with three and leaves it at three; one
// configured with three raises a bucket made with one.
func TestOpenNeverLowersReplicas(t *testing.T) {
	js := startCluster(t)
	ctx := t.Context()
	if _, err := bucket.Open(ctx, js, jetstream.KeyValueConfig{Bucket: "shared", History: 1, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	kv, err := bucket.Open(ctx, js, jetstream.KeyValueConfig{Bucket: "shared", History: 1, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := replicas(t, js, "shared"); got != 3 {
		t.Errorf("opened with 1 replica: bucket has %d, want 3 kept", got)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Errorf("bucket not usable after opening: %v", err)
	}
	if _, err := bucket.Open(ctx, js, jetstream.KeyValueConfig{Bucket: "single", History: 1, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.Open(ctx, js, jetstream.KeyValueConfig{Bucket: "single", History: 1, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if got := replicas(t, js, "single"); got != 3 {
		t.Errorf("opened with 3 replicas: bucket has %d, want 3", got)
	}
}
