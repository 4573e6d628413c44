// Package store connects Junction to NATS JetStream, its only store: it
// starts the embedded nats-server when no URL is configured, declares the
// streams every stage uses, and refuses settings that could lose an
// acknowledged message.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/bucket"
)

// Stream names.
const (
	StreamIngress    = "JUNCTION_INGRESS"
	StreamOutbound   = "JUNCTION_OUTBOUND"
	StreamDeadLetter = "JUNCTION_DEADLETTER"
	StreamAudit      = "JUNCTION_AUDIT"
	StreamQuarantine = "JUNCTION_QUARANTINE"
	StreamIngestLog  = "JUNCTION_INGEST_LOG"
)

// Subject prefixes. Full subjects append tokens: ingress
// "junction.in.<source>.<partition>", outbound
// "junction.out.<destination>.<partition>", dead letters
// "junction.dlq.<stage>.<name>", audit "junction.audit.<message id>",
// quarantine "junction.quarantine.<source>".
const (
	SubjIngress    = "junction.in"
	SubjOutbound   = "junction.out"
	SubjDeadLetter = "junction.dlq"
	SubjAudit      = "junction.audit"
	SubjQuarantine = "junction.quarantine"
	SubjIngestLog  = "junction.log"
)

// Config is the store's part of the engine config.
type Config struct {
	// URL of an external NATS (cluster); empty starts the embedded server.
	URL string `yaml:"url"`
	// Credentials is a reference (file:PATH) to a NATS .creds file.
	Credentials string `yaml:"credentials"`
	// NkeySeed is a reference (file:PATH) to a file holding a NATS user
	// NKey seed, for servers that list users by NKey without an operator
	// (authorization { users = [{nkey: U...}] }). The seed signs the
	// server's challenge and never leaves the process.
	NkeySeed string `yaml:"nkey_seed"`
	// TLS settings for an external NATS; values are references.
	TLS *TLSConfig `yaml:"tls"`
	// Replicas for every stream (1 embedded; 3 in a cluster).
	Replicas int `yaml:"replicas"`
	// CreateStreams lets Junction create missing streams and buckets and
	// bring existing ones to these settings.
	CreateStreams bool `yaml:"create_streams"`
	// Partitions is the number of per-patient ordering partitions.
	Partitions int `yaml:"partitions"`
	// DedupeWindow is how long resends are recognised by the stream.
	DedupeWindow time.Duration `yaml:"dedupe_window"`
	// IngressMaxAge is how long raw input is kept for replay.
	IngressMaxAge time.Duration `yaml:"ingress_max_age"`
	// OutboundMaxAge is how long sent payloads are kept for the trail.
	OutboundMaxAge time.Duration `yaml:"outbound_max_age"`
	// QuarantineMaxAge is how long unparseable input is kept.
	QuarantineMaxAge time.Duration `yaml:"quarantine_max_age"`
	// QuarantineMaxBytes bounds the quarantine; past it the oldest
	// entries go first, so senders of garbage cannot fill the disk the
	// accepted messages need.
	QuarantineMaxBytes int64 `yaml:"quarantine_max_bytes"`
	// GroupCommit stores the messages of all connections that arrive
	// during one write as a single stream message (one fsync), then splits
	// them to the ingress stream; false writes each message on its own.
	GroupCommit bool `yaml:"group_commit"`
	// MonitorURLs lists the monitoring endpoint (http://HOST:8222) of
	// every server of an external NATS, where Junction checks at start
	// that each fsyncs every write.
	MonitorURLs []string `yaml:"monitor_urls"`
	// AllowUnsafe starts even when settings could lose acknowledged
	// messages (see Finding). Each such setting is logged as an error.
	AllowUnsafe bool `yaml:"allow_unsafe"`
	// Listen, in embedded mode, also serves NATS clients on this address
	// (empty: in-process only).
	Listen string `yaml:"listen"`
	// PingInterval and MaxPingsOut decide when a connection to an
	// external NATS server that keeps the connection open but answers
	// nothing (stopped with SIGSTOP, its host hung, a network dropping
	// packets without a reset) is given up for another server: after
	// MaxPingsOut pings sent every PingInterval go unanswered.
	PingInterval time.Duration `yaml:"ping_interval"`
	MaxPingsOut  int           `yaml:"max_pings_out"`
}

// Buckets is the policy for opening the store's key-value buckets: the
// streams' replicas, and created and changed only as streams are.
func (c Config) Buckets() bucket.Policy {
	return bucket.Policy{Replicas: c.Replicas, Fixed: !c.CreateStreams}
}

// TLSConfig names client TLS material by reference.
type TLSConfig struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// DefaultConfig returns the embedded defaults.
func DefaultConfig() Config {
	return Config{
		Replicas:         1,
		CreateStreams:    true,
		GroupCommit:      true,
		Partitions:       16,
		DedupeWindow:     time.Hour,
		IngressMaxAge:    7 * 24 * time.Hour,
		OutboundMaxAge:   7 * 24 * time.Hour,
		QuarantineMaxAge: 30 * 24 * time.Hour,
		// About 4,000 entries of the largest size kept (64 KiB).
		QuarantineMaxBytes: 256 << 20,
		// A server answering nothing is left within 6 to 8 s. With
		// nats.go's defaults (2 minutes, 2) a Junction on such a server
		// stored nothing for minutes while the rest of the cluster
		// stored for others.
		PingInterval: 2 * time.Second,
		MaxPingsOut:  3,
	}
}

