package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// The durability guard. JetStream acknowledges a write once it is in the
// servers' page cache; unless every server fsyncs each write before that
// acknowledgement, a power cut or kernel crash can lose messages Junction
// has already acknowledged to a sender (JetStream's default is an fsync
// every two minutes). A cluster with single-replica streams loses them
// with one disk, and a stream in asynchronous persist mode acknowledges
// before it writes at all. Junction therefore refuses to start on such
// settings, naming each one and its fix, unless nats.allow_unsafe is set.

// Finding is one setting that could lose an acknowledged message.
type Finding struct {
	// Where names the server, stream or config key concerned.
	Where string
	// Problem says what is unsafe.
	Problem string
	// Fix says how to make it safe.
	Fix string
}

func (f Finding) String() string {
	return f.Where + ": " + f.Problem + "; fix: " + f.Fix
}

// serverFacts is the part of a server's /varz the guard reads.
type serverFacts struct {
	Name    string `json:"server_name"`
	Cluster struct {
		Name string `json:"name"`
	} `json:"cluster"`
	JetStream struct {
		Config *struct {
			// SyncInterval is a Go duration in nanoseconds.
			SyncInterval int64 `json:"sync_interval"`
			SyncAlways   bool  `json:"sync_always"`
		} `json:"config"`
		Meta *struct {
			Name string `json:"name"`
			Size int    `json:"cluster_size"`
		} `json:"meta"`
	} `json:"jetstream"`
}

// durabilityFindings inspects the servers and Junction's streams.
func (s *Store) durabilityFindings(ctx context.Context) []Finding {
	var servers []serverFacts
	var out []Finding
	if s.srv != nil {
		f, err := embeddedFacts(s.srv)
		if err != nil {
			out = append(out, Finding{Where: "embedded server", Problem: "its settings could not be read: " + err.Error(), Fix: "report this as a bug"})
		} else {
			servers = append(servers, f)
		}
	} else {
		if len(s.cfg.MonitorURLs) == 0 {
			out = append(out, Finding{
				Where:   "nats.monitor_urls",
				Problem: "empty, so Junction cannot see whether the NATS servers fsync every write",
				Fix:     "list every server's monitoring endpoint (http://HOST:8222, served when the server runs with http_port: 8222)",
			})
		}
		var unreachable []Finding
		for _, u := range s.cfg.MonitorURLs {
			f, err := fetchFacts(ctx, u)
			if err != nil {
				unreachable = append(unreachable, Finding{Where: "nats.monitor_urls " + u, Problem: "could not read the server's settings: " + err.Error(), Fix: "make the monitoring endpoint reachable from Junction"})
				continue
			}
			servers = append(servers, f)
		}
		if majorityChecked(servers, len(unreachable), s.cfg.Replicas) {
			// A server down in a cluster that has its quorum (a node
			// drained, restarting): every write JetStream acknowledges
			// is on a quorum of its stream's replicas, so on at least
			// one server checked here. Refusing would stop Junction
			// restarting through an outage the cluster itself rides out.
			for _, f := range unreachable {
				s.log.Warn("a NATS server's settings were not checked: its monitoring endpoint did not answer, and the servers that did are a majority that fsyncs every write; it is checked when Junction next starts",
					"where", f.Where, "error", f.Problem)
			}
		} else {
			out = append(out, unreachable...)
		}
		return append(out, judge(s.cfg, servers, len(s.cfg.MonitorURLs), s.streamConfigs(ctx))...)
	}
	return append(out, judge(s.cfg, servers, len(servers), s.streamConfigs(ctx))...)
}

// majorityChecked reports whether, with missing listed servers not
// answering, a write JetStream acknowledges is still on a server checked
// to fsync every write: the distinct servers read (by name: two URLs of
// one server count once) all fsync and are a majority of their cluster,
// and the servers not read are fewer than a quorum of a stream's
// replicas, so that every quorum of any stream's replicas (which stores
// each acknowledged write) holds a checked server.
func majorityChecked(servers []serverFacts, missing, replicas int) bool {
	if missing == 0 || missing > (replicas-1)/2 {
		return false
	}
	size := 0
	names := map[string]bool{}
	for _, sv := range servers {
		c := sv.JetStream.Config
		if c == nil || !c.SyncAlways || sv.Name == "" {
			return false
		}
		names[sv.Name] = true
		if m := sv.JetStream.Meta; m != nil {
			size = max(size, m.Size)
		}
	}
	return size > 1 && len(names) >= size/2+1 && len(names)+missing <= size
}

