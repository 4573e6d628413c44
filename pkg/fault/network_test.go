package fault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestNetworkReason makes real failing requests and checks each is named.
func TestNetworkReason(t *testing.T) {
	// A port nothing listens on: take one and close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { time.Sleep(2 * time.Second) }))
	defer slow.Close()
	// A server that reads the request and closes the connection without
	// a word, as a crashing application server or a proxy losing its
	// backend does.
	hangUp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	defer hangUp.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer tlsSrv.Close()
	get := func(c *http.Client, url string) error {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	tests := []struct {
		name string
		err  func() error
		want string
	}{
		{"refused", func() error { return get(http.DefaultClient, "http://"+closed+"/") }, "connection refused"},
		{"timeout", func() error { return get(&http.Client{Timeout: 100 * time.Millisecond}, slow.URL) }, "timed out"},
		{"closed without an answer", func() error { return get(http.DefaultClient, hangUp.URL) }, "connection closed without an answer"},
		{"context deadline", func() error { return fmt.Errorf("wrapped: %w", context.DeadlineExceeded) }, "timed out"},
		{"untrusted certificate", func() error { return get(http.DefaultClient, tlsSrv.URL) }, "TLS certificate not trusted"},
		{"host not found", func() error { return &net.DNSError{Err: "no such host", Name: "ehr.invalid", IsNotFound: true} }, "host not found"},
		{"other", func() error { return errors.New("something else") }, ""},
		{"none", func() error { return nil }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NetworkReason(tc.err()); got != tc.want {
				t.Errorf("NetworkReason = %q, want %q", got, tc.want)
			}
		})
	}
}
