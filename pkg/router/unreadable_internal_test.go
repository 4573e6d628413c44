package router

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// damagedRouterStore makes a store whose stream damaged (the ingest log,
// the ingress stream or the quarantine), of compression comp, has the blocks numbered
// blocks cut short (jstest.DamagedBlocks): the server counts the
// messages of an S2-compressed one but cannot produce them, and turns
// what it cannot read of an uncompressed one into deleted sequences.
// Without blocks, a record of its last block is overwritten instead
// (jstest.DamagedLastBlock with overwrite: jstest.OverwriteMiddle when
// nil): counted, not produced, and passed over by readers without a
// stall.
// fill writes to it and the other streams, made first. It returns the
// store and, from the store itself, the runs of the damaged stream it
// does not produce, with the times around them (for a run that ends the
// stream, Before is when the state says its last message was stored),
// and the sequences it does.
func damagedRouterStore(t *testing.T, damaged string, comp jetstream.StoreCompression, overwrite jstest.Damage, fill func(js jetstream.JetStream), blocks ...int) (jetstream.JetStream, []jserr.Run, map[uint64]bool) {
	t.Helper()
	var cfg jetstream.StreamConfig
	others := []jetstream.StreamConfig{
		{Name: store.StreamIngress, Subjects: []string{store.SubjIngress + ".>"}},
		{Name: store.StreamIngestLog, Subjects: []string{store.SubjIngestLog + ".>"}},
		{Name: store.StreamOutbound, Subjects: []string{store.SubjOutbound + ".>"}},
		{Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, DenyDelete: true, DenyPurge: true},
		{Name: store.StreamQuarantine, Subjects: []string{store.SubjQuarantine + ".>"}},
	}
	others = slices.DeleteFunc(others, func(c jetstream.StreamConfig) bool {
		if c.Name == damaged {
			cfg = c
			return true
		}
		return false
	})
	cfg.Compression = comp
	fillAll := func(js jetstream.JetStream) {
		for _, c := range others {
			if _, err := js.CreateStream(t.Context(), c); err != nil {
				t.Fatal(err)
			}
		}
		fill(js)
	}
	var js jetstream.JetStream
	if len(blocks) > 0 {
		js = jstest.DamagedBlocks(t, cfg, jstest.CutInHalf, fillAll, blocks...)
	} else {
		if overwrite == nil {
			overwrite = jstest.OverwriteMiddle
		}
		js = jstest.DamagedLastBlock(t, cfg, overwrite, fillAll)
	}
	st, err := js.Stream(t.Context(), damaged)
	if err != nil {
		t.Fatal(err)
	}
	readable := map[uint64]bool{}
	var runs []jserr.Run
	var prev time.Time
	for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		n := len(runs)
		switch {
		case err == nil:
			readable[seq] = true
			if n > 0 && runs[n-1].Last == seq-1 {
				runs[n-1].Before = m.Time
			}
			prev = m.Time
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			t.Fatal(err)
		case n > 0 && runs[n-1].Last == seq-1:
			runs[n-1].Last = seq
		default:
			runs = append(runs, jserr.Run{First: seq, Last: seq, After: prev})
		}
	}
	if len(runs) != max(len(blocks), 1) {
		t.Fatalf("the set-up's runs of %s it does not produce: %v, want %d", damaged, runs, max(len(blocks), 1))
	}
	if r := &runs[len(runs)-1]; r.Last == st.CachedInfo().State.LastSeq {
		// A run that ends the stream was stored by the time the state
		// gives for its last message (jserr.Run).
		r.Before = st.CachedInfo().State.LastTime
	}
	return js, runs, readable
}

// unreadableStore is damagedRouterStore with the damaged stream
// S2-compressed, its first and third blocks cut short: two runs the
// store counts but cannot produce.
func unreadableStore(t *testing.T, damaged string, fill func(js jetstream.JetStream)) (jetstream.JetStream, []jserr.Run, map[uint64]bool) {
	t.Helper()
	return damagedRouterStore(t, damaged, jetstream.S2Compression, nil, fill, 1, 3)
}

