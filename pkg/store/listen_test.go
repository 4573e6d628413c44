package store

import (
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/junction-fhir/junction/pkg/logtest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestSplitHostPort(t *testing.T) {
	type result struct {
		Host string
		Port int
		Err  bool
	}
	for _, tc := range []struct {
		addr string
		want result
	}{
		{"127.0.0.1:4222", result{"127.0.0.1", 4222, false}},
		{":4222", result{"", 4222, false}},
		{"localhost:14222", result{"localhost", 14222, false}},
		{"[::1]:4222", result{"::1", 4222, false}},
		{"127.0.0.1:-1", result{"127.0.0.1", -1, false}},
		{"127.0.0.1", result{Err: true}},
		{"", result{Err: true}},
		{"127.0.0.1:", result{Err: true}},
		{"127.0.0.1:nats", result{Err: true}},
		{"127.0.0.1:42x", result{Err: true}},
		{"::1:4222", result{Err: true}},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			host, port, err := splitHostPort(tc.addr)
			got := result{host, port, err != nil}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("splitHostPort(%q) (-want +got):\n%s", tc.addr, diff)
			}
		})
	}
}

func FuzzSplitHostPort(f *testing.F) {
	for _, s := range []string{"127.0.0.1:4222", ":4222", "[::1]:4222", "host", "", "h:-1", "h:4x", "[::1", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		host, port, err := splitHostPort(addr)
		if err != nil {
			if host != "" || port != 0 {
				t.Errorf("splitHostPort(%q) = %q, %d with error %v", addr, host, port, err)
			}
			return
		}
		// What it accepts must name the same address again.
		h2, p2, err := net.SplitHostPort(net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil || h2 != host || p2 != strconv.Itoa(port) {
			t.Errorf("splitHostPort(%q) = %q, %d, which does not rejoin: %q %q %v", addr, host, port, h2, p2, err)
		}
		if strings.ContainsAny(host, "[]") {
			t.Errorf("splitHostPort(%q) host %q keeps brackets", addr, host)
		}
	})
}

func TestEmbeddedListen(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen string
	}{
		{"ipv4", "127.0.0.1:-1"},
		{"ipv6", "[::1]:-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "ipv6" {
				l, err := net.Listen("tcp", "[::1]:0")
				if err != nil {
					t.Skipf("no IPv6 loopback here: %v", err)
				}
				l.Close()
			}
			cfg := DefaultConfig()
			cfg.Listen = tc.listen
			var logs logtest.Buffer
			s, err := Open(t.Context(), cfg, t.TempDir(), nil, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatalf("Open with nats.listen %s: %v", tc.listen, err)
			}
			defer s.Close()
			// No authentication on it: said at start.
			if !strings.Contains(logs.String(), "level=WARN msg=\"embedded NATS listens without authentication") {
				t.Errorf("no warning that the listener has no authentication; logs:\n%s", logs.String())
			}
			// A client over TCP sees the same streams.
			nc, err := nats.Connect(s.srv.ClientURL())
			if err != nil {
				t.Fatalf("connecting to %s: %v", s.srv.ClientURL(), err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			st, err := js.Stream(t.Context(), StreamAudit)
			if err != nil {
				t.Fatalf("audit stream over TCP: %v", err)
			}
			if !st.CachedInfo().Config.DenyDelete {
				t.Error("audit stream over TCP: DenyDelete = false")
			}
		})
	}
}

func TestEmbeddedBadListen(t *testing.T) {
	for _, listen := range []string{"127.0.0.1", "127.0.0.1:port"} {
		t.Run(listen, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Listen = listen
			s, err := Open(t.Context(), cfg, t.TempDir(), nil, slog.New(slog.DiscardHandler))
			if err == nil {
				s.Close()
				t.Fatalf("Open with nats.listen %q succeeded", listen)
			}
			if !strings.HasPrefix(err.Error(), "nats.listen: ") {
				t.Errorf("error %q does not name nats.listen", err)
			}
		})
	}
}
