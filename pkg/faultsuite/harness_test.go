//go:build unix

package faultsuite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/nats-io/nkeys"
)

const adminToken = "faultsuite-admin-token"

// backend runs the components: as containers (docker_test.go) or as child
// processes on loopback (process_test.go, JUNCTION_FAULTS_MODE=process).
type backend interface {
	// listen is the address n's service on port (such as "4222/tcp")
	// listens on, as n sees it.
	listen(n *node, port string) string
	// peer is the address other components reach n's port at.
	peer(n *node, port string) string
	// file is the path at which n sees a host file or directory,
	// arranging for it to be visible there.
	file(n *node, host, inside string) string
	// dataDir is a directory of n's that survives restarts.
	dataDir(n *node, inside string) string
	// binary is how n starts its program (junction, natsd, faultsink).
	binary(n *node, program string) string
	start(n *node) error
	kill(n *node) error
	signal(n *node, sig syscall.Signal) error
	running(n *node) bool
	logs(n *node, lines int) string
	// memory is n's memory use in bytes (the container's cgroup usage,
	// or the process's resident set).
	memory(n *node) (uint64, error)
	// cut disconnects n from the other NATS nodes; heal undoes it.
	cut(n *node) error
	heal(n *node) error
	// edge joins NATS node n to a network of its own with Junction, so cut
	// leaves Junction reaching it; it returns the address Junction uses.
	edge(n *node) (string, error)
	close()
}

// node is one component and the host addresses its ports are published on.
type node struct {
	name    string
	program string
	args    []string
	env     []string
	ports   map[string]string // port ("4222/tcp") -> host address
	// backend state
	mounts []string
	proc   *procState
	cid    string
}

func (n *node) addr(port string) string { return n.ports[port] }

// topology is a NATS cluster, Junction replicas and the sink.
type topology struct {
	t        *testing.T
	be       backend
	prefix   string
	dir      string
	nats     []*node
	junction []*node
	sink     *node
	edgeURL  string
	fhir     bool
	// nkeyPub is the NKey user the NATS servers admit, as the chart's do;
	// nkeySeed is the file holding its seed, which Junction and the
	// suite's own connections sign with.
	nkeyPub, nkeySeed string
	// routePassword is the password the servers' cluster routes
	// authenticate with, as the chart's do.
	routePassword string
}

// options vary a topology.
type options struct {
	// edge makes Junction connect to NATS node 0 only, over a path that
	// cutting node 0 off the cluster leaves in place.
	edge bool
	// fhir adds a FHIR destination (the sink's /fhir) fed by a second
	// route, beside the MLLP one.
	fhir bool
}

// newTopology starts natsNodes NATS servers (a cluster when more than one),
// the sink, and junctions Junction replicas, and waits until all are ready.
func newTopology(t *testing.T, natsNodes, junctions int) *topology {
	t.Helper()
	return newTopologyOpts(t, natsNodes, junctions, options{})
}

