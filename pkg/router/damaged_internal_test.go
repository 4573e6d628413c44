package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestScanDamagedStream: a scan (audit reconcile, find, trails) of a
// stream whose first block file is damaged stops with an error that says
// the store's files are damaged and at which message, not only that
// nothing came.
func TestScanDamagedStream(t *testing.T) {
	js := jstest.DamagedStream(t, jetstream.StreamConfig{Name: "DAMAGED", Subjects: []string{"damaged.>"}}, func(js jetstream.JetStream) {
		for i := range 150 {
			if _, err := js.Publish(t.Context(), "damaged.x", []byte(strings.Repeat("record ", 40+i%7))); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	})
	read := 0
	err := scanFrom(t.Context(), js, "DAMAGED", jetstream.OrderedConsumerConfig{}, scanBatch, func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error) {
		read++
		return false, nil
	}, nil)
	if err == nil || !strings.Contains(err.Error(), "cannot read it: its files are damaged") || !strings.Contains(err.Error(), "message 1 of 150") {
		t.Errorf("scan of a damaged stream (%d read) = %v, want an error naming message 1 as unreadable, its files damaged", read, err)
	}
}

// TestReconcileDamagedAudit: a reconcile whose audit stream has a
// damaged block answers all the same, naming the run of audit messages
// it could not read: the messages whose records were there show as
// pending (their outcome is unknown), those whose records were read as
// finished.
func TestReconcileDamagedAudit(t *testing.T) {
	const msgs = 150
	now := time.Now().UTC()
	id, js := damagedAuditStore(t, msgs, func(js jetstream.JetStream, i int, mid string) audit.Record {
		m := nats.NewMsg(store.SubjIngress + ".pas.0")
		m.Header.Set(envelope.HeaderID, mid)
		m.Header.Set(envelope.HeaderSource, "pas")
		m.Header.Set(envelope.HeaderReceived, now.Format(time.RFC3339Nano))
		m.Data = []byte("MSH|^~\\&|")
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		return audit.Record{Time: now, MessageID: mid, Event: audit.Filtered, Route: "adt", Outcome: "filtered"}
	})
	rep, err := Reconcile(t.Context(), js, map[string][]string{"pas": {"adt"}}, time.Time{})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if len(rep.Unreadable) != 1 || rep.Unreadable[0].First != 1 {
		t.Fatalf("unreadable %v: want one run from audit message 1", rep.Unreadable)
	}
	if rep.Accepted != msgs {
		t.Errorf("accepted %d, want %d", rep.Accepted, msgs)
	}
	pending := map[string]bool{}
	for _, p := range rep.Pending {
		pending[p.ID] = true
	}
	// Audit messages are written one a record, in id order, from stream
	// sequence 1 (the writer's chain notes aside): the first records are
	// the unreadable ones.
	if len(pending) == 0 || len(pending) == msgs || rep.Terminal[audit.OutcomeFiltered] != msgs-len(pending) {
		t.Fatalf("%d pending, %d filtered of %d: want those of the unreadable run pending, the rest filtered", len(pending), rep.Terminal[audit.OutcomeFiltered], msgs)
	}
	for i, mid := range id {
		if want := i < len(pending); pending[mid] != want {
			t.Errorf("message %d pending = %v, want %v (the first %d records were unreadable)", i, pending[mid], want, len(pending))
		}
	}
}

// TestTrailDamagedAudit: the trail of a message whose audit records were
// in a damaged block comes back with an *audit.IncompleteError (and
// whatever could be read), not as an error alone, so the admin API and
// audit trail can show it and say it is incomplete; that of a message
// recorded after the block is whole.
func TestTrailDamagedAudit(t *testing.T) {
	const msgs = 150
	id, js := damagedAuditStore(t, msgs, func(_ jetstream.JetStream, _ int, mid string) audit.Record {
		return audit.Record{Time: time.Now().UTC(), MessageID: mid, Event: audit.Received, Source: "pas", Outcome: "stored"}
	})
	checkTrails(t, js, []trailCase{
		{"recorded after the damaged block", id[msgs-1], 1, false},
		{"recorded in the damaged block", id[0], 0, true},
	})
}

// trailCase is a message whose trail is read: how many records it is
// to have, and whether it is to be incomplete.
type trailCase struct {
	name       string
	id         string
	recs       int
	incomplete bool
}

