package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestFind checks that a control id is found in each state a receipt can
// be in: accepted, resent, and stored but not yet read, and that the
// sender, source and window narrow the search.
func TestFind(t *testing.T) {
	js := testStore(t)
	acc, c := testAcceptor(t, js, time.Hour)
	var ids IDGen
	msg := func(source, sender, ctrl, raw string, at time.Time) *envelope.Envelope {
		return &envelope.Envelope{ID: ids.New(), Source: source, ContentType: envelope.ContentTypeHL7v2, ReceivedAt: at,
			MessageType: "ADT^A01", ControlID: ctrl, Sender: sender, DedupeKey: sender + "|" + ctrl, Raw: []byte(raw)}
	}
	const a01 = "MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|C1|P|2.4\rPID|1||9990000018\r"
	t0 := time.Now().UTC().Add(-time.Minute)
	first := msg("pas", "PAS|RX1", "C1", a01, t0)
	other := msg("pas", "PAS|RX1", "C2", "MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|C2|P|2.4\rPID|1||9990000026\r", t0.Add(time.Second))
	elsewhere := msg("lab", "LIMS|RX1", "C1", "MSH|^~\\&|LIMS|RX1|||20260101||ORU^R01|C1|P|2.4\r", t0.Add(2*time.Second))
	logBatch(t, js, []*envelope.Envelope{first, other, elsewhere})
	handleNext(t, acc, c)
	resend := msg("pas", "PAS|RX1", "C1", a01, t0.Add(10*time.Second))
	logBatch(t, js, []*envelope.Envelope{resend})
	handleNext(t, acc, c)
	// Stored out of the order received (inputs store concurrently): the
	// later receipt first.
	after := msg("pas", "PAS|RX3", "C9", "MSH|^~\\&|PAS|RX3|||20260101||ADT^A01|C9|P|2.4\rPID|1||9990000042\r", t0.Add(30*time.Second))
	late := msg("pas", "PAS|RX4", "C9", "MSH|^~\\&|PAS|RX4|||20260101||ADT^A01|C9|P|2.4\rPID|1||9990000050\r", t0.Add(4*time.Second))
	logBatch(t, js, []*envelope.Envelope{after})
	handleNext(t, acc, c)
	logBatch(t, js, []*envelope.Envelope{late})
	handleNext(t, acc, c)
	// Acknowledged and stored, not yet read by the accept stage.
	waiting := msg("pas", "PAS|RX2", "C1", "MSH|^~\\&|PAS|RX2|||20260101||ADT^A01|C1|P|2.4\rPID|1||9990000034\r", t0.Add(20*time.Second))
	logBatch(t, js, []*envelope.Envelope{waiting})

	type want struct {
		id, state, original string
	}
	tests := []struct {
		name string
		q    FindQuery
		want []want
	}{
		{"every receipt of C1", FindQuery{ControlID: "C1"}, []want{
			{first.ID, "accepted", ""}, {elsewhere.ID, "accepted", ""}, {resend.ID, "resend", first.ID}, {waiting.ID, "waiting", ""}}},
		{"one sender", FindQuery{ControlID: "C1", Sender: "PAS|RX1"}, []want{
			{first.ID, "accepted", ""}, {resend.ID, "resend", first.ID}}},
		{"an application at any facility", FindQuery{ControlID: "C1", Sender: "PAS"}, []want{
			{first.ID, "accepted", ""}, {resend.ID, "resend", first.ID}, {waiting.ID, "waiting", ""}}},
		{"one source", FindQuery{ControlID: "C1", Source: "lab"}, []want{{elsewhere.ID, "accepted", ""}}},
		{"a window", FindQuery{ControlID: "C1", Since: t0.Add(5 * time.Second), Until: t0.Add(15 * time.Second)}, []want{
			{resend.ID, "resend", first.ID}}},
		{"another control id", FindQuery{ControlID: "C2"}, []want{{other.ID, "accepted", ""}}},
		{"nothing", FindQuery{ControlID: "C3"}, nil},
		{"every message of a window", FindQuery{Since: t0, Until: t0.Add(15 * time.Second)}, []want{
			{first.ID, "accepted", ""}, {other.ID, "accepted", ""}, {elsewhere.ID, "accepted", ""}, {resend.ID, "resend", first.ID}, {late.ID, "accepted", ""}}},
		{"received in the window, stored after a later receipt", FindQuery{ControlID: "C9", Since: t0.Add(3 * time.Second), Until: t0.Add(11 * time.Second)}, []want{
			{late.ID, "accepted", ""}}},
		{"a window with nothing in it", FindQuery{ControlID: "C1", Since: t0.Add(time.Hour)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Find(t.Context(), js, tt.q, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Messages) != len(tt.want) {
				t.Fatalf("found %d messages (%+v), want %d", len(res.Messages), res.Messages, len(tt.want))
			}
			for i, w := range tt.want {
				got := res.Messages[i]
				if got.ID != w.id || got.State != w.state || got.Original != w.original {
					t.Errorf("message %d: %s %s (of %q), want %s %s (of %q)", i, got.ID, got.State, got.Original, w.id, w.state, w.original)
				}
				if tt.q.ControlID != "" && got.ControlID != tt.q.ControlID {
					t.Errorf("message %d: control id %q", i, got.ControlID)
				}
			}
			if res.Truncated {
				t.Error("truncated")
			}
			if res.Retained.IsZero() {
				t.Error("no retention time given")
			}
		})
	}
	t.Run("where an accepted message got to", func(t *testing.T) {
		res, err := Find(t.Context(), js, FindQuery{ControlID: "C2"}, map[string][]string{"pas": {"adt"}})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Messages[0]; len(got.Outcomes) != 0 || !slices.Equal(got.Waiting, []string{"route adt"}) {
			t.Errorf("outcomes %q, waiting %q; want it waiting for its route", got.Outcomes, got.Waiting)
		}
	})
	t.Run("no control id and a window open at one end", func(t *testing.T) {
		if _, err := Find(t.Context(), js, FindQuery{Since: t0}, nil); err == nil {
			t.Error("no error")
		}
	})
}

func TestResendOf(t *testing.T) {
	env := &envelope.Envelope{ID: "B", Source: "pas", Raw: []byte("x")}
	if got, ok := resendOf(resendRecord(env, "A", 7, time.Now())); !ok || got != "A" {
		t.Errorf("resendOf(resendRecord) = %q, %v", got, ok)
	}
	rec := audit.Record{Event: audit.Duplicate, Reason: "resent as message B; not routed again"}
	if got, ok := resendOf(rec); ok {
		t.Errorf("resendOf(the original's record) = %q", got)
	}
}

// TestScanStopsWhenCancelled checks that a stream read ends when its
// context does, not after reading the rest of what was stored.
func TestScanStopsWhenCancelled(t *testing.T) {
	js := testStore(t)
	for i := range 300 {
		logBatch(t, js, []*envelope.Envelope{testEnv(fmt.Sprintf("M%03d", i), "pas")})
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	read := 0
	err := scanFrom(ctx, js, store.StreamIngestLog, jetstream.OrderedConsumerConfig{}, scanBatch, func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error) {
		if read++; read == 10 {
			cancel()
		}
		return false, nil
	}, nil)
	if !errors.Is(err, context.Canceled) || read != 10 {
		t.Errorf("read %d messages, then %v; want 10, then cancelled", read, err)
	}
}
