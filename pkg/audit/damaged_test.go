package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestVerifyDamagedBlock: an audit stream whose first block file was cut
// short (a torn copy, a damaged disk) has messages the store counts but
// cannot produce. VerifyStream reports them as unreadable, with the
// chain positions in them missing, and checks the records after them;
// ReadStream and Scan say which message they cannot read and that the
// store's files are damaged, rather than only that they stopped.
func TestVerifyDamagedBlock(t *testing.T) {
	const records = 150
	js, w := damagedAudit(t, records)

	rep, err := audit.VerifyStream(t.Context(), js)
	if err != nil {
		t.Fatalf("VerifyStream: %v", err)
	}
	var unreadable, missing bool
	for _, f := range rep.Findings {
		switch f.Kind {
		case audit.FindUnreadable:
			unreadable = f.StreamSeq == 1
		case audit.FindMissing:
			missing = f.Chain == w.Chain() && f.Seq == 1
		}
	}
	if !unreadable || !missing {
		t.Errorf("findings %v: want unreadable from stream seq 1 and chain positions missing from 1", rep.Findings)
	}
	c := chainReport(t, rep, w.Chain())
	if c.Stored == 0 || c.Stored >= records {
		t.Errorf("chain stored %d of %d records read: want those after the damaged block, not all", c.Stored, records)
	}

	err = audit.ReadStream(t.Context(), js, func(audit.StoredMsg) {})
	if err == nil || !strings.Contains(err.Error(), "cannot read them") {
		t.Errorf("ReadStream = %v, want an error saying which messages cannot be read", err)
	}
	err = audit.Scan(t.Context(), js, time.Time{}, time.Time{}, func(audit.Record) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "message 1 of") || !strings.Contains(err.Error(), "files are damaged") {
		t.Errorf("Scan = %v, want an error naming message 1 as unreadable, the files damaged", err)
	}
}

// TestScanPastDamagedBlock: a scan told what to do with damage
// (ScanOptions.Unreadable) is given the run of messages the store counts
// but cannot produce, reads every record stored after it, and returns no
// error, whether it starts at the beginning or at a time before the
// damage. Without it, the same scan fails (TestVerifyDamagedBlock).
func TestScanPastDamagedBlock(t *testing.T) {
	js, _ := damagedAudit(t, 150)
	state := auditState(t, js)
	tests := []struct {
		name string
		from time.Time
	}{
		{"from the first message", time.Time{}},
		{"from a time before the first message", time.Unix(1, 0)},
		{"from a time just after the first message", state.FirstTime.Add(time.Nanosecond)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var runs []audit.SeqRange
			var seqs []uint64
			opt := audit.ScanOptions{From: tc.from, Unreadable: func(r audit.SeqRange) { runs = append(runs, r) }}
			err := audit.ScanMessages(t.Context(), js, opt, func(p audit.Position, _ string, _ []byte) error {
				seqs = append(seqs, p.Seq)
				return nil
			})
			if err != nil {
				t.Fatalf("ScanMessages: %v", err)
			}
			if len(runs) != 1 || runs[0].First != 1 || runs[0].Last < 1 || runs[0].Last >= state.LastSeq {
				t.Fatalf("unreadable runs %v: want one, from stream seq 1, ending before %d", runs, state.LastSeq)
			}
			// Every message after the run, each once, in order.
			want := int(state.LastSeq - runs[0].Last)
			if len(seqs) != want || seqs[0] != runs[0].Last+1 || seqs[len(seqs)-1] != state.LastSeq {
				t.Errorf("read %d messages (%v...): want the %d from %d to %d", len(seqs), seqs[:min(len(seqs), 3)], want, runs[0].Last+1, state.LastSeq)
			}
		})
	}
}

// damagedAudit is an audit stream of records messages, one record each,
// whose first block file was cut short (jstest.DamagedStream), and the
// writer that wrote them.
func damagedAudit(t *testing.T, records int) (jetstream.JetStream, *audit.Writer) {
	t.Helper()
	return damagedAuditWith(t, records, jetstream.S2Compression, jstest.CutInHalf)
}

