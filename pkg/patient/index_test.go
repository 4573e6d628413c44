package patient

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func apply(t *testing.T, ix *Index, b map[string]any, s Source) Result {
	t.Helper()
	res, err := ix.Apply(t.Context(), b, s)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return res
}

func get(t *testing.T, ix *Index, nhsNumber string) *Record {
	t.Helper()
	r, err := ix.Get(t.Context(), nhsNumber)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return r
}

// raw reads a record without following merges.
func raw(t *testing.T, ix *Index, nhsNumber string) *Record {
	t.Helper()
	key, err := ix.RecordKey(nhsNumber)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ix.read(t.Context(), key)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if r == nil {
		t.Fatal("record absent")
	}
	return r
}

func wantResult(t *testing.T, got, want Result) {
	t.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Result (-want +got):\n%s", diff)
	}
}

func TestApplyRules(t *testing.T) {
	js := startJetStream(t)
	n0, n1, n2 := num(t, 0), num(t, 1), num(t, 2)
	cpp := Flag{System: "https://example.org/socialcare-flag", Code: "CPP", Origin: "socialcare/test"}

	tests := []struct {
		name string
		run  func(t *testing.T, ix *Index)
	}{
		{"new patient", func(t *testing.T, ix *Index) {
			res := apply(t, ix, bundle(t, "A01", pat{nhsNumber: n0, ids: []Identifier{local("H1")}, family: "TESTPATIENT",
				given: []string{"ALEX"}, birthDate: "1980-02-03", gender: "female", postcode: "ls1 4ab", ods: "Y99999", gmp: "G9999991"}), src(1))
			wantResult(t, res, Result{Event: "A01", Updated: 1})
			r := get(t, ix, n0)
			want := &Record{NHSNumber: n0, Identifiers: []Identifier{local("H1")}, Family: "TESTPATIENT", Given: []string{"ALEX"},
				BirthDate: "1980-02-03", Gender: "female", Postcode: "LS1 4AB", GPPractice: "Y99999", GP: "G9999991", GPSource: src(1),
				UpdatedAt: src(1).Received, MessageID: src(1).MessageID}
			if diff := cmp.Diff(want, r, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Version" }, cmp.Ignore())); diff != "" {
				t.Errorf("record (-want +got):\n%s", diff)
			}
			if r.Version == 0 {
				t.Error("Version not set")
			}
		}},
		{"local identifiers beyond the limit left out and counted", func(t *testing.T, ix *Index) {
			ids := make([]Identifier, MaxLocalIdentifiers+5)
			for i := range ids {
				ids[i] = local(fmt.Sprintf("H%d", i))
			}
			res := apply(t, ix, bundle(t, "A01", pat{nhsNumber: n0, ids: ids}), src(1))
			wantResult(t, res, Result{Event: "A01", Updated: 1, IdentifiersDropped: 5})
			if r := get(t, ix, n0); !cmp.Equal(r.Identifiers, ids[:MaxLocalIdentifiers]) {
				t.Errorf("record identifiers %v, want the first %d", r.Identifiers, MaxLocalIdentifiers)
			}
		}},
		{"demographics update keeps what the message leaves out", func(t *testing.T, ix *Index) {
			apply(t, ix, bundle(t, "A01", pat{nhsNumber: n0, family: "TESTPATIENT", postcode: "LS1 4AB", gender: "male"}), src(1))
			apply(t, ix, bundle(t, "A08", pat{nhsNumber: n0, postcode: "LS2 9JT"}), src(2))
			r := get(t, ix, n0)
			if r.Postcode != "LS2 9JT" || r.Family != "TESTPATIENT" || r.Gender != "male" || r.MessageID != src(2).MessageID {
				t.Errorf("got postcode %q family %q gender %q message %q", r.Postcode, r.Family, r.Gender, r.MessageID)
			}
		}},
		{"older message's fields ignored, its identifiers kept", func(t *testing.T, ix *Index) {
			// Identifiers are a set no message removes, so taking an
			// older message's keeps the index independent of arrival
			// order (TestConcurrentUpdates relies on it).
			apply(t, ix, bundle(t, "A08", pat{nhsNumber: n0, postcode: "LS2 9JT"}), src(5))
			res := apply(t, ix, bundle(t, "A01", pat{nhsNumber: n0, postcode: "LS1 4AB", ids: []Identifier{local("OLD")}}), src(4))
			wantResult(t, res, Result{Event: "A01", Stale: 1})
			r := get(t, ix, n0)
			if r.Postcode != "LS2 9JT" || r.MessageID != src(5).MessageID {
				t.Errorf("older message applied: postcode %q message %q", r.Postcode, r.MessageID)
			}
			if !slices.Contains(r.Identifiers, local("OLD")) {
				t.Errorf("identifiers %v: the older message's identifier was dropped", r.Identifiers)
			}
			if got, err := ix.GetByIdentifier(t.Context(), local("OLD")); err != nil || got.NHSNumber != n0 {
				t.Errorf("identifier of the older message not indexed: %v", err)
			}
			// Applying it again changes nothing.
			wantResult(t, apply(t, ix, bundle(t, "A01", pat{nhsNumber: n0, postcode: "LS1 4AB", ids: []Identifier{local("OLD")}}), src(4)), Result{Event: "A01", Stale: 1})
		}},
		{"same receipt time: the greater id wins", func(t *testing.T, ix *Index) {
			a := Source{MessageID: "01TESTB", Received: base}
			b := Source{MessageID: "01TESTA", Received: base}
			apply(t, ix, bundle(t, "A08", pat{nhsNumber: n0, postcode: "B1 1AA"}), a)
			res := apply(t, ix, bundle(t, "A08", pat{nhsNumber: n0, postcode: "B2 2BB"}), b)
			if res.Stale != 1 || get(t, ix, n0).Postcode != "B1 1AA" {
				t.Errorf("Stale %d postcode %q", res.Stale, get(t, ix, n0).Postcode)
			}
		}},
		{"replaying a message changes nothing", func(t *testing.T, ix *Index) {
			b := bundle(t, "A01", pat{nhsNumber: n0, postcode: "LS1 4AB"})
			apply(t, ix, b, src(1))
			v := get(t, ix, n0).Version
			res := apply(t, ix, b, src(1))
			wantResult(t, res, Result{Event: "A01", Stale: 1})
			if got := get(t, ix, n0).Version; got != v {
				t.Errorf("version %d after replay, want %d", got, v)
			}
		}},
		{"GP change", func(t *testing.T, ix *Index) {
			apply(t, ix, bundle(t, "A01", pat{nhsNumber: n0, ods: "A11111", gmp: "G1111111"}), src(1))
			apply(t, ix, bundle(t, "A08", pat{nhsNumber: n0, odsLogical: "B22222"}), src(2))
			r := get(t, ix, n0)
			if r.GPPractice != "B22222" || r.GP != "G1111111" {
				t.Errorf("practice %q gp %q", r.GPPractice, r.GP)
			}
			apply(t, ix, bundle(t, "A02", pat{nhsNumber: n0}), src(3))
			if r := get(t, ix, n0); r.GPPractice != "B22222" {
				t.Errorf("a message without PD1 cleared the practice: %q", r.GPPractice)
			}
		}},
		{"local identifier cross-reference", func(t *testing.T, ix *Index) {
			apply(t, ix, bundle(t, "A01", pat{nhsNumber: n0, ids: []Identifier{local("H1"), local("H1b")}}), src(1))
			r, err := ix.GetByIdentifier(t.Context(), local("H1b"))
			if err != nil || r.NHSNumber != n0 {
				t.Fatalf("GetByIdentifier: %v", err)
			}
			// A message carrying only the local identifier updates the record.
			res := apply(t, ix, bundle(t, "A08", pat{ids: []Identifier{local("H1")}, postcode: "M1 1AE"}), src(2))
			wantResult(t, res, Result{Event: "A08", Updated: 1})
			if got := get(t, ix, n0).Postcode; got != "M1 1AE" {
				t.Errorf("postcode %q", got)
			}
			// The same value in another system is another identifier.
			if _, err := ix.GetByIdentifier(t.Context(), Identifier{System: "https://other.example/id", Value: "H1"}); !errors.Is(err, ErrNotFound) {
				t.Errorf("other system found: %v", err)
			}
		}},
		{"unknown patient without NHS number is unindexed", func(t *testing.T, ix *Index) {
			res := apply(t, ix, bundle(t, "A01", pat{ids: []Identifier{local("NOBODY")}, postcode: "M1 1AE"}), src(1))
			wantResult(t, res, Result{Event: "A01", Unindexed: 1})
			if _, err := ix.GetByIdentifier(t.Context(), local("NOBODY")); !errors.Is(err, ErrNotFound) {
				t.Errorf("GetByIdentifier: %v", err)
			}
		}},
		{"A40 merge: the old number reads the survivor", func(t *testing.T, ix *Index) {
			apply(t, ix, bundle(t, "A01", pat{nhsNumber: n1, ids: []Identifier{local("OLD1")}, postcode: "OL1 1AA"}), src(1))
			if _, err := ix.SetFlag(t.Context(), n1, Flag{System: cpp.System, Code: cpp.Code, Source: src(2)}); err != nil {
				t.Fatal(err)
			}
			apply(t, ix, bundle(t, "A01", pat{nhsNumber: n0, ids: []Identifier{local("NEW0")}, postcode: "SU1 1AA"}), src(3))
			res := apply(t, ix, bundle(t, "A40",
				pat{url: "urn:uuid:s", nhsNumber: n0, ids: []Identifier{local("NEW0")}, ods: "Y99999"},
				pat{nhsNumber: n1, ids: []Identifier{local("OLD1"), local("OLD1b")}, replacedBy: "urn:uuid:s"}), src(4))
			wantResult(t, res, Result{Event: "A40", Updated: 1, Merged: 1})
			r := get(t, ix, n1)
			if r.NHSNumber != n0 || r.ResolvedFrom != n1 || r.Postcode != "SU1 1AA" || r.GPPractice != "Y99999" {
				t.Errorf("old number read NHS %v resolvedFrom %v postcode %q practice %q", r.NHSNumber == n0, r.ResolvedFrom == n1, r.Postcode, r.GPPractice)
			}
			for _, id := range []Identifier{local("NEW0"), local("OLD1"), local("OLD1b")} {
				if !slices.Contains(r.Identifiers, id) {
					t.Errorf("survivor lacks identifier %s", id.Value)
				}
				byID, err := ix.GetByIdentifier(t.Context(), id)
				if err != nil || byID.NHSNumber != n0 {
					t.Errorf("identifier %s does not reach the survivor: %v", id.Value, err)
				}
			}
			if len(r.Flags) != 1 || r.Flags[0].Code != "CPP" {
				t.Errorf("flags not moved: %+v", r.Flags)
			}
			old := raw(t, ix, n1)
			if old.MergedInto != n0 || len(old.Identifiers) != 0 || len(old.Flags) != 0 || old.MergeSource != src(4) {
				t.Errorf("old record: merged %v, %d identifiers, %d flags", old.MergedInto == n0, len(old.Identifiers), len(old.Flags))
			}
			if !old.CELAt(base)["merged"].(bool) || !r.CELAt(base)["merged"].(bool) {
				t.Error("CEL merged false")
			}
			// Replaying the merge merges nothing again.
			res = apply(t, ix, bundle(t, "A40",
				pat{url: "urn:uuid:s", nhsNumber: n0, ids: []Identifier{local("NEW0")}, ods: "Y99999"},
				pat{nhsNumber: n1, ids: []Identifier{local("OLD1"), local("OLD1b")}, replacedBy: "urn:uuid:s"}), src(4))
			wantResult(t, res, Result{Event: "A40", Stale: 1})
			// Later writes to the old number reach the survivor.
			if _, err := ix.SetFlag(t.Context(), n1, Flag{System: cpp.System, Code: "LAC", Source: src(5)}); err != nil {
				t.Fatal(err)
			}
			if r := get(t, ix, n0); len(r.Flags) != 2 {
				t.Errorf("survivor has %d flags, want 2", len(r.Flags))
			}
			if old := raw(t, ix, n1); len(old.Flags) != 0 {
				t.Error("flag written to the merged record")
			}
			// A message on the old number sent after the merge (a PAS
			// still using it) is no source for the survivor's
			// demographics; its identifiers still reach the survivor.
			res = apply(t, ix, bundle(t, "A08", pat{nhsNumber: n1, ids: []Identifier{local("OLD1c")}, family: "TESTRETIRED", postcode: "OL9 9ZZ"}), src(6))
			wantResult(t, res, Result{Event: "A08", Stale: 1})
			r = get(t, ix, n0)
			if r.Family == "TESTRETIRED" || r.Postcode != "SU1 1AA" {
				t.Errorf("the old number's message changed the survivor: family %q postcode %q", r.Family, r.Postcode)
			}
			if !slices.Contains(r.Identifiers, local("OLD1c")) {
				t.Error("the old number's message's identifier did not reach the survivor")
			}
		}},
		{"merge of a number never seen", func(t *testing.T, ix *Index) {
			res := apply(t, ix, bundle(t, "A40",
				pat{url: "urn:uuid:s", nhsNumber: n0},
				pat{nhsNumber: n1, replacedBy: "urn:uuid:s"}), src(1))
			wantResult(t, res, Result{Event: "A40", Updated: 1, Merged: 1})
			if r := get(t, ix, n1); r.NHSNumber != n0 {
				t.Error("old number does not resolve to the survivor")
			}
		}},
		{"A34 merge by local identifier only", func(t *testing.T, ix *Index) {
			apply(t, ix, bundle(t, "A01", pat{nhsNumber: n1, ids: []Identifier{local("H9")}}), src(1))
			res := apply(t, ix, bundle(t, "A34",
				pat{url: "urn:uuid:s", nhsNumber: n0, ids: []Identifier{local("H0")}},
				pat{ids: []Identifier{local("H9")}, replacedBy: "urn:uuid:s"}), src(2))
			wantResult(t, res, Result{Event: "A34", Updated: 1, Merged: 1})
			if r := get(t, ix, n1); r.NHSNumber != n0 {
				t.Error("record of the old local identifier not merged")
			}
			if r, err := ix.GetByIdentifier(t.Context(), local("H9")); err != nil || r.NHSNumber != n0 {
				t.Errorf("old local identifier: %v", err)
			}
		}},
		{"older merge loses to a newer merge the other way", func(t *testing.T, ix *Index) {
			apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n0}, pat{nhsNumber: n1, replacedBy: "urn:uuid:s"}), src(5))
			res := apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n1}, pat{nhsNumber: n0, replacedBy: "urn:uuid:s"}), src(4))
			if res.Merged != 0 {
				t.Errorf("older merge applied: %+v", res)
			}
			if r := get(t, ix, n1); r.NHSNumber != n0 {
				t.Error("newer merge lost")
			}
		}},
		{"older merge of the same record into another survivor loses to the newer", func(t *testing.T, ix *Index) {
			// n2 is merged into n0 by the newer message; the older one,
			// delivered late, would merge it into n1. Messages on n2 must
			// keep reaching n0.
			apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n0}, pat{nhsNumber: n2, replacedBy: "urn:uuid:s"}), src(5))
			res := apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n1}, pat{nhsNumber: n2, replacedBy: "urn:uuid:s"}), src(4))
			if res.Merged != 0 {
				t.Errorf("older merge applied: %+v", res)
			}
			if r := raw(t, ix, n2); r.MergedInto != n0 {
				t.Errorf("old record merged into the older message's survivor (%v), want the newer's", r.MergedInto == n1)
			}
			if r := get(t, ix, n2); r.NHSNumber != n0 {
				t.Error("the old number no longer reads the newer merge's survivor")
			}
		}},
		{"a newer reverse merge wins without a loop", func(t *testing.T, ix *Index) {
			apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n0}, pat{nhsNumber: n1, replacedBy: "urn:uuid:s"}), src(1))
			apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n1}, pat{nhsNumber: n0, replacedBy: "urn:uuid:s"}), src(2))
			for _, n := range []string{n0, n1} {
				r, err := ix.Get(t.Context(), n)
				if err != nil || r.NHSNumber != n1 {
					t.Errorf("Get: %v", err)
				}
			}
			if raw(t, ix, n1).MergedInto != "" {
				t.Error("survivor of the newer merge still merged")
			}
		}},
		{"chain of merges", func(t *testing.T, ix *Index) {
			apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n1}, pat{nhsNumber: n2, replacedBy: "urn:uuid:s", ids: []Identifier{local("C2")}}), src(1))
			apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n0}, pat{nhsNumber: n1, replacedBy: "urn:uuid:s"}), src(2))
			if r := get(t, ix, n2); r.NHSNumber != n0 || !slices.Contains(r.Identifiers, local("C2")) {
				t.Error("chain not followed or identifiers not carried along")
			}
		}},
		{"an older merge leaves alone a record a newer message pointed its identifier at", func(t *testing.T, ix *Index) {
			apply(t, ix, bundle(t, "A01", pat{nhsNumber: n1, ids: []Identifier{local("L1")}}), src(1))
			// The identifier moves to another patient at 3; the merge of
			// its former holder, sent at 2, arrives after that.
			apply(t, ix, bundle(t, "A08", pat{nhsNumber: n2, ids: []Identifier{local("L1")}, postcode: "LS2 2BB"}), src(3))
			res := apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n0}, pat{nhsNumber: n1, ids: []Identifier{local("L1")}, replacedBy: "urn:uuid:s"}), src(2))
			if res.Merged != 1 {
				t.Errorf("merged %d records, want 1 (the old number's)", res.Merged)
			}
			if r := raw(t, ix, n2); r.MergedInto != "" || !slices.Contains(r.Identifiers, local("L1")) {
				t.Errorf("the identifier's newer holder was merged (%v) or lost it", r.MergedInto != "")
			}
			if r := raw(t, ix, n1); r.MergedInto != n0 {
				t.Error("the old number was not merged")
			}
		}},
		{"a merge applied again after its survivor merged on stays where it was", func(t *testing.T, ix *Index) {
			m1 := bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n1}, pat{nhsNumber: n2, replacedBy: "urn:uuid:s"})
			apply(t, ix, m1, src(1))
			apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n0}, pat{nhsNumber: n1, replacedBy: "urn:uuid:s"}), src(2))
			before := raw(t, ix, n2)
			apply(t, ix, m1, src(1))
			if after := raw(t, ix, n2); after.MergedInto != n1 || after.Version != before.Version {
				t.Errorf("the old record moved along the chain: merged into the first survivor %v, rewritten %v", after.MergedInto == n1, after.Version != before.Version)
			}
			if r := get(t, ix, n2); r.NHSNumber != n0 {
				t.Error("the chain no longer reaches the last survivor")
			}
		}},
		{"a restricted record merged makes its survivor restricted", func(t *testing.T, ix *Index) {
			apply(t, ix, bundle(t, "A01", pat{nhsNumber: n0}), src(1))
			apply(t, ix, bundle(t, "A01", pat{nhsNumber: n1, restricted: true}), src(2))
			apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n0}, pat{nhsNumber: n1, replacedBy: "urn:uuid:s"}), src(3))
			if !raw(t, ix, n0).Restricted {
				t.Error("survivor of a restricted patient's merge not restricted")
			}
			if r := get(t, ix, n1); r.NHSNumber != n0 || !r.Restricted {
				t.Errorf("the old number reads %v, restricted %v; want the survivor, restricted", r.NHSNumber == n0, r.Restricted)
			}
		}},
		{"restricted label", func(t *testing.T, ix *Index) {
			apply(t, ix, bundle(t, "A01", pat{nhsNumber: n0, restricted: true}), src(1))
			apply(t, ix, bundle(t, "A08", pat{nhsNumber: n0}), src(2))
			if !get(t, ix, n0).Restricted {
				t.Fatal("restricted not kept")
			}
			if _, err := ix.SetRestricted(t.Context(), n0, false, src(3)); err != nil {
				t.Fatal(err)
			}
			if get(t, ix, n0).Restricted {
				t.Error("SetRestricted(false) ignored")
			}
			if _, err := ix.SetRestricted(t.Context(), n0, true, src(2)); err != nil {
				t.Fatal(err)
			}
			if get(t, ix, n0).Restricted {
				t.Error("an older SetRestricted won")
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, openIndex(t, js, fmt.Sprintf("PATIENTS_RULES_%d", i)))
		})
	}
}

