package router

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"

	"github.com/junction-fhir/junction/pkg/envelope"
)

func TestOutBatchRoundTrip(t *testing.T) {
	h := func(id, dest string) nats.Header {
		x := nats.Header{}
		x.Set(envelope.HeaderID, id)
		x.Set(envelope.HeaderDestination, dest)
		return x
	}
	tests := []struct {
		name    string
		entries []outEntry
	}{
		{"one", []outEntry{{h: h("A", "ehr"), body: []byte(`{"resourceType":"Bundle"}`)}}},
		{"empty and large bodies", []outEntry{
			{h: h("A", "ehr"), body: []byte{}},
			{h: h("B", "file"), body: bytes.Repeat([]byte("y"), 200000)},
			{h: nats.Header{}, body: []byte{0, 0xff}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := encodeOutBatch(nil, tt.entries)
			if err != nil {
				t.Fatal(err)
			}
			// A batch stored by an earlier version, uncompressed, still
			// decodes.
			frames := make([]frame, len(tt.entries))
			for i, e := range tt.entries {
				h, err := json.Marshal(e.h)
				if err != nil {
					t.Fatal(err)
				}
				frames[i] = frame{meta: h, payload: e.body}
			}
			plain := appendFrames(nil, outBatchMagic, frames)
			for _, data := range [][]byte{data, plain} {
				got, err := decodeOutBatch(data)
				if err != nil {
					t.Fatalf("%.4s: %v", data, err)
				}
				if len(got) != len(tt.entries) {
					t.Fatalf("%.4s: decoded %d entries, want %d", data, len(got), len(tt.entries))
				}
				for i := range got {
					if diff := cmp.Diff(tt.entries[i].h, got[i].h); diff != "" {
						t.Errorf("%.4s: entry %d headers (-want +got):\n%s", data, i, diff)
					}
					if !bytes.Equal(got[i].body, tt.entries[i].body) {
						t.Errorf("%.4s: entry %d body differs", data, i)
					}
				}
			}
		})
	}
}

// TestOutBatchCompresses checks that FHIR JSON is stored compressed: the
// point of the format is a smaller outbound stream.
func TestOutBatchCompresses(t *testing.T) {
	body, err := os.ReadFile("../../routes/testdata/adt_a01.fhir-store.json")
	if err != nil {
		t.Fatal(err)
	}
	entries := make([]outEntry, 16)
	for i := range entries {
		entries[i] = outEntry{h: nats.Header{envelope.HeaderID: {fmt.Sprint("M", i)}}, body: body}
	}
	data, err := encodeOutBatch(nil, entries)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte(outBatchCompressedMagic)) {
		t.Errorf("batch starts %q, want the compressed format", data[:4])
	}
	if raw := 16 * len(body); len(data)*3 > raw {
		t.Errorf("16 bundles of %d bytes stored in %d bytes, want under a third", len(body), len(data))
	}
}