// damagedAuditWith is damagedAudit with the stream's compression and the
// damage given (jstest.DamagedStreamWith).
func damagedAuditWith(t *testing.T, records int, comp jetstream.StoreCompression, damage jstest.Damage) (jetstream.JetStream, *audit.Writer) {
	t.Helper()
	var w *audit.Writer
	js := jstest.DamagedStreamWith(t, jetstream.StreamConfig{
		Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, DenyDelete: true, DenyPurge: true, Compression: comp,
	}, damage, func(js jetstream.JetStream) { w = writeRecords(t, js, records) })
	return js, w
}

// TestTrailPastDamagedBlock: the trail of a message whose records were
// stored after a damaged block is read whole; that of a message whose
// records were in it comes back with what can be read and an
// *audit.IncompleteError saying the files are damaged, never as a trail
// that looks whole while missing records, nor as an error alone.
func TestTrailPastDamagedBlock(t *testing.T) {
	const records = 150
	js, _ := damagedAudit(t, records)
	tests := []struct {
		name       string
		msg        int
		recs       int
		incomplete bool
	}{
		{"stored last", records - 1, 1, false},
		{"stored after the damaged block", records / 2, 1, false},
		{"stored in the damaged block", 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := audit.Trail(t.Context(), js, fmt.Sprintf("01JQ4Z9A7B8C9D0E1F2G3H%04d", tc.msg))
			var inc *audit.IncompleteError
			if got := errors.As(err, &inc); got != tc.incomplete || err != nil && !got {
				t.Fatalf("Trail error %v: want an IncompleteError %v, and no other error", err, tc.incomplete)
			}
			if tc.incomplete && !strings.Contains(err.Error(), "files are damaged") {
				t.Errorf("error %q does not say the files are damaged", err)
			}
			if len(recs) != tc.recs {
				t.Errorf("%d records, want %d", len(recs), tc.recs)
			}
		})
	}
}

// TestScanHeadExpiredIsNotDamage: an audit stream an operator gave
// limits by hand (or let be purged) starts after sequence 1 because
// messages expired or were removed, not because the store lost them; a
// scan from the beginning reports no unreadable run and reads what is
// kept.
func TestScanHeadExpiredIsNotDamage(t *testing.T) {
	tests := []struct {
		name  string
		cfg   jetstream.StreamConfig
		purge bool
	}{
		{"a message limit", jetstream.StreamConfig{MaxMsgs: 10, DenyDelete: true, DenyPurge: true}, false},
		{"a byte limit", jetstream.StreamConfig{MaxBytes: 4_000, DenyDelete: true, DenyPurge: true}, false},
		{"purges allowed", jetstream.StreamConfig{DenyDelete: true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js, w := auditOf(t, tc.cfg, 30)
			if tc.purge {
				st, err := js.Stream(t.Context(), store.StreamAudit)
				if err != nil {
					t.Fatal(err)
				}
				if err := st.Purge(t.Context(), jetstream.WithPurgeKeep(10)); err != nil {
					t.Fatalf("purge: %v", err)
				}
			}
			state := auditState(t, js)
			if state.FirstSeq <= 1 {
				t.Fatalf("first sequence %d: the set-up should have dropped the head", state.FirstSeq)
			}
			var runs []audit.SeqRange
			read := 0
			opt := audit.ScanOptions{Unreadable: func(r audit.SeqRange) { runs = append(runs, r) }}
			if err := audit.ScanMessages(t.Context(), js, opt, func(audit.Position, string, []byte) error {
				read++
				return nil
			}); err != nil {
				t.Fatalf("ScanMessages: %v", err)
			}
			if len(runs) != 0 {
				t.Errorf("unreadable runs %v: want none, the head expired", runs)
			}
			if want := int(state.LastSeq - state.FirstSeq + 1); read != want {
				t.Errorf("read %d messages, want the %d kept", read, want)
			}

			// Verification: expired positions on a stream with limits
			// that refuses deletes and purges; missing where purges are
			// allowed, since anyone could have removed them.
			rep, err := audit.VerifyStream(t.Context(), js)
			if err != nil {
				t.Fatalf("VerifyStream: %v", err)
			}
			c := chainReport(t, rep, w.Chain())
			missing := slices.ContainsFunc(rep.Findings, func(f audit.Finding) bool { return f.Kind == audit.FindMissing && f.Seq == 1 })
			if tc.purge {
				if !missing || c.Expired != 0 {
					t.Errorf("findings %v, expired %d: want positions from 1 missing, none expired", rep.Findings, c.Expired)
				}
				return
			}
			if len(rep.Findings) != 0 || c.Expired == 0 || c.Expired+1 >= c.Last {
				t.Errorf("findings %v, expired 1-%d of %d: want no findings and the first positions expired", rep.Findings, c.Expired, c.Last)
			}
		})
	}
}

