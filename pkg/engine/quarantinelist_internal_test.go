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
