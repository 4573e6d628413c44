package store_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// freezer is a TCP proxy to one server that can be frozen: it then
// keeps every connection open and forwards nothing either way, as a
// server stopped with SIGSTOP (or a host hung, or a network dropping
// packets without a reset) looks to its clients.
type freezer struct {
	l      net.Listener
	frozen chan struct{}
	once   sync.Once
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{l: l, frozen: make(chan struct{})}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case <-f.frozen:
				continue // accepted, never answered
			default:
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, s)
			mu.Unlock()
			go f.pipe(c, s)
			go f.pipe(s, c)
		}
	}()
	return f
}

// pipe copies src to dst until either closes; once frozen it reads on
// but forwards nothing.
func (f *freezer) pipe(src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-f.frozen:
			_, _ = io.Copy(io.Discard, src)
			return
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (f *freezer) freeze() { f.once.Do(func() { close(f.frozen) }) }

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
	proxy := newFreezer(t, strings.TrimPrefix(c.Servers[0].ClientURL(), "nats://"))
	cfg := store.DefaultConfig()
	cfg.Replicas = 3
	cfg.URL = "nats://" + proxy.l.Addr().String()
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

	proxy.freeze()
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