// Validate reports every problem with c.
func (c *Config) Validate() []error {
	var errs []error
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("nats.replicas: must be 1 to 5, got %d", c.Replicas))
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		errs = append(errs, fmt.Errorf("nats.partitions: must be 1 to 1024, got %d", c.Partitions))
	}
	if c.DedupeWindow <= 0 {
		errs = append(errs, errors.New("nats.dedupe_window: must be positive"))
	}
	// The store refuses a dedupe window longer than the stream keeps its
	// messages.
	for _, a := range []struct {
		name string
		age  time.Duration
	}{{"nats.ingress_max_age", c.IngressMaxAge}, {"nats.outbound_max_age", c.OutboundMaxAge}} {
		if a.age > 0 && c.DedupeWindow > a.age {
			errs = append(errs, fmt.Errorf("%s: must be at least nats.dedupe_window (%s), got %s", a.name, c.DedupeWindow, a.age))
		}
	}
	for _, a := range []struct {
		name string
		age  time.Duration
	}{{"nats.ingress_max_age", c.IngressMaxAge}, {"nats.outbound_max_age", c.OutboundMaxAge}, {"nats.quarantine_max_age", c.QuarantineMaxAge}} {
		if a.age < 0 {
			// Else the server refuses the stream part way through
			// starting.
			errs = append(errs, fmt.Errorf("%s: must not be negative (0 keeps messages until removed), got %s", a.name, a.age))
		}
	}
	if c.PingInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("nats.ping_interval: must be at least 100ms, got %s", c.PingInterval))
	}
	if c.MaxPingsOut < 1 || c.MaxPingsOut > 100 {
		errs = append(errs, fmt.Errorf("nats.max_pings_out: must be 1 to 100, got %d", c.MaxPingsOut))
	}
	if c.QuarantineMaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("nats.quarantine_max_bytes: must be at least 1048576, got %d", c.QuarantineMaxBytes))
	}
	for i, u := range c.MonitorURLs {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			errs = append(errs, fmt.Errorf("nats.monitor_urls[%d]: must be an http(s) URL such as http://nats-0:8222", i))
		}
	}
	if c.URL == "" && len(c.MonitorURLs) > 0 {
		errs = append(errs, errors.New("nats.monitor_urls: only for an external NATS (nats.url); the embedded server is checked directly"))
	}
	if c.URL != "" && c.Listen != "" {
		errs = append(errs, errors.New("nats.listen: only for the embedded server; with nats.url set there is none to listen, and the setting would be ignored"))
	}
	if c.URL == "" && c.Replicas != 1 {
		errs = append(errs, errors.New("nats.replicas: the embedded server is a single node; replicas must be 1 (set nats.url for a cluster)"))
	}
	for u := range strings.SplitSeq(c.URL, ",") {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			u = "nats://" + u // the client takes host:port without a scheme
		}
		if pu, err := url.Parse(u); err == nil && pu.User != nil {
			// The message names no part of the URL: it holds a secret.
			errs = append(errs, errors.New("nats.url: holds a user or password; secrets are given by reference (nats.credentials: file:PATH)"))
			break
		}
	}
	checkRef := func(name, ref string) {
		if ref != "" && !isFileRef(ref) {
			errs = append(errs, fmt.Errorf("%s: must be a file:PATH reference", name))
		}
	}
	checkRef("nats.credentials", c.Credentials)
	checkRef("nats.nkey_seed", c.NkeySeed)
	if c.Credentials != "" && c.NkeySeed != "" {
		errs = append(errs, errors.New("nats.nkey_seed: give credentials or nkey_seed, not both"))
	}
	if t := c.TLS; t != nil {
		checkRef("nats.tls.ca", t.CA)
		checkRef("nats.tls.cert", t.Cert)
		checkRef("nats.tls.key", t.Key)
		if (t.Cert == "") != (t.Key == "") {
			errs = append(errs, errors.New("nats.tls: cert and key go together"))
		}
	}
	return errs
}

// isFileRef reports whether ref is a file:PATH reference with a path.
func isFileRef(ref string) bool { return len(ref) > 5 && ref[:5] == "file:" }

// Secrets resolves references such as file:PATH.
type Secrets interface {
	Resolve(ref string) (string, error)
}

// EmbeddedMaxPayload is the embedded server's largest message.
const EmbeddedMaxPayload = 16 << 20

// Store is a connection to JetStream with Junction's streams declared.
type Store struct {
	cfg    Config
	log    *slog.Logger
	srv    *server.Server
	lock   *dirLock
	NC     *nats.Conn
	JS     jetstream.JetStream
	closed bool

	// lastAnswer is when the store last answered a probe (unix nanos);
	// probing is stopped by stopProbe and done when probed is.
	lastAnswer atomic.Int64
	stopProbe  chan struct{}
	probed     sync.WaitGroup
	// onHealth, if set, is told each probe's outcome.
	onHealth atomic.Pointer[func(bool)]
	// needed is what the probe checks besides the ingress stream.
	needed neededSet
	// replicas is what the last probe saw of the ingress stream's
	// servers.
	replicas atomic.Pointer[Replicas]
	// server is the (redacted) URL of the external server connected to
	// last, for the log line when the connection to it drops.
	server atomic.Value
	// dial opens another connection as NC was opened (see Bulk).
	dial func(name string) (*nats.Conn, error)
	// refusedAt is when the store last refused to store inbound messages
	// for want of storage, as nanoseconds since epoch plus one (so that
	// 0 means none since it last stored them). epoch is when Open began:
	// time since it is read from the monotonic clock, so a wall clock
	// stepped back cannot hold the store unready.
	refusedAt atomic.Int64
	epoch     time.Time
	// writeFailed is the embedded server's stream that stopped writing
	// after a write error, while it has (see checkWrites); restartedAt
	// is when the probe last restarted JetStream to clear one. storeDir
	// is the embedded server's store directory.
	writeFailed atomic.Pointer[writeFailure]
	restartedAt time.Time
	storeDir    string
	// held is what Held reports.
	held uint64
	// jsConfig is the embedded server's JetStream settings at start.
	jsConfig *server.JetStreamConfig
}

// refusedHold is how long a refusal for want of storage keeps the store
// not ready when no write succeeds after it. An engine taken out of its
// Service gets no writes to find out that space was freed, so after this
// it is ready again and the next write tells.
const refusedHold = 30 * time.Second