// TestScanDamageDroppedAsDeleted: the server turns what it cannot read
// of some damaged blocks (a compressed block zeroed, an uncompressed one
// cut short) into deleted sequences when it rebuilds the stream at
// start, and readers then pass over them as if nothing were there. The
// audit stream refuses deletes, so those sequences are damage: scans
// report them as unreadable and verification finds them unreadable
// (router.TestTrailDamageDroppedAsDeleted for trails).
func TestScanDamageDroppedAsDeleted(t *testing.T) {
	const records = 150
	tests := []struct {
		name   string
		comp   jetstream.StoreCompression
		damage jstest.Damage
	}{
		{"compressed block zeroed", jetstream.S2Compression, jstest.ZeroFill},
		{"uncompressed block cut short", jetstream.NoCompression, jstest.CutInHalf},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js, _ := damagedAuditWith(t, records, tc.comp, tc.damage)
			st, err := js.Stream(t.Context(), store.StreamAudit)
			if err != nil {
				t.Fatal(err)
			}
			// What the store cannot produce, asked message by message.
			var gone []audit.SeqRange
			for seq := uint64(1); seq <= records; seq++ {
				_, err := st.GetMsg(t.Context(), seq)
				switch {
				case errors.Is(err, jetstream.ErrMsgNotFound):
					if n := len(gone); n > 0 && gone[n-1].Last+1 == seq {
						gone[n-1].Last = seq
					} else {
						gone = append(gone, audit.SeqRange{First: seq, Last: seq})
					}
				case err != nil:
					t.Fatal(err)
				}
			}
			if len(gone) != 1 {
				t.Fatalf("the set-up lost %v: want one run", gone)
			}
			lost := gone[0]

			starts := []struct {
				name  string
				after uint64
				want  []audit.SeqRange
			}{
				{"from the first message", 0, gone},
				{"from just before the run", lost.First - 1, gone},
				{"from inside the run", lost.Last - 1, []audit.SeqRange{{First: lost.Last, Last: lost.Last}}},
				{"from just after the run", lost.Last, nil},
			}
			for _, s := range starts {
				if s.after == 0 && s.name != "from the first message" {
					continue // the run starts at 1: the same as from the first
				}
				t.Run(s.name, func(t *testing.T) {
					var runs []audit.SeqRange
					read := 0
					opt := audit.ScanOptions{AfterSeq: s.after, Unreadable: func(r audit.SeqRange) { runs = append(runs, r) }}
					if err := audit.ScanMessages(t.Context(), js, opt, func(audit.Position, string, []byte) error {
						read++
						return nil
					}); err != nil {
						t.Fatalf("ScanMessages: %v", err)
					}
					if !slices.Equal(runs, s.want) {
						t.Errorf("unreadable runs %v, want %v", runs, s.want)
					}
					want := records - int(s.after)
					for seq := max(lost.First, s.after+1); seq <= lost.Last; seq++ {
						want--
					}
					if read != want {
						t.Errorf("read %d messages, want %d", read, want)
					}
				})
			}

			rep, err := audit.VerifyStream(t.Context(), js)
			if err != nil {
				t.Fatalf("VerifyStream: %v", err)
			}
			if !slices.ContainsFunc(rep.Findings, func(f audit.Finding) bool {
				return f.Kind == audit.FindUnreadable && f.StreamSeq == lost.First
			}) {
				t.Errorf("findings %v: want messages from %d unreadable", rep.Findings, lost.First)
			}
			err = audit.ReadStream(t.Context(), js, func(audit.StoredMsg) {})
			if err == nil || !strings.Contains(err.Error(), "cannot read them") {
				t.Errorf("ReadStream = %v, want an error saying which messages cannot be read", err)
			}

		})
	}
}