// newTopologyOpts is newTopology with options.
func newTopologyOpts(t *testing.T, natsNodes, junctions int, o options) *topology {
	t.Helper()
	edge := o.edge
	if testing.Short() {
		t.Skip("fault-injection suite skipped with -short")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	tp := &topology{t: t, prefix: "jfs" + hex.EncodeToString(b), dir: t.TempDir(), fhir: o.fhir}
	// Containers run as root in a scratch image; bind-mounted files must
	// be readable.
	if err := os.Chmod(tp.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("JUNCTION_FAULTS_MODE") == "process" {
		tp.be = newProcessBackend(t, tp.dir)
	} else {
		tp.be = newDockerBackend(t, tp.prefix)
	}
	t.Cleanup(tp.close)
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	tp.nkeyPub, tp.nkeySeed = pub, filepath.Join(tp.dir, "junction.nk")
	tp.write(tp.nkeySeed, string(seed))
	pw := make([]byte, 16)
	_, _ = rand.Read(pw)
	tp.routePassword = hex.EncodeToString(pw)
	if _, ok := tp.be.(*processBackend); ok && edge {
		t.Skipf("%v", errNoNetwork)
	}
	// Name every node and pick its ports first: configs refer to peers.
	for i := range natsNodes {
		tp.nats = append(tp.nats, tp.newNode(fmt.Sprintf("n%d", i+1), "natsd", "4222/tcp", "8222/tcp", "6222/tcp"))
	}
	tp.sink = tp.newNode("sink", "faultsink", "2576/tcp", "8081/tcp")
	for i := range junctions {
		tp.junction = append(tp.junction, tp.newNode(fmt.Sprintf("j%d", i+1), "junction", "2575/tcp", "2577/tcp", "8080/tcp"))
	}
	for i := range tp.nats {
		tp.configureNATS(i)
		tp.mustStart(tp.nats[i])
	}
	if edge {
		u, err := tp.be.edge(tp.nats[0])
		if err != nil {
			t.Skipf("this backend cannot cut a node off: %v", err)
		}
		tp.edgeURL = u
	}
	tp.sink.args = []string{"-mllp", tp.be.listen(tp.sink, "2576/tcp"), "-http", tp.be.listen(tp.sink, "8081/tcp")}
	tp.mustStart(tp.sink)
	tp.waitHTTP(tp.sink, "8081/tcp", "/mode")
	for _, n := range tp.nats {
		tp.waitHTTP(n, "8222/tcp", "/healthz")
	}
	for i := range tp.junction {
		tp.configureJunction(i)
		tp.mustStart(tp.junction[i])
	}
	for _, j := range tp.junction {
		tp.waitReady(j)
	}
	return tp
}

func (tp *topology) newNode(name, program string, ports ...string) *node {
	n := &node{name: tp.prefix + "-" + name, program: program, ports: map[string]string{}}
	for _, p := range ports {
		n.ports[p] = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(tp.t)))
	}
	return n
}

func (tp *topology) mustStart(n *node) {
	tp.t.Helper()
	if err := tp.be.start(n); err != nil {
		tp.t.Fatalf("starting %s: %v", n.name, err)
	}
}

func (tp *topology) configureNATS(i int) {
	n := tp.nats[i]
	// Routes authenticate as the chart's do: the password and each
	// route's URL (which carries it) come from the environment, so
	// nats.conf holds no secret.
	var routes []string
	n.env = []string{"NATS_ROUTE_PASSWORD=" + tp.routePassword}
	for k, o := range tp.nats {
		v := fmt.Sprintf("NATS_ROUTE_%d", k)
		routes = append(routes, "$"+v)
		n.env = append(n.env, v+"=nats://route:"+tp.routePassword+"@"+tp.be.peer(o, "6222/tcp"))
	}
	conf := fmt.Sprintf(`server_name: %s
listen: %s
http: %s
max_payload: 8MB
authorization {
  users = [ { nkey: %s } ]
}
jetstream {
  store_dir: %q
  sync_interval: always
}
`, n.name, tp.be.listen(n, "4222/tcp"), tp.be.listen(n, "8222/tcp"), tp.nkeyPub, tp.be.dataDir(n, "/data"))
	if len(tp.nats) > 1 {
		conf += fmt.Sprintf("cluster {\n  name: %s\n  listen: %s\n  authorization { user: route, password: $NATS_ROUTE_PASSWORD }\n  routes: [%s]\n}\n",
			tp.prefix, tp.be.listen(n, "6222/tcp"), strings.Join(routes, ", "))
	}
	path := filepath.Join(tp.dir, n.name+".conf")
	tp.write(path, conf)
	n.args = []string{"-c", tp.be.file(n, path, "/etc/nats.conf")}
}