func TestFlags(t *testing.T) {
	js := startJetStream(t)
	n0 := num(t, 0)
	const sys = "https://example.org/socialcare-flag"
	at := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }

	tests := []struct {
		name       string
		ops        func(t *testing.T, ix *Index)
		when       time.Time
		wantActive []any
		wantFlags  int
	}{
		{"set", func(t *testing.T, ix *Index) {
			mustFlag(t)(ix.SetFlag(t.Context(), n0, Flag{System: sys, Code: "CPP", Start: at(0), Source: src(1)}))
		}, at(10), []any{"CPP"}, 1},
		{"not yet started", func(t *testing.T, ix *Index) {
			mustFlag(t)(ix.SetFlag(t.Context(), n0, Flag{System: sys, Code: "CPP", Start: at(20), Source: src(1)}))
		}, at(10), []any{}, 1},
		{"cleared", func(t *testing.T, ix *Index) {
			mustFlag(t)(ix.SetFlag(t.Context(), n0, Flag{System: sys, Code: "CPP", Start: at(0), Source: src(1)}))
			mustFlag(t)(ix.ClearFlag(t.Context(), n0, sys, "CPP", at(5), src(2)))
		}, at(10), []any{}, 1},
		{"active before the clear", func(t *testing.T, ix *Index) {
			mustFlag(t)(ix.SetFlag(t.Context(), n0, Flag{System: sys, Code: "CPP", Start: at(0), Source: src(1)}))
			mustFlag(t)(ix.ClearFlag(t.Context(), n0, sys, "CPP", at(5), src(2)))
		}, at(3), []any{"CPP"}, 1},
		{"older set after clear loses", func(t *testing.T, ix *Index) {
			mustFlag(t)(ix.ClearFlag(t.Context(), n0, sys, "CPP", at(5), src(3)))
			mustFlag(t)(ix.SetFlag(t.Context(), n0, Flag{System: sys, Code: "CPP", Source: src(2)}))
		}, at(10), []any{}, 1},
		{"newer set after clear wins", func(t *testing.T, ix *Index) {
			mustFlag(t)(ix.ClearFlag(t.Context(), n0, sys, "CPP", at(5), src(3)))
			mustFlag(t)(ix.SetFlag(t.Context(), n0, Flag{System: sys, Code: "CPP", Start: at(6), Source: src(4)}))
		}, at(10), []any{"CPP"}, 1},
		{"two flags", func(t *testing.T, ix *Index) {
			mustFlag(t)(ix.SetFlag(t.Context(), n0, Flag{System: sys, Code: "CPP", Source: src(1)}))
			mustFlag(t)(ix.SetFlag(t.Context(), n0, Flag{System: sys, Code: "LAC", Source: src(1)}))
		}, at(10), []any{"CPP", "LAC"}, 2},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := openIndex(t, js, fmt.Sprintf("PATIENTS_FLAGS_%d", i))
			tt.ops(t, ix)
			r := get(t, ix, n0)
			if len(r.Flags) != tt.wantFlags {
				t.Errorf("%d flags, want %d", len(r.Flags), tt.wantFlags)
			}
			if diff := cmp.Diff(tt.wantActive, r.CELAt(tt.when)["activeFlags"]); diff != "" {
				t.Errorf("activeFlags (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("a flag needs a system and a code", func(t *testing.T) {
		ix := openIndex(t, js, "PATIENTS_FLAGS_BAD")
		if _, err := ix.SetFlag(t.Context(), n0, Flag{Code: "CPP"}); err == nil {
			t.Error("no error")
		}
	})
}