// judge applies the rules to what was read from the servers, of listed
// servers named in the config. It is pure, so each rule is tested alone.
func judge(cfg Config, servers []serverFacts, listed int, streams []jetstream.StreamConfig) []Finding {
	var out []Finding
	clustered, size := false, 0
	for _, sv := range servers {
		name := sv.Name
		if name == "" {
			name = "(unnamed)"
		}
		where := "server " + name
		c := sv.JetStream.Config
		switch {
		case c == nil:
			out = append(out, Finding{Where: where, Problem: "JetStream is not enabled", Fix: "enable JetStream in the server's config"})
		case !c.SyncAlways:
			interval := "the default interval (2m)"
			if c.SyncInterval > 0 {
				interval = time.Duration(c.SyncInterval).String()
			}
			out = append(out, Finding{
				Where:   where,
				Problem: "jetstream.sync_interval is " + interval + ", so a power cut or kernel crash can lose writes it has acknowledged",
				Fix:     "set jetstream { sync_interval: always } in the server's config and restart it",
			})
		}
		if sv.Cluster.Name != "" {
			clustered = true
		}
		if m := sv.JetStream.Meta; m != nil && m.Size > 1 {
			clustered = true
			size = max(size, m.Size)
		}
	}
	if size > listed && len(servers) > 0 {
		out = append(out, Finding{
			Where:   "nats.monitor_urls",
			Problem: fmt.Sprintf("lists %d servers but the JetStream cluster has %d, so some servers' settings are unchecked", listed, size),
			Fix:     "list every server's monitoring endpoint",
		})
	}
	if clustered && cfg.Replicas < 3 {
		out = append(out, Finding{
			Where:   "nats.replicas",
			Problem: fmt.Sprintf("is %d in a cluster, so one lost disk loses acknowledged messages", cfg.Replicas),
			Fix:     "set nats.replicas: 3",
		})
	}
	for _, st := range streams {
		if clustered && st.Replicas < 3 {
			out = append(out, Finding{
				Where:   "stream " + st.Name,
				Problem: fmt.Sprintf("has %d replicas in a cluster", st.Replicas),
				Fix:     "raise it to 3 (nats stream edit " + st.Name + " --replicas 3, or let Junction do it with nats.create_streams and nats.replicas: 3)",
			})
		}
		if st.PersistMode == jetstream.AsyncPersistMode {
			out = append(out, Finding{
				Where:   "stream " + st.Name,
				Problem: "uses asynchronous persist mode, which acknowledges writes before they are stored",
				Fix:     "recreate the stream with the default persist mode",
			})
		}
	}
	return out
}

// streamConfigs returns the configs of Junction's streams as the server
// has them (those missing are skipped: ensureStreams reported them).
func (s *Store) streamConfigs(ctx context.Context) []jetstream.StreamConfig {
	var out []jetstream.StreamConfig
	for _, want := range s.StreamConfigs() {
		st, err := s.JS.Stream(ctx, want.Name)
		if err != nil {
			continue
		}
		out = append(out, st.CachedInfo().Config)
	}
	return out
}

func embeddedFacts(srv *server.Server) (serverFacts, error) {
	var f serverFacts
	v, err := srv.Varz(nil)
	if err != nil {
		return f, fmt.Errorf("reading varz: %w", err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return f, fmt.Errorf("encoding varz: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("decoding varz: %w", err)
	}
	return f, nil
}

// fetchFacts reads a server's settings from its monitoring endpoint.
func fetchFacts(ctx context.Context, base string) (serverFacts, error) {
	var f serverFacts
	u, err := url.Parse(strings.TrimSuffix(base, "/") + "/varz")
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return f, errors.New("not an http(s) URL")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return f, fmt.Errorf("building request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return f, fmt.Errorf("requesting varz: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return f, fmt.Errorf("varz answered %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&f); err != nil {
		return f, fmt.Errorf("decoding varz: %w", err)
	}
	return f, nil
}

// replicasFit refuses nats.replicas larger than the JetStream cluster the
// monitoring endpoints describe: no stream could be placed, however long
// Open waited for the cluster to settle. A server that cannot be read is
// left to the guard to report.
func (s *Store) replicasFit(ctx context.Context) error {
	if s.srv != nil {
		return nil
	}
	for _, u := range s.cfg.MonitorURLs {
		f, err := fetchFacts(ctx, u)
		if err != nil {
			continue
		}
		if m := f.JetStream.Meta; m != nil && m.Size > 0 && s.cfg.Replicas > m.Size {
			return settingError(fmt.Sprintf("nats.replicas is %d, but the JetStream cluster has %d servers, so no stream can be placed: set it to at most %d", s.cfg.Replicas, m.Size, m.Size))
		}
	}
	return nil
}

// guard refuses unsafe settings, or logs them loudly when the operator
// has allowed them.
func (s *Store) guard(ctx context.Context) error {
	findings := s.durabilityFindings(ctx)
	if len(findings) == 0 {
		return nil
	}
	if s.cfg.AllowUnsafe {
		for _, f := range findings {
			s.log.Error("UNSAFE: acknowledged messages can be lost (nats.allow_unsafe is set)", "where", f.Where, "problem", f.Problem, "fix", f.Fix)
		}
		return nil
	}
	lines := make([]string, len(findings))
	for i, f := range findings {
		lines[i] = "  " + f.String()
	}
	return fmt.Errorf("refusing to start: these NATS settings can lose acknowledged messages (set nats.allow_unsafe: true to start anyway):\n%s", strings.Join(lines, "\n"))
}
