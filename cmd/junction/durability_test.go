//go:build unix

package main

// Durability tests with real processes: the junction binary is built once
// per test run and run as child processes, against its embedded NATS or a
// standalone nats-server run in the test process, and killed, terminated
// and cut off from its store while synthetic PAS senders keep sending. An
// MLLP sink in the test process records every message delivered. The
// tests assert that every message Junction acknowledged reaches the sink,
// in per-patient order, and count what was delivered twice.
//
// They are slow (tens of seconds each) and skipped with -short.
// JUNCTION_DURABILITY_MESSAGES sets how many messages TestKillDuringIngest
// sends (TestGracefulShutdown sends half); JUNCTION_DURABILITY_RACE=1
// builds the child binary with the race detector.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/durability"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/mllp"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/testnet"
)

// Defaults of the durability tests.
const (
	defaultKillMessages = 3000
	durSenders          = 4
	durPatients         = 100
	// readyTimeout bounds a child's start, including JetStream recovery
	// after a kill.
	readyTimeout = 45 * time.Second
	// killWindow is how long the senders of TestKillDuringIngest take to
	// send everything (longer after outages), so that the kills, 0.5-2s
	// apart, land while they are sending.
	killWindow = 12 * time.Second
	// deliverTimeout bounds the wait for the sink to receive everything
	// acknowledged once the senders are done.
	deliverTimeout = 60 * time.Second
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// junctionBinary builds the junction binary once per test run.
func junctionBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "junction-durability-")
		if buildErr != nil {
			return
		}
		bin := filepath.Join(buildDir, "junction")
		args := []string{"build", "-o", bin}
		if os.Getenv("JUNCTION_DURABILITY_RACE") != "" {
			args = append(args, "-race")
		}
		args = append(args, ".")
		cmd := exec.Command(goTool(), args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		buildBin = bin
	})
	if buildErr != nil {
		t.Fatalf("building junction: %v", buildErr)
	}
	return buildBin
}

// goTool is the go command: go test puts its own toolchain's bin
// directory first on PATH.
func goTool() string { return "go" }

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("durability test with real processes: skipped with -short")
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// sink is an MLLP receiver that records every message's MSH-10 and
// answers AA, echoing MSH-10 in MSA-2.
type sink struct {
	srv      *mllp.Server
	mu       sync.Mutex
	counts   map[string]int
	arrivals []string // control ids in arrival order, repeats included
	bad      int
}

func startSink(t *testing.T) *sink {
	t.Helper()
	s := &sink{counts: map[string]int{}}
	s.srv = &mllp.Server{Addr: "127.0.0.1:0", Handler: s, IdleTimeout: -1}
	if err := s.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(ctx)
	})
	return s
}

func (s *sink) addr() string { return s.srv.ListenAddr().String() }

// ServeMLLP records and acknowledges one message.
func (s *sink) ServeMLLP(_ context.Context, _ *mllp.ConnInfo, payload []byte) ([]byte, bool) {
	m, err := hl7v2.Parse(payload)
	if err != nil || m.ControlID() == "" {
		s.mu.Lock()
		s.bad++
		s.mu.Unlock()
		return hl7v2.BuildRawAck(hl7v2.AckOptions{Code: hl7v2.AckAE, Text: "sink: not an HL7 v2 message with MSH-10", App: "SINK"}), false
	}
	ctrl := m.ControlID()
	s.mu.Lock()
	s.counts[ctrl]++
	s.arrivals = append(s.arrivals, ctrl)
	s.mu.Unlock()
	return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAA, App: "SINK", Facility: "RX1"}), false
}

// snapshot returns the control ids received, in arrival order, and the
// number of frames that were not HL7 v2.
func (s *sink) snapshot() (arrivals []string, bad int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.arrivals), s.bad
}

