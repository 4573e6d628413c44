package audit_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/store"
)

// openJS opens an embedded store (real in-process JetStream, fsync on
// every write) in a temporary directory and returns its JetStream.
func openJS(t testing.TB) jetstream.JetStream {
	t.Helper()
	s, err := store.Open(context.Background(), store.DefaultConfig(), t.TempDir(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("opening store: %v", err)
	}
	t.Cleanup(s.Close)
	return s.JS
}

// base is a fixed instant; records are placed relative to it.
var base = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

func at(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }

func TestHash(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		// FIPS 180-2 test vectors.
		{"empty", nil, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", []byte("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"two blocks", []byte("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, audit.Hash(tc.in)); diff != "" {
				t.Errorf("Hash (-want +got):\n%s", diff)
			}
		})
	}
	// Different payloads, different hashes.
	if audit.Hash([]byte("MSH|a")) == audit.Hash([]byte("MSH|b")) {
		t.Error("Hash gives the same value for different input")
	}
}

func TestSubject(t *testing.T) {
	if got, want := audit.Subject("01JQ4Z9A7B8C9D0E1F2G3H4J5K"), "junction.audit.01JQ4Z9A7B8C9D0E1F2G3H4J5K"; got != want {
		t.Errorf("Subject = %q, want %q", got, want)
	}
}

// write is one stage's write of records for a message.
type write struct {
	id     string
	dedupe string
	async  bool
	recs   []audit.Record
}

func rec(id string, ev audit.Event, ms int) audit.Record {
	return audit.Record{Time: at(ms), MessageID: id, Event: ev}
}

func TestTrail(t *testing.T) {
	const (
		msgA = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
		msgB = "01JQ4Z9A7B8C9D0E1F2G3H4J5M"
	)
	full := audit.Record{
		Time: at(40), MessageID: msgA, Event: audit.Delivered, Source: "pas", Route: "adt-to-fhir-store",
		Destination: "fhir-store", Outcome: "ok", Reason: "stored", Code: "", Rule: "direct-care", Attempt: 2,
		Hash: audit.Hash([]byte("payload")), Stream: store.StreamOutbound, Seq: 17, Status: "201",
		Location: "Patient/1/_history/1", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
	}
	for _, tc := range []struct {
		name   string
		writes []write
		id     string
		want   []audit.Record
	}{
		{
			name: "stages out of order are sorted by time",
			writes: []write{
				{id: msgA, dedupe: "a-route", recs: []audit.Record{rec(msgA, audit.Translated, 20), rec(msgA, audit.Matched, 21), rec(msgA, audit.Queued, 22)}},
				{id: msgA, dedupe: "a-received", async: true, recs: []audit.Record{rec(msgA, audit.Received, 10)}},
				{id: msgA, dedupe: "a-delivered", recs: []audit.Record{full}},
			},
			id: msgA,
			want: []audit.Record{
				rec(msgA, audit.Received, 10), rec(msgA, audit.Translated, 20), rec(msgA, audit.Matched, 21),
				rec(msgA, audit.Queued, 22), full,
			},
		},
		{
			name: "only the asked message",
			writes: []write{
				{id: msgB, recs: []audit.Record{rec(msgB, audit.Received, 1)}},
				{id: msgA, recs: []audit.Record{rec(msgA, audit.Received, 2)}},
				{id: msgA + ".x", recs: []audit.Record{rec(msgA+".x", audit.Received, 3)}},
				{id: msgA + "0", recs: []audit.Record{rec(msgA+"0", audit.Received, 4)}},
				{id: msgB, async: true, recs: []audit.Record{rec(msgB, audit.Delivered, 5)}},
				{id: msgA, async: true, recs: []audit.Record{rec(msgA, audit.Filtered, 6)}},
			},
			id:   msgA,
			want: []audit.Record{rec(msgA, audit.Received, 2), rec(msgA, audit.Filtered, 6)},
		},
		{
			name: "equal times keep the written order",
			writes: []write{
				{id: msgA, recs: []audit.Record{rec(msgA, audit.Consent, 5), rec(msgA, audit.Transformed, 5)}},
				{id: msgA, recs: []audit.Record{rec(msgA, audit.Queued, 5)}},
			},
			id:   msgA,
			want: []audit.Record{rec(msgA, audit.Consent, 5), rec(msgA, audit.Transformed, 5), rec(msgA, audit.Queued, 5)},
		},
		{
			name:   "unknown message",
			writes: []write{{id: msgB, recs: []audit.Record{rec(msgB, audit.Received, 1)}}},
			id:     msgA,
			want:   nil,
		},
		{
			name:   "a wildcard id matches nothing",
			writes: []write{{id: msgA, recs: []audit.Record{rec(msgA, audit.Received, 1)}}, {id: msgB, recs: []audit.Record{rec(msgB, audit.Received, 1)}}},
			id:     "*",
			want:   nil,
		},
		{
			name:   "a full wildcard id matches nothing",
			writes: []write{{id: msgA, recs: []audit.Record{rec(msgA, audit.Received, 1)}}, {id: msgB, recs: []audit.Record{rec(msgB, audit.Received, 1)}}},
			id:     ">",
			want:   nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			js := openJS(t)
			w := audit.NewWriter(js)
			for i, wr := range tc.writes {
				if !wr.async {
					if err := w.Write(ctx, wr.id, wr.dedupe, wr.recs...); err != nil {
						t.Fatalf("write %d: %v", i, err)
					}
					continue
				}
				f, err := w.WriteAsync(wr.id, wr.dedupe, wr.recs...)
				if err != nil {
					t.Fatalf("async write %d: %v", i, err)
				}
				select {
				case <-f.Ok():
				case err := <-f.Err():
					t.Fatalf("async write %d: %v", i, err)
				}
			}
			got, err := audit.Trail(ctx, js, tc.id)
			if err != nil {
				t.Fatalf("Trail: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Trail(%q) (-want +got):\n%s", tc.id, diff)
			}
		})
	}
}