// Probing: every probeInterval the store is asked for the ingress
// stream's state, bounded by probeTimeout; it is healthy while an answer
// came within probeStale. A connection that is up to a server that does
// not answer (hung, or restarted without its streams) is not healthy.
// probeStale outlasts two probe timeouts: under a burst of writes on two
// cores one stream-info request can take more than probeTimeout while
// every write is still stored, and readiness that dropped for that one
// slow answer would take a working replica out of its Service.
const (
	probeInterval = time.Second
	probeTimeout  = 2 * time.Second
	probeStale    = 5 * time.Second
)

// asyncAckTimeout bounds how long an asynchronous publish waits for the
// store's acknowledgement before the client gives up on it. Every caller
// stops waiting sooner (the audit writer after its ack timeout, the
// ingest splitter and the route stage within a minute); this bound is for
// the client's own bookkeeping: without it an acknowledgement that never
// comes holds one of the window's slots until the connection drops, and
// once the window is full every publish, ingest's and the audit
// writer's alike, stalls until a restart.
const asyncAckTimeout = 5 * time.Minute

// newJetStream returns the JetStream context the engine publishes
// through: a wide async window, since route and delivery batches
// pipeline their writes and publishers wait (WithStallWait) rather than
// fail when the store falls behind, whose slots an unanswered publish
// gives back after ackTimeout.
func newJetStream(nc *nats.Conn, ackTimeout time.Duration) (jetstream.JetStream, error) {
	return jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384), jetstream.WithPublishAsyncTimeout(ackTimeout))
}