func mustFlag(t *testing.T) func(*Record, error) {
	return func(_ *Record, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestConsentSummary(t *testing.T) {
	ix := openIndex(t, startJetStream(t), "PATIENTS_CONSENT")
	n0 := num(t, 0)
	steps := []struct {
		c    ConsentSummary
		want ConsentSummary
	}{
		{ConsentSummary{HasActiveConsent: true, UpdatedAt: base.Add(2 * time.Minute)}, ConsentSummary{HasActiveConsent: true, UpdatedAt: base.Add(2 * time.Minute)}},
		{ConsentSummary{OptedOut: true, UpdatedAt: base.Add(1 * time.Minute)}, ConsentSummary{HasActiveConsent: true, UpdatedAt: base.Add(2 * time.Minute)}},
		{ConsentSummary{OptedOut: true, UpdatedAt: base.Add(3 * time.Minute)}, ConsentSummary{OptedOut: true, UpdatedAt: base.Add(3 * time.Minute)}},
	}
	for i, s := range steps {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if _, err := ix.SetConsent(t.Context(), n0, s.c); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(s.want, get(t, ix, n0).Consent); diff != "" {
				t.Errorf("consent (-want +got):\n%s", diff)
			}
		})
	}
}

// TestConcurrentUpdates runs two writers on one patient: one applies ADT
// messages (interleaved sources), the other sets flags. The record must
// end with the newest message's demographics and every flag.
func TestConcurrentUpdates(t *testing.T) {
	ix := openIndex(t, startJetStream(t), "PATIENTS_CONCURRENT")
	n0 := num(t, 0)
	const perWriter = 25
	var wg sync.WaitGroup
	errs := make(chan error, 4*perWriter)
	for w := range 2 {
		wg.Go(func() {
			for i := range perWriter {
				m := 2*i + w // writer 0 sends even messages, writer 1 odd
				b := bundle(t, "A08", pat{nhsNumber: n0, postcode: fmt.Sprintf("PC%03d", m), ids: []Identifier{local(fmt.Sprintf("W%d", w))}})
				if _, err := ix.Apply(t.Context(), b, src(m)); err != nil {
					errs <- err
				}
				f := Flag{System: "https://example.org/f", Code: fmt.Sprintf("W%d-%d", w, i), Source: src(m)}
				if _, err := ix.SetFlag(t.Context(), n0, f); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("writer: %v", err)
	}
	r := get(t, ix, n0)
	last := 2*perWriter - 1
	if r.Postcode != fmt.Sprintf("PC%03d", last) || r.MessageID != src(last).MessageID {
		t.Errorf("postcode %q message %q, want the newest (%d)", r.Postcode, r.MessageID, last)
	}
	if len(r.Flags) != 2*perWriter {
		t.Errorf("%d flags, want %d", len(r.Flags), 2*perWriter)
	}
	for _, id := range []Identifier{local("W0"), local("W1")} {
		if !slices.Contains(r.Identifiers, id) {
			t.Errorf("identifier %s lost", id.Value)
		}
	}
}

// TestKeysHoldNoPatientData checks every key of the bucket after a mix of
// updates: none holds an NHS number or identifier value, and each has the
// documented shape.
func TestKeysHoldNoPatientData(t *testing.T) {
	js := startJetStream(t)
	ix := openIndex(t, js, "PATIENTS_KEYS")
	var numbers []string
	for i := range 4 {
		numbers = append(numbers, num(t, i))
	}
	values := []string{"H100001", "H100002", "H100003", "MRN-77"}
	apply(t, ix, bundle(t, "A01", pat{nhsNumber: numbers[0], ids: []Identifier{local(values[0])}, family: "TESTPATIENT"}), src(1))
	apply(t, ix, bundle(t, "A01", pat{nhsNumber: numbers[1], ids: []Identifier{local(values[1]), local(values[3])}}), src(2))
	apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: numbers[0]}, pat{nhsNumber: numbers[1], ids: []Identifier{local(values[2])}, replacedBy: "urn:uuid:s"}), src(3))
	if _, err := ix.SetFlag(t.Context(), numbers[3], Flag{System: "s", Code: "c", Source: src(4)}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), "PATIENTS_KEYS")
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	shape := regexp.MustCompile(`^[px]\.[0-9a-f]{64}$`)
	n := 0
	for k := range lister.Keys() {
		n++
		if !shape.MatchString(k) {
			t.Errorf("key %q does not have the documented shape", k)
		}
		for _, v := range append(slices.Clone(numbers), values...) {
			if strings.Contains(k, v) {
				t.Errorf("a key holds patient data")
			}
		}
	}
	// Three records (one merged) and four identifiers.
	if n != 7 {
		t.Errorf("%d keys, want 7", n)
	}
}

