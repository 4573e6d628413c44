package router

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
)

func TestDecidedHeaders(t *testing.T) {
	at := time.Date(2026, 12, 5, 9, 30, 0, 123456789, time.UTC)
	received := "2026-12-05T09:29:59.5Z"
	tests := []struct {
		name       string
		patient    string
		others     string
		stamp      bool
		decidedFor string
		received   string
		wantAt     time.Time
		wantHashes []string
		optOut     bool
	}{
		{"stamped, one patient", "ha", "", true, "", received, at.Truncate(time.Millisecond), []string{"ha"}, false},
		{"decided by the index's NHS number", "hlocal", "", true, "hnhs", received, at.Truncate(time.Millisecond), []string{"hlocal", "hnhs"}, false},
		{"decided by the patient's own hash", "ha", "", true, "ha", received, at.Truncate(time.Millisecond), []string{"ha"}, false},
		{"further patients", "ha", "hb,hc", true, "", received, at.Truncate(time.Millisecond), []string{"ha", "hb", "hc"}, false},
		{"under the opt-out gate", "ha", "", true, "", received, at.Truncate(time.Millisecond), []string{"ha"}, true},
		{"no patient", envelope.PatientNone, "", true, "", received, at.Truncate(time.Millisecond), nil, false},
		{"queued before stamping: received", "ha", "", false, "", received, time.Date(2026, 12, 5, 9, 29, 59, 500000000, time.UTC), []string{"ha"}, false},
		{"neither: of unknown age", "ha", "", false, "", "", time.Unix(0, 0), []string{"ha"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := nats.Header{}
			h.Set(envelope.HeaderPatient, tt.patient)
			if tt.others != "" {
				h.Set(envelope.HeaderPatients, tt.others)
			}
			if tt.received != "" {
				h.Set(envelope.HeaderReceived, tt.received)
			}
			// A header left from an earlier decision goes.
			h.Set(envelope.HeaderDecidedFor, "stale")
			if tt.stamp {
				setDecided(h, at, tt.decidedFor, tt.optOut)
			} else {
				h.Del(envelope.HeaderDecidedFor)
			}
			if got := decidedAt(h); !got.Equal(tt.wantAt) {
				t.Errorf("decidedAt = %v, want %v", got, tt.wantAt)
			}
			if got := decidedHashes(h); !slices.Equal(got, tt.wantHashes) {
				t.Errorf("decidedHashes = %q, want %q", got, tt.wantHashes)
			}
			// Unstamped, a payload counts as decided under the gate.
			if got, want := decidedOptOut(h), tt.optOut || !tt.stamp; got != want {
				t.Errorf("decidedOptOut = %v, want %v", got, want)
			}
		})
	}
}

func TestUnchangedForBatch(t *testing.T) {
	now := time.Now()
	entry := func(patient string, decided time.Time, optOut bool) outEntry {
		h := nats.Header{}
		h.Set(envelope.HeaderPatient, patient)
		setDecided(h, decided, "", optOut)
		return outEntry{h: h}
	}
	entries := []outEntry{
		entry("fresh", now, false),                          // not due: decided just now
		entry("changed", now.Add(-time.Minute), false),      // due; a Consent written after
		entry("unchanged", now.Add(-time.Minute), false),    // due; written before
		entry("never", now.Add(-time.Minute), true),         // due; nothing stored; under the opt-out gate
		entry("changed", now.Add(-time.Millisecond), false), // not due
	}
	changes := consent.Changes{Patients: map[string]time.Time{
		"changed":   now.Add(-30 * time.Second),
		"unchanged": now.Add(-2 * time.Minute),
	}}
	tests := []struct {
		name     string
		dest     Destination
		changes  consent.Changes
		err      error
		want     []bool
		wantRead []string
	}{
		{"one read for the due entries", Destination{Name: "ehr"}, changes, nil, []bool{true, false, true, true, true}, []string{"changed", "unchanged", "never"}},
		{"listed since: only a decision under the gate counts it", Destination{Name: "ehr"}, consent.Changes{OptedOut: map[string]bool{"unchanged": true, "never": true}}, nil, []bool{true, true, true, false, true}, []string{"changed", "unchanged", "never"}},
		{"store unavailable", Destination{Name: "ehr"}, consent.Changes{}, errors.New("down"), []bool{true, false, false, false, true}, []string{"changed", "unchanged", "never"}},
		{"internal destination", Destination{Name: "consents", Internal: true}, changes, nil, []bool{true, true, true, true, true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var read []string
			calls := 0
			r := &Router{o: Options{RecheckAfter: 10 * time.Second, ConsentChanges: func(_ context.Context, hashes []string, optOut bool) (consent.Changes, error) {
				calls++
				read = append(read, hashes...)
				if !optOut {
					t.Error("the opt-out list was not asked about, with a payload decided under its gate due")
				}
				return tt.changes, tt.err
			}}}
			got := r.unchangedForBatch(t.Context(), &tt.dest, entries)
			if !slices.Equal(got, tt.want) {
				t.Errorf("unchanged = %v, want %v", got, tt.want)
			}
			if !slices.Equal(read, tt.wantRead) {
				t.Errorf("read %q, want %q", read, tt.wantRead)
			}
			if want := min(len(tt.wantRead), 1); calls != want {
				t.Errorf("%d reads of the store, want %d", calls, want)
			}
		})
	}
}

