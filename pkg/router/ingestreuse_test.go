package router

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestIngestUnbatchedReusedControlID: written one at a time (no group
// commit), a message under a dedupe key already stored is a resend only
// when its content is the same; one that reused the control id for other
// content is stored as a message of its own, and its own resend is then
// recognised. Taken for a resend, it would be acknowledged and dropped.
func TestIngestUnbatchedReusedControlID(t *testing.T) {
	cfg := store.DefaultConfig()
	cfg.GroupCommit = false
	st, err := store.Open(t.Context(), cfg, t.TempDir(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	ing := NewIngester(st, slog.New(slog.DiscardHandler), nil, nil)
	msg := func(id, msh7, pid string) *envelope.Envelope {
		return &envelope.Envelope{ID: id, Source: "pas", MessageType: "ADT^A01", ControlID: "CTL1", DedupeKey: "PAS|RX1|CTL1",
			ContentType: envelope.ContentTypeHL7v2, Raw: []byte("MSH|^~\\&|PAS|RX1|||" + msh7 + "||ADT^A01|CTL1|P|2.4\rPID|1||" + pid + "\r")}
	}
	steps := []struct {
		name   string
		env    *envelope.Envelope
		dup    bool
		id     string // the stored message it is, when a resend
		stored uint64 // messages on the ingress stream after it
	}{
		{"first", msg("01REUSE1", "20260101", "9990000018"), false, "", 1},
		{"resend with a new MSH-7", msg("01REUSE2", "20260102", "9990000018"), true, "01REUSE1", 1},
		{"control id reused for another patient", msg("01REUSE3", "20260103", "9990000026"), false, "", 2},
		{"resend of the reused one", msg("01REUSE4", "20260104", "9990000026"), true, "01REUSE3", 2},
	}
	for _, s := range steps {
		res, err := ing.Ingest(t.Context(), s.env)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if res.Duplicate != s.dup || s.dup && res.ID != s.id {
			t.Errorf("%s: duplicate %v of %q, want %v of %q", s.name, res.Duplicate, res.ID, s.dup, s.id)
		}
		ingress, err := st.JS.Stream(t.Context(), store.StreamIngress)
		if err != nil {
			t.Fatal(err)
		}
		if n := ingress.CachedInfo().State.Msgs; n != s.stored {
			t.Errorf("%s: %d messages stored, want %d", s.name, n, s.stored)
		}
	}
	// Each resend is on the trail of the message it resent.
	for _, id := range []string{"01REUSE1", "01REUSE3"} {
		trail, err := audit.Trail(t.Context(), st.JS, id)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(trail, func(r audit.Record) bool { return r.Event == audit.Duplicate && r.Outcome == "duplicate" }) {
			t.Errorf("no resend recorded on the trail of %s", id)
		}
	}
}
