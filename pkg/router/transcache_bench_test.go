package router

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jsonmap"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// BenchmarkFresh measures what sharedTranslator.Fresh does for one
// message besides the patient index: the PAS translation of an ADT^A01
// with every mapped segment (parse, map, encode), decoding the bundle
// for CEL, and hashing it; and what Index does of that for a source no
// route reads.
func BenchmarkFresh(b *testing.B) {
	tr, env := fullA01(b)
	s := newSharedTranslator(tr, nil)
	b.Run("routed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			t, _, err := s.Fresh(b.Context(), env)
			if err != nil || t.Parsed == nil {
				b.Fatalf("Fresh: %v", err)
			}
		}
	})
	b.Run("index only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Index(b.Context(), env); err != nil {
				b.Fatalf("Index: %v", err)
			}
		}
	})
}

// BenchmarkIndexMessage measures applying one translated ADT^A01 (every
// mapped segment; a newer message each time, so the record is written)
// to the patient index on an embedded server, for routes (with the view
// they read) and for a source no route reads.
func BenchmarkIndexMessage(b *testing.B) {
	pt, env := fullA01(b)
	tr, err := pt.Translate(env)
	if err != nil {
		b.Fatal(err)
	}
	if tr.Parsed, err = jsonmap.Decode(tr.Bundle); err != nil {
		b.Fatal(err)
	}
	r := &Router{o: Options{Metrics: telemetry.NewMetrics(prometheus.NewRegistry()), Patients: testIndex(b)}}
	at := env.ReceivedAt
	for _, routed := range []bool{true, false} {
		b.Run(fmt.Sprintf("routed=%t", routed), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				at = at.Add(time.Second)
				env.ReceivedAt = at
				if _, err := r.indexMessage(b.Context(), env, tr, routed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// fullA01 returns the PAS translator and an ADT^A01 with every mapped
// segment.
func fullA01(b *testing.B) (*pas.Translator, *envelope.Envelope) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "adapters", "pas", "testdata", "a01-full-segments.hl7"))
	if err != nil {
		b.Fatal(err)
	}
	tr, err := pas.NewTranslator(pas.DefaultDialect())
	if err != nil {
		b.Fatal(err)
	}
	return tr, &envelope.Envelope{ID: "msg-bench", Source: "pas", ContentType: envelope.ContentTypeHL7v2,
		ReceivedAt: time.Date(2024, 7, 15, 8, 36, 0, 0, time.UTC), Raw: raw}
}