// Open starts or connects to NATS and declares the streams. The embedded
// server's store directory (dataDir/jetstream) is locked until Close; when
// another embedded server has it, Open fails with an *InUseError.
func Open(ctx context.Context, cfg Config, dataDir string, secrets Secrets, log *slog.Logger) (*Store, error) {
	s := &Store{cfg: cfg, log: log, epoch: time.Now()}
	var err error
	if cfg.URL == "" {
		if err = s.startEmbedded(dataDir); err != nil {
			return nil, err
		}
	} else {
		if err = s.connect(secrets); err != nil {
			return nil, err
		}
	}
	s.JS, err = newJetStream(s.NC, asyncAckTimeout)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	if err := s.replicasFit(ctx); err != nil {
		s.Close()
		return nil, err
	}
	// A cluster that is still electing leaders answers with timeouts for
	// a while; keep trying for up to a minute before giving up.
	deadline := time.Now().Add(time.Minute)
	for {
		// Each attempt is bounded on its own: a request lost while the
		// cluster settles (a server just gone) would otherwise wait out
		// the caller's whole deadline, leaving no time to try again.
		actx, cancel := context.WithTimeout(ctx, ensureAttemptTimeout)
		err := s.ensureStreams(actx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil || s.srv != nil || onlySettings(err) {
			// Streams that differ from the config, with Junction not
			// allowed to change them, stay so however long it waits.
			s.Close()
			return nil, err
		}
		log.Warn("store not ready; retrying", "err", err)
		select {
		case <-ctx.Done():
			// Report why the store was not ready, not only that the wait
			// ended (another try with the dead context would say just that).
			s.Close()
			return nil, errors.Join(err, ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
	if err := s.guard(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.lastAnswer.Store(time.Now().UnixNano())
	s.watchNeeded()
	s.stopProbe = make(chan struct{})
	s.probed.Add(1)
	go s.probe()
	return s, nil
}

// OnHealth sets a function told whether each probe of the store
// succeeded, such as a readiness gauge.
func (s *Store) OnHealth(f func(healthy bool)) { s.onHealth.Store(&f) }

// probe asks the store for the ingress stream every probeInterval until
// Close, noting when it answered and logging when that changes.
func (s *Store) probe() {
	defer s.probed.Done()
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	answering := true
	for {
		select {
		case <-s.stopProbe:
			return
		case <-t.C:
		}
		// The other streams and buckets messages need are asked after
		// at the same time (none on the embedded store).
		needed := s.needed.all()
		var others sync.WaitGroup
		others.Go(func() { s.probeNeeded(needed) })
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		st, err := s.JS.Stream(ctx, StreamIngress)
		cancel()
		others.Wait()
		var info *jetstream.StreamInfo
		if err == nil {
			info = st.CachedInfo()
		}
		rs := replicaStates(info, s.cfg.Replicas)
		s.replicas.Store(&rs)
		if err == nil && !hasQuorum(info) {
			err = errNoLeader
		}
		if err == nil {
			s.lastAnswer.Store(time.Now().UnixNano())
		}
		switch {
		case err != nil && answering && s.Healthy():
			// One slow or failed answer: still ready until none has come
			// for probeStale.
			s.log.Debug("store probe failed; ready until it has not answered for "+probeStale.String(), "err", err.Error())
		case err != nil && answering:
			answering = false
			server, _ := s.server.Load().(string)
			msg, attrs := notAnswering(err, s.srv != nil, server, s.cfg.Replicas)
			s.log.Error(msg, attrs...)
		case err == nil && !answering:
			answering = true
			s.log.Info("store answering again")
		}
		s.logNeeded(needed, answering)
		s.checkWrites()
		if f := s.onHealth.Load(); f != nil {
			(*f)(s.Healthy())
		}
	}
}

// Replicas counts the servers holding the ingress stream's copies as its
// leader last answered the store's probe (every second), so a cluster
// that still stores, but would stop at one more loss, shows before it
// does. Every stream has the same replicas, and on a cluster of as many
// servers as replicas the same servers, so the ingress stream stands for
// them all.
type Replicas struct {
	// Current counts the leader and the peers storing its writes.
	Current int
	// CatchingUp counts peers behind the leader or still joining the
	// group.
	CatchingUp int
	// Unreachable counts peers offline or not heard from for peerSilence
	// (5 s), and every copy when no leader answered.
	Unreachable int
}

// Replicas returns what the last probe saw of the ingress stream's
// servers; before the first probe, the configured replicas as current.
func (s *Store) Replicas() Replicas {
	if r := s.replicas.Load(); r != nil {
		return *r
	}
	return Replicas{Current: max(s.cfg.Replicas, 1)}
}

// replicaStates counts the servers of info, a probe's answer about the
// ingress stream (nil: none came), configured with replicas copies.
func replicaStates(info *jetstream.StreamInfo, replicas int) Replicas {
	if info == nil {
		return Replicas{Unreachable: max(replicas, 1)}
	}
	n := max(info.Config.Replicas, 1)
	if n == 1 {
		return Replicas{Current: 1}
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return Replicas{Unreachable: n}
	}
	r := Replicas{Current: 1}
	for _, p := range info.Cluster.Replicas {
		switch {
		case p == nil:
		case p.Offline || !p.Pending && p.Active >= peerSilence:
			r.Unreachable++
		case p.Pending || !p.Current:
			r.CatchingUp++
		default:
			r.Current++
		}
	}
	// A peer the leader does not list at all (not yet placed) is
	// unreachable too.
	if missing := n - r.Current - r.CatchingUp - r.Unreachable; missing > 0 {
		r.Unreachable += missing
	}
	return r
}

// notAnswering returns the log line, and its attributes, for the store
// no longer answering the probe with err: what is wrong, the server
// connected to last (external NATS) and what to check, since the error
// alone (often a timeout) says neither.
func notAnswering(err error, embedded bool, server string, replicas int) (string, []any) {
	msg := "store not answering; not ready until it does"
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		msg = "store has lost the ingress stream (a server restarted without its storage?); not ready"
	case errors.Is(err, errNoLeader):
		msg = "the ingress stream has no leader (the cluster lost its quorum?); not ready until it has"
	}
	attrs := []any{"err", err.Error()}
	if embedded {
		return msg, attrs
	}
	attrs = append(attrs, "server", server)
	check := "check that the NATS server is running and reachable"
	if replicas > 1 {
		check = fmt.Sprintf("check the NATS servers: JetStream stores nothing unless at least %d of each stream's %d servers are up and reach each other; see each server's monitoring /healthz and /jsz", replicas/2+1, replicas)
	}
	return msg, append(attrs, "check", check)
}

// errNoLeader is a probe's answer from a replicated stream without a
// leader, or whose leader has not heard from enough of its peers lately:
// a server that lost its quorum still answers for the stream's state,
// but no write can be stored.
var errNoLeader = errors.New("ingress stream has no leader with a quorum")

// peerSilence is how long the stream leader may go without hearing from a
// peer before the probe no longer counts it towards a quorum. Raft
// heartbeats come every second; nats-server's own leader steps down only
// after 10 to 20 seconds without a quorum, during which it still names
// itself leader, so readiness that waited for that would stay 200 while
// every write timed out.
const peerSilence = 5 * time.Second

// hasQuorum reports whether info, as its stream's leader answered it,
// shows a stream that can store: unreplicated, or with a leader that has
// heard within peerSilence from enough of its group's peers to make a
// majority with itself.
func hasQuorum(info *jetstream.StreamInfo) bool {
	if info == nil || info.Config.Replicas <= 1 {
		return true
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return false
	}
	// Peers still joining (a stream whose replicas are being raised) are
	// not yet part of the group whose majority stores a write.
	group, live := 1, 1 // the leader
	for _, p := range info.Cluster.Replicas {
		if p == nil || p.Pending {
			continue
		}
		group++
		// Active is 0 also for a peer never heard from (just after an
		// election); such a one counts only if it is current.
		if !p.Offline && p.Active < peerSilence && (p.Active > 0 || p.Current) {
			live++
		}
	}
	return live > group/2
}

// MaxPayload is the largest message the server accepts.
func (s *Store) MaxPayload() int64 { return s.NC.MaxPayload() }

func (s *Store) startEmbedded(dataDir string) error {
	dir := filepath.Join(dataDir, "jetstream")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating store directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	// Until the server is up, a failure here drops the lock; after, Close
	// does, once the server has stopped.
	started := false
	defer func() {
		if !started {
			_ = lock.release()
		}
	}()
	opts := &server.Options{
		ServerName: "junction-embedded",
		JetStream:  true,
		StoreDir:   dir,
		// Every write is fsynced before JetStream acknowledges it.
		SyncAlways: true,
		NoSigs:     true,
		NoLog:      true,
		DontListen: true,
		// Room for large inbound messages (the FHIR endpoint takes 10 MiB
		// by default) and for group-committed batches.
		MaxPayload: EmbeddedMaxPayload,
	}
	if s.cfg.Listen != "" {
		host, port, err := splitHostPort(s.cfg.Listen)
		if err != nil {
			return fmt.Errorf("nats.listen: %w", err)
		}
		opts.DontListen = false
		opts.Host, opts.Port = host, port
		// Loopback only (config refuses other addresses), but without
		// authentication: every user of this machine can read the streams.
		s.log.Warn("embedded NATS listens without authentication: any user or process on this machine can read every stored message and the audit trail through it, bypassing the admin API's roles; leave nats.listen unset unless a tool needs it, on a machine only Junction's operators use", "addr", s.cfg.Listen)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("configuring embedded NATS: %w", err)
	}
	// Before Start, which recovers the streams from their files: what it
	// finds wrong with them is logged (NoLog only stops the server making
	// a logger of its own).
	srv.SetLogger(newNATSLog(s.log.With("component", "nats")), false, false)
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return errors.New("embedded NATS did not become ready within 30s")
	}
	s.dial = func(name string) (*nats.Conn, error) {
		return nats.Connect("", nats.InProcessServer(srv), nats.Name(name), nats.MaxReconnects(-1))
	}
	nc, err := s.dial("junction")
	if err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("connecting to embedded NATS: %w", err)
	}
	s.srv, s.lock, s.NC, s.storeDir, s.jsConfig = srv, lock, nc, dir, srv.JetStreamConfig()
	started = true
	return nil
}

// connectionEvents logs what happens to the connection to an external
// NATS: each disconnect, reconnect (naming the server) and asynchronous
// error once, so ops see why fetches fail rather than only that they do.
// Closing the connection (Junction stopping) is not a disconnect.
func (s *Store) connectionEvents() []nats.Option {
	return []nats.Option{
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return
			}
			// The connection has left the server by now: name the one
			// it was connected to.
			server, _ := s.server.Load().(string)
			attrs := []any{"server", server}
			if err != nil {
				attrs = append(attrs, "err", err.Error())
			}
			s.log.Warn("disconnected from NATS; reconnecting", attrs...)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.server.Store(nc.ConnectedUrlRedacted())
			s.log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.log.Warn("NATS connection error", "err", err.Error())
		}),
	}
}

