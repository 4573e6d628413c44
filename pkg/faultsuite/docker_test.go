//go:build unix

package faultsuite

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"
)

const (
	image    = "junction-faultsuite"
	imageTag = "test"
)

// dockerBackend runs each component as a container of one image built
// FROM scratch, on a private network; ports are published on fixed
// loopback ports so they survive restarts.
type dockerBackend struct {
	t     *testing.T
	pool  *dockertest.Pool
	net   *dockertest.Network
	edgeN *dockertest.Network
	nodes []*node
}

func newDockerBackend(t *testing.T, prefix string) *dockerBackend {
	t.Helper()
	pool, err := dockertest.NewPool("")
	if err == nil {
		err = pool.Client.Ping()
	}
	if err != nil {
		if os.Getenv("JUNCTION_REQUIRE_DOCKER") == "1" {
			t.Fatalf("JUNCTION_REQUIRE_DOCKER=1 but no Docker engine answers: %v", err)
		}
		t.Skipf("no Docker engine answers (%v); set JUNCTION_FAULTS_MODE=process to run these tests as local processes, or JUNCTION_REQUIRE_DOCKER=1 to make this a failure", err)
	}
	pool.MaxWait = 2 * time.Minute
	staleOnce.Do(func() { removeStale(t, pool) })
	buildImage(t, pool)
	network, err := pool.CreateNetwork(prefix)
	if err != nil {
		t.Fatalf("creating network: %v", err)
	}
	return &dockerBackend{t: t, pool: pool, net: network}
}

var (
	imageOnce sync.Once
	imageErr  error
	staleOnce sync.Once
)

// pidLabel labels each container with the test process that made it.
const pidLabel = "junction-faultsuite.pid"

// removeStale removes containers an earlier test process left behind
// (one killed by a timeout runs no cleanup), which would otherwise keep
// using CPU beside this run; those of a process still running stay.
func removeStale(t *testing.T, pool *dockertest.Pool) {
	cs, err := pool.Client.ListContainers(dc.ListContainersOptions{All: true, Filters: map[string][]string{"label": {pidLabel}}})
	if err != nil {
		t.Logf("listing earlier fault-suite containers: %v", err)
		return
	}
	for _, c := range cs {
		pid, err := strconv.Atoi(c.Labels[pidLabel])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // that process still runs
		}
		t.Logf("removing container %v left by fault-suite process %d", c.Names, pid)
		_ = pool.Client.RemoveContainer(dc.RemoveContainerOptions{ID: c.ID, Force: true, RemoveVolumes: true})
	}
}

// buildImage builds the image holding junction, natsd and faultsink, once
// per test run.
func buildImage(t *testing.T, pool *dockertest.Pool) {
	t.Helper()
	dir := buildBinaries(t)
	imageOnce.Do(func() {
		df := "FROM scratch\nCOPY junction natsd faultsink /\n"
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o600); err != nil {
			imageErr = err
			return
		}
		var out bytes.Buffer
		if err := pool.Client.BuildImage(dc.BuildImageOptions{
			Name: image + ":" + imageTag, ContextDir: dir, Dockerfile: "Dockerfile", OutputStream: &out, RmTmpContainer: true,
		}); err != nil {
			imageErr = fmt.Errorf("docker build: %v\n%s", err, out.String())
		}
	})
	if imageErr != nil {
		t.Fatalf("building the test image: %v", imageErr)
	}
}

func containerPort(port string) string { return strings.TrimSuffix(port, "/tcp") }

func (d *dockerBackend) listen(_ *node, port string) string { return "0.0.0.0:" + containerPort(port) }

func (d *dockerBackend) peer(n *node, port string) string { return n.name + ":" + containerPort(port) }

func (d *dockerBackend) file(n *node, host, inside string) string {
	n.mounts = append(n.mounts, host+":"+inside+":ro")
	return inside
}

func (d *dockerBackend) dataDir(_ *node, inside string) string { return inside }

func (d *dockerBackend) binary(_ *node, program string) string { return "/" + program }