// ingestBatch writes one ingest log batch of the messages of ids, from
// source pas with control ids C<i>, received at, padded so that the
// batches fill several blocks.
func ingestBatch(t *testing.T, js jetstream.JetStream, at time.Time, ids ...string) {
	t.Helper()
	var envs []*envelope.Envelope
	for _, id := range ids {
		envs = append(envs, &envelope.Envelope{ID: id, Source: "pas", ControlID: "C" + id, ReceivedAt: at,
			Raw: []byte("MSH|^~\\&|" + padding(id, 300))})
	}
	data, err := encodeBatch(envs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), store.SubjIngestLog+".pas", data); err != nil {
		t.Fatal(err)
	}
}

// unreadableIngestLog is a store whose ingest log holds 220 batches of
// one message each, received at now, with runs it cannot read
// (damagedRouterStore), and none taken for routing. It returns the runs
// and the ids of the messages of the batches it can read, in order.
func unreadableIngestLog(t *testing.T, now time.Time) (jetstream.JetStream, []jserr.Run, []string) {
	t.Helper()
	var ids IDGen
	id := make([]string, 220)
	js, runs, readable := unreadableStore(t, store.StreamIngestLog, func(js jetstream.JetStream) {
		for i := range id {
			id[i] = ids.New()
			ingestBatch(t, js, now, id[i])
		}
	})
	var kept []string
	for i, mid := range id {
		if readable[uint64(i+1)] {
			kept = append(kept, mid)
		}
	}
	return js, runs, kept
}

// sameRuns reports whether got and want name the same runs, with the
// same times around them.
func sameRuns(got, want []jserr.Run) bool {
	return slices.EqualFunc(got, want, func(a, b jserr.Run) bool {
		return a.First == b.First && a.Last == b.Last && a.After.Equal(b.After) && a.Before.Equal(b.Before)
	})
}

// TestReadersPastUnreadableIngestLog: a reconcile and a find over an
// ingest log with blocks the store counts but cannot read answer all the
// same, naming the runs they could not read (batches not yet taken for
// routing: lost), with when they were acknowledged. The reconcile counts
// the messages of the batches it could read as waiting; the find lists
// them; a window after the runs does not name them. Before, both
// stopped with an error at the first run.
func TestReadersPastUnreadableIngestLog(t *testing.T) {
	now := time.Now().UTC()
	js, runs, want := unreadableIngestLog(t, now)
	reconcile := func(since time.Time) func() ([]jserr.Run, []string, error) {
		return func() ([]jserr.Run, []string, error) {
			rep, err := Reconcile(t.Context(), js, map[string][]string{"pas": {"adt"}}, since)
			var ids []string
			for _, p := range rep.Pending {
				ids = append(ids, p.ID)
			}
			slices.Sort(ids)
			if rep.Accepted != len(ids) {
				t.Errorf("accepted %d, %d pending: want every one read pending", rep.Accepted, len(ids))
			}
			return rep.IngestLogLost, ids, err
		}
	}
	find := func(since, until time.Time) func() ([]jserr.Run, []string, error) {
		return func() ([]jserr.Run, []string, error) {
			res, err := Find(t.Context(), js, FindQuery{Since: since, Until: until}, nil)
			var ids []string
			for _, f := range res.Messages {
				ids = append(ids, f.ID)
			}
			return res.Lost, ids, err
		}
	}
	tests := []struct {
		name     string
		read     func() (lost []jserr.Run, ids []string, err error)
		wantRuns []jserr.Run
		wantIDs  []string
	}{
		{"reconcile", reconcile(time.Time{}), runs, want},
		{"reconcile of a window holding them", reconcile(now.Add(-time.Hour)), runs, want},
		{"reconcile of a window after them", reconcile(now.Add(time.Hour)), nil, nil},
		{"find", find(now.Add(-time.Hour), now.Add(time.Minute)), runs, want},
		{"find in a window after them", find(now.Add(time.Hour), now.Add(2*time.Hour)), nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lost, ids, err := tc.read()
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if !sameRuns(lost, tc.wantRuns) {
				t.Errorf("lost ingest log batches %v, want %v", lost, tc.wantRuns)
			}
			if !slices.Equal(ids, tc.wantIDs) {
				t.Errorf("messages %v, want %v", ids, tc.wantIDs)
			}
		})
	}
}

