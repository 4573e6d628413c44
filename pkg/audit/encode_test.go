package audit

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// checkEncodeRecords checks that EncodeRecords writes what json.Marshal
// writes for recs, and fails where it fails.
func checkEncodeRecords(t *testing.T, recs []Record) {
	t.Helper()
	want, wantErr := json.Marshal(recs)
	got, err := EncodeRecords(recs)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("EncodeRecords error %v, json.Marshal error %v", err, wantErr)
	}
	if string(got) != string(want) {
		t.Fatalf("EncodeRecords = %s\njson.Marshal    %s", got, want)
	}
}

// everyField returns a record with every field set, by reflection, so a
// field added to Record and not to appendRecord fails the test.
func everyField(t *testing.T) Record {
	t.Helper()
	var r Record
	v := reflect.ValueOf(&r).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(v.Type().Field(i).Name + "-value")
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 1))
		case reflect.Uint64:
			f.SetUint(uint64(1<<40 + i))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{"a", "b" + strconv.Itoa(i)}))
		case reflect.Struct:
			f.Set(reflect.ValueOf(time.Date(2026, 12, 7, 11, 44, 4, 123456789, time.UTC)))
		default:
			t.Fatalf("Record.%s is a %s, which this test does not set", v.Type().Field(i).Name, f.Kind())
		}
	}
	return r
}

func TestEncodeRecordsMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 12, 7, 11, 44, 4, 123456789, time.UTC)
	tests := []struct {
		name string
		recs []Record
	}{
		{"nil", nil},
		{"empty", []Record{}},
		{"zero record", []Record{{}}},
		{"every field", []Record{everyField(t)}},
		{"typical hops", []Record{
			{Time: at, MessageID: "01JDQ8ZKXW", Event: Queued, Route: "adt-to-fhir-store", Destination: "fhir-store", Outcome: "queued",
				Hash: "5f2b8c0e", Stream: "JUNCTION_OUTBOUND", Seq: 42, Patient: "ab12", Classes: []string{"Encounter", "Patient"}},
			{Time: at.Add(time.Millisecond), MessageID: "01JDQ8ZKXW", Event: Delivered, Destination: "fhir-store", Attempt: 1, Status: "written",
				Location: "adt-to-fhir-store/01JDQ8ZKXW.fhir-store.json", NoPatient: true},
		}},
		{"empty lists", []Record{{Time: at, Patients: []string{}, Classes: []string{}}}},
		{"escapes, HTML and non-ASCII", []Record{{Time: at, MessageID: "\"q\"\\ \n\t\x01 <a>&b", Reason: "Zoë \u2028\u2029 \xff\xfe", Rule: "\x7f",
			Patients: []string{"<>", "é"}}}},
		{"other zones and whole seconds", []Record{{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", -5*3600-1800))}, {Time: time.Date(2026, 6, 1, 0, 0, 0, 100, time.Local)}}},
		{"monotonic reading", []Record{{Time: time.Now()}}},
		{"year out of range", []Record{{Time: at}, {Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{"negative attempt", []Record{{Time: at, Attempt: -3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkEncodeRecords(t, tt.recs) })
	}
}

func FuzzEncodeRecords(f *testing.F) {
	f.Add("01JDQ8ZKXW", "adt", "<&>\u2028", int64(1764760800123456789), 3, uint64(42), true)
	f.Fuzz(func(t *testing.T, id, route, reason string, nanos int64, attempt int, seq uint64, noPatient bool) {
		checkEncodeRecords(t, []Record{
			{Time: time.Unix(0, nanos).UTC(), MessageID: id, Event: Event(route), Route: route, Reason: reason, Attempt: attempt, Seq: seq,
				NoPatient: noPatient, Patients: []string{reason, id}},
			{Time: time.Unix(0, nanos).In(time.FixedZone("", attempt%50000)), MessageID: reason, SentSeq: seq},
		})
	})
}

// BenchmarkEncodeRecords encodes the records of a route stage's span of
// 64 messages: six each.
func BenchmarkEncodeRecords(b *testing.B) {
	at := time.Now().UTC()
	var recs []Record
	for i := range 64 {
		id := "01JDQ8ZKXW" + strconv.Itoa(100000+i)
		base := Record{Time: at, MessageID: id, Route: "adt-to-fhir-store", Patient: "5f2b8c0e4a1d3f6b7c9e0a2d4f6b8c0e5f2b8c0e4a1d3f6b7c9e0a2d4f6b8c0e"}
		for _, ev := range []Event{Translated, Matched, Consent, Transformed} {
			r := base
			r.Event, r.Outcome, r.Hash = ev, "ok", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
			recs = append(recs, r)
		}
		q := base
		q.Event, q.Destination, q.Outcome, q.Stream, q.Seq, q.Classes = Queued, "fhir-store", "queued", "JUNCTION_OUTBOUND", uint64(1000+i), []string{"Encounter", "Patient"}
		recs = append(recs, q, q)
	}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := EncodeRecords(recs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(recs); err != nil {
				b.Fatal(err)
			}
		}
	})
}
