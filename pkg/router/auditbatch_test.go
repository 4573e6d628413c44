package router

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestAuditBatchTooBigGoesPerMessage: a span's records that fit are one
// audit message on the span's subject; records that would not fit in one
// store message (a delivery retried for hours) are written per message on
// each message's own subject, all of them, and a retry writes none twice.
func TestAuditBatchTooBigGoesPerMessage(t *testing.T) {
	js := jstest.Start(t, "auditbatch-test")
	ctx := t.Context()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, Duplicates: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	r := &Router{js: js, audit: audit.NewWriter(js)}
	records := func(ids []string, each int) []audit.Record {
		var out []audit.Record
		for _, id := range ids {
			for a := range each {
				out = append(out, audit.Record{MessageID: id, Event: audit.Failed, Destination: "ehr", Attempt: a + 1,
					Outcome: "transient", Reason: strings.Repeat("the receiver answered 503 ", 16)})
			}
		}
		return out
	}
	count := func(subject string) uint64 {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		return n
	}

	small := records([]string{"01JSMALLA", "01JSMALLB"}, 3)
	if err := writeAuditBatch(ctx, r, "deliver", "ehr", span{start: 10, end: 12}, small); err != nil {
		t.Fatal(err)
	}
	if n := count(auditBatchSubject("deliver", "ehr", 10)); n != 1 {
		t.Errorf("small span: %d audit messages on the span's subject, want 1", n)
	}

	big := records([]string{"01JBIGA", "01JBIGB"}, 1500) // about 1.4 MB
	for range 2 {                                        // the second time is a retry
		if err := writeAuditBatch(ctx, r, "deliver", "ehr", span{start: 20, end: 30}, big); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(auditBatchSubject("deliver", "ehr", 20)); n != 0 {
		t.Errorf("big span: %d audit messages on the span's subject, want 0", n)
	}
	for _, id := range []string{"01JBIGA", "01JBIGB"} {
		trail, err := audit.Trail(ctx, js, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(trail) != 1500 {
			t.Fatalf("%s: trail holds %d records, want 1500", id, len(trail))
		}
		for i, rec := range trail {
			if rec.Attempt != i+1 {
				t.Fatalf("%s: record %d is attempt %s, want %d (order lost or a record repeated)", id, i, strconv.Itoa(rec.Attempt), i+1)
			}
		}
	}
}
