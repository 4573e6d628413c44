package patient

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// BenchmarkConcurrentApply measures the index's write rate with many
// patients' messages applied at once (32 goroutines, as the route stage's
// partitions do), against an embedded server that syncs every write as
// the engine's does, with the index in one bucket and spread over
// DefaultShards. Each write is a synced stream write, and a stream
// writes one at a time: buckets write beside each other.
func BenchmarkConcurrentApply(b *testing.B) {
	for _, shards := range []int{1, DefaultShards} {
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) {
			srv, err := server.NewServer(&server.Options{
				ServerName: "patient-bench", Host: "127.0.0.1", Port: -1, JetStream: true,
				StoreDir: b.TempDir(), NoLog: true, NoSigs: true, SyncAlways: true,
			})
			if err != nil {
				b.Fatal(err)
			}
			srv.Start()
			defer srv.Shutdown()
			if !srv.ReadyForConnections(10 * time.Second) {
				b.Fatal("server not ready")
			}
			nc, err := nats.Connect("", nats.InProcessServer(srv))
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				b.Fatal(err)
			}
			ix, err := Open(b.Context(), js, Config{Bucket: "PATIENTS_BENCH_SHARDS", HashKey: testHashKey, Shards: shards})
			if err != nil {
				b.Fatal(err)
			}
			bundles := make([]map[string]any, 500)
			for i := range bundles {
				bundles[i] = bundle(b, "A08", pat{nhsNumber: num(b, i), ids: []Identifier{local(fmt.Sprintf("B%d", i))}, postcode: "LS1 4AB"})
			}
			var next atomic.Int64
			b.SetParallelism(16) // 32 goroutines on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1))
					if _, err := ix.Apply(b.Context(), bundles[i%len(bundles)], src(i)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
