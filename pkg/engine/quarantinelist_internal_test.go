package engine

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestQuarantineListNamesUnreadableEntries: GET /api/quarantine over a
// quarantine whose first and third blocks the store counts but cannot
// read answers 200 with the entries it can read, and names the others in
// the Junction-Quarantine-Unreadable header: each sequence of the stream
// is listed or in one run, and there are runs. Before, the header did not
// exist and the entries were passed over without a word.
func TestQuarantineListNamesUnreadableEntries(t *testing.T) {
	const entries = 220
	cfg := jetstream.StreamConfig{Name: store.StreamQuarantine, Subjects: []string{store.SubjQuarantine + ".>"}, Compression: jetstream.S2Compression}
	js := jstest.DamagedBlocks(t, cfg, jstest.CutInHalf, func(js jetstream.JetStream) {
		for i := range entries {
			m := nats.NewMsg(store.SubjQuarantine + ".pas")
			m.Header.Set(envelope.HeaderID, "Q"+strings.Repeat("x", i%7))
			// Letters that do not compress, so that the entries fill
			// several blocks.
			r := rand.New(rand.NewPCG(1, uint64(i)))
			data := make([]byte, 400)
			for j := range data {
				data[j] = byte('a' + r.IntN(26))
			}
			m.Data = data
			if _, err := js.PublishMsg(t.Context(), m); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}, 1, 3)
	e := &Engine{store: &store.Store{JS: js}}
	rec := httptest.NewRecorder()
	e.handleQuarantine(rec, httptest.NewRequest(http.MethodGet, "/api/quarantine?limit=10000", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var listed []QuarantineEntry
	if err := json.Unmarshal(rec.Body.Bytes(), &listed); err != nil {
		t.Fatal(err)
	}
	var runs []jserr.Run
	if err := json.Unmarshal([]byte(rec.Header().Get(HeaderQuarantineUnreadable)), &runs); err != nil || len(runs) == 0 {
		t.Fatalf("header %q (%v): want the runs it could not read", rec.Header().Get(HeaderQuarantineUnreadable), err)
	}
	seen := map[uint64]int{}
	for _, q := range listed {
		seen[q.Seq]++
	}
	for _, r := range runs {
		for seq := r.First; seq <= r.Last; seq++ {
			seen[seq]++
		}
	}
	for seq := uint64(1); seq <= entries; seq++ {
		if seen[seq] != 1 {
			t.Errorf("entry %d listed or named %d times, want once (%d listed, runs %v)", seq, seen[seq], len(listed), runs)
			break
		}
	}
}

// TestQuarantineUnreadableHeaderBounded: GET /api/quarantine over a
// quarantine with many runs of entries the store does not produce (50
// single dropped entries, deleted sequences as a rebuilt block leaves
// them) names the newest 16 runs in the Junction-Quarantine-Unreadable
// header, under 3 KiB, and sums the older ones (how many runs and
// entries, from where to where) in Junction-Quarantine-Unreadable-Omitted:
// every unreadable entry is named or counted, once. With 16 runs or
// fewer, all are named and there is no sum. Before, the header named
// every run, growing without bound with the damage.
func TestQuarantineUnreadableHeaderBounded(t *testing.T) {
	const entries = 200
	tests := []struct {
		name    string
		dropped []uint64
		named   int // runs the header names
	}{
		{"50 runs", jstest.Seqs(2, 100, 2), maxUnreadableRuns},
		{"16 runs", jstest.Seqs(2, 32, 2), 16},
		{"one long run", jstest.Seqs(3, 150, 1), 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := jstest.StreamWithGaps(t, jetstream.StreamConfig{Name: store.StreamQuarantine, Subjects: []string{store.SubjQuarantine + ".>"}},
				store.SubjQuarantine+".pas", entries, tc.dropped)
			e := &Engine{store: &store.Store{JS: js}}
			rec := httptest.NewRecorder()
			e.handleQuarantine(rec, httptest.NewRequest(http.MethodGet, "/api/quarantine?limit=10000", nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			header := rec.Header().Get(HeaderQuarantineUnreadable)
			var runs []jserr.Run
			if err := json.Unmarshal([]byte(header), &runs); err != nil {
				t.Fatalf("header %q: %v", header, err)
			}
			if len(runs) != tc.named || len(header) > 3<<10 {
				t.Errorf("the header names %d runs in %d bytes, want %d, under 3 KiB", len(runs), len(header), tc.named)
			}
			var o UnreadableOmitted
			if v := rec.Header().Get(HeaderQuarantineUnreadableOmitted); v != "" {
				if err := json.Unmarshal([]byte(v), &o); err != nil {
					t.Fatalf("omitted header %q: %v", v, err)
				}
			}
			named := map[uint64]bool{}
			for _, r := range runs {
				for seq := r.First; seq <= r.Last; seq++ {
					named[seq] = true
				}
			}
			// The runs named are the newest: those not named are the
			// oldest, summed.
			var left []uint64
			for _, seq := range tc.dropped {
				if !named[seq] {
					left = append(left, seq)
				}
			}
			if len(named)+len(left) != len(tc.dropped) || uint64(len(left)) != o.Entries ||
				len(left) > 0 && (o.First != left[0] || o.Last != left[len(left)-1] || o.Runs != len(left)) {
				t.Errorf("named %d entries and summed %+v, want the newest named and the %d others (%v) summed", len(named), o, len(left), left)
			}
			if len(left) > 0 && left[len(left)-1] > runs[0].First {
				t.Errorf("runs %v named, older than entry %d summed: want the newest named", runs, left[len(left)-1])
			}
		})
	}
}