// TestBatchable: an entry whose consent changed leaves the batch attempt
// for the per-entry path, and takes its partition's later entries with
// it, so none of them reaches the receiver before it; other partitions'
// entries stay in the batch.
func TestBatchable(t *testing.T) {
	in := func(parts ...string) []outEntry {
		var out []outEntry
		for _, p := range parts {
			h := nats.Header{}
			h.Set(envelope.HeaderPartition, p)
			out = append(out, outEntry{h: h})
		}
		return out
	}
	tests := []struct {
		name      string
		entries   []outEntry
		unchanged []bool
		want      []bool
	}{
		{"all unchanged", in("1", "2", "1"), []bool{true, true, true}, []bool{true, true, true}},
		{"a change holds its partition's later entries", in("1", "2", "1", "1"), []bool{false, true, true, true}, []bool{false, true, false, false}},
		{"earlier entries of the partition still go", in("1", "1", "2", "1"), []bool{true, false, true, true}, []bool{true, false, true, false}},
		{"none", nil, nil, []bool{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := batchable(tt.entries, tt.unchanged); !slices.Equal(got, tt.want) {
				t.Errorf("batchable = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestForDestination: a route run again for one payload keeps only the
// records about that payload's destination.
func TestForDestination(t *testing.T) {
	recs := []audit.Record{
		{Event: audit.Translated}, {Event: audit.Matched},
		{Event: audit.Consent, Destination: "a", Outcome: "deny"},
		{Event: audit.Consent, Destination: "b", Outcome: "permit"},
		{Event: audit.Consent, Destination: "b", Outcome: "withheld"},
		{Event: audit.Filtered, Destination: "c", Outcome: "not-replayed"},
	}
	got := forDestination(recs, "b")
	if len(got) != 2 || got[0].Outcome != "permit" || got[1].Outcome != "withheld" {
		t.Errorf("forDestination = %+v, want b's two consent records", got)
	}
}

// TestNamedOnly: a replay naming some destinations keeps the route's
// records about those and about the message, and none about the others.
func TestNamedOnly(t *testing.T) {
	recs := []audit.Record{
		{Event: audit.Matched},
		{Event: audit.Consent, Destination: "a", Outcome: "permit"},
		{Event: audit.Consent, Destination: "b", Outcome: "permit"},
		{Event: audit.Consent, Destination: "c", Outcome: "deny"},
		{Event: audit.Consent, Destination: "c", Outcome: "withheld"},
	}
	h := nats.Header{}
	if got := namedOnly(recs, h); len(got) != len(recs) {
		t.Errorf("no restriction: %d records, want all %d", len(got), len(recs))
	}
	h.Set(headerOnly, "b")
	got := namedOnly(recs, h)
	if len(got) != 2 || got[0].Event != audit.Matched || got[1].Destination != "b" {
		t.Errorf("namedOnly(b) = %+v, want the match and b's decision", got)
	}
}

// TestLaterKeepsAReroute: what is known of a payload's earlier attempts,
// merged, keeps a reroute found on its trail, so a payload redelivered
// after its reroute was recorded is not routed again.
func TestLaterKeepsAReroute(t *testing.T) {
	rec := &audit.Record{Event: audit.Replayed, Outcome: audit.OutcomeRerouted}
	failed := &audit.Record{Event: audit.Failed, Outcome: "transient"}
	tests := []struct {
		name string
		a, b attempts
		made int
	}{
		{"nothing known, then the trail", attempts{}, attempts{settled: rec}, 0},
		{"the trail first", attempts{settled: rec}, attempts{}, 0},
		{"more attempts known without it", attempts{settled: rec, made: 1}, attempts{made: 3, last: failed}, 3},
		{"fewer attempts known without it", attempts{made: 3, last: failed}, attempts{settled: rec, made: 1}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.a.later(tt.b)
			if got.settled != rec || got.made != tt.made {
				t.Errorf("later = %+v, want the reroute kept and %d attempts", got, tt.made)
			}
		})
	}
}