// auditCompression is the block compression of the audit stream kept
// with replicas copies: S2 on one server; none when replicated. On a
// three-node cluster of nats-server 2.15.2, a SIGKILL of a node left
// its S2-compressed audit replica unreadable twice in three kills
// ("error reading compression reader: s2: corrupt input" and
// "unsupported input" while replaying its raft log), and none of the
// uncompressed streams on the same nodes; with two such replicas the
// audit stream lost its quorum when the third node was killed, and every
// stage, which writes audit records before it acknowledges, stopped.
func auditCompression(replicas int) jetstream.StoreCompression {
	if replicas > 1 {
		return jetstream.NoCompression
	}
	return jetstream.S2Compression
}

func (s *Store) connect(secrets Secrets) error {
	// A server that keeps the connection open but answers nothing is
	// left for another server of the cluster (Config.PingInterval).
	opts := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
		nats.PingInterval(s.cfg.PingInterval), nats.MaxPingsOutstanding(s.cfg.MaxPingsOut)}
	if s.cfg.Credentials != "" {
		path, err := refPath(secrets, s.cfg.Credentials)
		if err != nil {
			return fmt.Errorf("nats.credentials: %w", err)
		}
		opts = append(opts, nats.UserCredentials(path))
	}
	if s.cfg.NkeySeed != "" {
		path, err := refPath(secrets, s.cfg.NkeySeed)
		if err != nil {
			return fmt.Errorf("nats.nkey_seed: %w", err)
		}
		opt, err := nats.NkeyOptionFromSeed(path)
		if err != nil {
			// The error names the file, never what it holds.
			return fmt.Errorf("nats.nkey_seed: reading the seed in %s: %w", path, err)
		}
		opts = append(opts, opt)
	}
	if t := s.cfg.TLS; t != nil {
		if t.CA != "" {
			p, err := refPath(secrets, t.CA)
			if err != nil {
				return fmt.Errorf("nats.tls.ca: %w", err)
			}
			opts = append(opts, nats.RootCAs(p))
		}
		if t.Cert != "" || t.Key != "" {
			c, err := refPath(secrets, t.Cert)
			if err != nil {
				return fmt.Errorf("nats.tls.cert: %w", err)
			}
			k, err := refPath(secrets, t.Key)
			if err != nil {
				return fmt.Errorf("nats.tls.key: %w", err)
			}
			opts = append(opts, nats.ClientCert(c, k))
		}
	}
	// A bulk read's connection is short-lived: its events are not the
	// engine's.
	s.dial = func(name string) (*nats.Conn, error) {
		return nats.Connect(s.cfg.URL, append(slices.Clip(opts), nats.Name(name))...)
	}
	nc, err := nats.Connect(s.cfg.URL, append(append(slices.Clip(opts), nats.Name("junction")), s.connectionEvents()...)...)
	if err != nil {
		return fmt.Errorf("connecting to NATS at %s: %w", redactedURLs(s.cfg.URL), err)
	}
	s.server.Store(nc.ConnectedUrlRedacted())
	s.NC = nc
	return nil
}

// refPath turns a file:PATH reference into a path. NATS client options
// read files themselves, so only file references make sense here.
func refPath(secrets Secrets, ref string) (string, error) {
	if isFileRef(ref) {
		return ref[5:], nil
	}
	return "", errors.New("must be a file:PATH reference")
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, port, nil
}

// MetaPartitions is the stream metadata key holding the number of
// partitions the stream's subjects were written with.
const MetaPartitions = "junction_partitions"

// StreamConfigs returns the streams Junction needs.
func (s *Store) StreamConfigs() []jetstream.StreamConfig {
	r := s.cfg.Replicas
	cfgs := []jetstream.StreamConfig{
		{
			Name: StreamIngress, Subjects: []string{SubjIngress + ".>"},
			Description: "Raw inbound messages, unchanged, for routing and replay.",
			Retention:   jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: r,
			MaxAge: s.cfg.IngressMaxAge, Duplicates: s.cfg.DedupeWindow, Discard: jetstream.DiscardOld,
		},
		{
			Name: StreamOutbound, Subjects: []string{SubjOutbound + ".>"},
			Description: "One message per destination, as sent.",
			Retention:   jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: r,
			MaxAge: s.cfg.OutboundMaxAge, Duplicates: s.cfg.DedupeWindow, Discard: jetstream.DiscardOld,
		},
		{
			Name: StreamDeadLetter, Subjects: []string{SubjDeadLetter + ".>"},
			Description: "Messages that could not be routed or delivered, with the reason.",
			Retention:   jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: r,
			Duplicates: 2 * time.Minute,
		},
		{
			Name: StreamAudit, Subjects: []string{SubjAudit + ".>"},
			Description: "Append-only audit trail: one record per hop, never payloads.",
			Retention:   jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: r,
			DenyDelete: true, DenyPurge: true, Duplicates: s.cfg.DedupeWindow,
			// Kept without an age limit, it is most of what the store
			// holds: its JSON records take a third or less of the space
			// compressed. The server compresses a block once it is full,
			// off the write path. Not when replicated (auditCompression).
			Compression: auditCompression(r),
		},
		{
			Name: StreamIngestLog, Subjects: []string{SubjIngestLog + ".>"},
			Description: "Group-committed inbound batches, before they are split to the ingress stream.",
			Retention:   jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: r,
			MaxAge: s.cfg.IngressMaxAge, Duplicates: 2 * time.Minute,
		},
		{
			Name: StreamQuarantine, Subjects: []string{SubjQuarantine + ".>"},
			Description: "Inbound input that could not be parsed, for ops to inspect.",
			Retention:   jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: r,
			MaxAge: s.cfg.QuarantineMaxAge, MaxBytes: s.cfg.QuarantineMaxBytes, Discard: jetstream.DiscardOld,
		},
	}
	// Direct gets read a stored message without the JSON and base64 of
	// the stream API (the batch stages read every batch they take this
	// way). With one replica they read what the leader has; with more,
	// a follower may answer from behind, so they stay off.
	for i := range cfgs {
		if n := cfgs[i].Name; n == StreamIngress || n == StreamOutbound {
			// Their subjects are partitioned by patient; the count is kept
			// with them (see ensureStreams).
			cfgs[i].Metadata = map[string]string{MetaPartitions: strconv.Itoa(s.cfg.Partitions)}
		}
		cfgs[i].AllowDirect = r == 1
		if cfgs[i].MaxBytes == 0 {
			cfgs[i].MaxBytes = -1 // as the server stores "no limit"
		}
	}
	return cfgs
}