// missing returns the ids the sink has not received, in the given order.
func (s *sink) missing(ids []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, id := range ids {
		if s.counts[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// waitFor waits up to d for the sink to hold every id and returns those
// still missing.
func (s *sink) waitFor(ids []string, d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		miss := s.missing(ids)
		if len(miss) == 0 || time.Now().After(deadline) {
			return miss
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// natsServer is a standalone nats-server with JetStream, fsyncing every
// write, on a fixed loopback port and store directory so it can be
// stopped and started again as the same server.
type natsServer struct {
	t        *testing.T
	host     string
	port     int
	httpPort int
	storeDir string
	srv      *server.Server
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	addr := freeAddr(t)
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p)
	_, hp, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	httpPort, _ := strconv.Atoi(hp)
	ns := &natsServer{t: t, host: host, port: port, httpPort: httpPort, storeDir: t.TempDir()}
	if err := ns.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.stop)
	return ns
}

func (ns *natsServer) url() string { return fmt.Sprintf("nats://%s:%d", ns.host, ns.port) }

// monitorURL is the server's monitoring endpoint, where Junction checks
// its durability settings at start.
func (ns *natsServer) monitorURL() string { return fmt.Sprintf("http://%s:%d", ns.host, ns.httpPort) }

func (ns *natsServer) start() error {
	opts := &server.Options{
		ServerName: "durability-nats",
		Host:       ns.host,
		Port:       ns.port,
		HTTPHost:   ns.host,
		HTTPPort:   ns.httpPort,
		JetStream:  true,
		StoreDir:   ns.storeDir,
		SyncAlways: true,
		// Room for a 1 MiB HL7 message plus its headers, as Junction
		// requires of the server at start.
		MaxPayload: 8 << 20,
		NoSigs:     true,
		NoLog:      true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("configuring nats-server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		srv.Shutdown()
		return errors.New("nats-server did not become ready within 20s")
	}
	ns.srv = srv
	return nil
}

func (ns *natsServer) stop() {
	if ns.srv == nil {
		return
	}
	ns.srv.Shutdown()
	ns.srv.WaitForShutdown()
	ns.srv = nil
}

// engineParams fill in testdata/durability/junction.yaml.tmpl.
type engineParams struct {
	DataDir         string
	NATSURL         string
	NATSMonitor     string
	NATSListen      string
	HTTPAddr        string
	MLLPAddr        string
	SinkAddr        string
	Routes          string
	ShutdownTimeout time.Duration
	// Pipeline is the router pipeline: JUNCTION_DURABILITY_PIPELINE
	// (message or batch), default batch.
	Pipeline string
}

// engineProc is one junction serve child process, restartable with the
// same config and data directory.
type engineProc struct {
	t       *testing.T
	name    string
	bin     string
	cfgPath string
	params  engineParams
	stdout  string
	stderr  string

	cmd    *exec.Cmd
	exited chan struct{}
	state  *os.ProcessState
	starts int
}

// newEngine writes the child's config (fresh ports, its own data dir) and
// registers its cleanup: kill, and on failure the tails of its logs.
func newEngine(t *testing.T, name string, sinkAddr string, ns *natsServer, shutdownTimeout time.Duration) *engineProc {
	t.Helper()
	bin := junctionBinary(t)
	dir := t.TempDir()
	routes, err := filepath.Abs(filepath.Join("testdata", "durability", "routes"))
	if err != nil {
		t.Fatal(err)
	}
	p := engineParams{
		DataDir:  filepath.Join(dir, "data"),
		HTTPAddr: freeAddr(t), MLLPAddr: freeAddr(t), SinkAddr: sinkAddr,
		Routes: routes, ShutdownTimeout: shutdownTimeout,
	}
	if ns != nil {
		p.NATSURL, p.NATSMonitor = ns.url(), ns.monitorURL()
	} else {
		// The embedded server also listens, so a failing test can show
		// where the missing messages sit.
		p.NATSListen = freeAddr(t)
	}
	p.Pipeline = os.Getenv("JUNCTION_DURABILITY_PIPELINE")
	if p.Pipeline == "" {
		p.Pipeline = "batch"
	}
	tmpl, err := template.ParseFiles(filepath.Join("testdata", "durability", "junction.yaml.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, p); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "junction.yaml")
	if err := os.WriteFile(cfg, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &engineProc{
		t: t, name: name, bin: bin, cfgPath: cfg, params: p,
		stdout: filepath.Join(dir, name+".stdout.log"), stderr: filepath.Join(dir, name+".stderr.log"),
	}
	t.Cleanup(func() {
		e.kill()
		// A child built with -race (JUNCTION_DURABILITY_RACE) reports on
		// stderr and carries on; one killed never exits with the
		// detector's status, so its reports are looked for here.
		if reports := raceReports(e.stderr, 200); reports != "" {
			t.Errorf("%s: the race detector reported:\n%s", e.name, reports)
		}
		if t.Failed() {
			for _, f := range []string{e.stdout, e.stderr} {
				t.Logf("last 50 lines of %s:\n%s", filepath.Base(f), tail(f, 50))
			}
		}
	})
	return e
}

// raceReports returns what a child's stderr log at path holds from the
// race detector's first report on, up to maxLines lines, or "" when it holds
// none.
func raceReports(path string, maxLines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	i := bytes.Index(data, []byte("WARNING: DATA RACE"))
	if i < 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data[i:]), "\n"), "\n")
	if len(lines) > maxLines {
		lines = append(lines[:maxLines], fmt.Sprintf("(%d more lines)", len(lines)-maxLines))
	}
	return strings.Join(lines, "\n")
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func openLog(path, marker string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	_, _ = fmt.Fprintf(f, "=== %s %s\n", marker, time.Now().Format(time.RFC3339Nano))
	return f, nil
}

// start runs the child and waits until /readyz answers 200.
func (e *engineProc) start() error {
	e.starts++
	marker := fmt.Sprintf("start %d of %s", e.starts, e.name)
	out, err := openLog(e.stdout, marker)
	if err != nil {
		return err
	}
	errf, err := openLog(e.stderr, marker)
	if err != nil {
		out.Close()
		return err
	}
	cmd := exec.Command(e.bin, "serve", "-c", e.cfgPath)
	cmd.Stdout, cmd.Stderr = out, errf
	if err := cmd.Start(); err != nil {
		out.Close()
		errf.Close()
		return fmt.Errorf("starting %s: %w", e.name, err)
	}
	exited := make(chan struct{})
	e.cmd, e.exited, e.state = cmd, exited, nil
	go func() {
		_ = cmd.Wait()
		out.Close()
		errf.Close()
		close(exited)
	}()
	deadline := time.Now().Add(readyTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-exited:
			e.state = cmd.ProcessState
			return fmt.Errorf("%s exited while starting: %s", e.name, cmd.ProcessState)
		default:
		}
		if resp, err := client.Get("http://" + e.params.HTTPAddr + "/readyz"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s", e.name, readyTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running reports whether the current child is alive.
func (e *engineProc) running() bool {
	if e.cmd == nil {
		return false
	}
	select {
	case <-e.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the child to go.
func (e *engineProc) kill() {
	if !e.running() {
		return
	}
	_ = e.cmd.Process.Kill()
	<-e.exited
	e.state = e.cmd.ProcessState
}

// terminate sends SIGTERM and waits up to limit for the child to exit. It
// returns how long the exit took and whether it happened.
func (e *engineProc) terminate(limit time.Duration) (time.Duration, bool) {
	if !e.running() {
		return 0, true
	}
	start := time.Now()
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		e.t.Errorf("SIGTERM %s: %v", e.name, err)
	}
	select {
	case <-e.exited:
		e.state = e.cmd.ProcessState
		return time.Since(start), true
	case <-time.After(limit):
		return time.Since(start), false
	}
}

func (e *engineProc) mustStart() {
	e.t.Helper()
	if err := e.start(); err != nil {
		e.t.Fatal(err)
	}
}

// metric sums the samples of a counter or gauge whose labels include
// every given name="value" pair.
func (e *engineProc) metric(name string, labels ...string) (float64, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + e.params.HTTPAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// storeURL is the NATS URL of the engine's store.
func (e *engineProc) storeURL() string {
	if e.params.NATSURL != "" {
		return e.params.NATSURL
	}
	return "nats://" + e.params.NATSListen
}

// deadLetterCount reads the engine's dead-letter list, for diagnosis.
func (e *engineProc) deadLetterCount() string {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + e.params.HTTPAddr + "/api/deadletters")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return fmt.Sprintf("HTTP %d, %d bytes: %.300s", resp.StatusCode, len(body), body)
}

// sendOne sends msg until it is answered AA, within d.
func sendOne(t *testing.T, addr string, msg durability.Message, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	st := durability.NewStats()
	if err := durability.SendSequence(ctx, []durability.Message{msg}, 0, func() string { return addr }, st); err != nil {
		t.Fatalf("sending %s: %v", msg.Ctrl, err)
	}
}

// verifyDelivered waits for every acknowledged message at the sink and
// checks with durability.Check: none lost, none unknown, per patient the
// first deliveries in the order the sender was acknowledged. Duplicates
// are returned for the caller to report.
func verifyDelivered(t *testing.T, sk *sink, msgs []durability.Message, st *durability.Stats, engines ...*engineProc) durability.Verdict {
	t.Helper()
	ackedIDs := st.AckedIDs()
	start := time.Now()
	missing := sk.waitFor(ackedIDs, deliverTimeout)
	if len(missing) > 0 {
		for _, e := range engines {
			if e.running() {
				t.Logf("%s dead letters: %s", e.name, e.deadLetterCount())
			}
		}
		if len(engines) > 0 && engines[0].running() {
			diagnose(t, engines[0].storeURL(), missing[:min(len(missing), 50)])
		}
	} else {
		t.Logf("all %d acknowledged messages at the sink %s after the last ACK", len(ackedIDs), time.Since(start).Round(time.Millisecond))
	}
	arrivals, bad := sk.snapshot()
	if bad > 0 {
		t.Errorf("sink received %d frames that were not HL7 v2 with MSH-10", bad)
	}
	v := durability.Check(msgs, ackedIDs, arrivals)
	if len(v.Lost) > 0 {
		t.Errorf("%d of %d acknowledged messages never reached the sink within %s; missing control ids (first 50): %s",
			len(v.Lost), v.Acked, deliverTimeout, strings.Join(v.Lost[:min(len(v.Lost), 50)], ", "))
	}
	if len(v.Unknown) > 0 {
		t.Errorf("sink received %d messages nobody sent: %s", len(v.Unknown), strings.Join(v.Unknown[:min(len(v.Unknown), 20)], ", "))
	}
	if v.Distinct != v.Acked {
		t.Errorf("distinct acknowledged messages at the sink = %d, want the acknowledged count %d", v.Distinct, v.Acked)
	}
	if len(v.Inversions) > 0 {
		t.Errorf("%d per-patient order inversions at the sink (first deliveries), first 20:\n%s", len(v.Inversions), strings.Join(v.Inversions[:min(len(v.Inversions), 20)], "\n"))
	}
	if len(v.DuplicatedIDs) > 0 {
		t.Logf("delivered more than once: %s", strings.Join(v.DuplicatedIDs[:min(len(v.DuplicatedIDs), 20)], ", "))
	}
	return v
}

// TestKillDuringIngest SIGKILLs the engine (embedded NATS) again and again
// while four senders push ADT for 100 patients, restarts it on the same
// data directory each time, and checks that every acknowledged message
// reaches the receiver, in per-patient order.
func TestKillDuringIngest(t *testing.T) {
	skipShort(t)
	n := envInt(t, "JUNCTION_DURABILITY_MESSAGES", defaultKillMessages)
	const kills = 5
	began := time.Now()
	sk := startSink(t)
	eng := newEngine(t, "engine", sk.addr(), nil, 10*time.Second)
	eng.mustStart()

	msgs := durability.Plan("K", n, durPatients)
	st := durability.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var sendErr error
	sendFinished := make(chan struct{})
	go func() {
		defer close(sendFinished)
		sendErr = durability.Send(ctx, msgs, durSenders, killWindow, func(int) string { return eng.params.MLLPAddr }, st)
	}()

	seed := uint64(time.Now().UnixNano())
	t.Logf("kill intervals from seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	killsDuringIngest := 0
	for k := range kills {
		time.Sleep(500*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond))))
		select {
		case <-sendFinished:
		default:
			killsDuringIngest++
		}
		before := st.AckedCount()
		eng.kill()
		t.Logf("kill %d: SIGKILL after %d/%d acknowledged", k+1, before, n)
		if err := eng.start(); err != nil {
			cancel()
			<-sendFinished
			t.Fatalf("restart after kill %d: %v", k+1, err)
		}
	}
	<-sendFinished
	if sendErr != nil {
		t.Fatalf("senders: %v", sendErr)
	}
	ingestTime := time.Since(began)
	v := verifyDelivered(t, sk, msgs, st, eng)
	t.Logf("messages %d, acknowledged %d, kills %d (%d while senders were still sending), restarts %d; "+
		"sender resends %d, connection failures %d, negative answers %d; "+
		"sink deliveries %d, distinct %d, messages delivered more than once %d (%d extra deliveries); ingest %s, total %s",
		n, v.Acked, kills, killsDuringIngest, eng.starts-1, st.Resends.Load(), st.ConnFailures.Load(), st.Negative.Load(),
		v.Deliveries, v.Distinct, v.Duplicated, v.ExtraDeliveries, ingestTime.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	if killsDuringIngest == 0 {
		t.Logf("note: the senders finished before the first kill; raise JUNCTION_DURABILITY_MESSAGES to kill during ingest")
	}
}

// TestTwoEnginesShareWork runs two engines against one standalone
// nats-server, sends 1,000 messages split across both, and checks that
// each is delivered exactly once and that both engines routed and
// delivered some of them.
func TestTwoEnginesShareWork(t *testing.T) {
	skipShort(t)
	const n = 1000
	began := time.Now()
	ns := startNATS(t)
	sk := startSink(t)
	a := newEngine(t, "engine-a", sk.addr(), ns, 10*time.Second)
	b := newEngine(t, "engine-b", sk.addr(), ns, 10*time.Second)
	// One after the other, so stream creation is not a race.
	a.mustStart()
	b.mustStart()
	engines := []*engineProc{a, b}

	msgs := durability.Plan("S", n, durPatients)
	st := durability.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addr := func(sender int) string { return engines[sender%2].params.MLLPAddr }
	if err := durability.Send(ctx, msgs, durSenders, 0, addr, st); err != nil {
		t.Fatalf("senders: %v", err)
	}
	if st.Negative.Load() > 0 || st.ConnFailures.Load() > 0 {
		t.Errorf("under normal operation: %d negative answers, %d connection failures, want none", st.Negative.Load(), st.ConnFailures.Load())
	}
	if missing := sk.waitFor(st.AckedIDs(), deliverTimeout); len(missing) == 0 {
		// A barrier per patient: its message is delivered after any
		// redelivery of that patient's earlier ones, so duplicates have
		// shown up by the time every barrier has.
		barrier := make([]durability.Message, 0, durPatients)
		for p := range durPatients {
			barrier = append(barrier, durability.PlanMessage("S", p, n/durPatients+1, nhs.TestNumber(p)))
		}
		if err := durability.Send(ctx, barrier, durSenders, 0, addr, st); err != nil {
			t.Fatalf("barrier senders: %v", err)
		}
		msgs = append(msgs, barrier...)
	}
	v := verifyDelivered(t, sk, msgs, st, engines...)
	if v.Duplicated > 0 {
		t.Errorf("%d messages delivered more than once (%d extra deliveries) under normal operation, want exactly once", v.Duplicated, v.ExtraDeliveries)
	}
	var routed, delivered [2]float64
	for i, e := range engines {
		var err error
		if routed[i], err = e.metric("junction_route_messages_total", `route="adt-to-sink"`, `outcome="matched"`); err != nil {
			t.Errorf("%s metrics: %v", e.name, err)
		}
		if delivered[i], err = e.metric("junction_delivery_messages_total", `destination="sink"`, `outcome="delivered"`); err != nil {
			t.Errorf("%s metrics: %v", e.name, err)
		}
	}
	t.Logf("messages %d (+%d barrier), acknowledged %d; routed by engine-a %.0f, engine-b %.0f; delivered by engine-a %.0f, engine-b %.0f; "+
		"sink deliveries %d, distinct %d, duplicated %d; total %s",
		n, len(msgs)-n, v.Acked, routed[0], routed[1], delivered[0], delivered[1], v.Deliveries, v.Distinct, v.Duplicated, time.Since(began).Round(time.Millisecond))
	for i, e := range engines {
		if routed[i] == 0 {
			t.Errorf("%s routed no messages: the route consumers are not shared (the other engine took all %.0f)", e.name, routed[1-i])
		}
		if delivered[i] == 0 {
			t.Errorf("%s delivered no messages: the delivery consumers are not shared (the other engine took all %.0f)", e.name, delivered[1-i])
		}
	}
}

// TestStoreDownNoPositiveAck stops the nats-server under a running engine:
// a message sent then must not be answered AA or CA; once the server is
// back on the same port and store, a resend is answered AA and the
// message is delivered once.
func TestStoreDownNoPositiveAck(t *testing.T) {
	skipShort(t)
	ns := startNATS(t)
	sk := startSink(t)
	eng := newEngine(t, "engine", sk.addr(), ns, 10*time.Second)
	eng.mustStart()
	nhsNo := nhs.TestNumber(7)
	m1, m2, m3 := durability.PlanMessage("N", 7, 0, nhsNo), durability.PlanMessage("N", 7, 1, nhsNo), durability.PlanMessage("N", 7, 2, nhsNo)

	sendOne(t, eng.params.MLLPAddr, m1, 30*time.Second)
	if miss := sk.waitFor([]string{m1.Ctrl}, deliverTimeout); len(miss) > 0 {
		t.Fatalf("%s acknowledged but not delivered with the store up", m1.Ctrl)
	}

	ns.stop()
	t.Log("nats-server stopped")
	const bound = 30 * time.Second
	func() {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		c, err := mllp.Dial(ctx, eng.params.MLLPAddr, nil, 1<<20)
		if err != nil {
			t.Logf("with the store down the listener refused the connection: %v", err)
			return
		}
		defer c.Close()
		start := time.Now()
		reply, err := c.Send(ctx, m2.Raw)
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			t.Errorf("with the store down, %s got no answer within %s; want AR with an ERR segment or the connection closed", m2.Ctrl, bound)
			return
		case err != nil:
			t.Logf("with the store down the connection closed after %s without an answer: %v", time.Since(start).Round(time.Millisecond), err)
			return
		}
		code, ctrl, text, perr := hl7v2.ParseAck(reply)
		if perr != nil {
			t.Errorf("with the store down the answer is not an ACK (%v): %q", perr, reply)
			return
		}
		if code.Accepted() {
			t.Errorf("with the store down %s was answered %s (MSA-2 %s): a positive ACK for a message that cannot have been stored", m2.Ctrl, code, ctrl)
			return
		}
		if !bytes.Contains(reply, []byte("\rERR|")) {
			t.Errorf("with the store down the answer %s has no ERR segment: %q", code, reply)
		}
		t.Logf("with the store down %s was answered %s after %s: %q", m2.Ctrl, code, time.Since(start).Round(time.Millisecond), text)
	}()

	if err := ns.start(); err != nil {
		t.Fatalf("restarting nats-server: %v", err)
	}
	t.Log("nats-server restarted on the same port and store")
	restarted := time.Now()
	sendOne(t, eng.params.MLLPAddr, m2, 90*time.Second)
	t.Logf("%s answered AA %s after the store came back", m2.Ctrl, time.Since(restarted).Round(time.Millisecond))
	// m3 is the same patient's next message: delivered after any
	// redelivery of m2, so once it is in, m2's count is final.
	sendOne(t, eng.params.MLLPAddr, m3, 30*time.Second)
	if miss := sk.waitFor([]string{m2.Ctrl, m3.Ctrl}, deliverTimeout); len(miss) > 0 {
		t.Fatalf("acknowledged but never delivered after the store came back: %s (dead letters: %s)", strings.Join(miss, ", "), eng.deadLetterCount())
	}
	arrivals, _ := sk.snapshot()
	counts := map[string]int{}
	var firsts []string
	for _, id := range arrivals {
		if counts[id] == 0 {
			firsts = append(firsts, id)
		}
		counts[id]++
	}
	if got := counts[m2.Ctrl]; got != 1 {
		t.Errorf("%s delivered %d times, want once", m2.Ctrl, got)
	}
	if want := []string{m1.Ctrl, m2.Ctrl, m3.Ctrl}; !slices.Equal(firsts, want) {
		t.Errorf("first deliveries %v, want %v", firsts, want)
	}
	t.Logf("deliveries: %s×%d, %s×%d, %s×%d", m1.Ctrl, counts[m1.Ctrl], m2.Ctrl, counts[m2.Ctrl], m3.Ctrl, counts[m3.Ctrl])
}

// TestGracefulShutdown sends SIGTERM to the engine under full load, with
// a routing and delivery backlog: it must exit 0 within shutdown_timeout,
// and after a restart every acknowledged message is delivered, in
// per-patient order.
func TestGracefulShutdown(t *testing.T) {
	skipShort(t)
	n := max(envInt(t, "JUNCTION_DURABILITY_MESSAGES", defaultKillMessages)/2, durPatients)
	const shutdownTimeout = 15 * time.Second
	began := time.Now()
	sk := startSink(t)
	eng := newEngine(t, "engine", sk.addr(), nil, shutdownTimeout)
	eng.mustStart()

	msgs := durability.Plan("G", n, durPatients)
	st := durability.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sendDone := make(chan error, 1)
	go func() {
		sendDone <- durability.Send(ctx, msgs, durSenders, 0, func(int) string { return eng.params.MLLPAddr }, st)
	}()
	// Full speed, so routing and delivery lag behind ingest and hold a
	// backlog at SIGTERM: wait until half is acknowledged.
	for st.AckedCount() < n/2 {
		select {
		case err := <-sendDone:
			t.Fatalf("senders finished before SIGTERM: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	before := st.AckedCount()
	took, exited := eng.terminate(shutdownTimeout + 10*time.Second)
	if !exited {
		t.Fatalf("engine still running %s after SIGTERM (shutdown_timeout %s)", took.Round(time.Millisecond), shutdownTimeout)
	}
	code := eng.state.ExitCode()
	t.Logf("SIGTERM after %d/%d acknowledged: exited with code %d after %s", before, n, code, took.Round(time.Millisecond))
	if code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
	if took > shutdownTimeout {
		t.Errorf("exit took %s, longer than shutdown_timeout %s", took.Round(time.Millisecond), shutdownTimeout)
	}
	eng.mustStart()
	if err := <-sendDone; err != nil {
		t.Fatalf("senders: %v", err)
	}
	v := verifyDelivered(t, sk, msgs, st, eng)
	t.Logf("messages %d, acknowledged %d; sender resends %d, connection failures %d, negative answers %d; "+
		"sink deliveries %d, distinct %d, delivered more than once %d (%d extra); total %s",
		n, v.Acked, st.Resends.Load(), st.ConnFailures.Load(), st.Negative.Load(), v.Deliveries, v.Distinct, v.Duplicated, v.ExtraDeliveries, time.Since(began).Round(time.Millisecond))
}

// diagnose logs where missing messages sit in JetStream (stream sequence
// and subject in the ingress and outbound streams) and, for the consumer
// of each one's partition, its delivered and acknowledged floor.
func diagnose(t *testing.T, url string, missing []string) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Logf("diagnosis: connecting to %s: %v", url, err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Logf("diagnosis: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[string]bool{}
	for _, id := range missing {
		want[id] = true
	}
	for _, name := range []string{"JUNCTION_INGRESS", "JUNCTION_OUTBOUND"} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Logf("diagnosis: stream %s: %v", name, err)
			continue
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Logf("diagnosis: stream %s: %v", name, err)
			continue
		}
		t.Logf("diagnosis: %s holds %d messages, seq %d..%d", name, info.State.Msgs, info.State.FirstSeq, info.State.LastSeq)
		byFilter := map[string][]*jetstream.ConsumerInfo{}
		cl := st.ListConsumers(ctx)
		for ci := range cl.Info() {
			byFilter[ci.Config.FilterSubject] = append(byFilter[ci.Config.FilterSubject], ci)
		}
		if info.State.Msgs == 0 {
			continue
		}
		oc, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Logf("diagnosis: reading %s: %v", name, err)
			continue
		}
		found := 0
		for seen := uint64(0); seen < info.State.Msgs; {
			b, err := oc.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				break
			}
			n := 0
			for m := range b.Messages() {
				n++
				h := m.Headers()
				if !want[h.Get(envelope.HeaderControlID)] {
					continue
				}
				found++
				meta, _ := m.Metadata()
				var seq uint64
				if meta != nil {
					seq = meta.Sequence.Stream
				}
				line := fmt.Sprintf("diagnosis: %s control id %s: seq %d, subject %s, id %s", name, h.Get(envelope.HeaderControlID), seq, m.Subject(), h.Get(envelope.HeaderID))
				for _, ci := range byFilter[m.Subject()] {
					line += fmt.Sprintf("; consumer %s delivered %d, ack floor %d, ack pending %d, redelivered %d, pending %d",
						ci.Name, ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumAckPending, ci.NumRedelivered, ci.NumPending)
				}
				t.Log(line)
			}
			if n == 0 {
				break
			}
			seen += uint64(n)
		}
		t.Logf("diagnosis: %d of the %d missing control ids are in %s", found, len(missing), name)
	}
}

// TestSecondSignalStopsAtOnce checks that a second SIGTERM during a drain
// that is waiting (here on a receiver that never answers) stops the
// process at once, with exit code 1, as operators expect of a second
// Ctrl-C.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	skipShort(t)
	// A receiver that takes connections and never answers.
	eng := newEngine(t, "engine", testnet.Silent(t), nil, 60*time.Second)
	eng.mustStart()
	msgs := durability.Plan("S", 4, 2)
	st := durability.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := durability.Send(ctx, msgs, 1, 0, func(int) string { return eng.params.MLLPAddr }, st); err != nil {
		t.Fatalf("send: %v", err)
	}
	time.Sleep(time.Second) // deliveries now wait on the receiver
	if err := eng.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if !eng.running() {
		t.Fatal("the drain ended before the second signal; the receiver should have held it")
	}
	took, exited := eng.terminate(5 * time.Second)
	if !exited {
		t.Fatalf("still running %s after a second SIGTERM", took.Round(time.Millisecond))
	}
	if code := eng.state.ExitCode(); code != 1 {
		t.Errorf("exit code after a second SIGTERM = %d, want 1", code)
	}
	if b, _ := os.ReadFile(eng.stderr); !bytes.Contains(b, []byte("second signal")) {
		t.Errorf("stderr does not say why it stopped:\n%s", tail(eng.stderr, 5))
	}
}

func TestRaceReports(t *testing.T) {
	report := "==================\nWARNING: DATA RACE\nWrite at 0x00c000 by goroutine 7:\n  main.f()\n==================\n"
	for _, tc := range []struct {
		name, log string
		maxLines  int
		want      string
	}{
		{"none", `{"level":"INFO","msg":"junction ready"}` + "\n", 10, ""},
		{"missing log", "", 10, ""},
		{"report", `{"level":"INFO","msg":"junction ready"}` + "\n" + report, 10,
			"WARNING: DATA RACE\nWrite at 0x00c000 by goroutine 7:\n  main.f()\n=================="},
		{"cut", report, 2, "WARNING: DATA RACE\nWrite at 0x00c000 by goroutine 7:\n(2 more lines)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "child.stderr.log")
			if tc.log != "" {
				if err := os.WriteFile(path, []byte(tc.log), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := raceReports(path, tc.maxLines); got != tc.want {
				t.Errorf("raceReports = %q, want %q", got, tc.want)
			}
		})
	}
}