func (tp *topology) configureJunction(i int) {
	j := tp.junction[i]
	var urls, monitors []string
	for _, n := range tp.nats {
		urls = append(urls, "nats://"+tp.be.peer(n, "4222/tcp"))
		monitors = append(monitors, strconv.Quote("http://"+tp.be.peer(n, "8222/tcp")))
	}
	if tp.edgeURL != "" {
		urls = []string{tp.edgeURL}
	}
	replicas := 1
	if len(tp.nats) >= 3 {
		replicas = 3
	}
	routesDir, extra := "testdata/routes", ""
	if tp.fhir {
		routesDir = "testdata/routes-fhir"
		extra = fmt.Sprintf(`  sink-fhir:
    type: fhir
    url: http://%s/fhir
    retry: {max_attempts: 100000, initial: 100ms, max: 2s, multiplier: 2, timeout: 10s}
`, tp.be.peer(tp.sink, "8081/tcp"))
	}
	routes, err := filepath.Abs(routesDir)
	if err != nil {
		tp.t.Fatal(err)
	}
	path := filepath.Join(tp.dir, j.name+".yaml")
	conf := fmt.Sprintf(`data_dir: %q
log:
  level: info
nats:
  url: %q
  nkey_seed: %q
  monitor_urls: [%s]
  replicas: %d
  partitions: 16
http:
  listen: %s
  admin_token: env:JUNCTION_ADMIN_TOKEN
routes: [%q]
router:
  ack_wait: 3s
  pipeline: %s
shutdown_timeout: 10s
inputs:
  pas:
    type: pas
    listen: %s
    ack_application: JUNCTION
  pathology:
    type: pathology
    listen: %s
    ack_application: JUNCTION
destinations:
  sink:
    type: mllp
    address: %s
    ack_timeout: 5s
    connect_timeout: 2s
    retry: {max_attempts: 100000, initial: 100ms, max: 2s, multiplier: 2, timeout: 10s}
%s`, tp.be.dataDir(j, "/var/lib/junction"), strings.Join(urls, ","), "file:"+tp.be.file(j, tp.nkeySeed, "/etc/junction/nats.nk"), strings.Join(monitors, ", "), replicas,
		tp.be.listen(j, "8080/tcp"), tp.be.file(j, routes, "/etc/junction/routes"), pipeline(), tp.be.listen(j, "2575/tcp"), tp.be.listen(j, "2577/tcp"), tp.be.peer(tp.sink, "2576/tcp"), extra)
	tp.write(path, conf)
	j.args = []string{"serve", "-c", tp.be.file(j, path, "/etc/junction/junction.yaml")}
	j.env = []string{"JUNCTION_ADMIN_TOKEN=" + adminToken}
}

// pipeline is the router pipeline Junction runs under in the suite:
// JUNCTION_FAULTS_PIPELINE (message or batch), default batch (Junction's
// default).
func pipeline() string {
	if p := os.Getenv("JUNCTION_FAULTS_PIPELINE"); p != "" {
		return p
	}
	return "batch"
}

func (tp *topology) write(path, body string) {
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		tp.t.Fatal(err)
	}
}

// Host ports for nodes are picked below Linux's ephemeral range (32768
// and up by default), which the kernel hands to outgoing connections and
// to listeners on port 0: a port picked there could be taken by another
// test's connection between the pick and the node binding it (Docker
// then fails "port is already allocated"), or while a killed node is
// down, so that its restart fails. Ports handed out are not reused within
// the run.
const (
	minNodePort = 15000
	maxNodePort = 32000
)

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// freePort returns a loopback port outside the ephemeral range that is
// free now and was not handed out before in this run.
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := minNodePort + mrand.IntN(maxNodePort-minNodePort)
		if portsUsed[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		_ = ln.Close()
		portsUsed[p] = true
		return p
	}
	t.Fatal("no free port found below the ephemeral range")
	return 0
}

// close stops everything, showing the logs of Junction replicas and NATS
// nodes when the test failed.
func (tp *topology) close() {
	if tp.t.Failed() {
		for _, n := range append(append([]*node{}, tp.junction...), tp.nats...) {
			tp.t.Logf("--- last log lines of %s:\n%s", n.name, tp.be.logs(n, 40))
		}
	}
	tp.be.close()
}

func (tp *topology) logs(n *node, lines int) string { return tp.be.logs(n, lines) }

// kill sends SIGKILL to n's process and waits until it is gone.
func (tp *topology) kill(n *node) {
	tp.t.Helper()
	if err := tp.be.kill(n); err != nil {
		tp.t.Fatalf("killing %s: %v", n.name, err)
	}
}

// start starts a killed component again, with its data.
func (tp *topology) start(n *node) { tp.mustStart(n) }

func (tp *topology) running(n *node) bool { return tp.be.running(n) }

func (tp *topology) cut(n *node) {
	tp.t.Helper()
	if err := tp.be.cut(n); err != nil {
		tp.t.Fatalf("cutting %s off: %v", n.name, err)
	}
}

func (tp *topology) heal(n *node) {
	tp.t.Helper()
	if err := tp.be.heal(n); err != nil {
		tp.t.Fatalf("reconnecting %s: %v", n.name, err)
	}
}

// signal sends sig to n's main process (SIGSTOP and SIGCONT freeze and
// thaw it).
func (tp *topology) signal(n *node, sig syscall.Signal) {
	tp.t.Helper()
	if err := tp.be.signal(n, sig); err != nil {
		tp.t.Fatalf("signalling %s: %v", n.name, err)
	}
}