// OutOfStorage reports whether err is the store refusing a write because
// a storage limit is reached: the server's (JetStream error 10023,
// insufficient resources), the account's (10002), or a reservation it
// cannot make (10047, 10028).
func OutOfStorage(err error) bool {
	return storageErrorCode(err) != 0
}

// storageErrorCode is the JetStream error code of OutOfStorage's errors,
// or 0.
func storageErrorCode(err error) int {
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return 0
	}
	switch code := int(api.ErrorCode); code {
	case 10023, 10002, 10047, 10028:
		return code
	}
	return 0
}

// RefusedForGood reports whether err is a refusal for want of storage
// that asking again will not change until space is freed: an account
// limit, or any limit of a store without replicas. A replicated stream's
// leader over its own server's limit (10023) steps down, and the next
// leader, on another server, may take the write. While a stream of the
// embedded server has stopped writing (WriteFailed), every failed write
// is.
func (s *Store) RefusedForGood(err error) bool {
	if err != nil && s.writeFailed.Load() != nil {
		// A stream that failed a write answers no write until JetStream
		// restarts (see checkWrites).
		return true
	}
	switch storageErrorCode(err) {
	case 0:
		return false
	case 10002:
		return true
	}
	return s.cfg.Replicas <= 1
}

// NoteIngest tells the store how a write of inbound messages went: after
// a refusal for want of storage it is not ready (Refusing) until a write
// succeeds, or for refusedHold. It logs when that starts and ends.
func (s *Store) NoteIngest(err error) {
	switch {
	case err == nil:
		if s.refusedAt.Load() != 0 && s.refusedAt.Swap(0) != 0 {
			s.log.Info("store storing inbound messages again")
		}
	case OutOfStorage(err):
		now := int64(time.Since(s.epoch)) + 1
		// Said when it starts, and again when it starts after one that
		// had lapsed.
		if prev := s.refusedAt.Swap(now); prev == 0 || time.Duration(now-prev) >= refusedHold {
			s.log.Error("store refusing inbound messages: out of storage; not ready until a write succeeds (free space, raise the server's max_file_store, or shorten retention)", "err", err.Error())
		}
	}
}

// Refusing reports whether the store refused inbound messages for want
// of storage within refusedHold, with none stored since, or whether a
// stream of the embedded server has stopped writing (WriteFailed).
func (s *Store) Refusing() bool {
	if s.writeFailed.Load() != nil {
		return true
	}
	at := s.refusedAt.Load()
	return at != 0 && time.Since(s.epoch)-time.Duration(at-1) < refusedHold
}

// insufficientStorage reports whether err is the server refusing to
// reserve a stream's size limit (JetStream error 10047).
func insufficientStorage(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == 10047
}

// settingError is a stream that differs from what the config needs in a
// way only an operator can change (Junction may not, or must not).
type settingError string

func (e settingError) Error() string { return string(e) }

// onlySettings reports whether err, as ensureStreams returns it, holds
// settingErrors alone, so that trying again cannot help.
func onlySettings(err error) bool {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var se settingError
		if !errors.As(e, &se) {
			return false
		}
	}
	return len(errs) > 0
}

