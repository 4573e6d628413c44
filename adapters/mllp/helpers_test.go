package mllp

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/tlsconf/tlstest"
)

// dialRaw connects to addr as a sender that does not use the MLLP client
// would, closing the connection when the test ends. When d is not zero
// it sets a deadline d from now for the connection's reads and writes;
// then it writes wire, if any, as it stands.
func dialRaw(t *testing.T, addr string, d time.Duration, wire string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	if d != 0 {
		_ = nc.SetDeadline(time.Now().Add(d))
	}
	if wire != "" {
		if _, err := io.WriteString(nc, wire); err != nil {
			t.Fatal(err)
		}
	}
	return nc
}

// fakeHost is an in-memory stand-in for the engine's store.
type fakeHost struct {
	mu          sync.Mutex
	n           int
	stored      []*envelope.Envelope
	byKey       map[string]string
	err         error
	quarantined []quarantined
}

type quarantined struct {
	source, reason string
	raw            []byte
}

func newFakeHost() *fakeHost { return &fakeHost{byKey: map[string]string{}} }

func (h *fakeHost) Ingest(_ context.Context, env *envelope.Envelope) (adapter.IngestResult, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return adapter.IngestResult{}, h.err
	}
	if id, ok := h.byKey[env.DedupeKey]; ok && env.DedupeKey != "" {
		return adapter.IngestResult{ID: id, Duplicate: true}, nil
	}
	h.byKey[env.DedupeKey] = env.ID
	c := *env
	c.Raw = append([]byte(nil), env.Raw...)
	h.stored = append(h.stored, &c)
	return adapter.IngestResult{ID: env.ID}, nil
}

func (h *fakeHost) Quarantine(_ context.Context, source string, raw []byte, _ int, reason string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.quarantined = append(h.quarantined, quarantined{source, reason, append([]byte(nil), raw...)})
	return fmt.Sprintf("Q%d", len(h.quarantined)), nil
}

func (h *fakeHost) Partition(key string) int {
	f := fnv.New32a()
	f.Write([]byte(key))
	return int(f.Sum32() % 64)
}

func (h *fakeHost) NewID() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	return fmt.Sprintf("01TESTID%06d", h.n)
}

func (h *fakeHost) setErr(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err = err
}

func (h *fakeHost) snapshot() ([]*envelope.Envelope, []quarantined) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*envelope.Envelope(nil), h.stored...), append([]quarantined(nil), h.quarantined...)
}

// testSecrets resolves env: and file: references for tests.
type testSecrets struct{}

func (testSecrets) Resolve(ref string) (string, error) {
	switch {
	case strings.HasPrefix(ref, "env:"):
		v, ok := os.LookupEnv(strings.TrimPrefix(ref, "env:"))
		if !ok {
			return "", errors.New("environment variable not set")
		}
		return v, nil
	case strings.HasPrefix(ref, "file:"):
		b, err := os.ReadFile(strings.TrimPrefix(ref, "file:"))
		return string(b), err
	}
	return "", errors.New("not a reference")
}

// msg builds a synthetic ADT^A01 with the given control id; extraMSH is
// appended after MSH-12 (for example "|||AL|NE" for enhanced mode).
func msg(ctrl, extraMSH string) string {
	return "MSH|^~\\&|PAS|RXX01|JUNCTION|RXX01|20250301120000||ADT^A01^ADT_A01|" + ctrl + "|P|2.4" + extraMSH + "\r" +
		"EVN|A01|20250301120000\r" +
		"PID|1||9990000018^^^NHS^NH||TESTPATIENT^ALEX||19800101|U\r" +
		"PV1|1|I\r"
}

// freeAddr returns a local address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate (see tlstest.PKI).
func testPKI(t *testing.T) map[string]string { return tlstest.PKI(t) }
