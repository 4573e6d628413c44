package router

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
)

// The batch metadata codecs must write exactly what encoding/json
// writes, and read encoding/json's output (batches stored by earlier
// versions) as it does.

func checkEntryMeta(t *testing.T, m entryMeta) {
	t.Helper()
	want, err := json.Marshal(m)
	if err != nil {
		return // a time encoding/json cannot write is never stored
	}
	if got := appendEntryMeta(nil, &m); string(got) != string(want) {
		t.Fatalf("appendEntryMeta = %s\nencoding/json    %s", got, want)
	}
	var wantM entryMeta
	if err := json.Unmarshal(want, &wantM); err != nil {
		t.Fatal(err)
	}
	got, err := decodeEntryMeta(want)
	if err != nil {
		t.Fatalf("decodeEntryMeta(%s): %v", want, err)
	}
	if diff := cmp.Diff(wantM, got); diff != "" {
		t.Fatalf("decodeEntryMeta(%s) (-encoding/json +got):\n%s", want, diff)
	}
	checkScanEntryMeta(t, want)
}

// checkScanEntryMeta checks that scanEntryMeta, where it reads data,
// reads it as readEntryMeta does.
func checkScanEntryMeta(t *testing.T, data []byte) {
	t.Helper()
	checkScan(t, "scanEntryMeta", data, scanEntryMeta, readEntryMeta)
}

// TestScanEntryMetaReadsEngineMeta: the metadata the engine writes is
// read without jsonmap, and other forms are left to it.
func TestScanEntryMetaReadsEngineMeta(t *testing.T) {
	rcv := time.Date(2026, 12, 3, 11, 20, 0, 123456789, time.UTC)
	for _, m := range []entryMeta{
		{ID: "01JTEST", Source: "pas", ContentType: "x-application/hl7-v2+er7", ReceivedAt: rcv, MessageType: "ADT^A01",
			ControlID: "MSG1", Sender: "PAS|RX1", DedupeKey: "PAS|RX1|MSG1", Partition: 15, TraceParent: "00-abc-def-01"},
		{ID: "A", Source: "fhir", ContentType: "application/fhir+json", ReceivedAt: rcv, Partition: -7},
		{ReceivedAt: rcv},
	} {
		data := appendEntryMeta(nil, &m)
		got, ok := scanEntryMeta(data)
		if !ok {
			t.Errorf("scanEntryMeta(%s) left it to readEntryMeta", data)
			continue
		}
		if diff := cmp.Diff(m, got); diff != "" {
			t.Errorf("scanEntryMeta(%s) (-want +got):\n%s", data, diff)
		}
	}
	for _, in := range []string{
		`{"id":null}`, `{"id":"a","id":"b"}`, `{"p":1,"p":2}`, `{"x":"1"}`, `{"ID":"a"}`, `{ "id":"a"}`, `{"id":"\u0041"}`, `{"id":"é"}`,
		`{"p":1.0}`, `{"p":1e2}`, `{"p":01}`, `{"p":-}`, `{"p":"1"}`, `{"p":1234567890123456}`, `{"rcv":"yesterday"}`, `{"rcv":1}`,
		`{"id":"a"`, `{"id":"a"}x`, `{"id":"a",}`, `{,}`, `{}x`, `{`, `[]`,
	} {
		if m, ok := scanEntryMeta([]byte(in)); ok {
			t.Errorf("scanEntryMeta(%s) = %+v, want it left to readEntryMeta", in, m)
		}
		checkScanEntryMeta(t, []byte(in))
	}
	for _, in := range []string{`{}`, `{"p":0}`, `{"p":-0}`, `{"p":123456789012345}`} {
		if _, ok := scanEntryMeta([]byte(in)); !ok {
			t.Errorf("scanEntryMeta(%s) left it to readEntryMeta", in)
		}
		checkScanEntryMeta(t, []byte(in))
	}
}

func checkHeader(t *testing.T, h nats.Header) {
	t.Helper()
	want, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if h != nil {
		if got := appendHeader(nil, h); string(got) != string(want) {
			t.Fatalf("appendHeader = %s\nencoding/json %s", got, want)
		}
	}
	var wantH nats.Header
	if err := json.Unmarshal(want, &wantH); err != nil {
		t.Fatal(err)
	}
	got, err := decodeHeader(want)
	if err != nil {
		t.Fatalf("decodeHeader(%s): %v", want, err)
	}
	if diff := cmp.Diff(wantH, got); diff != "" {
		t.Fatalf("decodeHeader(%s) (-encoding/json +got):\n%s", want, diff)
	}
	checkScanHeader(t, want)
}

// checkScanHeader checks that scanHeader, where it reads data, reads it
// as readHeader does.
func checkScanHeader(t *testing.T, data []byte) {
	t.Helper()
	checkScan(t, "scanHeader", data, scanHeader, readHeader)
}

