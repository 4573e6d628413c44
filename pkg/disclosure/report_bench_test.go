package disclosure_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/disclosure"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/router"
)

// Size of the synthetic audit stream: benchPatients patients with
// benchMessages messages each, four records a message (translation,
// consent, queued in the route stage's audit message; delivered in the
// delivery stage's), 100,000 records in all.
const (
	benchPatients = 1000
	benchMessages = 25
)

// benchStream fills an audit stream through the audit writer with every
// patient's messages, interleaved as a busy engine would store them,
// and returns it with the first patient's hash and the window.
func benchStream(b *testing.B, legacy bool) (jetstream.JetStream, string, time.Time, time.Time) {
	b.Helper()
	js, w := auditStore(b)
	hashes := make([]string, benchPatients)
	for i := range hashes {
		hashes[i] = patientHash(nhs.TestNumber(i))
	}
	from := time.Now().UTC().Add(-time.Minute)
	var ids router.IDGen
	var futs []jetstream.PubAckFuture
	flush := func() {
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatalf("writing audit records: %v", err)
			case <-time.After(30 * time.Second):
				b.Fatal("the store did not acknowledge audit records within 30s")
			}
		}
		futs = futs[:0]
	}
	write := func(id string, recs ...audit.Record) {
		f, err := w.WriteAsync(id, "", recs...)
		if err != nil {
			b.Fatalf("writing audit records: %v", err)
		}
		if futs = append(futs, f); len(futs) == 1000 {
			flush()
		}
	}
	// Each round routes a message of every patient and delivers the
	// round before's, so a message's delivery is stored after a
	// thousand others' records.
	var prev []string
	for range benchMessages {
		next := make([]string, benchPatients)
		for p := range benchPatients {
			id := ids.New()
			now := time.Now().UTC()
			write(id, routing(id, hashes[p], now, legacy)...)
			if prev != nil {
				write(prev[p], delivered(prev[p], hashes[p], now, legacy))
			}
			next[p] = id
		}
		prev = next
	}
	for p, id := range prev {
		write(id, delivered(id, hashes[p], time.Now().UTC(), legacy))
	}
	flush()
	return js, hashes[0], from, time.Now().UTC().Add(time.Minute)
}

// BenchmarkBuild measures one patient's report (benchMessages releases)
// over an audit stream of 100,000 records of benchPatients patients: with
// the patient hash on every record (one pass), and in the old format
// (hash on the translation only), which takes the fallback.
func BenchmarkBuild(b *testing.B) {
	for _, bc := range []struct {
		name   string
		legacy bool
	}{{"hash on every record", false}, {"old format", true}} {
		b.Run(bc.name, func(b *testing.B) {
			js, patient, from, to := benchStream(b, bc.legacy)
			for b.Loop() {
				rep, err := disclosure.Build(b.Context(), js, patient, nil, disclosure.Options{From: from, To: to, Directory: dir})
				if err != nil {
					b.Fatal(err)
				}
				if len(rep.Entries) != benchMessages {
					b.Fatalf("%d entries, want %d", len(rep.Entries), benchMessages)
				}
			}
		})
	}
}