func (s *Store) ensureStreams(ctx context.Context) error {
	var errs []error
	// The stream of Junction's that had written the most messages before
	// this start: a stream missing beside it was deleted, or lost with
	// its directory, not yet to be made.
	heldBy, held := s.heldMessages(ctx)
	s.held = held
	for _, want := range s.StreamConfigs() {
		st, err := s.JS.Stream(ctx, want.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			if !s.cfg.CreateStreams {
				errs = append(errs, settingError(fmt.Sprintf("stream %s does not exist and nats.create_streams is false", want.Name)))
				continue
			}
			if held > 0 {
				if want.Name == StreamAudit {
					s.log.Error("audit stream missing beside a store that has held messages: it was deleted, with every audit record in it; it is made again empty, and audit verify reports it (restore it from a backup to keep the trail)",
						"stream", want.Name, "held_by", heldBy, "messages_since_start", held)
				} else {
					s.log.Error("stream missing beside a store that has held messages: it was deleted, or its directory lost, with every message in it; it is made again empty (restore the data directory from a backup to keep them)",
						"stream", want.Name, "lost", streamLoss[want.Name], "held_by", heldBy, "messages_since_start", held)
				}
			}
			_, err := s.JS.CreateStream(ctx, want)
			if err != nil && want.MaxBytes > 0 && insufficientStorage(err) {
				// The server reserves a size limit's bytes up front and
				// refuses one the disk cannot hold; a quarantine without
				// its bound is better than no engine.
				s.log.Warn("stream created without its size limit: the disk cannot reserve it; free space or lower the setting", "stream", want.Name, "max_bytes", want.MaxBytes, "setting", "nats.quarantine_max_bytes")
				want.MaxBytes = -1
				_, err = s.JS.CreateStream(ctx, want)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("creating stream %s: %w", want.Name, err))
			}
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("looking up stream %s: %w", want.Name, err))
			continue
		}
		info := st.CachedInfo()
		have := info.Config
		if have.Replicas < want.Replicas && !s.cfg.CreateStreams {
			errs = append(errs, settingError(fmt.Sprintf("stream %s has %d replicas, config wants %d", want.Name, have.Replicas, want.Replicas)))
			continue
		}
		if p, ok := have.Metadata[MetaPartitions]; ok && p != want.Metadata[MetaPartitions] {
			// Queued messages sit on partitioned subjects, read by one
			// consumer per partition: with another count some are read
			// by no process, and a patient's messages may be split.
			errs = append(errs, settingError(fmt.Sprintf("nats.partitions is %s, but stream %s was written with %s partitions: with another count, queued messages would wait in partitions no process reads; set it back to %s", want.Metadata[MetaPartitions], want.Name, p, p)))
			continue
		}
		if want.Name == StreamAudit && (!have.DenyDelete || !have.DenyPurge) {
			errs = append(errs, settingError(fmt.Sprintf("stream %s allows delete or purge; the audit trail must be append-only (recreate it with deny_delete and deny_purge)", want.Name)))
			continue
		}
		// Settings the config controls follow the config when Junction may
		// manage streams: replicas (raised, never lowered), retention ages
		// and sizes, and the dedupe window.
		if !s.cfg.CreateStreams {
			continue
		}
		upd := have
		upd.Replicas = max(have.Replicas, want.Replicas)
		upd.Duplicates = want.Duplicates
		if want.MaxAge > 0 {
			// Only an age Junction sets; an operator's on the streams it
			// sets none for (dead letters, audit) stays, as their size
			// limits do.
			upd.MaxAge = want.MaxAge
		}
		if want.Duplicates == 0 {
			// None asked: the server's default, which it has set.
			upd.Duplicates = have.Duplicates
		}
		if lowered := want.MaxAge > 0 && (have.MaxAge == 0 || want.MaxAge < have.MaxAge); lowered && deletesStored(info, want.MaxAge, time.Now()) {
			// A shorter age would delete stored messages at once, some
			// perhaps still waiting for delivery (or, with several
			// processes, another's longer setting): kept until they are
			// younger than the new age.
			upd.MaxAge = have.MaxAge
			s.log.Warn("stream max age not lowered: it would delete stored messages at once, which may still be waiting for delivery; it is lowered at a later start once the oldest is younger, or by hand",
				"stream", want.Name, "max_age", have.MaxAge.String(), "configured", want.MaxAge.String(), "oldest", info.State.FirstTime.UTC().Format(time.RFC3339))
		}
		if want.MaxBytes > 0 {
			// Only a limit Junction sets (the quarantine's); an operator's
			// on other streams stays.
			upd.MaxBytes, upd.Discard = want.MaxBytes, want.Discard
		}
		if want.Name == StreamAudit {
			// Later blocks follow the setting; those written before stay
			// as they are.
			upd.Compression = auditCompression(upd.Replicas)
		}
		upd.AllowDirect = upd.Replicas == 1
		if p, ok := want.Metadata[MetaPartitions]; ok && have.Metadata[MetaPartitions] == "" {
			// Made by a version that did not record the count: from now
			// on it is checked.
			upd.Metadata = maps.Clone(have.Metadata)
			if upd.Metadata == nil {
				upd.Metadata = map[string]string{}
			}
			upd.Metadata[MetaPartitions] = p
		}
		if upd.Replicas == have.Replicas && upd.MaxAge == have.MaxAge && upd.Duplicates == have.Duplicates && upd.MaxBytes == have.MaxBytes && upd.Discard == have.Discard && upd.AllowDirect == have.AllowDirect && upd.Compression == have.Compression &&
			upd.Metadata[MetaPartitions] == have.Metadata[MetaPartitions] {
			continue
		}
		_, err = s.JS.UpdateStream(ctx, upd)
		if err != nil && upd.MaxBytes != have.MaxBytes && insufficientStorage(err) {
			s.log.Warn("stream size limit not changed: the disk cannot reserve it; free space or lower the setting", "stream", want.Name, "max_bytes", want.MaxBytes, "setting", "nats.quarantine_max_bytes")
			upd.MaxBytes = have.MaxBytes
			_, err = s.JS.UpdateStream(ctx, upd)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("updating stream %s (replicas, max age and bytes, dedupe window, direct get): %w", want.Name, err))
			continue
		}
		if changed := settingsChanged(have, upd); len(changed) > 0 {
			// Every process sharing the store sets these at its start:
			// two with different configs would change them back and
			// forth unseen (the dedupe window with them).
			s.log.Warn("stream settings changed to this process's nats config; processes sharing a store should have the same", append([]any{"stream", want.Name}, changed...)...)
		}
	}
	return errors.Join(errs...)
}

// streamLoss says, for the log, what is gone with each stream when it
// is lost.
var streamLoss = map[string]string{
	StreamIngress:    "accepted messages not yet routed (their audit records remain, so audit reconcile lists them as waiting for a route), and raw input for replay",
	StreamOutbound:   "deliveries queued and not yet made (audit reconcile lists them as waiting for delivery)",
	StreamDeadLetter: "dead letters: they can no longer be listed or replayed",
	StreamIngestLog:  "acknowledged messages not yet accepted for routing, with no audit record of them",
	StreamQuarantine: "rejected input kept for inspection",
}

// heldMessages returns the name of the Junction stream that has written
// the most messages (its last sequence), and that count; 0 for a store
// made new. A stream it cannot look up counts as none.
func (s *Store) heldMessages(ctx context.Context) (string, uint64) {
	var name string
	var most uint64
	for _, c := range s.StreamConfigs() {
		st, err := s.JS.Stream(ctx, c.Name)
		if err != nil {
			continue
		}
		if n := st.CachedInfo().State.LastSeq; n > most {
			name, most = c.Name, n
		}
	}
	return name, most
}