func (tp *topology) waitHTTP(n *node, port, path string) {
	tp.t.Helper()
	url := "http://" + n.addr(port) + path
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tp.t.Fatalf("%s not ready at %s: %v\n%s", n.name, path, err, tp.logs(n, 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (tp *topology) waitReady(j *node) { tp.waitHTTP(j, "8080/tcp", "/readyz") }

// ready reports whether Junction replica j answers /readyz with 200.
func ready(j *node) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + j.addr("8080/tcp") + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// setSinkMode sets the sink's behaviour (see cmd/faultsink).
func (tp *topology) setSinkMode(mode string) {
	tp.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+tp.sink.addr("8081/tcp")+"/mode", strings.NewReader(mode))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tp.t.Fatalf("setting sink mode: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		tp.t.Fatalf("setting sink mode %s: %s %s", mode, resp.Status, b)
	}
}

// delivery is one message the sink accepted.
type delivery struct {
	Key      string `json:"key"`
	Protocol string `json:"protocol"`
}

// arrivals returns the keys the sink accepted over protocol, in order.
func (tp *topology) arrivals(protocol string) []string {
	tp.t.Helper()
	var ds []delivery
	tp.getJSON("http://"+tp.sink.addr("8081/tcp")+"/deliveries", "", &ds)
	var out []string
	for _, d := range ds {
		if d.Protocol == protocol {
			out = append(out, d.Key)
		}
	}
	return out
}

func (tp *topology) getJSON(url, token string, v any) {
	tp.t.Helper()
	if err := tp.tryJSON(url, token, v); err != nil {
		tp.t.Fatal(err)
	}
}

func (tp *topology) tryJSON(url, token string, v any) error {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s %s", url, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: decoding: %w", url, err)
	}
	return nil
}

// reconcile asks a running replica for the fate of every accepted
// message, waiting up to d for the pending ones to finish (and for the
// store to answer).
func (tp *topology) reconcile(d time.Duration) audit.Reconciliation {
	tp.t.Helper()
	deadline := time.Now().Add(d)
	for {
		var j *node
		for _, n := range tp.junction {
			if ready(n) {
				j = n
				break
			}
		}
		if j == nil {
			if time.Now().After(deadline) {
				tp.t.Fatal("no Junction replica ready to reconcile")
			}
			time.Sleep(time.Second)
			continue
		}
		var rep audit.Reconciliation
		err := tp.tryJSON("http://"+j.addr("8080/tcp")+"/api/reconcile", adminToken, &rep)
		switch {
		case err != nil && time.Now().After(deadline):
			tp.t.Fatalf("reconcile: %v", err)
		case err != nil:
			// The store may still be busy after the faults (JetStream's
			// API answers "no responders" while it catches up): retry.
			tp.t.Logf("reconcile: %v; retrying", err)
		case len(rep.Pending) == 0 || time.Now().After(deadline):
			return rep
		}
		time.Sleep(2 * time.Second)
	}
}

// mllpAddr returns the PAS MLLP address of the i-th running replica,
// round robin, so senders move to a live one after a kill.
func (tp *topology) mllpAddr(i int) string { return tp.liveAddr(i, "2575/tcp") }

// labAddr is mllpAddr for the pathology listener.
func (tp *topology) labAddr(i int) string { return tp.liveAddr(i, "2577/tcp") }

func (tp *topology) liveAddr(i int, port string) string {
	for k := range tp.junction {
		j := tp.junction[(i+k)%len(tp.junction)]
		if ready(j) {
			return j.addr(port)
		}
	}
	return tp.junction[i%len(tp.junction)].addr(port)
}

// envInt reads a positive integer from the environment.
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

var errNotReady = errors.New("not ready")

// waitUntil polls cond every 100ms for up to d.
func waitUntil(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errNotReady
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// buildBinaries compiles junction, natsd and faultsink as static binaries
// once per test run, into a directory removed when the tests end.
func buildBinaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() { buildDir, buildErr = doBuild() })
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	return buildDir
}

func doBuild() (string, error) {
	dir, err := os.MkdirTemp("", "junction-faultsuite-bin")
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	for _, bin := range []string{"junction", "natsd", "faultsink"} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, bin), "./cmd/"+bin)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", bin, err, out)
		}
	}
	return dir, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}
