package patient

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

// rememberFake makes ix remember rec at key and revision rev, in place
// of what it remembers.
func rememberFake(t *testing.T, ix *Index, key string, rec Record, rev uint64) {
	t.Helper()
	val, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	ix.recent.forget(key) // remember keeps a newer revision
	ix.recent.remember(key, val, rev)
	if s, ok := ix.recent.get(key); !ok || s.rev != rev {
		t.Fatalf("the fake record was not remembered")
	}
}

// TestRememberedRecordIsNotTrusted checks that a stale remembered record
// (as another process's writes leave it) changes nothing: the index ends
// as if it had read the store each time.
func TestRememberedRecordIsNotTrusted(t *testing.T) {
	n0 := num(t, 0)
	tests := []struct {
		name string
		// fake returns the remembered record and revision, given the
		// stored record.
		fake func(stored *Record) (Record, uint64)
	}{
		{
			// Newer than the message: trusted, it would make the message
			// stale and nothing would be written.
			name: "remembered newer than the store",
			fake: func(stored *Record) (Record, uint64) {
				r := *stored
				r.UpdatedAt, r.MessageID = src(99).Received, src(99).MessageID
				return r, stored.Version
			},
		},
		{
			// Older than the store, with a field the message does not
			// set: trusted, its postcode would be written back.
			name: "remembered older than the store",
			fake: func(stored *Record) (Record, uint64) {
				r := *stored
				r.Postcode = "ZZ9 9ZZ"
				return r, stored.Version - 1
			},
		},
		{
			name: "remembered merged",
			fake: func(stored *Record) (Record, uint64) {
				r := *stored
				r.MergedInto = num(t, 1)
				return r, stored.Version
			},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := openIndex(t, startJetStream(t), "PATIENTS_REMEMBERED")
			apply(t, ix, bundle(t, "A08", pat{nhsNumber: n0, postcode: "LS1 4AB"}), src(1))
			apply(t, ix, bundle(t, "A08", pat{nhsNumber: n0, family: "FIRST"}), src(2))
			key, err := ix.RecordKey(n0)
			if err != nil {
				t.Fatal(err)
			}
			stored := raw(t, ix, n0)
			fake, rev := tt.fake(stored)
			rememberFake(t, ix, key, fake, rev)

			res := apply(t, ix, bundle(t, "A08", pat{nhsNumber: n0, family: "SECOND"}), src(3+i))
			if res.Updated != 1 || res.Stale != 0 {
				t.Errorf("result %+v, want one update", res)
			}
			got := raw(t, ix, n0)
			if got.Family != "SECOND" || got.Postcode != "LS1 4AB" || got.MergedInto != "" || got.MessageID != src(3+i).MessageID {
				t.Errorf("stored family %q postcode %q merged %t message %q; want the message applied to the stored record",
					got.Family, got.Postcode, got.MergedInto != "", got.MessageID)
			}
			if got.Version != stored.Version+1 {
				t.Errorf("revision %d, want one write after %d", got.Version, stored.Version)
			}
		})
	}
}

// TestTwoIndexesOneBucket runs two Indexes (two processes) on one bucket,
// each remembering what it wrote: an older message applied through the
// Index that did not see the newer write is stale, as with reads.
func TestTwoIndexesOneBucket(t *testing.T) {
	js := startJetStream(t)
	a := openIndex(t, js, "PATIENTS_TWO")
	b := openIndex(t, js, "PATIENTS_TWO")
	n0 := num(t, 0)
	apply(t, a, bundle(t, "A08", pat{nhsNumber: n0, postcode: "AA1 1AA"}), src(1))
	apply(t, b, bundle(t, "A08", pat{nhsNumber: n0, postcode: "CC3 3CC"}), src(3))
	res := apply(t, a, bundle(t, "A08", pat{nhsNumber: n0, postcode: "BB2 2BB"}), src(2))
	if res.Stale != 1 {
		t.Errorf("result %+v, want the older message stale", res)
	}
	if got := raw(t, a, n0); got.Postcode != "CC3 3CC" || got.MessageID != src(3).MessageID {
		t.Errorf("postcode %q from %q, want the newest message's", got.Postcode, got.MessageID)
	}
	// And a newer one through the Index that missed a write is applied.
	apply(t, a, bundle(t, "A08", pat{nhsNumber: n0, postcode: "DD4 4DD"}), src(4))
	if got := raw(t, b, n0); got.Postcode != "DD4 4DD" {
		t.Errorf("postcode %q, want DD4 4DD", got.Postcode)
	}
}

// TestRememberedRecordDoesNotFailAChange checks that a change refusing a
// stale remembered record runs again on the stored one.
func TestRememberedRecordDoesNotFailAChange(t *testing.T) {
	ix := openIndex(t, startJetStream(t), "PATIENTS_REMEMBERED_FAIL")
	n0 := num(t, 0)
	apply(t, ix, bundle(t, "A08", pat{nhsNumber: n0, postcode: "LS1 4AB"}), src(1))
	key, err := ix.RecordKey(n0)
	if err != nil {
		t.Fatal(err)
	}
	stored := raw(t, ix, n0)
	fake := *stored
	fake.Postcode = "ZZ9 9ZZ"
	rememberFake(t, ix, key, fake, stored.Version)
	rec, err := ix.Update(t.Context(), n0, func(r *Record) error {
		if r.Postcode == "ZZ9 9ZZ" {
			return errors.New("refused")
		}
		r.Family = "CHANGED"
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if rec.Family != "CHANGED" || rec.Postcode != "LS1 4AB" {
		t.Errorf("family %q postcode %q, want the change applied to the stored record", rec.Family, rec.Postcode)
	}
}

// TestRememberedRecordTakesNoAttempt checks that trying a stale
// remembered record does not use up the index's compare-and-set
// attempts: with one attempt, the update still reaches the store.
func TestRememberedRecordTakesNoAttempt(t *testing.T) {
	js := startJetStream(t)
	ix, err := Open(t.Context(), js, Config{Bucket: "PATIENTS_ONE_ATTEMPT", HashKey: testHashKey, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	n0 := num(t, 0)
	key, err := ix.RecordKey(n0)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, ix, bundle(t, "A08", pat{nhsNumber: n0, postcode: "LS1 4AB"}), src(1))
	tests := []struct {
		name string
		// fake returns the remembered record and revision, given the
		// stored record.
		fake func(stored *Record) (Record, uint64)
	}{
		{
			name: "newer, so not written",
			fake: func(stored *Record) (Record, uint64) {
				r := *stored
				r.UpdatedAt, r.MessageID = src(99).Received, src(99).MessageID
				return r, stored.Version
			},
		},
		{
			name: "at a revision the store has moved past",
			fake: func(stored *Record) (Record, uint64) { return *stored, stored.Version - 1 },
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, rev := tt.fake(raw(t, ix, n0))
			rememberFake(t, ix, key, fake, rev)
			postcode := fmt.Sprintf("LS%d 7AB", i+2)
			if _, err := ix.Apply(t.Context(), bundle(t, "A08", pat{nhsNumber: n0, postcode: postcode}), src(i+2)); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got := raw(t, ix, n0); got.Postcode != postcode {
				t.Errorf("postcode %q, want %q", got.Postcode, postcode)
			}
		})
	}
}
