package store

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// facts builds the settings of one server.
func facts(name string, syncAlways bool, interval time.Duration, cluster string, metaSize int) serverFacts {
	var f serverFacts
	f.Name = name
	f.Cluster.Name = cluster
	f.JetStream.Config = &struct {
		SyncInterval int64 `json:"sync_interval"`
		SyncAlways   bool  `json:"sync_always"`
	}{SyncInterval: int64(interval), SyncAlways: syncAlways}
	if metaSize > 0 {
		f.JetStream.Meta = &struct {
			Name string `json:"name"`
			Size int    `json:"cluster_size"`
		}{Name: cluster, Size: metaSize}
	}
	return f
}

func TestJudge(t *testing.T) {
	r1 := []jetstream.StreamConfig{{Name: "A", Replicas: 1}, {Name: "B", Replicas: 1}}
	r3 := []jetstream.StreamConfig{{Name: "A", Replicas: 3}, {Name: "B", Replicas: 3}}
	cfg1 := Config{Replicas: 1}
	cfg3 := Config{Replicas: 3}
	noJS := facts("n0", true, 0, "", 0)
	noJS.JetStream.Config = nil
	for _, tc := range []struct {
		name    string
		cfg     Config
		servers []serverFacts
		streams []jetstream.StreamConfig
		// want lists, in order, a fragment of each finding's Where and
		// Problem.
		want []string
	}{
		{"single node syncing every write", cfg1, []serverFacts{facts("n1", true, 0, "", 0)}, r1, nil},
		{"default lazy sync", cfg1, []serverFacts{facts("n1", false, 2*time.Minute, "", 0)}, r1,
			[]string{"server n1: jetstream.sync_interval is 2m0s"}},
		{"sync interval unset", cfg1, []serverFacts{facts("n1", false, 0, "", 0)}, r1,
			[]string{"server n1: jetstream.sync_interval is the default interval"}},
		{"jetstream disabled", cfg1, []serverFacts{noJS}, r1, []string{"server n0: JetStream is not enabled"}},
		{"safe cluster", cfg3, []serverFacts{facts("a", true, 0, "c", 3), facts("b", true, 0, "c", 3), facts("c", true, 0, "c", 3)}, r3, nil},
		{"cluster with R1 config and streams", cfg1, []serverFacts{facts("a", true, 0, "c", 3), facts("b", true, 0, "c", 3), facts("c", true, 0, "c", 3)}, r1,
			[]string{"nats.replicas: is 1 in a cluster", "stream A: has 1 replicas", "stream B: has 1 replicas"}},
		{"cluster seen by its route name only", cfg3, []serverFacts{facts("a", true, 0, "c", 0)}, r1,
			[]string{"stream A: has 1 replicas", "stream B: has 1 replicas"}},
		{"servers left unchecked", cfg3, []serverFacts{facts("a", true, 0, "c", 3)}, r3,
			[]string{"nats.monitor_urls: lists 1 servers but the JetStream cluster has 3"}},
		{"one lazy node in a cluster", cfg3, []serverFacts{facts("a", true, 0, "c", 3), facts("b", false, time.Second, "c", 3), facts("c", true, 0, "c", 3)}, r3,
			[]string{"server b: jetstream.sync_interval is 1s"}},
		{"async persist mode", cfg1, []serverFacts{facts("n1", true, 0, "", 0)}, []jetstream.StreamConfig{{Name: "A", Replicas: 1, PersistMode: jetstream.AsyncPersistMode}},
			[]string{"stream A: uses asynchronous persist mode"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judge(tc.cfg, tc.servers, len(tc.servers), tc.streams)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d findings %v, want %d %q", len(got), got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if s := got[i].String(); !strings.Contains(s, w) {
					t.Errorf("finding %d = %q, want it to contain %q", i, s, w)
				}
				if got[i].Fix == "" {
					t.Errorf("finding %d has no fix", i)
				}
			}
		})
	}
}

// TestMajorityChecked checks when servers that do not answer are let
// pass: only while those that answered are a majority of their cluster
// and all fsync every write.
func TestMajorityChecked(t *testing.T) {
	safe := func(name string) serverFacts { return facts(name, true, 0, "c", 3) }
	of5 := func(name string) serverFacts { return facts(name, true, 0, "c", 5) }
	for _, tc := range []struct {
		name     string
		servers  []serverFacts
		missing  int
		replicas int
		want     bool
	}{
		{"none missing", []serverFacts{safe("a"), safe("b"), safe("c")}, 0, 3, false},
		{"one of three down", []serverFacts{safe("a"), safe("b")}, 1, 3, true},
		{"two of three down", []serverFacts{safe("a")}, 2, 3, false},
		// R3 streams on five servers: a stream on the two unchecked
		// and one checked server acknowledges from the two unchecked.
		{"two of five unchecked, R3 streams", []serverFacts{of5("a"), of5("b"), of5("c")}, 2, 3, false},
		{"one of five unchecked, R3 streams", []serverFacts{of5("a"), of5("b"), of5("c"), of5("d")}, 1, 3, true},
		{"two of five unchecked, R5 streams", []serverFacts{of5("a"), of5("b"), of5("c")}, 2, 5, true},
		{"one server listed twice", []serverFacts{safe("a"), safe("a")}, 1, 3, false},
		{"one down, one lazy", []serverFacts{safe("a"), facts("b", false, time.Second, "c", 3)}, 1, 3, false},
		{"a single server down", nil, 1, 3, false},
		{"no cluster size known", []serverFacts{facts("a", true, 0, "", 0), facts("b", true, 0, "", 0)}, 1, 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := majorityChecked(tc.servers, tc.missing, tc.replicas); got != tc.want {
				t.Errorf("majorityChecked = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRedactedURLs checks that the servers an unreachable nats.url names
// are given without their credentials.
func TestRedactedURLs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://a:4222, nats://b:4222", "nats://a:4222, nats://b:4222"},
		{"nats://junction:s3cret@a:4222,tls://tok3n@b:4222", "nats://redacted@a:4222, tls://redacted@b:4222"},
		{"nats://%zz@a:4222", "(a URL that does not parse)"},
		{"junction:s3cret@a:4222", "nats://redacted@a:4222"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := redactedURLs(tc.in)
			if got != tc.want {
				t.Errorf("redactedURLs(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if strings.Contains(got, "s3cret") || strings.Contains(got, "tok3n") {
				t.Errorf("a credential is named: %q", got)
			}
		})
	}
}