// settingsChanged returns, as log attributes ("max_age", "168h0m0s ->
// 200h0m0s"), the settings a config controls that differ between a
// stream's config before and after an update.
func settingsChanged(before, after jetstream.StreamConfig) []any {
	var out []any
	diff := func(key string, a, b any) {
		if a != b {
			out = append(out, key, fmt.Sprintf("%v -> %v", a, b))
		}
	}
	diff("replicas", before.Replicas, after.Replicas)
	diff("max_age", before.MaxAge.String(), after.MaxAge.String())
	diff("dedupe_window", before.Duplicates.String(), after.Duplicates.String())
	diff("max_bytes", before.MaxBytes, after.MaxBytes)
	diff("compression", before.Compression.String(), after.Compression.String())
	return out
}

// ensureAttemptTimeout bounds one attempt at checking and making the
// streams at start.
const ensureAttemptTimeout = 15 * time.Second

// deletesStored reports whether giving the stream described by info the
// max age maxAge (0: none) would delete messages it holds at now.
func deletesStored(info *jetstream.StreamInfo, maxAge time.Duration, now time.Time) bool {
	if maxAge <= 0 || info.State.Msgs == 0 || info.State.FirstTime.IsZero() {
		return false
	}
	return now.Sub(info.State.FirstTime) > maxAge
}

// GroupCommit reports whether ingest batches writes.
func (s *Store) GroupCommit() bool { return s.cfg.GroupCommit }

// Bulk opens a second connection to the store for reading whole streams
// (reconciling, finding a message by its content, listing dead letters),
// so that traffic does not queue ahead of the engine's own on its one
// connection: a reconcile of 146,000 messages read on the engine's
// connection held the store's probes back long enough for /readyz to
// answer 503 for seconds at a time. Call done when finished with it.
func (s *Store) Bulk() (js jetstream.JetStream, done func(), err error) {
	if s.dial == nil {
		return nil, nil, errors.New("store not open")
	}
	nc, err := s.dial("junction-bulk")
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to NATS for a bulk read: %w", err)
	}
	js, err = jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("opening JetStream for a bulk read: %w", err)
	}
	return js, nc.Close, nil
}

// Partitions returns the number of ordering partitions.
func (s *Store) Partitions() int { return s.cfg.Partitions }

// Held is how many messages the most written of Junction's streams had
// taken (its last sequence) when the store was opened: 0 for a store made
// new. A bucket missing beside a store that has held messages was
// deleted, or lost with its directory.
func (s *Store) Held() uint64 { return s.held }

// Embedded reports whether the store runs in process.
func (s *Store) Embedded() bool { return s.srv != nil }

// settleWait is how long WhenSettled keeps trying.
const settleWait = time.Minute

// WhenSettled runs fn, the opening of some state in the store (a bucket, a
// consumer), and against an external cluster tries again for up to a
// minute while the cluster is still settling: a cluster whose streams were
// just declared, or that several Junctions are starting against at once,
// may not yet have a leader for a new bucket, or may take longer than a
// request's timeout to create a replicated consumer. Other errors, and any
// error in embedded mode, are returned at once.
func (s *Store) WhenSettled(ctx context.Context, what string, fn func() error) error {
	deadline := time.Now().Add(settleWait)
	for {
		err := fn()
		if err == nil || s.Embedded() || !Settling(err) || time.Now().After(deadline) {
			return err
		}
		s.log.Warn("store not ready; retrying", "what", what, "err", err)
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// Settling reports whether err is one a JetStream cluster gives while it
// is electing leaders or too busy to answer in time.
func Settling(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoHeartbeat) ||
		(errors.As(err, &api) && api.Code == 503)
}

// Healthy reports whether the connection to NATS is up and the store
// answered a probe for the ingress stream within the last few seconds.
func (s *Store) Healthy() bool {
	return s.NC != nil && s.NC.IsConnected() && time.Since(time.Unix(0, s.lastAnswer.Load())) < probeStale
}

// Close drains the connection, stops the embedded server and then drops
// its lock on the store directory. It waits up to 5 s for the drain.
func (s *Store) Close() { s.CloseContext(context.Background()) }

// drainTimeout bounds the wait for the connection to drain.
const drainTimeout = 5 * time.Second

// CloseContext is Close bounded by ctx as well: once ctx ends it stops
// waiting for a probe in flight and for the drain, and closes the
// connection. A frozen or cut-off NATS server then costs a shutdown
// nothing beyond its deadline. The embedded server, which is in the
// process and needs no network, is always shut down in full.
func (s *Store) CloseContext(ctx context.Context) {
	if s.closed {
		return
	}
	s.closed = true
	ctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	if s.stopProbe != nil {
		close(s.stopProbe)
		probed := make(chan struct{})
		go func() {
			s.probed.Wait()
			close(probed)
		}()
		select {
		case <-probed:
		case <-ctx.Done():
			// The probe ends by its own timeout; the connection closing
			// below fails it sooner.
		}
	}
	if s.NC != nil {
		if ctx.Err() == nil {
			_ = s.NC.Drain()
			tick := time.NewTicker(10 * time.Millisecond)
			for !s.NC.IsClosed() && ctx.Err() == nil {
				select {
				case <-tick.C:
				case <-ctx.Done():
				}
			}
			tick.Stop()
		}
		s.NC.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	if err := s.lock.release(); err != nil {
		s.log.Warn("store lock", "err", err)
	}
}

// redactedURLs returns the comma-separated server URLs of nats.url with
// any user and password in them replaced, for an error to name.
func redactedURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "://") {
			// nats.go takes host:port alone, as nats://host:port.
			p = "nats://" + p
		}
		if u, err := url.Parse(p); err == nil && u.User != nil {
			u.User = url.User("redacted")
			p = u.String()
		} else if err != nil {
			p = "(a URL that does not parse)"
		}
		parts[i] = p
	}
	return strings.Join(parts, ", ")
}

// SubjectMatches reports whether subject is matched by filter, a NATS
// subject that may hold wildcards ("*" for one token, ">" for the rest).
func SubjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s), tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}
