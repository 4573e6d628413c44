// Package jstest runs an embedded JetStream server for tests, the way
// nats-server's own tests run theirs in process.
package jstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Start runs an embedded JetStream server named name on a random loopback
// port, with its store in a directory of the test's own, and returns a
// JetStream handle on it. The server stops when the test ends.
func Start(tb testing.TB, name string) jetstream.JetStream {
	tb.Helper()
	srv := run(tb, name, tb.TempDir())
	tb.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return Connect(tb, srv.ClientURL())
}

// run starts an embedded JetStream server named name on a random loopback
// port with its store in dir, and waits until it takes connections.
func run(tb testing.TB, name, dir string) *server.Server {
	tb.Helper()
	srv, err := server.NewServer(&server.Options{
		ServerName: name, Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		tb.Fatalf("configuring test server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		tb.Fatal("test server did not become ready")
	}
	return srv
}

// StartIn runs an embedded JetStream server named name on a random
// loopback port with its store in dir, and returns a JetStream handle on it
// and a function that closes the handle and stops the server (called
// again when the test ends, harmlessly). A test can then start another
// server on dir, as a restart or an upgrade of the engine does.
func StartIn(tb testing.TB, name, dir string) (jetstream.JetStream, func()) {
	tb.Helper()
	srv := run(tb, name, dir)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		srv.Shutdown()
		tb.Fatalf("connecting to test server: %v", err)
	}
	stop := func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	tb.Cleanup(stop)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("opening JetStream: %v", err)
	}
	return js, stop
}

// Connect returns a JetStream handle on the server (or cluster: URLs
// separated by commas) at url, on a connection of its own closed when the
// test ends.
func Connect(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatalf("connecting to test server: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("opening JetStream: %v", err)
	}
	return js
}