// TestBatchFormat checks both outcomes of encoding a batch: compressed
// behind the second magic, or the frames unchanged when compressing would
// not make them smaller; that either reads back; and that the entry
// count, which sizes spans, reads from either without decoding.
func TestBatchFormat(t *testing.T) {
	adt := sampleADT(t)
	random := randomBytes(rand.New(rand.NewPCG(1, 2)), 4096)
	tests := []struct {
		name       string
		payloads   [][]byte
		compressed bool
	}{
		{"eight ADT messages", [][]byte{adt, adt, adt, adt, adt, adt, adt, adt}, true},
		{"random bytes", [][]byte{random}, false},
		{"tiny", [][]byte{[]byte("abc")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var frames []frame
			for _, p := range tt.payloads {
				frames = append(frames, frame{meta: []byte(`{"id":"A"}`), payload: p})
			}
			plain := appendFrames(nil, batchMagic, frames)
			stored := ingestFormat.encode(frames)
			if got := bytes.HasPrefix(stored, []byte(batchCompressedMagic)); got != tt.compressed {
				t.Errorf("compressed = %v, want %v (%d bytes from %d)", got, tt.compressed, len(stored), len(plain))
			}
			if len(stored) > len(plain) {
				t.Errorf("stored %d bytes, more than the %d of the frames", len(stored), len(plain))
			}
			if got := ingestFormat.count(stored); got != len(frames) {
				t.Errorf("count = %d, want %d", got, len(frames))
			}
			back, err := ingestFormat.decode(stored, maxBatchCount)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(frames, back, cmp.AllowUnexported(frame{})); diff != "" {
				t.Errorf("frames after the round trip (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBatchEncodeOwnsItsResult encodes batches one after another, both
// compressed and left framed, and checks each earlier result is unchanged:
// encoding reuses scratch memory, and a result still being published
// must not be part of it.
func TestBatchEncodeOwnsItsResult(t *testing.T) {
	adt := sampleADT(t)
	rng := rand.New(rand.NewPCG(3, 4))
	var kept [][]byte
	var want [][]frame
	for i := range 20 {
		payload := bytes.Clone(adt)
		if i%2 == 1 {
			payload = randomBytes(rng, 4096) // stored framed, not compressed
		}
		frames := []frame{{meta: []byte(`{"id":"` + strconv.Itoa(i) + `"}`), payload: payload}}
		kept = append(kept, ingestFormat.encode(frames))
		want = append(want, frames)
	}
	for i, data := range kept {
		got, err := ingestFormat.decode(data, maxBatchCount)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if diff := cmp.Diff(want[i], got, cmp.AllowUnexported(frame{})); diff != "" {
			t.Fatalf("batch %d changed after later batches were encoded (-want +got):\n%s", i, diff)
		}
	}
}

// TestBatchCount checks the count a span is sized by, for batches that
// cannot be read too.
func TestBatchCount(t *testing.T) {
	adt := sampleADT(t)
	three := ingestFormat.encode([]frame{{payload: adt}, {payload: adt}, {payload: adt}})
	plain := appendFrames(nil, batchMagic, []frame{{payload: []byte("a")}, {payload: []byte("b")}})
	tests := []struct {
		name string
		data []byte
		want int
	}{
		{"compressed", three, 3},
		{"plain", plain, 2},
		{"other magic", append([]byte(outBatchCompressedMagic), three[4:]...), 1},
		{"empty", nil, 1},
		{"no count", []byte(batchCompressedMagic), 1},
		{"zero count", append([]byte(batchCompressedMagic), 0), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ingestFormat.count(tt.data); got != tt.want {
				t.Errorf("count = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestDecodeOutBatchRejectsDamage(t *testing.T) {
	good, err := encodeOutBatch(nil, []outEntry{{h: nats.Header{"A": {"1"}}, body: bytes.Repeat([]byte("body "), 100)}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"wrong magic", append([]byte("JGC1"), good[4:]...)},
		{"truncated", good[:len(good)-2]},
		{"trailing bytes", append(append([]byte{}, good...), 'x')},
		{"count larger than data", append([]byte(outBatchMagic), 0xff, 0xff, 0x03)},
		{"headers not JSON", append([]byte(outBatchMagic), 1, 2, '{', '{', 0)},
		{"compressed, not S2", append([]byte(outBatchCompressedMagic), 1, 3, 'a', 'b', 'c')},
		{"compressed, claiming too much", append([]byte(outBatchCompressedMagic), append([]byte{1}, binary.AppendUvarint(nil, maxBatchPlain+1)...)...)},
		{"compressed, wrong inner magic", append([]byte(outBatchCompressedMagic), append([]byte{1}, s2.Encode(nil, append([]byte("JGC1"), 0))...)...)},
		{"compressed, count not the frames'", recount(t, good, 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeOutBatch(tt.data); err == nil {
				t.Error("damaged batch decoded without error")
			}
		})
	}
}

func TestIDTime(t *testing.T) {
	var g IDGen
	before := time.Now().Add(-time.Millisecond)
	id := g.New()
	after := time.Now().Add(time.Millisecond)
	got, ok := IDTime(id)
	if !ok {
		t.Fatalf("IDTime(%q) not recognised", id)
	}
	if got.Before(before.Truncate(time.Millisecond)) || got.After(after) {
		t.Errorf("IDTime = %v, want between %v and %v", got, before, after)
	}
	for _, bad := range []string{"", "short", "01TESTMSG", "UUUUUUUUUUUUUUUUUUUUUUUUUU", "0123456789ABCDEFGHJKMNPQR!"} {
		if _, ok := IDTime(bad); ok {
			t.Errorf("IDTime(%q) accepted a non-id", bad)
		}
	}
}

func TestDedupeIndex(t *testing.T) {
	now := time.Now()
	hl7 := func(id, key, body string) *envelope.Envelope {
		return &envelope.Envelope{ID: id, DedupeKey: key, ContentType: envelope.ContentTypeHL7v2, Raw: []byte(body)}
	}
	tests := []struct {
		name      string
		window    time.Duration
		max       int
		stored    []*envelope.Envelope
		at        time.Time
		probe     *envelope.Envelope
		wantFound bool
		wantSame  bool
		wantID    string
	}{
		{"resend with a rebuilt MSH is the same message", time.Hour, 10,
			[]*envelope.Envelope{hl7("A", "k1", "MSH|1\rPID|x")}, now, hl7("B", "k1", "MSH|2\rPID|x"), true, true, "A"},
		{"reused key with other content is found but not the same", time.Hour, 10,
			[]*envelope.Envelope{hl7("A", "k1", "MSH|1\rPID|x")}, now, hl7("B", "k1", "MSH|1\rPID|y"), true, false, "A"},
		{"unknown key", time.Hour, 10,
			[]*envelope.Envelope{hl7("A", "k1", "MSH|1\rPID|x")}, now, hl7("B", "k2", "MSH|1\rPID|x"), false, false, ""},
		{"key without dedupe key uses the id", time.Hour, 10,
			[]*envelope.Envelope{{ID: "A", ContentType: envelope.ContentTypeFHIR, Raw: []byte("{}")}}, now,
			&envelope.Envelope{ID: "A", ContentType: envelope.ContentTypeFHIR, Raw: []byte("{}")}, true, true, "A"},
		{"expired after the window", time.Minute, 10,
			[]*envelope.Envelope{hl7("A", "k1", "MSH|1\rPID|x"), hl7("C", "k3", "MSH|1\rPID|z")}, now.Add(-2 * time.Minute), hl7("B", "k1", "MSH|1\rPID|x"), false, false, ""},
		{"oldest evicted beyond max", time.Hour, 2,
			[]*envelope.Envelope{hl7("A", "k1", "MSH|1\rPID|x"), hl7("C", "k2", "MSH|1\rPID|y"), hl7("D", "k3", "MSH|1\rPID|z")}, now, hl7("B", "k1", "MSH|1\rPID|x"), false, false, ""},
		{"newest kept beyond max", time.Hour, 2,
			[]*envelope.Envelope{hl7("A", "k1", "MSH|1\rPID|x"), hl7("C", "k2", "MSH|1\rPID|y"), hl7("D", "k3", "MSH|1\rPID|z")}, now, hl7("E", "k3", "MSH|9\rPID|z"), true, true, "D"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newDedupeIndex(tt.window, tt.max)
			for _, env := range tt.stored {
				x.add(dedupeKeyOf(env), env.ID, x.contentHash(env), tt.at)
			}
			// Expiry runs on add; add an unrelated key now.
			x.add("unrelated", "Z", 0, now)
			id, same, found := x.lookup(dedupeKeyOf(tt.probe), x.contentHash(tt.probe))
			if found != tt.wantFound || same != tt.wantSame || id != tt.wantID {
				t.Errorf("lookup = (%q, same %v, found %v), want (%q, %v, %v)", id, same, found, tt.wantID, tt.wantSame, tt.wantFound)
			}
			if x.size() > tt.max {
				t.Errorf("index holds %d keys, more than max %d", x.size(), tt.max)
			}
		})
	}
}

// TestPackID checks that the dedupe index keeps every id exactly: IDGen's
// packed into 16 bytes, any other as it is.
func TestPackID(t *testing.T) {
	g := &IDGen{}
	tests := []struct {
		name   string
		id     string
		packed bool
	}{
		{"made by IDGen", g.New(), true},
		{"largest", "3ZZZZZZZZZZZZZZZZZZZZZZZZZ", true},
		{"smallest", "00000000000000000000000000", true},
		{"more than 128 bits", "4ZZZZZZZZZZZZZZZZZZZZZZZZZ", false},
		{"lower case", "01jd0000000000000000000000", false},
		{"not Crockford's digits", "01JD00000000000000000000IU", false},
		{"too short", "01JD", false},
		{"a caller's own id", "msg-1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, ok := packID(tt.id)
			if ok != tt.packed {
				t.Fatalf("packID(%q) ok = %v, want %v", tt.id, ok, tt.packed)
			}
			if ok && unpackID(b) != tt.id {
				t.Errorf("unpackID(packID(%q)) = %q", tt.id, unpackID(b))
			}
			x := newDedupeIndex(time.Hour, 10)
			x.add("k", tt.id, 7, time.Now())
			if id, same, found := x.lookup("k", 7); !found || !same || id != tt.id {
				t.Errorf("lookup = (%q, %v, %v), want (%q, true, true)", id, same, found, tt.id)
			}
		})
	}
}

// TestDedupeIndexKeepsIDsAcrossGrowth adds more keys than the ring first
// holds, with ids of both kinds, some keys twice, and checks every key
// still gives its latest id.
func TestDedupeIndexKeepsIDsAcrossGrowth(t *testing.T) {
	g := &IDGen{}
	x := newDedupeIndex(time.Hour, 5000)
	want := map[string]string{}
	now := time.Now()
	for i := range 3000 {
		key := "k" + strconv.Itoa(i%2500)
		id := g.New()
		if i%7 == 0 {
			id = "caller-" + strconv.Itoa(i)
		}
		x.add(key, id, uint64(i%2500), now)
		want[key] = id
	}
	if x.size() != len(want) {
		t.Fatalf("index holds %d keys, want %d", x.size(), len(want))
	}
	for key, id := range want {
		if got, _, found := x.lookup(key, 0); !found || got != id {
			t.Fatalf("lookup(%s) = %q (found %v), want %q", key, got, found, id)
		}
	}
}

// TestDedupeIndexWrapsAtMax adds three times max keys, some ids not
// IDGen's, and checks that exactly the last max are kept with their ids.
func TestDedupeIndexWrapsAtMax(t *testing.T) {
	const max = 1500
	x := newDedupeIndex(time.Hour, max)
	now := time.Now()
	id := func(i int) string {
		if i%3 == 0 {
			return "caller-" + strconv.Itoa(i)
		}
		return fmt.Sprintf("01JD%022d", i)
	}
	for i := range 3 * max {
		x.add("k"+strconv.Itoa(i), id(i), 1, now)
	}
	if x.size() != max || len(x.oddIDs) != max/3 {
		t.Fatalf("index holds %d keys and %d other ids, want %d and %d", x.size(), len(x.oddIDs), max, max/3)
	}
	for i := range 3 * max {
		got, _, found := x.lookup("k"+strconv.Itoa(i), 1)
		if kept := i >= 2*max; found != kept || kept && got != id(i) {
			t.Fatalf("key %d: lookup = %q (found %v), want kept %v with %q", i, got, found, kept, id(i))
		}
	}
}

func TestDedupeIndexReaddKeepsKeyAlive(t *testing.T) {
	x := newDedupeIndex(time.Minute, 100)
	old := time.Now().Add(-2 * time.Minute)
	x.add("k", "A", 1, old)
	x.add("k", "A", 1, time.Now())
	if _, _, found := x.lookup("k", 1); !found {
		t.Error("a key added again within the window expired with its first addition")
	}
}

// recount returns the compressed batch data with its declared count set
// to n.
func recount(t *testing.T, data []byte, n uint64) []byte {
	t.Helper()
	if !bytes.HasPrefix(data, []byte(outBatchCompressedMagic)) {
		t.Fatalf("batch %.4s is not compressed", data)
	}
	_, k := binary.Uvarint(data[4:])
	out := binary.AppendUvarint([]byte(outBatchCompressedMagic), n)
	return append(out, data[4+k:]...)
}

// TestDedupeIndexMatchesModel adds keys at random from a pool a little
// larger than max, many added again, and checks the index against the
// rule it keeps: a key is found, with its latest id and content, exactly
// when its latest addition is among the last max additions. With the
// table at most half full this exercises probing and the moving back of
// entries on removal.
func TestDedupeIndexMatchesModel(t *testing.T) {
	const max, pool, adds = 500, 700, 20000
	rng := rand.New(rand.NewPCG(1, 2))
	g := &IDGen{}
	x := newDedupeIndex(time.Hour, max)
	type entry struct {
		at      int // position in the sequence of additions
		id      string
		content uint64
	}
	latest := map[string]entry{}
	now := time.Now()
	check := func(done int) {
		t.Helper()
		held := 0
		for k := range pool {
			key := "k" + strconv.Itoa(k)
			e, added := latest[key]
			want := added && e.at >= done-max
			if want {
				held++
			}
			id, same, found := x.lookup(key, e.content)
			if found != want || want && (id != e.id || !same) {
				t.Fatalf("after %d additions, key %s: lookup = (%q, same %v, found %v), want found %v with %q", done, key, id, same, found, want, e.id)
			}
		}
		if x.size() != held {
			t.Fatalf("after %d additions the index holds %d keys, want %d", done, x.size(), held)
		}
	}
	for i := range adds {
		key := "k" + strconv.Itoa(rng.IntN(pool))
		id := g.New()
		if rng.IntN(5) == 0 {
			id = "caller-" + strconv.Itoa(i)
		}
		content := rng.Uint64()
		x.add(key, id, content, now)
		latest[key] = entry{at: i, id: id, content: content}
		if i%997 == 0 || i == adds-1 {
			check(i + 1)
		}
	}
}

// TestDedupeIndexExpiry checks the window's edge: a key is kept for at
// least the window, and leaves within a second or so after it.
func TestDedupeIndexExpiry(t *testing.T) {
	const window = time.Hour
	now := time.Now()
	tests := []struct {
		name string
		age  time.Duration
		kept bool
	}{
		{"just added", 0, true},
		{"two seconds inside the window", window - 2*time.Second, true},
		{"two seconds past the window", window + 2*time.Second, false},
		{"a day old", 24 * time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newDedupeIndex(window, 10)
			x.add("k", "A", 1, now.Add(-tt.age))
			x.add("unrelated", "B", 2, now) // expiry runs on add
			if _, _, found := x.lookup("k", 1); found != tt.kept {
				t.Errorf("found = %v, want %v", found, tt.kept)
			}
		})
	}
}

// BenchmarkDedupeIndexMemory fills an index to its full size and reports
// the heap it holds per key.
func BenchmarkDedupeIndexMemory(b *testing.B) {
	g := &IDGen{}
	ids := make([]string, dedupeMaxKeys)
	keys := make([]string, dedupeMaxKeys)
	for i := range ids {
		ids[i], keys[i] = g.New(), "PAS|TRUST|"+strconv.Itoa(i)
	}
	now := time.Now()
	var perKey float64
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		x := newDedupeIndex(time.Hour, dedupeMaxKeys)
		for i := range ids {
			x.add(keys[i], ids[i], uint64(i), now)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if x.size() != dedupeMaxKeys {
			b.Fatalf("index holds %d keys, want %d", x.size(), dedupeMaxKeys)
		}
		perKey = float64(after.HeapAlloc-before.HeapAlloc) / dedupeMaxKeys
		runtime.KeepAlive(x)
	}
	b.ReportMetric(perKey, "bytes/key")
}

// BenchmarkBatchEncode encodes an accepted batch of 64 ADT messages, as
// the accept stage writes them under load.
func BenchmarkBatchEncode(b *testing.B) {
	adt := sampleADT(b)
	frames := make([]frame, 64)
	for i := range frames {
		frames[i] = frame{meta: []byte(`{"id":"01JD` + strconv.Itoa(i) + `","src":"pas"}`), payload: adt}
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(ingestFormat.encode(frames)) == 0 {
			b.Fatal("empty batch")
		}
	}
}

// sampleADT returns the shipped routes' sample ADT^A01.
func sampleADT(tb testing.TB) []byte {
	tb.Helper()
	adt, err := os.ReadFile("../../routes/testdata/adt_a01.hl7")
	if err != nil {
		tb.Fatal(err)
	}
	return adt
}

// randomBytes returns n bytes from rng, which do not compress.
func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestDedupeIndexKeepsForTheWindow: a key is kept for the whole dedupe
// window, up to and including the second it ends, and gone a second
// after: a resend at the window's end is still recognised.
func TestDedupeIndexKeepsForTheWindow(t *testing.T) {
	const window = time.Minute
	x := newDedupeIndex(window, 10)
	env := &envelope.Envelope{ID: "A", DedupeKey: "k1", ContentType: envelope.ContentTypeHL7v2, Raw: []byte("MSH|1\rPID|x")}
	at := time.Now()
	x.add(dedupeKeyOf(env), env.ID, x.contentHash(env), at)
	for _, tt := range []struct {
		after time.Duration
		kept  bool
	}{
		{window, true},
		{window + 2*time.Second, false},
	} {
		x.mu.Lock()
		x.expireLocked(at.Add(tt.after))
		x.mu.Unlock()
		if _, _, found := x.lookup("k1", x.contentHash(env)); found != tt.kept {
			t.Errorf("%v after it was added, key found %v, want %v", tt.after, found, tt.kept)
		}
	}
}