// streamDamage is damage to a stream (damagedRouterStore): blocks cut
// short, of a stream of compression comp, or a record overwritten in the
// last. The server counts the messages of a compressed block cut short
// but cannot produce them, drops what it cannot read of an uncompressed
// one (Junction's ingress stream and quarantine) as deleted sequences,
// and counts an overwritten record but cannot produce it, in the middle
// of the stream or as its last message.
var streamDamage = []struct {
	name      string
	comp      jetstream.StoreCompression
	blocks    []int
	overwrite jstest.Damage // without blocks; nil: jstest.OverwriteMiddle
	pad       int           // bytes of padding a message
}{
	{"unreadable", jetstream.S2Compression, []int{1, 3}, nil, 300},
	{"dropped", jetstream.NoCompression, []int{1}, nil, 300},
	// Records larger than the damage, so that one is overwritten.
	{"overwritten", jetstream.NoCompression, nil, nil, 2000},
	{"last overwritten", jetstream.NoCompression, nil, jstest.OverwriteEnd, 2000},
}

// TestReconcileUnreadableIngress: a reconcile over an ingress stream
// with blocks the store counts but cannot read, or dropped rebuilding
// them, answers all the same, naming the runs with the times around
// them. A message routing took from the ingest log whose stored copy may
// be in them is counted by its audit records, not taken for a resend (a
// duplicate, finished) as a message not stored would be; a resend
// written after the damage is still one. Before, it stopped with an
// error at unreadable runs, and counted the messages of dropped ones as
// resends.
func TestReconcileUnreadableIngress(t *testing.T) {
	const msgs = 220
	for _, dmg := range streamDamage {
		t.Run(dmg.name, func(t *testing.T) {
			var ids IDGen
			id := make([]string, msgs)
			now := time.Now().UTC()
			js, runs, _ := damagedRouterStore(t, store.StreamIngress, dmg.comp, dmg.overwrite, func(js jetstream.JetStream) {
				w := audit.NewWriter(js)
				for i := range id {
					id[i] = ids.New()
					ingestBatch(t, js, now, id[i])
					m := nats.NewMsg(store.SubjIngress + ".pas.0")
					m.Header.Set(envelope.HeaderID, id[i])
					m.Header.Set(envelope.HeaderSource, "pas")
					m.Header.Set(envelope.HeaderReceived, now.Format(time.RFC3339Nano))
					m.Data = []byte("MSH|^~\\&|" + padding(id[i], dmg.pad))
					if _, err := js.PublishMsg(t.Context(), m); err != nil {
						t.Fatalf("publish %d: %v", i, err)
					}
					if err := w.Write(t.Context(), id[i], "", audit.Record{Time: now, MessageID: id[i], Event: audit.Filtered, Route: "adt", Outcome: "filtered"}); err != nil {
						t.Fatal(err)
					}
				}
				if err := w.Close(t.Context()); err != nil {
					t.Fatal(err)
				}
				// A resend, recognised and not stored for routing, written
				// after every message stored for routing: no damage could
				// hold its stored copy, and it is counted as a duplicate.
				ingestBatch(t, js, now, ids.New())
				takeIngestLog(t, js, msgs+1)
			}, dmg.blocks...)
			rep, err := Reconcile(t.Context(), js, map[string][]string{"pas": {"adt"}}, time.Time{})
			if err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			if !sameRuns(rep.IngressUnreadable, runs) {
				t.Errorf("unreadable ingress messages %v, want %v", rep.IngressUnreadable, runs)
			}
			if rep.Accepted != msgs+1 || rep.Terminal[audit.OutcomeFiltered] != msgs || rep.Terminal[audit.OutcomeDuplicate] != 1 || len(rep.Pending) != 0 {
				t.Errorf("accepted %d, terminal %v, %d pending: want all %d filtered, by their records, and the one resend a duplicate", rep.Accepted, rep.Terminal, len(rep.Pending), msgs)
			}
		})
	}
}

