package patient

import (
	"slices"
	"testing"
)

// TestGPSourceOrdering checks that the registered practice follows the
// newer of its setters, whatever order they are applied in: a PD1 older
// than a PDS answer does not replace it, a newer one does.
func TestGPSourceOrdering(t *testing.T) {
	js := startJetStream(t)
	tests := []struct {
		name string
		// pdsAt is the minute of the PDS answer; pd1At the receipt minute
		// of the ADT carrying PD1, applied after the PDS answer.
		pdsAt, pd1At int
		want         string
	}{
		{name: "older PD1 loses to PDS", pdsAt: 5, pd1At: 3, want: "Y99999"},
		{name: "newer PD1 wins over PDS", pdsAt: 5, pd1At: 7, want: "A81001"},
		{name: "same source changes nothing", pdsAt: 5, pd1At: 5, want: "Y99999"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := openIndex(t, js, "GP_ORDER_"+string(rune('A'+i)))
			n := num(t, i)
			pdsSrc := src(tt.pdsAt)
			if _, err := ix.Update(t.Context(), n, func(r *Record) error {
				r.SetGP("Y99999", "", pdsSrc)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			pd1 := src(tt.pd1At)
			if tt.pd1At == tt.pdsAt {
				pd1 = pdsSrc
			}
			if _, err := ix.Apply(t.Context(), bundle(t, "A08", pat{nhsNumber: n, family: "TESTPATIENT", ods: "A81001"}), pd1); err != nil {
				t.Fatal(err)
			}
			rec, err := ix.Get(t.Context(), n)
			if err != nil {
				t.Fatal(err)
			}
			if rec.GPPractice != tt.want {
				t.Errorf("GPPractice = %q, want %q", rec.GPPractice, tt.want)
			}
			if rec.Family != "TESTPATIENT" {
				t.Errorf("the ADT's demographics were not applied")
			}
		})
	}
}

// TestMergeInto merges one NHS number into another by number alone, as a
// PDS superseded answer does: reads of the old number reach the survivor,
// which gains the old record's local identifiers.
func TestMergeInto(t *testing.T) {
	ix := openIndex(t, startJetStream(t), "MERGE_INTO")
	old, survivor := num(t, 0), num(t, 1)
	if _, err := ix.Apply(t.Context(), bundle(t, "A08", pat{nhsNumber: old, ids: []Identifier{local("H100")}}), src(1)); err != nil {
		t.Fatal(err)
	}
	merged, err := ix.MergeInto(t.Context(), old, survivor, src(2))
	if err != nil || !merged {
		t.Fatalf("MergeInto = %v, %v; want true, nil", merged, err)
	}
	rec, err := ix.Get(t.Context(), old)
	if err != nil {
		t.Fatal(err)
	}
	if rec.NHSNumber != survivor || rec.ResolvedFrom != old {
		t.Errorf("Get(old) = record of %s resolved from %s; want the survivor's", rec.NHSNumber, rec.ResolvedFrom)
	}
	if len(rec.Identifiers) != 1 || rec.Identifiers[0] != local("H100") {
		t.Errorf("survivor identifiers = %v, want the old record's", rec.Identifiers)
	}
	if again, err := ix.MergeInto(t.Context(), old, survivor, src(2)); err != nil || again {
		t.Errorf("MergeInto again = %v, %v; want false, nil", again, err)
	}
	if _, err := ix.MergeInto(t.Context(), old, "9990000010", src(3)); err != ErrInvalidNHSNumber {
		t.Errorf("MergeInto to an invalid number: %v, want ErrInvalidNHSNumber", err)
	}
}

// TestClearedElements: a Patient marking its address, GP and deceased
// elements deleted (an A08 with explicit nulls) clears them in the
// record, while one that leaves them out keeps them; a deletion older
// than a PDS answer does not clear the practice PDS gave.
func TestClearedElements(t *testing.T) {
	js := startJetStream(t)
	tests := []struct {
		name         string
		cleared      []string
		pdsAt        int // minute of a PDS answer setting the practice; 0 for none
		wantPostcode string
		wantPractice string
	}{
		{"left out", nil, 0, "ZZ99 1ZZ", "A81001"},
		{"deleted", []string{"address", "generalPractitioner", "deceased"}, 0, "", ""},
		{"deleted, PDS newer", []string{"generalPractitioner"}, 9, "ZZ99 1ZZ", "Y99999"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := openIndex(t, js, "CLEARED_"+string(rune('A'+i)))
			n := num(t, i)
			if _, err := ix.Apply(t.Context(), bundle(t, "A01", pat{nhsNumber: n, family: "TESTPATIENT", postcode: "ZZ99 1ZZ", ods: "A81001"}), src(1)); err != nil {
				t.Fatal(err)
			}
			if _, err := ix.Update(t.Context(), n, func(r *Record) error {
				r.Deceased = true
				if tt.pdsAt > 0 {
					r.SetGP("Y99999", "", src(tt.pdsAt))
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := ix.Apply(t.Context(), bundle(t, "A08", pat{nhsNumber: n, family: "TESTPATIENT", cleared: tt.cleared}), src(5)); err != nil {
				t.Fatal(err)
			}
			rec, err := ix.Get(t.Context(), n)
			if err != nil {
				t.Fatal(err)
			}
			wantDeceased := !slices.Contains(tt.cleared, "deceased")
			if rec.Postcode != tt.wantPostcode || rec.GPPractice != tt.wantPractice || rec.Deceased != wantDeceased {
				t.Errorf("postcode %q, practice %q, deceased %v; want %q, %q, %v", rec.Postcode, rec.GPPractice, rec.Deceased, tt.wantPostcode, tt.wantPractice, wantDeceased)
			}
		})
	}
}

// TestBundleRefsResolve checks how a generalPractitioner reference finds
// its entry: by fullUrl or "Type/id", the last entry of either form
// winning, and nothing for an empty reference or an entry without a
// resource.
func TestBundleRefsResolve(t *testing.T) {
	res := func(typ, id, name string) map[string]any {
		m := map[string]any{"resourceType": typ, "name": name}
		if id != "" {
			m["id"] = id
		}
		return m
	}
	a, b, c, d := res("Organization", "o1", "a"), res("Organization", "o1", "b"), res("Practitioner", "", "c"), res("Organization", "x/y", "d")
	entries := bundleRefs{
		map[string]any{"fullUrl": "urn:uuid:a", "resource": a},
		map[string]any{"fullUrl": "urn:uuid:b", "resource": b},
		map[string]any{"fullUrl": "urn:uuid:a", "resource": c},
		map[string]any{"fullUrl": "urn:uuid:e"},
		map[string]any{"resource": d},
		"not an entry",
	}
	tests := []struct {
		ref  string
		want map[string]any
	}{
		{"", nil},
		{"urn:uuid:a", c},
		{"urn:uuid:b", b},
		{"Organization/o1", b},
		{"Organization/x/y", d},
		{"Organization/x", nil},
		{"Practitioner/", nil},
		{"urn:uuid:e", nil},
	}
	for _, tt := range tests {
		got := entries.resolve(tt.ref)
		if (got == nil) != (tt.want == nil) || got != nil && got["name"] != tt.want["name"] {
			t.Errorf("resolve(%q) = %v, want %v", tt.ref, got, tt.want)
		}
	}
}