// TestScanDroppedHeadWindow: on an audit stream that keeps everything
// (audit.KeepsEverything) but starts after sequence 1, the store lost
// the messages before its first (a damaged block it dropped), and a
// scan whose window reaches back before that first message reports
// them, wherever the window ends: even one that ends before the first
// message kept, whose records can only have been among those lost, is
// not an empty, complete answer. A window starting after the first
// message kept reports nothing.
func TestScanDroppedHeadWindow(t *testing.T) {
	cfg := jetstream.StreamConfig{MaxMsgs: 10, DenyDelete: true, DenyPurge: true}
	js, _ := auditOf(t, cfg, 30)
	cfg.Name, cfg.Subjects = store.StreamAudit, []string{store.SubjAudit + ".>"}
	// The head is gone and the limit lifted: the stream as Junction makes
	// it, starting after 1 as one whose store dropped a damaged head.
	cfg.MaxMsgs = -1
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	state := auditState(t, js)
	if state.FirstSeq <= 1 {
		t.Fatalf("first sequence %d: the set-up should have removed the head", state.FirstSeq)
	}
	head := []audit.SeqRange{{First: 1, Last: state.FirstSeq - 1}}
	tests := []struct {
		name     string
		from, to time.Time
		want     []audit.SeqRange
	}{
		{"the whole stream", time.Time{}, time.Time{}, head},
		{"ending before the first message kept", time.Time{}, state.FirstTime.Add(-time.Nanosecond), head},
		{"from and to before the first message kept", time.Unix(1, 0), state.FirstTime.Add(-time.Nanosecond), head},
		{"starting after the first message kept", state.FirstTime.Add(time.Nanosecond), time.Time{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var runs []audit.SeqRange
			opt := audit.ScanOptions{From: tc.from, To: tc.to, Unreadable: func(r audit.SeqRange) { runs = append(runs, r) }}
			if err := audit.ScanMessages(t.Context(), js, opt, func(audit.Position, string, []byte) error { return nil }); err != nil {
				t.Fatalf("ScanMessages: %v", err)
			}
			if !slices.Equal(runs, tc.want) {
				t.Errorf("unreadable runs %v, want %v", runs, tc.want)
			}
		})
	}
}

// auditOf is an audit stream of configuration cfg (its name and subjects
// set) on a server of the test's own, holding records messages of one
// record each, and the writer that wrote them.
func auditOf(t *testing.T, cfg jetstream.StreamConfig, records int) (jetstream.JetStream, *audit.Writer) {
	t.Helper()
	js := jstest.Start(t, "audit")
	cfg.Name, cfg.Subjects = store.StreamAudit, []string{store.SubjAudit + ".>"}
	if _, err := js.CreateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	return js, writeRecords(t, js, records)
}