// takeIngestLog makes the accept stage's consumer on the ingest log and
// has it take the first n batches, as routing does.
func takeIngestLog(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	c, err := js.CreateOrUpdateConsumer(t.Context(), store.StreamIngestLog, jetstream.ConsumerConfig{Durable: acceptDurable, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for taken := 0; taken < n; {
		b, err := c.Fetch(min(n-taken, 100))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			if err := m.DoubleAck(t.Context()); err != nil {
				t.Fatal(err)
			}
			taken++
		}
		if err := b.Error(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTrailPastUnreadableIngress: the trail of a message the batch
// pipeline carried, whose accepted batch is after blocks of the ingress
// stream the store counts but cannot read, or dropped rebuilding them,
// is found; that of a message whose accepted batch was in them comes
// back incomplete (an *audit.IncompleteError), not as an error, nor as
// no trail at all. Before, unreadable runs failed every trail, and a
// message in a dropped run had none.
func TestTrailPastUnreadableIngress(t *testing.T) {
	const batches = 220
	for _, dmg := range streamDamage {
		t.Run(dmg.name, func(t *testing.T) {
			var ids IDGen
			id := make([]string, batches)
			js, runs, _ := damagedRouterStore(t, store.StreamIngress, dmg.comp, dmg.overwrite, func(js jetstream.JetStream) {
				for i := range id {
					id[i] = ids.New()
					data, err := encodeBatch([]*envelope.Envelope{{ID: id[i], Source: "pas", ControlID: fmt.Sprint("C", i), ReceivedAt: time.Now().UTC(),
						Raw: []byte("MSH|^~\\&|" + padding(id[i], dmg.pad))}})
					if err != nil {
						t.Fatal(err)
					}
					if _, err := js.Publish(t.Context(), SubjAccepted+".pas", data); err != nil {
						t.Fatal(err)
					}
				}
			}, dmg.blocks...)
			// Message id[i] is in the batch at sequence i+1.
			var cases []trailCase
			if runs[len(runs)-1].Last < batches {
				cases = append(cases, trailCase{"accepted after the damage", id[batches-1], 1, false})
			}
			for n, r := range runs {
				cases = append(cases, trailCase{fmt.Sprint("accepted in run ", n+1), id[r.First-1], 0, true})
				if r.Last < batches {
					cases = append(cases, trailCase{fmt.Sprint("accepted just after run ", n+1), id[r.Last], 1, false})
				}
			}
			checkTrails(t, js, cases)
		})
	}
}

// padding is n letters made from seed that do not compress, so that a
// batch (which may be compressed) takes its size in a block.
func padding(seed string, n int) string {
	h := fnv.New64a()
	h.Write([]byte(seed))
	x := h.Sum64() | 1
	var b strings.Builder
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b.WriteByte('a' + byte(x%26))
	}
	return b.String()
}

// controlIDFirst is a HeaderOf for the quarantine entries of
// findQuarantinedPastDamage: the control id is what comes before the
// first "|".
func controlIDFirst(raw []byte) (controlID, sender, messageType string, ok bool) {
	ctrl, _, ok := strings.Cut(string(raw), "|")
	return ctrl, "PAS|RGT", "ADT^A01", ok
}

// TestFindQuarantinedPastUnreadable: a find of refused input over a
// quarantine with entries the store counts but cannot read answers all
// the same: the entries it can read that match, and the runs it could
// not read (refused input in them cannot be found), with when they were
// kept; a window after the runs does not name them, for each kind of
// damage (streamDamage). Before, it stopped with an error at blocks it
// could not read, and GET /api/messages answered 500; it passed over
// dropped and overwritten entries without a word.
func TestFindQuarantinedPastUnreadable(t *testing.T) {
	for _, dmg := range streamDamage {
		t.Run(dmg.name, func(t *testing.T) {
			findQuarantinedPastDamage(t, dmg.comp, dmg.overwrite, dmg.pad, dmg.blocks...)
		})
	}
}

// findQuarantinedPastDamage is TestFindQuarantinedPastUnreadable for one
// kind of damage: a quarantine of 220 entries, kept now, of compression
// comp, each padded by pad bytes, with blocks damaged, or a record
// overwritten (damagedRouterStore).
func findQuarantinedPastDamage(t *testing.T, comp jetstream.StoreCompression, overwrite jstest.Damage, pad int, blocks ...int) {
	now := time.Now().UTC()
	var ids IDGen
	id := make([]string, 220)
	js, runs, readable := damagedRouterStore(t, store.StreamQuarantine, comp, overwrite, func(js jetstream.JetStream) {
		for i := range id {
			id[i] = ids.New()
			m := nats.NewMsg(store.SubjQuarantine + ".pas")
			m.Header.Set(envelope.HeaderID, id[i])
			m.Header.Set(envelope.HeaderSource, "pas")
			m.Header.Set(envelope.HeaderReason, "hl7.parse")
			m.Header.Set(envelope.HeaderReceived, now.Format(time.RFC3339Nano))
			m.Data = []byte("Q" + id[i] + "|" + padding(id[i], pad))
			if _, err := js.PublishMsg(t.Context(), m); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}, blocks...)
	var kept []string
	for i, qid := range id {
		if readable[uint64(i+1)] {
			kept = append(kept, qid)
		}
	}
	tests := []struct {
		name     string
		q        FindQuery
		wantIDs  []string
		wantRuns bool
	}{
		{"a window holding them", FindQuery{Since: now.Add(-time.Hour), Until: now.Add(time.Minute)}, kept, true},
		{"by the control id of one read", FindQuery{ControlID: "Q" + kept[0], Since: now.Add(-time.Hour)}, kept[:1], true},
		{"a window after them", FindQuery{Since: now.Add(time.Hour), Until: now.Add(2 * time.Hour)}, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := FindQuarantined(t.Context(), js, tc.q, controlIDFirst)
			if err != nil {
				t.Fatalf("FindQuarantined: %v", err)
			}
			var got []string
			for _, f := range res.Found {
				got = append(got, f.ID)
			}
			if !slices.Equal(got, tc.wantIDs) {
				t.Errorf("found %v, want %v", got, tc.wantIDs)
			}
			want := runs
			if !tc.wantRuns {
				want = nil
			}
			if !sameRuns(res.Lost, want) {
				t.Errorf("unreadable quarantine runs %v, want %v", res.Lost, want)
			}
		})
	}
}

// TestListQuarantinePastUnreadable: the quarantine list (GET
// /api/quarantine) over a quarantine with entries the store counts but
// cannot read, or dropped, lists every entry it can read, newest first,
// and names the runs it could not read with when the entries around them
// were kept, for each kind of damage (streamDamage); a listing of fewer
// entries names only the runs among them. Before, it passed over them
// without a word.
func TestListQuarantinePastUnreadable(t *testing.T) {
	for _, dmg := range streamDamage {
		t.Run(dmg.name, func(t *testing.T) {
			js, runs, readable := damagedRouterStore(t, store.StreamQuarantine, dmg.comp, dmg.overwrite, fillQuarantine(t, 220, dmg.pad), dmg.blocks...)
			// The newest run's first entry and those after it: a listing
			// reaching into that run only.
			newest := runs[len(runs)-1]
			tests := []struct {
				name  string
				limit int
				from  uint64 // the oldest sequence listed
				runs  []jserr.Run
			}{
				{"all of it", 10000, 1, runs},
				{"the newest run and after", int(220 - newest.First + 1), newest.First, runs[len(runs)-1:]},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					var got, want []uint64
					for seq := uint64(220); seq >= tc.from; seq-- {
						if readable[seq] {
							want = append(want, seq)
						}
					}
					res, err := ListQuarantine(t.Context(), js, tc.limit, func(m *jetstream.RawStreamMsg) bool {
						got = append(got, m.Sequence)
						return false
					})
					if err != nil {
						t.Fatalf("ListQuarantine: %v", err)
					}
					if !slices.Equal(got, want) {
						t.Errorf("listed %v, want %v", got, want)
					}
					if !sameRuns(res.Lost, tc.runs) {
						t.Errorf("unreadable quarantine runs %v, want %v", res.Lost, tc.runs)
					}
				})
			}
		})
	}
}

// fillQuarantine returns a fill writing n quarantine entries, each
// padded by pad bytes.
func fillQuarantine(t *testing.T, n, pad int) func(jetstream.JetStream) {
	return func(js jetstream.JetStream) {
		var ids IDGen
		for i := range n {
			id := ids.New()
			m := nats.NewMsg(store.SubjQuarantine + ".pas")
			m.Header.Set(envelope.HeaderID, id)
			m.Data = []byte("Q" + id + "|" + padding(id, pad))
			if _, err := js.PublishMsg(t.Context(), m); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
}

// TestListQuarantineNamesDamagePastItsStop: a quarantine listing that
// fn stops before the oldest entries of its range (the answer's budget
// for bodies reached) still names every run of the range the store
// cannot read, older ones too, with the times around them, and counts
// as omitted the entries it read and did not list: each entry of the
// range is listed, omitted or in a run, once. Before, the listing ended
// where fn stopped it, and damage older than that was never named.
func TestListQuarantineNamesDamagePastItsStop(t *testing.T) {
	const entries = 220
	for _, dmg := range streamDamage {
		t.Run(dmg.name, func(t *testing.T) {
			js, runs, readable := damagedRouterStore(t, store.StreamQuarantine, dmg.comp, dmg.overwrite, fillQuarantine(t, entries, dmg.pad), dmg.blocks...)
			// fn stops at the entry just after the newest run, before
			// any run is met where one follows it.
			stop := runs[len(runs)-1].Last + 1
			var listed []uint64
			res, err := ListQuarantine(t.Context(), js, 10000, func(m *jetstream.RawStreamMsg) bool {
				if m.Sequence <= stop {
					return true
				}
				listed = append(listed, m.Sequence)
				return false
			})
			if err != nil {
				t.Fatalf("ListQuarantine: %v", err)
			}
			if !sameRuns(res.Lost, runs) {
				t.Errorf("unreadable quarantine runs %v, want %v", res.Lost, runs)
			}
			var want []uint64
			omitted := 0
			for seq := uint64(entries); seq >= 1; seq-- {
				switch {
				case readable[seq] && seq > stop:
					want = append(want, seq)
				case readable[seq]:
					omitted++
				}
			}
			if !slices.Equal(listed, want) {
				t.Errorf("listed %v, want %v", listed, want)
			}
			if res.Omitted != omitted {
				t.Errorf("%d entries omitted, want the %d read and not listed", res.Omitted, omitted)
			}
		})
	}
}

// TestListQuarantineAsksTheHeadOnce: a quarantine listing over 50
// single entries the store does not produce (dropped: deleted
// sequences), each with an entry kept below it, names the 50 runs
// asking the stream's state once, at the start: an entry kept below a
// miss says it has not left the head. Before, it asked the state again
// at every miss (51 reads of the state).
func TestListQuarantineAsksTheHeadOnce(t *testing.T) {
	const entries = 400
	tests := []struct {
		name    string
		limit   int
		dropped []uint64
		infos   int64 // reads of the stream's state, at most
	}{
		{"misses with entries below them", entries, jstest.Seqs(2, 100, 2), 1},
		{"misses down to the window's first entry", 300, jstest.Seqs(101, 199, 2), 2},
		{"a run of 200 misses", entries, jstest.Seqs(101, 300, 1), 1 + 200/settleMisses},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := jstest.StreamWithGaps(t, jetstream.StreamConfig{Name: store.StreamQuarantine, Subjects: []string{store.SubjQuarantine + ".>"}},
				store.SubjQuarantine+".pas", entries, tc.dropped)
			counted := &stateCounter{JetStream: js}
			listed := 0
			res, err := ListQuarantine(t.Context(), counted, tc.limit, func(*jetstream.RawStreamMsg) bool {
				listed++
				return false
			})
			if err != nil {
				t.Fatalf("ListQuarantine: %v", err)
			}
			var named []uint64
			for _, r := range res.Lost {
				for seq := r.First; seq <= r.Last; seq++ {
					named = append(named, seq)
				}
			}
			if !slices.Equal(named, tc.dropped) || listed != tc.limit-len(tc.dropped) {
				t.Errorf("named %v and listed %d, want %v named and the %d others listed", res.Lost, listed, tc.dropped, tc.limit-len(tc.dropped))
			}
			if got := counted.infos.Load(); got > tc.infos {
				t.Errorf("%d reads of the stream's state, want at most %d", got, tc.infos)
			}
		})
	}
}

// stateCounter is a JetStream whose streams' state reads are counted.
type stateCounter struct {
	jetstream.JetStream
	infos atomic.Int64
}

// Stream returns stream name, its state reads counted.
func (c *stateCounter) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	st, err := c.JetStream.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return &stateCounted{Stream: st, infos: &c.infos}, nil
}

