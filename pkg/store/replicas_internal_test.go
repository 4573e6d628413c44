package store

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestReplicasFit: nats.replicas larger than the JetStream cluster a
// server's /varz describes is refused at once, naming the most it may be;
// replicas that fit, and a server that cannot be read, are not.
func TestReplicasFit(t *testing.T) {
	varz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/varz" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, `{"server_name":"n1","cluster":{"name":"c"},"jetstream":{"config":{"sync_always":true},"meta":{"name":"n1","cluster_size":3}}}`)
	}))
	defer varz.Close()
	for _, tc := range []struct {
		name     string
		replicas int
		urls     []string
		want     string
	}{
		{"more than the cluster", 5, []string{varz.URL}, "nats.replicas is 5, but the JetStream cluster has 3 servers, so no stream can be placed: set it to at most 3"},
		{"as many as the cluster", 3, []string{varz.URL}, ""},
		{"server not readable", 5, []string{varz.URL + "/nowhere"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Store{cfg: Config{URL: "nats://n1:4222", Replicas: tc.replicas, MonitorURLs: tc.urls}}
			err := s.replicasFit(t.Context())
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("replicasFit = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !onlySettings(err)):
				t.Errorf("replicasFit = %v, want a setting error %q", err, tc.want)
			}
		})
	}
}
