package router

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/store"
)

func TestBatchRoundTrip(t *testing.T) {
	rcv := time.Date(2026, 11, 23, 9, 30, 0, 123, time.UTC)
	tests := []struct {
		name string
		envs []*envelope.Envelope
	}{
		{"one", []*envelope.Envelope{{ID: "A", Source: "pas", ContentType: envelope.ContentTypeHL7v2, ReceivedAt: rcv, MessageType: "ADT^A01", ControlID: "1", Sender: "PAS|RX1", DedupeKey: "PAS|RX1|1", Partition: 3, Raw: []byte("MSH|^~\\&|x\r")}}},
		{"several with empty and binary payloads", []*envelope.Envelope{
			{ID: "A", Source: "pas", ReceivedAt: rcv, Raw: []byte{}},
			{ID: "B", Source: "fhir", ReceivedAt: rcv, Partition: 15, Raw: []byte{0, 0x0b, 0x1c, 0xff}},
			{ID: "C", Source: "pas", ReceivedAt: rcv, Raw: bytes.Repeat([]byte("x"), 70000)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := encodeBatch(tt.envs)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeBatch(data)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.envs, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSourceIn checks that a route reads an accepted batch's sources
// from its header when the accept stage wrote one, and from the batch
// itself when not (batches stored before the header existed).
func TestSourceIn(t *testing.T) {
	data, err := encodeBatch([]*envelope.Envelope{{ID: "A", Source: "pas"}, {ID: "B", Source: "lab"}, {ID: "C", Source: "pas"}})
	if err != nil {
		t.Fatal(err)
	}
	withSources := func(srcs ...string) nats.Header { return nats.Header{headerSources: srcs} }
	tests := []struct {
		name   string
		source string
		h      nats.Header
		data   []byte
		want   bool
	}{
		{"header names the source", "lab", withSources("pas", "lab"), data, true},
		// The header is believed: the batch is not decoded.
		{"header leaves the source out", "lab", withSources("pas"), data, false},
		{"no header, batch holds the source", "lab", nats.Header{}, data, true},
		{"no header, batch lacks the source", "fhir", nil, data, false},
		{"no header, unreadable batch", "fhir", nil, []byte("garbage"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sourceIn(tt.source)(tt.h, tt.data); got != tt.want {
				t.Errorf("sourceIn(%q) = %v, want %v", tt.source, got, tt.want)
			}
		})
	}
	envs, err := decodeBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sourcesOf(envs), []string{"pas", "lab"}; !slices.Equal(got, want) {
		t.Errorf("sourcesOf = %v, want %v", got, want)
	}
}

// TestAcceptedOf checks which accepted batches a source's stages take:
// its own and earlier versions' mixed ones, never another source's, and
// that the names match the consumer filters NATS applies.
func TestAcceptedOf(t *testing.T) {
	tests := []struct {
		subject string
		want    bool
	}{
		{AcceptedSubject("pas", 17), true},
		{AcceptedSubject("lab", 17), false},
		{AcceptedSubject("pas-2", 17), false},
		{SubjAccepted + ".17", true}, // an earlier version's batch of every source
		{SubjAccepted + ".pas.17.x", false},
		{IngressSubject("pas", 3), false},
		{spanMarkerSubject("junction.in", "route-a"), false},
	}
	takes := acceptedOf("pas")
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			if got := takes(tt.subject); got != tt.want {
				t.Errorf("acceptedOf(pas)(%q) = %v, want %v", tt.subject, got, tt.want)
			}
			matched := slices.ContainsFunc(acceptedFilters("pas"), func(f string) bool { return store.SubjectMatches(f, tt.subject) })
			if matched != tt.want {
				t.Errorf("acceptedFilters(pas) match %q: %v, want %v", tt.subject, matched, tt.want)
			}
		})
	}
}

func TestDecodeBatchRejectsDamage(t *testing.T) {
	good, err := encodeBatch([]*envelope.Envelope{{ID: "A", Source: "pas", Raw: []byte("abc")}})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"empty":       {},
		"wrong magic": append([]byte("XXXX"), good[4:]...),
		"truncated":   good[:len(good)-1],
		"trailing":    append(append([]byte{}, good...), 0),
		"huge count":  append([]byte(batchMagic), 0xff, 0xff, 0x03),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeBatch(data); err == nil {
				t.Error("damaged batch decoded without error")
			}
		})
	}
}

func FuzzDecodeBatch(f *testing.F) {
	good, _ := encodeBatch([]*envelope.Envelope{{ID: "A", Source: "pas", Raw: []byte("abc")}, {ID: "B", Raw: []byte("d")}})
	f.Add(good)
	f.Add([]byte(batchMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		envs, err := decodeBatch(data)
		if err != nil {
			return
		}
		again, err := encodeBatch(envs)
		if err != nil {
			t.Fatal(err)
		}
		envs2, err := decodeBatch(again)
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if len(envs2) != len(envs) {
			t.Fatalf("count %d != %d", len(envs2), len(envs))
		}
	})
}