func TestKeysAreKeyed(t *testing.T) {
	js := startJetStream(t)
	a := openIndex(t, js, "PATIENTS_A")
	b, err := Open(t.Context(), js, Config{Bucket: "PATIENTS_B", HashKey: []byte("a-different-key-0123456789")})
	if err != nil {
		t.Fatal(err)
	}
	n0 := num(t, 0)
	ka, _ := a.RecordKey(n0)
	kb, _ := b.RecordKey(n0)
	spaced, _ := a.RecordKey(n0[:3] + " " + n0[3:6] + " " + n0[6:])
	if ka == kb {
		t.Error("keys do not depend on the hash key")
	}
	if ka != spaced {
		t.Error("the key of a spaced NHS number differs")
	}
	if a.IdentifierKey(local("X")) == a.IdentifierKey(Identifier{System: "other", Value: "X"}) {
		t.Error("identifier keys ignore the system")
	}
}

// TestKeysAreFixed pins the bucket keys: records are stored under them,
// so a change to how they are made would leave every stored record
// unfound. The expected values were computed outside Go, with python3's
// hmac.new(key, b"9990000018", hashlib.sha256).hexdigest().
func TestKeysAreFixed(t *testing.T) {
	ix := &Index{key: []byte("a-different-key-0123456789")}
	recordKey := func(n string) func() (string, error) {
		return func() (string, error) { return ix.RecordKey(n) }
	}
	identifierKey := func(id Identifier) func() (string, error) {
		return func() (string, error) { return ix.IdentifierKey(id), nil }
	}
	tests := []struct {
		name string
		key  func() (string, error)
		want string
	}{
		{"record", recordKey("999 000 0018"), "p.09ce895a00455fdd04b31b6be1af50efe6a6f1ce56bc4de105d688867b99fc04"},
		{"identifier", identifierKey(Identifier{System: "https://fhir.example-trust.nhs.uk/Id/mrn", Value: "X1"}),
			"x.bf5676a009fc61b0aad44a17780bf0762778f075b6c4489f5f4d0c88ac1a253a"},
		// Made again after other keys: a reused HMAC starts afresh.
		{"record again", recordKey("9990000018"), "p.09ce895a00455fdd04b31b6be1af50efe6a6f1ce56bc4de105d688867b99fc04"},
		{"identifier again", identifierKey(Identifier{System: "https://fhir.example-trust.nhs.uk/Id/mrn", Value: "X1"}),
			"x.bf5676a009fc61b0aad44a17780bf0762778f075b6c4489f5f4d0c88ac1a253a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.key()
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("key = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	js := startJetStream(t)
	if _, err := Open(t.Context(), js, Config{HashKey: []byte("short")}); err == nil {
		t.Error("short hash key accepted")
	}
	ix := openIndex(t, js, "PATIENTS_ERRORS")
	bad := "9990000001"
	if n := num(t, 0); n == bad {
		t.Fatal("test assumption broken")
	}
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"invalid NHS number", func() error { _, err := ix.Get(t.Context(), bad); return err }, ErrInvalidNHSNumber},
		{"unknown patient", func() error { _, err := ix.Get(t.Context(), num(t, 5)); return err }, ErrNotFound},
		{"unknown identifier", func() error { _, err := ix.GetByIdentifier(t.Context(), local("NONE")); return err }, ErrNotFound},
		{"flag on invalid number", func() error { _, err := ix.SetFlag(t.Context(), bad, Flag{System: "s", Code: "c"}); return err }, ErrInvalidNHSNumber},
		{"not a bundle", func() error {
			_, err := ix.ApplyJSON(t.Context(), []byte(`{"resourceType":"Patient"}`), src(1))
			return err
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), bad) {
				t.Error("error holds the NHS number")
			}
		})
	}
}