// stateCounted is a stream whose state reads are counted in infos.
type stateCounted struct {
	jetstream.Stream
	infos *atomic.Int64
}

// Info counts the read and passes it on.
func (s *stateCounted) Info(ctx context.Context, opts ...jetstream.StreamInfoOpt) (*jetstream.StreamInfo, error) {
	s.infos.Add(1)
	return s.Stream.Info(ctx, opts...)
}

// TestListQuarantineExpiryIsNotDamage: quarantine entries that leave the
// head by the stream's limits while the list reads (newer entries kept
// meanwhile) are not named as unreadable: the list gives the entries
// still kept and no run. Without the check at each miss it named the
// entries gone as a run.
func TestListQuarantineExpiryIsNotDamage(t *testing.T) {
	const kept, more = 10, 4
	js := jstest.Start(t, "qexpiry")
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: store.StreamQuarantine, Subjects: []string{store.SubjQuarantine + ".>"}, MaxMsgs: kept}); err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		for range n {
			if _, err := js.Publish(t.Context(), store.SubjQuarantine+".pas", []byte("refused")); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(kept)
	var got []uint64
	res, err := ListQuarantine(t.Context(), js, 100, func(m *jetstream.RawStreamMsg) bool {
		if len(got) == 0 {
			// Entries kept while the list reads: as many leave the head.
			publish(more)
		}
		got = append(got, m.Sequence)
		return false
	})
	if err != nil {
		t.Fatalf("ListQuarantine: %v", err)
	}
	var want []uint64
	for seq := uint64(kept); seq > more; seq-- {
		want = append(want, seq)
	}
	if !slices.Equal(got, want) {
		t.Errorf("listed %v, want %v", got, want)
	}
	if len(res.Lost) != 0 {
		t.Errorf("runs %v named unreadable: they left the head", res.Lost)
	}
}