func TestTrailManyStages(t *testing.T) {
	// More stream messages for one id than a single small fetch would
	// return; every record comes back.
	const id = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
	ctx := t.Context()
	js := openJS(t)
	w := audit.NewWriter(js)
	var want []audit.Record
	var futures []jetstream.PubAckFuture
	for i := range 300 {
		r := rec(id, audit.Failed, i)
		r.Attempt = i + 1
		want = append(want, r)
		f, err := w.WriteAsync(id, "", r)
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("write %d: %v", i, err)
		}
	}
	got, err := audit.Trail(ctx, js, id)
	if err != nil {
		t.Fatalf("Trail: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Trail (-want +got):\n%s", diff)
	}
}

func TestWriteDedupe(t *testing.T) {
	const id = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
	for _, tc := range []struct {
		name    string
		keys    []string // one write of the same record per key
		async   bool
		wantRec int
	}{
		{"same key stored once", []string{"k1", "k1", "k1"}, false, 1},
		{"same key stored once async", []string{"k1", "k1"}, true, 1},
		{"different keys stored each", []string{"k1", "k2"}, false, 2},
		{"no key stored each time", []string{"", ""}, false, 2},
		{"mixed", []string{"k1", "", "k1", "k2", ""}, false, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			js := openJS(t)
			w := audit.NewWriter(js)
			r := rec(id, audit.Received, 1)
			for i, k := range tc.keys {
				if tc.async {
					f, err := w.WriteAsync(id, k, r)
					if err != nil {
						t.Fatalf("write %d: %v", i, err)
					}
					select {
					case <-f.Ok():
					case err := <-f.Err():
						t.Fatalf("write %d: %v", i, err)
					}
					continue
				}
				if err := w.Write(ctx, id, k, r); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			got, err := audit.Trail(ctx, js, id)
			if err != nil {
				t.Fatalf("Trail: %v", err)
			}
			if len(got) != tc.wantRec {
				t.Errorf("Trail has %d records, want %d", len(got), tc.wantRec)
			}
		})
	}
}

func TestWriteEmptyID(t *testing.T) {
	js := openJS(t)
	w := audit.NewWriter(js)
	r := rec("", audit.Received, 1)
	if err := w.Write(t.Context(), "", "k", r); err == nil {
		t.Error("Write with an empty message id succeeded")
	}
	if f, err := w.WriteAsync("", "k", r); err == nil {
		t.Errorf("WriteAsync with an empty message id succeeded (future %v)", f)
	}
}