func (d *dockerBackend) start(n *node) error {
	if n.cid != "" {
		return d.pool.Client.StartContainer(n.cid, nil)
	}
	bindings := map[dc.Port][]dc.PortBinding{}
	exposed := map[dc.Port]struct{}{}
	for p, hostAddr := range n.ports {
		_, hp, _ := strings.Cut(hostAddr, ":")
		bindings[dc.Port(p)] = []dc.PortBinding{{HostIP: "127.0.0.1", HostPort: hp}}
		exposed[dc.Port(p)] = struct{}{}
	}
	// Created, joined to its networks, then started: a container is
	// created on one network only, and Junction must find its NATS
	// address (on the edge network) from its first moment.
	c, err := d.pool.Client.CreateContainer(dc.CreateContainerOptions{
		Name: n.name,
		Config: &dc.Config{
			Hostname: n.name, Image: image + ":" + imageTag, Labels: map[string]string{pidLabel: strconv.Itoa(os.Getpid())},
			Entrypoint: []string{d.binary(n, n.program)}, Cmd: n.args, Env: n.env, ExposedPorts: exposed,
		},
		HostConfig: &dc.HostConfig{Binds: n.mounts, PortBindings: bindings, RestartPolicy: dc.RestartPolicy{Name: "no"}},
		NetworkingConfig: &dc.NetworkingConfig{EndpointsConfig: map[string]*dc.EndpointConfig{
			d.net.Network.Name: {Aliases: []string{n.name}},
		}},
	})
	if err != nil {
		return err
	}
	n.cid = c.ID
	d.nodes = append(d.nodes, n)
	if d.edgeN != nil && n.program != "natsd" {
		if err := d.pool.Client.ConnectNetwork(d.edgeN.Network.ID, dc.NetworkConnectionOptions{Container: c.ID}); err != nil {
			return fmt.Errorf("joining the edge network: %w", err)
		}
	}
	return d.pool.Client.StartContainer(c.ID, nil)
}

func (d *dockerBackend) kill(n *node) error {
	if err := d.pool.Client.KillContainer(dc.KillContainerOptions{ID: n.cid, Signal: dc.SIGKILL}); err != nil {
		return err
	}
	// Wait until Docker sees it stopped, so a restart is a restart.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := d.pool.Client.InspectContainer(n.cid); err == nil && !c.State.Running {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("still running 30s after SIGKILL")
}

func (d *dockerBackend) signal(n *node, sig syscall.Signal) error {
	return d.pool.Client.KillContainer(dc.KillContainerOptions{ID: n.cid, Signal: dc.Signal(sig)})
}

func (d *dockerBackend) running(n *node) bool {
	c, err := d.pool.Client.InspectContainer(n.cid)
	return err == nil && c.State.Running && !c.State.Paused
}

func (d *dockerBackend) logs(n *node, lines int) string {
	var out bytes.Buffer
	_ = d.pool.Client.Logs(dc.LogsOptions{Container: n.cid, OutputStream: &out, ErrorStream: &out, Stdout: true, Stderr: true, Tail: strconv.Itoa(lines)})
	return out.String()
}

func (d *dockerBackend) memory(n *node) (uint64, error) {
	ch := make(chan *dc.Stats, 2)
	errc := make(chan error, 1)
	go func() {
		errc <- d.pool.Client.Stats(dc.StatsOptions{ID: n.cid, Stats: ch, Stream: false, Timeout: 10 * time.Second})
	}()
	st, ok := <-ch
	if err := <-errc; err != nil {
		return 0, err
	}
	if !ok || st == nil {
		return 0, errors.New("no stats")
	}
	return st.MemoryStats.Usage - min(st.MemoryStats.Stats.Cache, st.MemoryStats.Usage), nil
}

func (d *dockerBackend) cut(n *node) error {
	return d.pool.Client.DisconnectNetwork(d.net.Network.ID, dc.NetworkConnectionOptions{Container: n.cid, Force: true})
}

func (d *dockerBackend) heal(n *node) error {
	return d.pool.Client.ConnectNetwork(d.net.Network.ID, dc.NetworkConnectionOptions{Container: n.cid})
}

// edge creates a second network joining n (under an alias only that
// network knows) with the sink and the Junction replicas started after
// it, so cutting n off the cluster network leaves Junction reaching it.
func (d *dockerBackend) edge(n *node) (string, error) {
	nw, err := d.pool.CreateNetwork(n.name + "-edge")
	if err != nil {
		return "", fmt.Errorf("creating edge network: %w", err)
	}
	d.edgeN = nw
	alias := n.name + "-edge"
	if err := d.pool.Client.ConnectNetwork(nw.Network.ID, dc.NetworkConnectionOptions{
		Container: n.cid, EndpointConfig: &dc.EndpointConfig{Aliases: []string{alias}},
	}); err != nil {
		return "", fmt.Errorf("joining %s to the edge network: %w", n.name, err)
	}
	return "nats://" + alias + ":4222", nil
}

func (d *dockerBackend) close() {
	for _, n := range d.nodes {
		_ = d.pool.Client.RemoveContainer(dc.RemoveContainerOptions{ID: n.cid, Force: true, RemoveVolumes: true})
	}
	for _, nw := range []*dockertest.Network{d.net, d.edgeN} {
		if nw != nil {
			_ = d.pool.RemoveNetwork(nw)
		}
	}
}
