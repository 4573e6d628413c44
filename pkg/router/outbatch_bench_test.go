package router

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/junction-fhir/junction/pkg/envelope"
)

// sampleOutEntries returns n outbound entries as the route stage queues
// the shipped sample ADT^A01 for the fhir-store destination: its bundle
// and the headers a route sets.
func sampleOutEntries(tb testing.TB, n int) []outEntry {
	tb.Helper()
	body, err := os.ReadFile("../../routes/testdata/adt_a01.fhir-store.json")
	if err != nil {
		tb.Fatal(err)
	}
	entries := make([]outEntry, n)
	for i := range entries {
		id := "01JDQ8ZKXW" + strconv.Itoa(100000+i)
		entries[i] = outEntry{h: nats.Header{
			envelope.HeaderID:          {id},
			envelope.HeaderSource:      {"pas"},
			envelope.HeaderContentType: {"application/fhir+json"},
			envelope.HeaderReceived:    {"2026-12-07T11:44:04.123456789Z"},
			envelope.HeaderMsgType:     {"ADT^A01"},
			envelope.HeaderControlID:   {"MSG" + strconv.Itoa(i)},
			envelope.HeaderSender:      {"PAS|TRUST"},
			envelope.HeaderPartition:   {strconv.Itoa(i % 16)},
			envelope.HeaderRoute:       {"adt-to-fhir-store"},
			envelope.HeaderDestination: {"fhir-store"},
			envelope.HeaderPatient:     {"5f2b8c0e4a1d3f6b7c9e0a2d4f6b8c0e5f2b8c0e4a1d3f6b7c9e0a2d4f6b8c0e"},
			envelope.HeaderDecided:     {"2026-12-07T11:44:04.2Z"},
			envelope.HeaderTraceParent: {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		}, body: body}
	}
	return entries
}

// BenchmarkOutBatchEncode encodes outbound batches of 64 bundles one
// after another, as a route worker writes them under load.
func BenchmarkOutBatchEncode(b *testing.B) {
	entries := sampleOutEntries(b, 64)
	var sc encodeScratch
	b.ReportAllocs()
	for b.Loop() {
		if data, err := encodeOutBatch(&sc, entries); err != nil || len(data) == 0 {
			b.Fatal("no batch", err)
		}
	}
}

// BenchmarkOutBatchDecode decodes an outbound batch of 64 bundles, as a
// delivery worker reads it.
func BenchmarkOutBatchDecode(b *testing.B) {
	data, err := encodeOutBatch(nil, sampleOutEntries(b, 64))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if es, err := decodeOutBatch(data); err != nil || len(es) != 64 {
			b.Fatal("decoded", len(es), err)
		}
	}
}

// BenchmarkBatchDecode decodes an accepted batch of 64 ADT messages, as
// the route stage reads it.
func BenchmarkBatchDecode(b *testing.B) {
	adt := sampleADT(b)
	envs := make([]*envelope.Envelope, 64)
	for i := range envs {
		envs[i] = &envelope.Envelope{ID: "01JDQ8ZKXW" + strconv.Itoa(100000+i), Source: "pas", ContentType: envelope.ContentTypeHL7v2,
			ReceivedAt: time.Date(2026, 12, 7, 11, 44, 4, 123456789, time.UTC), MessageType: "ADT^A01", ControlID: "MSG" + strconv.Itoa(i),
			Sender: "PAS|TRUST", DedupeKey: "PAS|TRUST|MSG" + strconv.Itoa(i), Partition: i % 16,
			TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Raw: adt}
	}
	data, err := encodeBatch(envs)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if got, err := decodeBatch(data); err != nil || len(got) != 64 {
			b.Fatal("decoded", len(got), err)
		}
	}
}
