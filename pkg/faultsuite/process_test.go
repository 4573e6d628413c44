//go:build unix

package faultsuite

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// processBackend runs each component as a child process on loopback, for
// developers without Docker (JUNCTION_FAULTS_MODE=process). It cannot cut
// a node off the network; the partition test skips.
type processBackend struct {
	t     *testing.T
	bin   string
	dir   string
	mu    sync.Mutex
	nodes []*node
}

// procState is a running child and its log.
type procState struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func newProcessBackend(t *testing.T, dir string) *processBackend {
	t.Helper()
	return &processBackend{t: t, bin: buildBinaries(t), dir: dir}
}

func (p *processBackend) listen(n *node, port string) string { return n.ports[port] }

func (p *processBackend) peer(n *node, port string) string { return n.ports[port] }

func (p *processBackend) file(_ *node, host, _ string) string { return host }

func (p *processBackend) dataDir(n *node, _ string) string {
	return filepath.Join(p.dir, n.name+"-data")
}

func (p *processBackend) binary(_ *node, program string) string { return filepath.Join(p.bin, program) }

func (p *processBackend) start(n *node) error {
	logPath := filepath.Join(p.dir, n.name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.binary(n, n.program), n.args...)
	cmd.Env = append(os.Environ(), n.env...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	st := &procState{cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(st.exited)
	}()
	p.mu.Lock()
	if n.proc == nil {
		p.nodes = append(p.nodes, n)
	}
	n.proc = st
	p.mu.Unlock()
	return nil
}

func (p *processBackend) kill(n *node) error {
	if n.proc == nil {
		return errors.New("not started")
	}
	_ = n.proc.cmd.Process.Kill()
	select {
	case <-n.proc.exited:
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("still running 30s after SIGKILL")
	}
}

func (p *processBackend) signal(n *node, sig syscall.Signal) error {
	if n.proc == nil {
		return errors.New("not started")
	}
	return n.proc.cmd.Process.Signal(sig)
}

func (p *processBackend) running(n *node) bool {
	if n.proc == nil {
		return false
	}
	select {
	case <-n.proc.exited:
		return false
	default:
	}
	// A stopped process is not running: /proc/PID/stat's state is T.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(n.proc.cmd.Process.Pid) + "/stat")
	if err != nil {
		return true
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'T'
	}
	return true
}

func (p *processBackend) logs(n *node, lines int) string {
	if n.proc == nil {
		return ""
	}
	b, err := os.ReadFile(n.proc.log)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

func (p *processBackend) memory(n *node) (uint64, error) {
	if n.proc == nil {
		return 0, errors.New("not started")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(n.proc.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS")
}

var errNoNetwork = errors.New("child processes on loopback share one network; run the partition test with Docker")

func (p *processBackend) cut(*node) error            { return errNoNetwork }
func (p *processBackend) heal(*node) error           { return errNoNetwork }
func (p *processBackend) edge(*node) (string, error) { return "", errNoNetwork }

func (p *processBackend) close() {
	p.mu.Lock()
	nodes := append([]*node(nil), p.nodes...)
	p.mu.Unlock()
	for _, n := range nodes {
		if n.proc == nil {
			continue
		}
		_ = n.proc.cmd.Process.Signal(syscall.SIGCONT)
		_ = n.proc.cmd.Process.Kill()
		select {
		case <-n.proc.exited:
		case <-time.After(10 * time.Second):
		}
	}
}
