package audit

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// ledgerContents is what l holds, by message id.
func ledgerContents(l *Ledger) map[string][]fact {
	out := map[string][]fact{}
	for id := range l.byID {
		out[id] = append([]fact(nil), l.facts(id)...)
	}
	return out
}

// writtenRecords is JSON as the audit writer writes it: records with
// every kind of field, in a batch.
func writtenRecords(t testing.TB) []byte {
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 123456789, time.UTC)
	recs := []Record{
		{Time: t0, MessageID: "01JF0000000000000000000001", Event: Received, Source: "pas", Outcome: "stored", Hash: "ab12", Stream: "JUNCTION_INGRESS", Seq: 17, TraceID: "0af7651916cd43dd8448eb211c80319c"},
		{Time: t0.Add(time.Millisecond), MessageID: "01JF0000000000000000000001", Event: Consent, Route: "adt-to-ehr", Destination: "ehr", Outcome: "permit", Rule: "default", Patient: "9f86d0", Patients: []string{"aa", "bb"}, Purpose: "direct care", LegalBasis: "6(1)(e)"},
		{Time: t0.Add(2 * time.Millisecond), MessageID: "01JF0000000000000000000002", Event: Queued, Route: "adt-to-ehr", Destination: "ehr", Outcome: "queued", Seq: 18446744073709551615, Classes: []string{"Encounter", "Patient"}, NoPatient: true},
		{Time: t0.Add(3 * time.Millisecond), MessageID: "01JF0000000000000000000002", Event: Failed, Route: "adt-to-ehr", Destination: "ehr", Outcome: "transient", Attempt: 3, Status: "503", Reason: "server busy", Code: "JUNC-D-503"},
		{MessageID: "01JF0000000000000000000003", Event: Delivered, Location: "Bundle/1/_history/2"},
	}
	data, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestLedgerJSONReadsWhatTheWriterWrites checks that the audit writer's
// JSON is read without encoding/json, and as encoding/json reads it.
func TestLedgerJSONReadsWhatTheWriterWrites(t *testing.T) {
	data := writtenRecords(t)
	fs, ok := scanLedgerFields(data, nil)
	if !ok || len(fs) != 5 {
		t.Fatalf("scan of the writer's JSON: ok %v, %d records; want it read, 5 records", ok, len(fs))
	}
	fast, slow := NewLedger(), NewLedger()
	if err := fast.AddJSON(data, nil); err != nil {
		t.Fatal(err)
	}
	if err := slow.addJSONDecoded(data, nil); err != nil {
		t.Fatal(err)
	}
	want := ledgerContents(slow)
	if len(want) != 3 {
		t.Fatalf("encoding/json read %d messages, want 3", len(want))
	}
	if diff := cmp.Diff(want, ledgerContents(fast), cmp.AllowUnexported(fact{})); diff != "" {
		t.Errorf("(-encoding/json +scan):\n%s", diff)
	}
}

func TestLedgerJSONLeavesTheUnusualToEncodingJSON(t *testing.T) {
	for _, tc := range []struct {
		name, data string
	}{
		{"escape in a read string", `[{"message_id":"m\u0031","event":"received"}]`},
		{"escape in a skipped string", `[{"message_id":"m1","reason":"a \"quote\""}]`},
		{"key in another case", `[{"Message_ID":"m1"}]`},
		{"key folding beyond ASCII", `[{"message_id":"m1","ſeq":5}]`},
		{"null field", `[{"message_id":null}]`},
		{"null record", `[null]`},
		{"null array", `null`},
		{"seq not an integer", `[{"message_id":"m1","seq":1.5}]`},
		{"seq negative", `[{"message_id":"m1","seq":-1}]`},
		{"seq too big", `[{"message_id":"m1","seq":18446744073709551616}]`},
		{"number for a string", `[{"message_id":7}]`},
		{"time not RFC 3339", `[{"message_id":"m1","time":"yesterday"}]`},
		{"invalid UTF-8", "[{\"message_id\":\"m\xff\"}]"},
		{"trailing comma", `[{"message_id":"m1"},]`},
		{"trailing data", `[{"message_id":"m1"}] x`},
		{"leading zero", `[{"message_id":"m1","attempt":01}]`},
		{"unterminated", `[{"message_id":"m1"`},
		{"deep nesting", `[{"message_id":"m1","x":` + nested(40) + `}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, ok := scanLedgerFields([]byte(tc.data), nil); ok {
				t.Errorf("scan read %q; want it left to encoding/json", tc.data)
			}
			fast, slow := NewLedger(), NewLedger()
			errFast, errSlow := fast.AddJSON([]byte(tc.data), nil), slow.addJSONDecoded([]byte(tc.data), nil)
			if (errFast == nil) != (errSlow == nil) {
				t.Fatalf("AddJSON error %v, encoding/json %v", errFast, errSlow)
			}
			if diff := cmp.Diff(ledgerContents(slow), ledgerContents(fast), cmp.AllowUnexported(fact{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-encoding/json +AddJSON):\n%s", diff)
			}
		})
	}
}

func nested(n int) string {
	s := "1"
	for range n {
		s = "[" + s + "]"
	}
	return s
}

// FuzzLedgerJSON checks that whatever the scan reads, it reads as
// encoding/json does, and that AddJSON errs exactly when encoding/json
// does.
func FuzzLedgerJSON(f *testing.F) {
	f.Add(writtenRecords(f))
	for _, s := range []string{
		`[]`, ` [ ] `, `[{}]`, `[{"message_id":"m1","message_id":"m2"}]`,
		`[{"message_id":"m1","x":{"a":[1,-0.5e+3,true,false,null,"s"]},"seq":0}]`,
		`[{"message_id":"m1","time":"2026-12-06T09:00:00+01:00"}]`,
		`[{"message_id":"m1","seq":01}]`, `[{"MESSAGE_ID":"m1"}]`, `{"message_id":"m1"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, slow := NewLedger(), NewLedger()
		errFast, errSlow := fast.AddJSON(data, nil), slow.addJSONDecoded(data, nil)
		if (errFast == nil) != (errSlow == nil) {
			t.Fatalf("AddJSON error %v, encoding/json %v", errFast, errSlow)
		}
		if diff := cmp.Diff(ledgerContents(slow), ledgerContents(fast), cmp.AllowUnexported(fact{}), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("(-encoding/json +AddJSON):\n%s", diff)
		}
	})
}

func BenchmarkLedgerJSON(b *testing.B) {
	data := writtenRecords(b)
	for _, bc := range []struct {
		name string
		add  func(*Ledger, []byte, func(string) bool) error
	}{
		{"scan", (*Ledger).AddJSON},
		{"encoding-json", (*Ledger).addJSONDecoded},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			l := NewLedger()
			for b.Loop() {
				if err := bc.add(l, data, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
