package patient

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkApply measures one ADT update (read, compare-and-set write,
// identifier entry) against an embedded server.
func BenchmarkApply(b *testing.B) {
	ix := openIndex(b, startJetStream(b), "PATIENTS_BENCH_APPLY")
	bu := bundle(b, "A08", pat{nhsNumber: num(b, 0), ids: []Identifier{local("B1")}, postcode: "LS1 4AB", ods: "Y99999"})
	i := 0
	for b.Loop() {
		i++
		if _, err := ix.Apply(b.Context(), bu, src(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet measures a read by NHS number through one merge.
func BenchmarkGet(b *testing.B) {
	ix := openIndex(b, startJetStream(b), "PATIENTS_BENCH_GET")
	n0, n1 := num(b, 0), num(b, 1)
	if _, err := ix.Apply(b.Context(), bundle(b, "A40", pat{url: "urn:uuid:s", nhsNumber: n0}, pat{nhsNumber: n1, replacedBy: "urn:uuid:s"}), src(1)); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ix.Get(b.Context(), n1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseBundle measures reading what the index needs from a
// translated ADT^A01 with every mapped segment (a Patient with a GP and a
// practice among fifteen entries).
func BenchmarkParseBundle(b *testing.B) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "adapters", "pas", "testdata", "a01-full-segments.fhir.json"))
	if err != nil {
		b.Fatal(err)
	}
	bu, err := decodeBundle(raw)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseBundle(bu); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeys measures making the bucket keys of one ADT's patient: its
// record's (twice, as applying it does) and its local identifier's.
func BenchmarkKeys(b *testing.B) {
	ix := &Index{key: []byte("benchmark-key-0123456789")}
	n, id := num(b, 0), local("B1")
	b.ReportAllocs()
	for b.Loop() {
		for range 2 {
			if _, err := ix.RecordKey(n); err != nil {
				b.Fatal(err)
			}
		}
		_ = ix.IdentifierKey(id)
	}
}

// BenchmarkStoredJSON measures reading a stored identifier entry and
// reading and writing a stored record (an ADT's demographics), directly
// in the form json.Marshal writes, and through encoding/json.
func BenchmarkStoredJSON(b *testing.B) {
	ref := []byte(refCases[0].val)
	r := recordCases()[2].rec
	rec, err := json.Marshal(&r)
	if err != nil {
		b.Fatal(err)
	}
	decoders := []struct {
		name   string
		decode func() error
	}{
		{"entry/written form", func() error { var r identifierRef; return decodeIdentifierRef(ref, &r) }},
		{"entry/encoding/json", func() error { var r identifierRef; return json.Unmarshal(ref, &r) }},
		{"record/written form", func() error { var r Record; return decodeRecordJSON(rec, &r) }},
		{"record/encoding/json", func() error { var r Record; return json.Unmarshal(rec, &r) }},
		{"record write/written form", func() error { _, err := encodeRecord(&r); return err }},
		{"record write/encoding/json", func() error { _, err := json.Marshal(&r); return err }},
	}
	for _, d := range decoders {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := d.decode(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