func TestMergeLoopGuard(t *testing.T) {
	js := startJetStream(t)
	ix := openIndex(t, js, "PATIENTS_LOOP")
	n0, n1 := num(t, 0), num(t, 1)
	// Write a loop directly, as no update path makes one.
	for _, pair := range [][2]string{{n0, n1}, {n1, n0}} {
		if _, err := ix.Update(t.Context(), pair[0], func(r *Record) error { return nil }); err != nil {
			t.Fatal(err)
		}
		key, _ := ix.RecordKey(pair[0])
		if _, err := ix.modify(t.Context(), key, "", func(r *Record) (bool, error) {
			r.MergedInto = pair[1]
			return true, nil
		}, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ix.Get(t.Context(), n0); !errors.Is(err, ErrMergeLoop) {
		t.Errorf("Get: %v, want ErrMergeLoop", err)
	}
	if _, err := ix.SetFlag(t.Context(), n0, Flag{System: "s", Code: "c"}); !errors.Is(err, ErrMergeLoop) {
		t.Errorf("SetFlag: %v, want ErrMergeLoop", err)
	}
}

func TestLookup(t *testing.T) {
	ix := openIndex(t, startJetStream(t), "PATIENTS_LOOKUP")
	n0, n1 := num(t, 0), num(t, 1)
	apply(t, ix, bundle(t, "A01", pat{nhsNumber: n0, ids: []Identifier{local("L0")}, ods: "Y99999"}), src(1))
	apply(t, ix, bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n0}, pat{nhsNumber: n1, replacedBy: "urn:uuid:s"}), src(2))
	tests := []struct {
		name    string
		b       map[string]any
		wantErr error
		merged  bool
	}{
		{"by NHS number", bundle(t, "A08", pat{nhsNumber: n0}), nil, false},
		{"by local identifier", bundle(t, "A08", pat{ids: []Identifier{local("L0")}}), nil, false},
		{"by merged number", bundle(t, "A08", pat{nhsNumber: n1}), nil, true},
		{"unknown", bundle(t, "A08", pat{nhsNumber: num(t, 3)}), ErrNotFound, false},
		{"no patient", bundle(t, "A08"), ErrNotFound, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ix.Lookup(t.Context(), tt.b)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.NHSNumber != n0 || r.GPPractice != "Y99999" || r.CELAt(base)["merged"] != tt.merged {
				t.Errorf("wrong record: practice %q merged %v", r.GPPractice, r.CELAt(base)["merged"])
			}
		})
	}
}