func TestWriteStoreDown(t *testing.T) {
	s, err := store.Open(t.Context(), store.DefaultConfig(), t.TempDir(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	w := audit.NewWriter(s.JS)
	err = w.Write(t.Context(), "01JQ4Z9A7B8C9D0E1F2G3H4J5K", "", rec("01JQ4Z9A7B8C9D0E1F2G3H4J5K", audit.Received, 1))
	if err == nil {
		t.Fatal("Write succeeded on a closed store")
	}
	if !strings.HasPrefix(err.Error(), "writing audit records: ") {
		t.Errorf("error %q lacks context", err)
	}
}

func TestAuditStreamIsAppendOnly(t *testing.T) {
	const id = "01JQ4Z9A7B8C9D0E1F2G3H4J5K"
	ctx := t.Context()
	js := openJS(t)
	w := audit.NewWriter(js)
	want := []audit.Record{rec(id, audit.Received, 1), rec(id, audit.Delivered, 2)}
	for i, r := range want {
		if err := w.Write(ctx, id, fmt.Sprint("stage-", i), r); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, store.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		try  func() error
	}{
		{"delete message", func() error { return st.DeleteMsg(ctx, 1) }},
		{"secure delete message", func() error { return st.SecureDeleteMsg(ctx, 2) }},
		{"purge", func() error { return st.Purge(ctx) }},
		{"purge subject", func() error { return st.Purge(ctx, jetstream.WithPurgeSubject(audit.Subject(id))) }},
		{"purge keeping none", func() error { return st.Purge(ctx, jetstream.WithPurgeKeep(0)) }},
		{"purge up to sequence", func() error { return st.Purge(ctx, jetstream.WithPurgeSequence(3)) }},
		{"roll up the subject", func() error {
			m := nats.NewMsg(audit.Subject(id))
			m.Data = []byte("[]")
			m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
			_, err := js.PublishMsg(ctx, m)
			return err
		}},
		{"turn off deny delete", func() error {
			cfg := st.CachedInfo().Config
			cfg.DenyDelete = false
			_, err := js.UpdateStream(ctx, cfg)
			return err
		}},
		{"turn off deny purge", func() error {
			cfg := st.CachedInfo().Config
			cfg.DenyPurge = false
			_, err := js.UpdateStream(ctx, cfg)
			return err
		}},
		{"allow rollups", func() error {
			cfg := st.CachedInfo().Config
			cfg.AllowRollup = true
			_, err := js.UpdateStream(ctx, cfg)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.try(); err == nil {
				t.Error("succeeded on the audit stream")
			}
		})
	}
	got, err := audit.Trail(ctx, js, id)
	if err != nil {
		t.Fatalf("Trail: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Trail after the attempts (-want +got):\n%s", diff)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.AllowRollup || !info.Config.DenyDelete || !info.Config.DenyPurge {
		t.Errorf("audit stream config changed: rollup %v, deny delete %v, deny purge %v", info.Config.AllowRollup, info.Config.DenyDelete, info.Config.DenyPurge)
	}
}

func BenchmarkHash(b *testing.B) {
	payload := []byte(strings.Repeat("PID|1||9990000018^^^NHS^NH||TESTPATIENT^ALEX||19800101|U\r", 40))
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		audit.Hash(payload)
	}
}

func BenchmarkWriteAsync(b *testing.B) {
	js := openJS(b)
	w := audit.NewWriter(js)
	recs := []audit.Record{
		{Time: base, MessageID: "01JQ4Z9A7B8C9D0E1F2G3H4J5K", Event: audit.Translated, Route: "adt-to-fhir-store"},
		{Time: base, MessageID: "01JQ4Z9A7B8C9D0E1F2G3H4J5K", Event: audit.Matched, Route: "adt-to-fhir-store"},
		{Time: base, MessageID: "01JQ4Z9A7B8C9D0E1F2G3H4J5K", Event: audit.Queued, Destination: "fhir-store", Stream: store.StreamOutbound, Seq: 1},
	}
	for b.Loop() {
		if _, err := w.WriteAsync("01JQ4Z9A7B8C9D0E1F2G3H4J5K", "", recs...); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("async writes not acknowledged within a minute")
	}
}