// checkTrails reads the trail of each case's message from js: it must
// have the records the case says and come back with an
// *audit.IncompleteError when the case says incomplete, else with no
// error, and with no other error either way.
func checkTrails(t *testing.T, js jetstream.JetStream, cases []trailCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Trail(t.Context(), js, tc.id)
			var inc *audit.IncompleteError
			if got := errors.As(err, &inc); got != tc.incomplete || err != nil && !got {
				t.Fatalf("Trail error %v: want an IncompleteError %v, and no other error", err, tc.incomplete)
			}
			if len(recs) != tc.recs {
				t.Errorf("%d records, want %d", len(recs), tc.recs)
			}
		})
	}
}

// TestTrailDamageDroppedAsDeleted: when the server turned a damaged
// audit block into deleted sequences at start (an uncompressed block cut
// short: the messages it could still read are kept before them), the
// trail of a message received before those messages were stored may
// have lost records to them: it comes back with an
// *audit.IncompleteError, not as a trail that looks whole (or as no
// trail at all). A message received after them lost nothing.
func TestTrailDamageDroppedAsDeleted(t *testing.T) {
	const msgs = 150
	id, js := damagedAuditStoreWith(t, msgs, jetstream.NoCompression, jstest.CutInHalf, func(_ jetstream.JetStream, _ int, mid string) audit.Record {
		return audit.Record{Time: time.Now().UTC(), MessageID: mid, Event: audit.Received, Source: "pas", Outcome: "stored"}
	})
	st, err := js.Stream(t.Context(), store.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	// The first audit message the store lost (message i holds the record
	// of id[i-1]), after one it kept.
	const first = 1
	var lost uint64
	for seq := uint64(first); seq <= msgs && lost == 0; seq++ {
		if _, err := st.GetMsg(t.Context(), seq); errors.Is(err, jetstream.ErrMsgNotFound) {
			lost = seq
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if lost <= first {
		t.Fatalf("first lost audit message %d: want the set-up to lose some after the first", lost)
	}
	last, err := st.GetMsg(t.Context(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	// A message received well after every audit message was stored.
	later := encodeID(uint64(last.Time.Add(time.Hour).UnixMilli())<<16, 1)
	checkTrails(t, js, []trailCase{
		{"recorded in the lost run", id[lost-1], 0, true},
		{"received before the lost run, recorded before it", id[first-1], 1, true},
		{"received after the lost run", later, 0, false},
	})
}

// damagedAuditStore makes msgs message ids and a store whose audit
// stream holds one record of each, in id order, made by record (which
// may write to the store's other streams: ingress, ingest log and
// outbound), with its first block file cut short (jstest.DamagedStream).
func damagedAuditStore(t *testing.T, msgs int, record func(js jetstream.JetStream, i int, id string) audit.Record) ([]string, jetstream.JetStream) {
	t.Helper()
	return damagedAuditStoreWith(t, msgs, jetstream.S2Compression, jstest.CutInHalf, record)
}

// damagedAuditStoreWith is damagedAuditStore with the audit stream's
// compression and the damage given (jstest.DamagedStreamWith).
func damagedAuditStoreWith(t *testing.T, msgs int, comp jetstream.StoreCompression, damage jstest.Damage, record func(js jetstream.JetStream, i int, id string) audit.Record) ([]string, jetstream.JetStream) {
	t.Helper()
	var ids IDGen
	id := make([]string, msgs)
	for i := range id {
		id[i] = ids.New()
	}
	js := jstest.DamagedStreamWith(t, jetstream.StreamConfig{
		Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, DenyDelete: true, DenyPurge: true, Compression: comp,
	}, damage, func(js jetstream.JetStream) {
		for _, cfg := range []jetstream.StreamConfig{
			{Name: store.StreamIngress, Subjects: []string{store.SubjIngress + ".>"}},
			{Name: store.StreamIngestLog, Subjects: []string{store.SubjIngestLog + ".>"}},
			{Name: store.StreamOutbound, Subjects: []string{store.SubjOutbound + ".>"}},
		} {
			if _, err := js.CreateStream(t.Context(), cfg); err != nil {
				t.Fatal(err)
			}
		}
		w := audit.NewWriter(js)
		for i, mid := range id {
			rec := record(js, i, mid)
			// Padded, so that the records fill several blocks.
			rec.Reason = strings.Repeat("x", 250)
			if err := w.Write(t.Context(), mid, "", rec); err != nil {
				t.Fatalf("audit %d: %v", i, err)
			}
		}
		if err := w.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
	return id, js
}

// TestTrailExpiredHead: on an audit stream an operator gave a limit by
// hand, a message whose records expired has no trail, and the trail
// does not claim the store's files are damaged; a message whose record
// is kept has it.
func TestTrailExpiredHead(t *testing.T) {
	js := jstest.Start(t, "expired")
	id := receivedTrails(t, js, jetstream.StreamConfig{MaxMsgs: 10, DenyDelete: true, DenyPurge: true}, 30)
	tests := []struct {
		name string
		msg  int
		recs int
	}{
		{"records expired", 0, 0},
		{"record kept", len(id) - 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Trail(t.Context(), js, id[tc.msg])
			if err != nil {
				t.Fatalf("Trail: %v, want no error", err)
			}
			if len(recs) != tc.recs {
				t.Errorf("%d records, want %d", len(recs), tc.recs)
			}
		})
	}
}

// deletedUnknownJS is a JetStream whose audit stream answers every
// request but one for its deleted sequences, which fails, as a store
// that stops answering in the middle of a trail's read does.
type deletedUnknownJS struct{ jetstream.JetStream }

func (j deletedUnknownJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	st, err := j.JetStream.Stream(ctx, name)
	if err != nil || name != store.StreamAudit {
		return st, err
	}
	return deletedUnknown{st}, nil
}

type deletedUnknown struct{ jetstream.Stream }

func (s deletedUnknown) Info(ctx context.Context, opts ...jetstream.StreamInfoOpt) (*jetstream.StreamInfo, error) {
	info, err := s.Stream.Info(ctx, opts...)
	if err == nil && len(info.State.Deleted) > 0 {
		return nil, errors.New("nats: timeout")
	}
	return info, err
}

// TestTrailLossUnknown: when the store holds deleted audit sequences
// (damage the server rebuilt) but does not answer which they are, the
// trail of a message recorded among them is an error, not an empty
// trail that looks complete: no one can say its records were not lost.
func TestTrailLossUnknown(t *testing.T) {
	js := jstest.Start(t, "lossunknown")
	var cfg jetstream.StreamConfig
	id := receivedTrails(t, js, cfg, 10)
	// Message 5's record is lost, as the server's rebuild of a damaged
	// block leaves it: deleted, on a stream that refuses deletes.
	st, err := js.Stream(t.Context(), store.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(t.Context(), 5); err != nil {
		t.Fatal(err)
	}
	cfg = st.CachedInfo().Config
	cfg.DenyDelete, cfg.DenyPurge = true, true
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	recs, err := Trail(t.Context(), js, id[4])
	var inc *audit.IncompleteError
	if !errors.As(err, &inc) {
		t.Fatalf("Trail of the lost record: %d records, error %v; want an IncompleteError (the set-up)", len(recs), err)
	}
	recs, err = Trail(t.Context(), deletedUnknownJS{js}, id[4])
	if err == nil {
		t.Errorf("Trail of the lost record, its deleted sequences unknown: %d records and no error; want an error", len(recs))
	}
}

// receivedTrails makes on js the streams a trail is read from, the
// audit stream of configuration auditCfg (its name and subjects set),
// and writes one Received record for each of msgs message ids, which
// it returns in order.
func receivedTrails(t *testing.T, js jetstream.JetStream, auditCfg jetstream.StreamConfig, msgs int) []string {
	t.Helper()
	auditCfg.Name, auditCfg.Subjects = store.StreamAudit, []string{store.SubjAudit + ".>"}
	for _, cfg := range []jetstream.StreamConfig{
		auditCfg,
		{Name: store.StreamIngress, Subjects: []string{store.SubjIngress + ".>"}},
		{Name: store.StreamIngestLog, Subjects: []string{store.SubjIngestLog + ".>"}},
		{Name: store.StreamOutbound, Subjects: []string{store.SubjOutbound + ".>"}},
	} {
		if _, err := js.CreateStream(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	var ids IDGen
	id := make([]string, msgs)
	w := audit.NewWriter(js)
	for i := range id {
		id[i] = ids.New()
		if err := w.Write(t.Context(), id[i], "", audit.Record{Time: time.Now().UTC(), MessageID: id[i], Event: audit.Received}); err != nil {
			t.Fatalf("audit %d: %v", i, err)
		}
	}
	if err := w.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestReconcileLostIngestLog: a reconcile over an ingest log whose
// damaged block the server rebuilt into deleted sequences names the runs
// of batches lost before routing took them, whose acknowledged messages
// it cannot count. Before, its scans passed over them and said nothing.
func TestReconcileLostIngestLog(t *testing.T) {
	js, want := lostIngestLogStore(t)
	rep, err := Reconcile(t.Context(), js, map[string][]string{"pas": {"adt"}}, time.Time{})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	var got []audit.SeqRange
	for _, r := range rep.IngestLogLost {
		got = append(got, audit.SeqRange{First: r.First, Last: r.Last})
	}
	if !slices.Equal(got, want) {
		t.Errorf("lost ingest log batches %v, want %v", rep.IngestLogLost, want)
	}
}

// TestFindNamesLostIngestLogBatches: finding messages over a window that
// holds ingest log batches the store lost says so, with when they were
// acknowledged; a window after them does not. Before, a message in them
// was not found, and nothing said why.
func TestFindNamesLostIngestLogBatches(t *testing.T) {
	js, want := lostIngestLogStore(t)
	now := time.Now()
	tests := []struct {
		name         string
		since, until time.Time
		want         []audit.SeqRange
	}{
		{"a window holding them", now.Add(-time.Hour), now.Add(time.Minute), want},
		{"a window after them", now.Add(time.Minute), now.Add(time.Hour), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Find(t.Context(), js, FindQuery{Since: tc.since, Until: tc.until}, nil)
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			var got []audit.SeqRange
			for _, r := range res.Lost {
				got = append(got, audit.SeqRange{First: r.First, Last: r.Last})
				if r.After.IsZero() && r.Before.IsZero() {
					t.Errorf("lost run %+v: want when its batches were acknowledged", r)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("lost %v, want %v", got, tc.want)
			}
		})
	}
}

// lostIngestLogStore is a store whose ingest log's first block was cut
// short (jstest.DamagedStreamWith, uncompressed: the server rebuilds it
// into deleted sequences), with no batch taken for routing, and the runs
// of batches it lost.
func lostIngestLogStore(t *testing.T) (jetstream.JetStream, []audit.SeqRange) {
	t.Helper()
	js, runs, _ := damagedRouterStore(t, store.StreamIngestLog, jetstream.NoCompression, nil, func(js jetstream.JetStream) {
		for i := range 150 {
			if _, err := js.Publish(t.Context(), store.SubjIngestLog+".pas", fmt.Appendf(nil, "%d %s", i, strings.Repeat("y", 400))); err != nil {
				t.Fatal(err)
			}
		}
	}, 1)
	var lost []audit.SeqRange
	for _, r := range runs {
		lost = append(lost, audit.SeqRange{First: r.First, Last: r.Last})
	}
	return js, lost
}

// TestFindWithAnIncompleteTrail: finding a message whose trail cannot
// be read whole (its audit records in a damaged block) lists it with
// what could be read and says the trail is incomplete. Before, the find
// failed as a whole.
func TestFindWithAnIncompleteTrail(t *testing.T) {
	now := time.Now().UTC()
	id, js := damagedAuditStore(t, 150, func(js jetstream.JetStream, i int, mid string) audit.Record {
		if i == 0 {
			// Accepted from the ingest log, and taken by the accept stage.
			data, err := encodeBatch([]*envelope.Envelope{{ID: mid, Source: "pas", ControlID: "C1", ReceivedAt: now, Raw: []byte("MSH|^~\\&|")}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(t.Context(), store.SubjIngestLog+".pas", data); err != nil {
				t.Fatal(err)
			}
			takeIngestLog(t, js, 1)
		}
		return audit.Record{Time: now, MessageID: mid, Event: audit.Received, Source: "pas", Outcome: "stored"}
	})
	res, err := Find(t.Context(), js, FindQuery{ControlID: "C1", Since: now.Add(-time.Hour)}, map[string][]string{"pas": {"adt"}})
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	if len(res.Messages) != 1 || res.Messages[0].ID != id[0] || !strings.Contains(res.Messages[0].Incomplete, "files") {
		t.Errorf("found %+v: want message %s, its trail said incomplete", res.Messages, id[0])
	}
}