// TestReapplyWritesNothing checks that applying a message again (as routes
// that translate it again do) writes nothing to the bucket, for updates
// and merges alike.
func TestReapplyWritesNothing(t *testing.T) {
	const bucket = "PATIENTS_REAPPLY"
	js := startJetStream(t)
	ix := openIndex(t, js, bucket)
	n0, n1 := num(t, 0), num(t, 1)
	lastSeq := func() uint64 {
		t.Helper()
		st, err := js.Stream(t.Context(), "KV_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	msgs := []struct {
		b map[string]any
		s Source
	}{
		{bundle(t, "A08", pat{nhsNumber: n0, ids: []Identifier{local("L0")}, ods: "Y99999", restricted: true}), src(1)},
		{bundle(t, "A08", pat{nhsNumber: n1, ids: []Identifier{local("L1")}}), src(2)},
		{bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n0}, pat{nhsNumber: n1, ids: []Identifier{local("L1")}, replacedBy: "urn:uuid:s"}), src(3)},
	}
	for i, m := range msgs {
		apply(t, ix, m.b, m.s)
		before := lastSeq()
		apply(t, ix, m.b, m.s)
		if after := lastSeq(); after != before {
			t.Errorf("message %d applied again wrote %d entries", i, after-before)
		}
	}
}