// writeRecords writes records audit messages of one record each, and
// returns the writer, closed.
func writeRecords(t *testing.T, js jetstream.JetStream, records int) *audit.Writer {
	t.Helper()
	w := audit.NewWriter(js)
	for i := range records {
		id := fmt.Sprintf("01JQ4Z9A7B8C9D0E1F2G3H%04d", i)
		if err := w.Write(t.Context(), id, "", rec(id, audit.Received, i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	closeWriter(t, w)
	return w
}

// TestVerifyExpiredOnlyWhatLimitsRemoved: on an audit stream with limits
// that refuses deletes and purges, positions at the start of a chain
// are counted expired only as far as the stream's limits removed
// messages from its head: a stream that starts at sequence 1 expired
// nothing, so a chain that starts after position 1 there is missing
// positions (a copy restored without them, say), not expired ones; nor
// can more positions have expired than messages were removed.
func TestVerifyExpiredOnlyWhatLimitsRemoved(t *testing.T) {
	src, w := auditOf(t, jetstream.StreamConfig{DenyDelete: true, DenyPurge: true}, 30)
	var msgs []audit.StoredMsg
	if err := audit.ReadStream(t.Context(), src, func(m audit.StoredMsg) { msgs = append(msgs, m) }); err != nil {
		t.Fatal(err)
	}
	const skipped = 5 // the chain's first positions, left out of the copy
	tests := []struct {
		name        string
		maxMsgs     int64
		wantExpired uint64
	}{
		{"limits that removed nothing", -1, 0},
		{"limits that removed fewer messages than the positions left out", 20, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := jstest.Start(t, "copy")
			cfg := jetstream.StreamConfig{Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"},
				MaxAge: time.Hour, MaxMsgs: tc.maxMsgs, DenyDelete: true, DenyPurge: true}
			if _, err := js.CreateStream(t.Context(), cfg); err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs[skipped:] {
				if _, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := audit.VerifyStream(t.Context(), js)
			if err != nil {
				t.Fatalf("VerifyStream: %v", err)
			}
			c := chainReport(t, rep, w.Chain())
			missing := slices.ContainsFunc(rep.Findings, func(f audit.Finding) bool {
				return f.Kind == audit.FindMissing && f.Seq == 1 && f.Last >= skipped
			})
			if c.Expired != tc.wantExpired || !missing {
				t.Errorf("expired 1-%d, findings %v: want none expired and positions 1-%d or more missing", c.Expired, rep.Findings, skipped)
			}
		})
	}
}

// TestScanGoneRuns: sequences an audit stream as Junction makes it no
// longer has, wherever they are (the head, the middle, the end, all but
// one message, a window starting in or just after them), are each
// reported once as unreadable, and every message kept is read once. The
// stream is made by deleting messages before deletes are refused, as
// the server's rebuild of a damaged block leaves it.
func TestScanGoneRuns(t *testing.T) {
	const records = 20
	r := func(first, last uint64) audit.SeqRange { return audit.SeqRange{First: first, Last: last} }
	tests := []struct {
		name  string
		gone  []uint64
		after uint64
		want  []audit.SeqRange
	}{
		{"nothing gone", nil, 0, nil},
		{"the head", []uint64{1, 2, 3}, 0, []audit.SeqRange{r(1, 3)}},
		{"a window starting in the head", []uint64{1, 2, 3}, 1, []audit.SeqRange{r(2, 3)}},
		{"the middle", []uint64{8, 9, 10}, 0, []audit.SeqRange{r(8, 10)}},
		{"the end", []uint64{18, 19, 20}, 0, []audit.SeqRange{r(18, 20)}},
		{"the middle and the end", []uint64{5, 18, 19, 20}, 0, []audit.SeqRange{r(5, 5), r(18, 20)}},
		{"all but the last", []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, 0, []audit.SeqRange{r(1, 19)}},
		{"all but the first", []uint64{2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, 0, []audit.SeqRange{r(2, 20)}},
		{"all", []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, 0, []audit.SeqRange{r(1, 20)}},
		{"all, from a window starting in them", []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, 4, []audit.SeqRange{r(5, 20)}},
		{"a window starting at the run", []uint64{8, 9, 10}, 7, []audit.SeqRange{r(8, 10)}},
		{"a window starting in the run", []uint64{8, 9, 10}, 8, []audit.SeqRange{r(9, 10)}},
		{"a window starting just after the run", []uint64{8, 9, 10}, 10, nil},
		{"a window starting at the last message", []uint64{8, 9, 10}, records - 1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js, _ := auditOf(t, jetstream.StreamConfig{}, records)
			st, err := js.Stream(t.Context(), store.StreamAudit)
			if err != nil {
				t.Fatal(err)
			}
			for _, seq := range tc.gone {
				if err := st.DeleteMsg(t.Context(), seq); err != nil {
					t.Fatalf("deleting %d: %v", seq, err)
				}
			}
			cfg := st.CachedInfo().Config
			cfg.DenyDelete, cfg.DenyPurge = true, true
			if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
				t.Fatal(err)
			}
			var runs []audit.SeqRange
			var read []uint64
			opt := audit.ScanOptions{AfterSeq: tc.after, Unreadable: func(r audit.SeqRange) { runs = append(runs, r) }}
			if err := audit.ScanMessages(t.Context(), js, opt, func(p audit.Position, _ string, _ []byte) error {
				read = append(read, p.Seq)
				return nil
			}); err != nil {
				t.Fatalf("ScanMessages: %v", err)
			}
			if !slices.Equal(runs, tc.want) {
				t.Errorf("unreadable runs %v, want %v", runs, tc.want)
			}
			var want []uint64
			for seq := tc.after + 1; seq <= records; seq++ {
				if !slices.Contains(tc.gone, seq) {
					want = append(want, seq)
				}
			}
			if !slices.Equal(read, want) {
				t.Errorf("read %v, want %v", read, want)
			}
		})
	}
}

// TestScanDroppedHeadUnderDiscardNew: an audit stream with a count limit
// that refuses new messages (discard new) rather than removing old ones
// expires nothing, so a head the store dropped (its first block file
// gone) is reported as unreadable, not taken for expired.
func TestScanDroppedHeadUnderDiscardNew(t *testing.T) {
	js := jstest.DamagedStreamWith(t, jetstream.StreamConfig{
		Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, DenyDelete: true, DenyPurge: true,
		MaxMsgs: 100_000, Discard: jetstream.DiscardNew,
	}, func(path string, _ int64) error { return os.Remove(path) }, func(js jetstream.JetStream) { writeRecords(t, js, 150) })
	state := auditState(t, js)
	if state.FirstSeq <= 1 {
		t.Fatalf("first sequence %d: the set-up should have dropped the head", state.FirstSeq)
	}
	var runs []audit.SeqRange
	opt := audit.ScanOptions{Unreadable: func(r audit.SeqRange) { runs = append(runs, r) }}
	if err := audit.ScanMessages(t.Context(), js, opt, func(audit.Position, string, []byte) error { return nil }); err != nil {
		t.Fatalf("ScanMessages: %v", err)
	}
	if len(runs) != 1 || runs[0].First != 1 || runs[0].Last != state.FirstSeq-1 {
		t.Errorf("unreadable runs %v: want 1-%d, the head the store dropped", runs, state.FirstSeq-1)
	}
}

// TestVerifyExpiredAcrossChains: the messages an audit stream's limits
// removed from its head are shared by every chain, so the positions
// counted as expired at the starts of all chains together can be no
// more than those messages. Two chains each starting three positions
// in, on a stream whose limits removed four messages, cannot both have
// lost their first positions to the limits: positions are missing.
func TestVerifyExpiredAcrossChains(t *testing.T) {
	src := jstest.Start(t, "chains")
	cfg := jetstream.StreamConfig{Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, DenyDelete: true, DenyPurge: true}
	if _, err := src.CreateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	writeRecords(t, src, 10)
	writeRecords(t, src, 10)
	var msgs []audit.StoredMsg
	if err := audit.ReadStream(t.Context(), src, func(m audit.StoredMsg) { msgs = append(msgs, m) }); err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 20 {
		t.Fatalf("%d audit messages, want the two chains' 20", len(msgs))
	}
	const skipped, removed = 3, 4 // each chain's first positions left out; messages the limit removes
	js := jstest.Start(t, "copy")
	cfg.MaxMsgs = 2 * (10 - skipped)
	if _, err := js.CreateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	// Messages of no chain, stored first, for the limit to remove.
	for i := range removed {
		if _, err := js.Publish(t.Context(), store.SubjAudit+".filler", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range append(msgs[skipped:10:10], msgs[10+skipped:]...) {
		if _, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}); err != nil {
			t.Fatal(err)
		}
	}
	if first := auditState(t, js).FirstSeq; first != removed+1 {
		t.Fatalf("first sequence %d, want the limit to have removed the %d messages of no chain", first, removed)
	}
	rep, err := audit.VerifyStream(t.Context(), js)
	if err != nil {
		t.Fatalf("VerifyStream: %v", err)
	}
	var expired uint64
	for _, c := range rep.Chains {
		expired += c.Expired
	}
	if expired > removed || !slices.ContainsFunc(rep.Findings, func(f audit.Finding) bool { return f.Kind == audit.FindMissing }) {
		t.Errorf("%d positions expired in all, findings %v: want at most %d expired, and positions missing", expired, rep.Findings, removed)
	}
}

// TestScanSeveralDamagedRuns: a scan and a verify of an audit stream
// with two damaged blocks (the first and the third of four) report both
// runs of messages the store counts but cannot produce and read every
// message around them, learning each run from the store rather than
// waiting 5 s for messages that never come (fetches are counted: a
// reader waiting out the idle limit makes 50 per run).
func TestScanSeveralDamagedRuns(t *testing.T) {
	js := jstest.DamagedBlocks(t, jetstream.StreamConfig{
		Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, DenyDelete: true, DenyPurge: true, Compression: jetstream.S2Compression,
	}, jstest.CutInHalf, func(js jetstream.JetStream) { writeRecords(t, js, 220) }, 1, 3)
	st, err := js.Stream(t.Context(), store.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	last := st.CachedInfo().State.LastSeq
	const idleFetches = 50
	t.Run("scan", func(t *testing.T) {
		fc := &jstest.FetchCounter{Stream: st}
		var runs []audit.SeqRange
		var seqs []uint64
		start := time.Now()
		opt := audit.ScanOptions{Unreadable: func(r audit.SeqRange) { runs = append(runs, r) }}
		err := audit.ScanMessages(t.Context(), staleReplicaJS{js, fc}, opt, func(p audit.Position, _ string, _ []byte) error {
			seqs = append(seqs, p.Seq)
			return nil
		})
		t.Logf("scan of %d messages, runs %v: %v, %d fetches", last, runs, time.Since(start), fc.Fetches.Load())
		if err != nil {
			t.Fatalf("ScanMessages: %v", err)
		}
		if len(runs) != 2 || runs[0].First != 1 || runs[1].Last >= last {
			t.Fatalf("unreadable runs %v: want two, the first from 1, the second ending before %d", runs, last)
		}
		var want []uint64
		for seq := uint64(1); seq <= last; seq++ {
			if seq > runs[0].Last && seq < runs[1].First || seq > runs[1].Last {
				want = append(want, seq)
			}
		}
		if !slices.Equal(seqs, want) {
			t.Errorf("read %v, want every message outside the runs, once each, in order: %v", seqs, want)
		}
		if f := fc.Fetches.Load(); f >= idleFetches {
			t.Errorf("%d fetches: the scan waited for messages the store said it cannot produce", f)
		}
	})
	t.Run("verify", func(t *testing.T) {
		fc := &jstest.FetchCounter{Stream: st}
		start := time.Now()
		rep, err := audit.VerifyStream(t.Context(), staleReplicaJS{js, fc})
		if err != nil {
			t.Fatalf("VerifyStream: %v", err)
		}
		var unreadable int
		for _, f := range rep.Findings {
			if f.Kind == audit.FindUnreadable {
				unreadable++
			}
		}
		t.Logf("verify: %d unreadable findings, %v, %d fetches", unreadable, time.Since(start), fc.Fetches.Load())
		if unreadable != 2 {
			t.Errorf("findings %v: want two unreadable", rep.Findings)
		}
		if f := fc.Fetches.Load(); f >= idleFetches {
			t.Errorf("%d fetches: verify waited for messages the store said it cannot produce", f)
		}
	})
}

// TestTrailReadsPastItsDamagedRecords: the trail of a message with a
// record in a damaged block and others after it comes back incomplete
// with those after it. Before, the store's search by subject from the
// damaged block found nothing, and the trail came back empty.
func TestTrailReadsPastItsDamagedRecords(t *testing.T) {
	js, id := damagedTrail(t)
	recs, err := audit.Trail(t.Context(), js, id)
	var inc *audit.IncompleteError
	if !errors.As(err, &inc) {
		t.Fatalf("Trail error %v: want an IncompleteError", err)
	}
	if len(recs) != 2 || !recs[0].Time.Equal(at(damagedTrailMsgs-2)) || !recs[1].Time.Equal(at(damagedTrailMsgs-1)) {
		t.Errorf("trail %+v: want the two records stored after the damaged block", recs)
	}
}

// TestTrailReadPastDamageEndsAtItsLastRecord: the read past a damaged
// block for a trail's records stops at the last of them, not reading on
// to the end of the stream. The damaged record can never be read, so a
// read waiting to have them all went on to the end of the stream, as
// large as the audit trail ever written, at every read of such a trail.
func TestTrailReadPastDamageEndsAtItsLastRecord(t *testing.T) {
	const msgs, lastOfID = 1200, 100
	js, id := damagedTrailAt(t, msgs, 0, lastOfID-1, lastOfID)
	st, err := js.Stream(t.Context(), store.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	w := &jstest.FetchCounter{Stream: st}
	var n int
	err = audit.ReadSubject(t.Context(), w, audit.Subject(id), 3, func([]byte) (bool, error) { n++; return false, nil })
	var inc *audit.IncompleteError
	if !errors.As(err, &inc) || n != 2 {
		t.Fatalf("ReadSubject = %v, %d records: want an IncompleteError and the 2 after the damage", err, n)
	}
	// Readers fetch in batches, so some are given more than the trail's
	// last record, but not the whole stream.
	if got := w.Highest.Load(); got >= msgs {
		t.Errorf("readers were given stream sequence %d of %d: want the read to stop at %d, the trail's last", got, msgs, lastOfID+1)
	}
}

// unfilteredRefused is a stream that refuses to make unfiltered readers.
type unfilteredRefused struct{ jetstream.Stream }

func (s unfilteredRefused) OrderedConsumer(ctx context.Context, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	if len(cfg.FilterSubjects) == 0 {
		return nil, errors.New("refused")
	}
	return s.Stream.OrderedConsumer(ctx, cfg)
}

// TestTrailReadPastDamageFails: when the read past the damage for a
// trail's last records fails, the trail still comes back incomplete
// with what was read, not as an error alone.
func TestTrailReadPastDamageFails(t *testing.T) {
	js, id := damagedTrail(t)
	st, err := js.Stream(t.Context(), store.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	err = audit.ReadSubject(t.Context(), unfilteredRefused{st}, audit.Subject(id), 3, func([]byte) (bool, error) { return false, nil })
	var inc *audit.IncompleteError
	if !errors.As(err, &inc) || !strings.Contains(err.Error(), "past the damage") {
		t.Errorf("ReadSubject = %v, want an IncompleteError saying the read past the damage failed", err)
	}
}

// damagedTrailMsgs is how many audit messages damagedTrail writes.
const damagedTrailMsgs = 150

// damagedTrail is an audit stream whose first block was cut short
// (jstest.DamagedStream), and the id of a message with a record in that
// block and two after it.
func damagedTrail(t *testing.T) (jetstream.JetStream, string) {
	t.Helper()
	return damagedTrailAt(t, damagedTrailMsgs, 0, damagedTrailMsgs-2, damagedTrailMsgs-1)
}

// damagedTrailAt is an audit stream of msgs messages whose first block
// was cut short (jstest.DamagedStream), and the id of a message whose
// records are the messages at, in ascending order. Those after the last
// of them are small, on a subject of their own, for the stream to hold
// more than a reader's batch within jstest's size limit.
func damagedTrailAt(t *testing.T, msgs int, at ...int) (jetstream.JetStream, string) {
	t.Helper()
	const id = "01JQ4Z9A7B8C9D0E1F2G3HDAMG"
	js := jstest.DamagedStream(t, jetstream.StreamConfig{
		Name: store.StreamAudit, Subjects: []string{store.SubjAudit + ".>"}, DenyDelete: true, DenyPurge: true,
	}, func(js jetstream.JetStream) {
		for i := range msgs {
			if i > at[len(at)-1] {
				if _, err := js.Publish(t.Context(), store.SubjAudit+".f", []byte("x")); err != nil {
					t.Fatal(err)
				}
				continue
			}
			r := rec(fmt.Sprintf("01JQ4Z9A7B8C9D0E1F2G3H%04d", i), audit.Received, i)
			if slices.Contains(at, i) {
				r = rec(id, audit.Failed, i)
			}
			r.Reason = strings.Repeat("x", 250)
			data, err := json.Marshal([]audit.Record{r})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(t.Context(), audit.Subject(r.MessageID), data); err != nil {
				t.Fatal(err)
			}
		}
	})
	return js, id
}
