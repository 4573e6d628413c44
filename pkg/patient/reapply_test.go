package patient

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestReapplyingRecentMessagesRestoresLostWrites checks the property an
// index written without a per-write fsync would rest on (BENCHMARKS.md,
// 2026-12-04): when the store loses the writes of the last messages (it
// acknowledged them, then stopped before they reached the disk), applying
// the recent messages again, from any point at or before the first lost
// one, leaves every entry of the bucket exactly as if nothing had been
// lost.
func TestReapplyingRecentMessagesRestoresLostWrites(t *testing.T) {
	js := startJetStream(t)
	rng := rand.New(rand.NewPCG(2026, 1204))
	for h := range 12 {
		msgs := randomHistory(t, rng, 30)
		refBucket := fmt.Sprintf("PATIENTS_REF_%d", h)
		ref := openIndex(t, js, refBucket)
		for _, m := range msgs {
			apply(t, ref, m.b, m.s)
		}
		want := bucketEntries(t, js, refBucket)
		for c := range 8 {
			// The writes of msgs[:kept] reached the disk; msgs[from:] are
			// applied again, by a fresh Index as after a restart.
			kept := rng.IntN(len(msgs))
			from := rng.IntN(kept + 1)
			t.Run(fmt.Sprintf("history%d/kept%d/from%d", h, kept, from), func(t *testing.T) {
				bucket := fmt.Sprintf("PATIENTS_LOST_%d_%d", h, c)
				before := openIndex(t, js, bucket)
				for _, m := range msgs[:kept] {
					apply(t, before, m.b, m.s)
				}
				after := openIndex(t, js, bucket)
				for _, m := range msgs[from:] {
					apply(t, after, m.b, m.s)
				}
				got := bucketEntries(t, js, bucket)
				for k, v := range want {
					if got[k] != v {
						t.Errorf("entry %s:\n got %s\nwant %s", k, got[k], v)
					}
				}
				for k := range got {
					if _, ok := want[k]; !ok {
						t.Errorf("entry %s should not exist: %s", k, got[k])
					}
				}
			})
		}
	}
}

// history is one message of a randomHistory.
type history struct {
	b map[string]any
	s Source
}

// randomHistory returns n messages about four patients: demographic
// updates, local identifiers and restricted flags, about one in eight
// received before the message ahead of it. It has no merges: applied
// again after later messages, a merge can leave different stamps on the
// merged record and on identifier entries, and a merge that undid an
// earlier merge of its survivor sends an older message's identifiers to
// a different record, so histories with merges do not have the property
// tested here. The same holds for a route span applied again after a
// crash, today.
func randomHistory(tb testing.TB, rng *rand.Rand, n int) []history {
	tb.Helper()
	const patients = 4
	families := []string{"TESTONE", "TESTTWO", "TESTTHREE"}
	postcodes := []string{"LS1 1AA", "LS2 2BB", ""}
	practices := []string{"Y11111", "Y22222", ""}
	out := make([]history, 0, n)
	for i := range n {
		s := src(10 * (i + 1))
		if i > 0 && rng.IntN(8) == 0 {
			// Received before the previous message, delivered after it.
			s.Received = s.Received.Add(-15 * time.Minute)
		}
		p := rng.IntN(patients)
		pt := pat{
			nhsNumber:  num(tb, p),
			family:     families[rng.IntN(len(families))],
			given:      []string{"SAM"},
			birthDate:  "1980-01-01",
			gender:     []string{"female", "male"}[rng.IntN(2)],
			postcode:   postcodes[rng.IntN(len(postcodes))],
			ods:        practices[rng.IntN(len(practices))],
			restricted: rng.IntN(10) == 0,
		}
		if rng.IntN(2) == 0 {
			pt.ids = []Identifier{local(fmt.Sprintf("L%d", p)), local(fmt.Sprintf("L%d-%d", p, rng.IntN(3)))}
		}
		out = append(out, history{b: bundle(tb, []string{"A01", "A08", "A03"}[rng.IntN(3)], pt), s: s})
	}
	return out
}

// bucketEntries returns every entry of the index bucket, key to stored
// value.
func bucketEntries(tb testing.TB, js jetstream.JetStream, bucket string) map[string]string {
	tb.Helper()
	kv, err := js.KeyValue(tb.Context(), bucket)
	if err != nil {
		tb.Fatalf("opening bucket: %v", err)
	}
	keys, err := kv.ListKeys(tb.Context())
	if err != nil {
		tb.Fatalf("listing keys: %v", err)
	}
	out := map[string]string{}
	for k := range keys.Keys() {
		e, err := kv.Get(tb.Context(), k)
		if err != nil {
			tb.Fatalf("reading %s: %v", k, err)
		}
		out[k] = string(e.Value())
	}
	if len(out) == 0 {
		tb.Fatal("the bucket is empty")
	}
	return out
}