// TestApplyLookupMatchesLookup checks, message by message, that the
// record ApplyLookup returns equals what a fresh Lookup reads right after
// (version and merge marker included), and that its Result equals
// Apply's for the same message applied to a twin index.
func TestApplyLookupMatchesLookup(t *testing.T) {
	js := startJetStream(t)
	ix := openIndex(t, js, "PATIENTS_APPLYLOOKUP")
	twin := openIndex(t, js, "PATIENTS_APPLYLOOKUP_TWIN")
	n0, n1, n2, n3 := num(t, 0), num(t, 1), num(t, 2), num(t, 3)
	steps := []struct {
		name string
		b    map[string]any
		src  Source
		// want is the NHS number of the record returned, "" for none.
		want string
	}{
		{"new patient", bundle(t, "A01", pat{nhsNumber: n0, ids: []Identifier{local("L0")}, family: "TESTPATIENT", given: []string{"Alpha"}, ods: "Y99999", postcode: "LS1 4AP"}), src(1), n0},
		{"update", bundle(t, "A08", pat{nhsNumber: n0, gender: "female", birthDate: "1970-01-01"}), src(3), n0},
		{"older message is stale", bundle(t, "A08", pat{nhsNumber: n0, ids: []Identifier{local("L9")}, family: "OLDER"}), src(2), n0},
		{"same message again", bundle(t, "A08", pat{nhsNumber: n0, gender: "female", birthDate: "1970-01-01"}), src(3), n0},
		{"by local identifier only", bundle(t, "A08", pat{ids: []Identifier{local("L0")}, postcode: "LS2 9JT"}), src(4), n0},
		{"unknown without NHS number", bundle(t, "A08", pat{ids: []Identifier{local("NOPE")}}), src(5), ""},
		{"no patient", bundle(t, "A08"), src(6), ""},
		{"restricted", bundle(t, "A08", pat{nhsNumber: n2, restricted: true}), src(7), n2},
		{"flags only", flagBundle(t, flagRes(byNHS(n3), "active", "2026-02-01", "")), src(8), n3},
		{"merge", bundle(t, "A40", pat{url: "urn:uuid:s", nhsNumber: n0}, pat{nhsNumber: n1, replacedBy: "urn:uuid:s"}), src(9), n0},
		{"by merged number", bundle(t, "A08", pat{nhsNumber: n1, gender: "female"}), src(10), n0},
		{"two patients", bundle(t, "A08", pat{ids: []Identifier{local("NOPE2")}}, pat{nhsNumber: n2, postcode: "LS6 1AA"}), src(11), n2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			wantRes, err := twin.Apply(t.Context(), st.b, st.src)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			res, got, err := ix.ApplyLookup(t.Context(), st.b, st.src)
			if err != nil {
				t.Fatalf("ApplyLookup: %v", err)
			}
			wantResult(t, res, wantRes)
			fresh, err := ix.Lookup(t.Context(), st.b)
			if errors.Is(err, ErrNotFound) {
				fresh, err = nil, nil
			}
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if diff := cmp.Diff(fresh, got); diff != "" {
				t.Errorf("ApplyLookup's record differs from a fresh Lookup (-lookup +applylookup):\n%s", diff)
			}
			switch {
			case st.want == "" && got != nil:
				t.Errorf("record %s, want none", got)
			case st.want != "" && (got == nil || got.NHSNumber != st.want):
				t.Errorf("record %v, want the record of the patient", got)
			}
		})
	}
}
