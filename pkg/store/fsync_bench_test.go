package store_test

import (
	"sync"
	"testing"

	"github.com/junction-fhir/junction/pkg/store"
)

// BenchmarkSyncedWrites measures what the embedded store, as Junction
// runs it (every write fsynced before its ack), can write on this
// machine's disk: synchronous publishes of a 3.5 KB message (a
// group-commit batch of four ADT messages), by one writer or by several
// at once on the same or on different streams. Each stream fsyncs its
// own writes one after another, so the writes/s of one writer on one
// stream bound any chain of writes that must each be stored before the
// next (an ingest batch, a patient's index record). Run it with
//
//	go test -run '^$' -bench SyncedWrites -benchtime 3s ./pkg/store
//
// and read writes/s (all writers together) beside the ns/op of one write.
func BenchmarkSyncedWrites(b *testing.B) {
	data := make([]byte, 3500)
	for _, bc := range []struct {
		name     string
		subjects []string
	}{
		{"one stream", []string{store.SubjIngestLog + ".0"}},
		{"one stream two writers", []string{store.SubjIngestLog + ".0", store.SubjIngestLog + ".0"}},
		{"two streams", []string{store.SubjIngestLog + ".0", store.SubjIngress + ".x.0"}},
		{"three streams", []string{store.SubjIngestLog + ".0", store.SubjIngress + ".x.0", store.SubjOutbound + ".x.0"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := store.Open(b.Context(), store.DefaultConfig(), b.TempDir(), nil, discardLog())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			// Each writer publishes b.N messages; ns/op is the time of one
			// write as each writer sees it.
			var wg sync.WaitGroup
			errs := make(chan error, len(bc.subjects))
			b.ResetTimer()
			for _, subj := range bc.subjects {
				wg.Go(func() {
					for range b.N {
						if _, err := s.JS.Publish(b.Context(), subj, data); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N*len(bc.subjects))/b.Elapsed().Seconds(), "writes/s")
		})
	}
}