// checkScan checks that scan, where it reads data, reads it as read
// (the jsonmap reading it stands in for) does.
func checkScan[T any](t *testing.T, name string, data []byte, scan func([]byte) (T, bool), read func([]byte) (T, error)) {
	t.Helper()
	got, ok := scan(data)
	if !ok {
		return
	}
	want, err := read(data)
	if err != nil {
		t.Fatalf("%s read %s, which the jsonmap reading refuses: %v", name, data, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("%s(%s) (-jsonmap +%s):\n%s", name, data, name, diff)
	}
}

// TestScanHeaderReadsEngineHeaders: the headers the engine writes are
// read without jsonmap, and other forms are left to it.
func TestScanHeaderReadsEngineHeaders(t *testing.T) {
	for _, h := range []nats.Header{
		{"Junction-Id": {"01JTEST"}, "Junction-Route": {"adt"}, "Junction-Patient-Hash": {"ab12"}, "Traceparent": {"00-abc-def-01"}},
		{"A": {"1", "2", ""}, "B": {}, "C": {"x"}},
		{},
	} {
		data := appendHeader(nil, h)
		got, ok := scanHeader(data)
		if !ok {
			t.Errorf("scanHeader(%s) left it to readHeader", data)
			continue
		}
		if diff := cmp.Diff(h, got); diff != "" {
			t.Errorf("scanHeader(%s) (-want +got):\n%s", data, diff)
		}
	}
	for _, in := range []string{
		`{"A":null}`, `{"A":["1"],"A":["2"]}`, `{ "A":["1"]}`, `{"A":["1"] }`, `{"A":["\u0031"]}`, `{"A":["é"]}`,
		`{"A":["1"]`, `{"A":["1"]}x`, `{"A":["1",]}`, `{"A":[,"1"]}`, `{"A":"1"}`, `{"A":[1]}`, `{}x`, `{`, `{"A`, `{"A":["1`, `{,}`,
	} {
		if h, ok := scanHeader([]byte(in)); ok {
			t.Errorf("scanHeader(%s) = %v, want it left to readHeader", in, h)
		}
		checkScanHeader(t, []byte(in))
	}
}

func TestEntryMetaMatchesEncodingJSON(t *testing.T) {
	rcv := time.Date(2026, 12, 3, 11, 20, 0, 123456789, time.UTC)
	tests := []struct {
		name string
		m    entryMeta
	}{
		{"full", entryMeta{ID: "01JTEST", Source: "pas", ContentType: "x-application/hl7-v2+er7", ReceivedAt: rcv, MessageType: "ADT^A01",
			ControlID: "MSG<1>&2", Sender: "PAS|RX1", DedupeKey: "PAS|RX1|MSG1", Partition: 15, TraceParent: "00-abc-def-01"}},
		{"empty optional fields", entryMeta{ID: "A", Source: "fhir", ContentType: "application/fhir+json", ReceivedAt: rcv}},
		{"zero", entryMeta{}},
		{"whole second, other zone", entryMeta{ID: "B", ReceivedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600))}},
		{"escapes and non-ASCII", entryMeta{ID: "\"quoted\"\\ \u2028 \x01", Sender: "Zoë\xff", Partition: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkEntryMeta(t, tt.m) })
	}
}

func TestHeaderMatchesEncodingJSON(t *testing.T) {
	tests := []struct {
		name string
		h    nats.Header
	}{
		{"typical", nats.Header{"Junction-Id": {"01JTEST"}, "Junction-Route": {"adt"}, "Junction-Patient": {"ab12"}}},
		{"several values", nats.Header{"A": {"1", "2", ""}, "B": {}}},
		{"nil values", nats.Header{"A": nil}},
		{"empty", nats.Header{}},
		{"nil", nil},
		{"escapes", nats.Header{"K<>&": {"\"v\"\n\t\u2029"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkHeader(t, tt.h) })
	}
}

func TestMetaRefusesWrongShapes(t *testing.T) {
	for _, in := range []string{`{"p":"1"}`, `{"p":1.5}`, `{"id":1}`, `{"rcv":"yesterday"}`, `[]`, `{"id":"a"`, `{"id":"a"} x`} {
		if _, err := decodeEntryMeta([]byte(in)); err == nil {
			t.Errorf("decodeEntryMeta(%s) accepted", in)
		}
	}
	for _, in := range []string{`{"A":"1"}`, `{"A":[1]}`, `[]`, `{"A":["1"]`} {
		if _, err := decodeHeader([]byte(in)); err == nil {
			t.Errorf("decodeHeader(%s) accepted", in)
		}
	}
}

func FuzzMetaCodecs(f *testing.F) {
	f.Add("01JTEST", "pas", "MSG1", "PAS|RX1", 3, int64(1764760800123456789), "Junction-Id", "v")
	f.Fuzz(func(t *testing.T, id, src, cid, snd string, p int, nanos int64, key, val string) {
		checkEntryMeta(t, entryMeta{ID: id, Source: src, ControlID: cid, Sender: snd, Partition: p, ReceivedAt: time.Unix(0, nanos).UTC()})
		checkHeader(t, nats.Header{key: {val, id}, "Junction-Id": {src}})
		checkScanHeader(t, []byte(val))
		checkScanEntryMeta(t, []byte(val))
	})
}

func BenchmarkMetaCodecs(b *testing.B) {
	m := entryMeta{ID: "01KBK5X4Q2J8ZC3M9R7T6V5W4X", Source: "pas", ContentType: "x-application/hl7-v2+er7", ReceivedAt: time.Now().UTC(),
		MessageType: "ADT^A01", ControlID: "MSG000123", Sender: "PAS|RX1", DedupeKey: "PAS|RX1|MSG000123", Partition: 7,
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	h := nats.Header{"Junction-Id": {m.ID}, "Junction-Route": {"adt-to-fhir-store"}, "Junction-Destination": {"fhir-store"},
		"Junction-Partition": {"7"}, "Junction-Patient": {"3f1c0f2a9b"}}
	b.Run("entry/hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeEntryMeta(appendEntryMeta(nil, &m)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("entry/encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out, _ := json.Marshal(m)
			var got entryMeta
			if err := json.Unmarshal(out, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("header/hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeHeader(appendHeader(nil, h)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("header/encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out, _ := json.Marshal(h)
			var got nats.Header
			if err := json.Unmarshal(out, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
}