func TestIDsUniqueAndSorted(t *testing.T) {
	var g IDGen
	ids := make([]string, 20000)
	for i := range ids {
		ids[i] = g.New()
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if len(id) != 26 || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
	if !sort.StringsAreSorted(ids) {
		t.Error("ids from one generator are not in creation order")
	}
}

func TestPartitionOfStable(t *testing.T) {
	counts := make([]int, 16)
	for i := range 16000 {
		p := partitionOf(string(rune('a'+i%26))+time.Duration(i).String(), 16)
		if p != partitionOf(string(rune('a'+i%26))+time.Duration(i).String(), 16) {
			t.Fatal("partition not stable")
		}
		counts[p]++
	}
	for p, c := range counts {
		if c < 500 {
			t.Errorf("partition %d got %d of 16000 keys: badly spread", p, c)
		}
	}
	if partitionOf("x", 1) != 0 {
		t.Error("one partition must be 0")
	}
}

func TestRetryDelay(t *testing.T) {
	r := Retry{Initial: time.Second, Max: 10 * time.Second, Multiplier: 2}
	tests := []struct {
		attempt int
		want    time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {4, 8 * time.Second}, {5, 10 * time.Second}, {40, 10 * time.Second}}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.attempt), func(t *testing.T) {
			if got := r.Delay(tt.attempt); got != tt.want {
				t.Errorf("Delay(%d) = %s, want %s", tt.attempt, got, tt.want)
			}
		})
	}
}

// TestBatchHeaderNamesEachBatch: two unreadable batches must make two
// dead letters, so each gets an id of its own; a message id already
// there is kept, and the caller's header is not changed.
func TestBatchHeaderNamesEachBatch(t *testing.T) {
	in := nats.Header{}
	a, b := batchHeader(in, 7), batchHeader(in, 8)
	if a.Get(envelope.HeaderID) == b.Get(envelope.HeaderID) || a.Get(envelope.HeaderID) == "" {
		t.Errorf("batches 7 and 8 named %q and %q, want two different ids", a.Get(envelope.HeaderID), b.Get(envelope.HeaderID))
	}
	if len(in) != 0 {
		t.Errorf("caller's header changed: %v", in)
	}
	with := nats.Header{}
	with.Set(envelope.HeaderID, "01JMSG")
	if got := batchHeader(with, 9).Get(envelope.HeaderID); got != "01JMSG" {
		t.Errorf("message id replaced by %q", got)
	}
}

// TestDeadLetterDetail: a dead letter keeps the receiver's answer or the
// failure's cause as one bounded line, and nothing when there is none.
func TestDeadLetterDetail(t *testing.T) {
	long := strings.Repeat("é", maxDetailBytes)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"the receiver's answer", fault.Newf(fault.CodeDestRejected, "fhir: server answered %d", 400).WithDetail("error invalid: Patient.birthDate is invalid"), "error invalid: Patient.birthDate is invalid"},
		{"the wrapped cause", fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "fhir: request failed", errors.New("dial tcp 127.0.0.1:9: connect: connection refused")), "dial tcp 127.0.0.1:9: connect: connection refused"},
		{"an unclassed error", errors.New("store: timeout"), "store: timeout"},
		// Retries ran out on a receiver's answer: the answer, not the
		// inner fault's safe message.
		{"the answer under retries exhausted", fault.Wrap(fault.Permanent, fault.CodeRetriesExhausted, "retries exhausted",
			(&fault.Error{Code: fault.CodeDestRejected, Class: fault.Transient, Msg: "mllp: receiver answered AR"}).WithDetail("PID-3 patient unknown")), "PID-3 patient unknown"},
		{"a CEL error under the route's wrapping", fmt.Errorf("route adt transform for ehr: %w", fmt.Errorf("step 1: %w",
			fault.New(fault.CodeRuleEval, "evaluation failed").WithDetail("no such key: birthDate"))), "no such key: birthDate"},
		{"the cause under retries exhausted", fault.Wrap(fault.Permanent, fault.CodeRetriesExhausted, "retries exhausted",
			fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "fhir: request failed", fmt.Errorf("post: %w", errors.New("connection refused")))), "post: connection refused"},
		{"a fault with nothing more", fault.New(fault.CodeInternal, "unreadable ingest batch"), ""},
		{"lines joined", fault.New(fault.CodeDestRejected, "x").WithDetail("line one\r\nline two\t"), "line one  line two"},
		{"no error", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := deadLetterDetail(tt.err); got != tt.want {
				t.Errorf("deadLetterDetail = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("bounded", func(t *testing.T) {
		got := deadLetterDetail(fault.New(fault.CodeDestRejected, "x").WithDetail(long))
		if len(got) > maxDetailBytes+3 || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
			t.Errorf("detail of %d bytes, valid UTF-8 %v, ends %q", len(got), utf8.ValidString(got), got[len(got)-5:])
		}
	})
}

func TestRetryWaitHonoursRetryAfter(t *testing.T) {
	p := Retry{MaxAttempts: 5, Initial: time.Second, Max: time.Minute, Multiplier: 2, Timeout: time.Second}
	asked := func(d time.Duration) error {
		return &fault.Error{Code: fault.CodeDestUnavailable, Class: fault.Transient, Msg: "busy", RetryAfter: d}
	}
	tests := []struct {
		name string
		n    int
		err  error
		want time.Duration
	}{
		{"backoff alone", 2, errors.New("reset"), 2 * time.Second},
		{"no Retry-After", 1, asked(0), time.Second},
		{"shorter than the backoff", 3, asked(time.Second), 4 * time.Second},
		{"longer than the backoff", 1, asked(20 * time.Second), 20 * time.Second},
		{"longer than max", 1, asked(10 * time.Minute), time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryWait(p, tt.n, fault.RetryAfterOf(tt.err)); got != tt.want {
				t.Errorf("retryWait(attempt %d) = %v, want %v", tt.n, got, tt.want)
			}
		})
	}
}
