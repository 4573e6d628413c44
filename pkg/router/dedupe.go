package router

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/junction-fhir/junction/pkg/envelope"
)

// dedupeIndex remembers the messages accepted recently, by dedupe key, so
// the batch pipeline's accept stage recognises resends without a store
// write per message. Keys and content are kept as 64-bit hashes: a resend
// is only declared when both the key hash and the content hash match, so
// a collision cannot drop a different message (it would need both to
// collide). Entries leave after window or when the index holds max
// entries, oldest first.
//
// It is sized for a million keys, and all of it is plain memory the
// garbage collector need not scan: a 36-byte slot in a ring kept in the
// order added (the message id packed into 16 bytes, the time in seconds),
// and an open-addressed table of ring positions at most half full. About
// 44 bytes a key; a map from key hash to slot made it 76, and strings,
// times and a map of values 193. Near the engine's soft memory limit every
// byte the index holds makes the collector run more often.
type dedupeIndex struct {
	seed   maphash.Seed
	window time.Duration
	max    int
	// epoch is the Unix second the slots' times count from.
	epoch int64

	mu sync.Mutex
	// table holds, for each key, 1 + the ring position of its latest
	// slot (0: empty), open-addressed with linear probing by key hash;
	// its length is a power of two at least twice the ring's.
	table []uint32
	keys  int
	// ring holds n slots from head, oldest first, wrapping round; a slot
	// whose key was added again since is stale, and skipped as it leaves.
	ring    []dedupeSlot
	head, n int
	// oddIDs holds, by slot, the ids that are not in IDGen's form.
	oddIDs map[uint32]string
	// applied is the last accepted-batch stream sequence applied.
	applied uint64
}

// dedupeSlot is one added key. Its fields are 32-bit so that it packs
// into 36 bytes.
type dedupeSlot struct {
	key     [2]uint32
	content [2]uint32
	at      int32 // seconds from the index's epoch
	id      [16]byte
}

func split64(v uint64) [2]uint32 { return [2]uint32{uint32(v >> 32), uint32(v)} }

func join64(v [2]uint32) uint64 { return uint64(v[0])<<32 | uint64(v[1]) }

// newDedupeIndex returns an index holding keys for window, and at most
// maxKeys (at least one) of them.
func newDedupeIndex(window time.Duration, maxKeys int) *dedupeIndex {
	return &dedupeIndex{
		seed: maphash.MakeSeed(), window: window, max: max(maxKeys, 1),
		// Slots added from a rebuild are up to a window older than now.
		epoch:  time.Now().Add(-window).Unix() - 1,
		oddIDs: map[uint32]string{},
	}
}

// dedupeKeyOf is the key a message is deduplicated by.
func dedupeKeyOf(env *envelope.Envelope) string {
	if env.DedupeKey != "" {
		return env.DedupeKey
	}
	return env.ID
}

// contentHash hashes what makes two messages the same message (see
// resendContent: for HL7 v2 the segments after MSH).
func (x *dedupeIndex) contentHash(env *envelope.Envelope) uint64 {
	return maphash.Bytes(x.seed, resendContent(env.ContentType, env.Raw))
}

// seconds returns t as seconds from the epoch, clamped to 32 bits: a time
// so far out only expires early or late, never wrongly matches.
func (x *dedupeIndex) seconds(t time.Time) int32 {
	return int32(min(max(t.Unix()-x.epoch, math.MinInt32), math.MaxInt32))
}

// lookup returns the id stored under key and whether its content hash
// equals content.
func (x *dedupeIndex) lookup(key string, content uint64) (id string, same, found bool) {
	h := maphash.String(x.seed, key)
	x.mu.Lock()
	defer x.mu.Unlock()
	i, ok := x.findLocked(h)
	if !ok {
		return "", false, false
	}
	p := x.table[i] - 1
	return x.idAt(p), join64(x.ring[p].content) == content, true
}

// findLocked returns the table index holding key h, or false.
func (x *dedupeIndex) findLocked(h uint64) (int, bool) {
	if len(x.table) == 0 {
		return 0, false
	}
	mask := len(x.table) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		e := x.table[i]
		if e == 0 {
			return i, false
		}
		if join64(x.ring[e-1].key) == h {
			return i, true
		}
	}
}

// latestLocked reports whether ring position p is its key's latest slot,
// and if so the table index pointing at it.
func (x *dedupeIndex) latestLocked(p int) (int, bool) {
	i, ok := x.findLocked(join64(x.ring[p].key))
	return i, ok && int(x.table[i])-1 == p
}

// putLocked points key h at ring position p, replacing its earlier slot.
func (x *dedupeIndex) putLocked(h uint64, p uint32) {
	i, ok := x.findLocked(h)
	if !ok {
		x.keys++
	}
	x.table[i] = p + 1
}

// removeLocked removes table index i, moving back the entries after it
// that probed past it (no tombstones, so lookups stay short).
func (x *dedupeIndex) removeLocked(i int) {
	mask := len(x.table) - 1
	x.keys--
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		e := x.table[j]
		if e == 0 {
			break
		}
		home := int(join64(x.ring[e-1].key)) & mask
		// The entry at j may fill the hole at i unless its home lies
		// cyclically after i and at or before j.
		if (j-home)&mask >= (j-i)&mask {
			x.table[i] = e
			i = j
		}
	}
	x.table[i] = 0
}

// add records key as accepted under id.
func (x *dedupeIndex) add(key, id string, content uint64, at time.Time) {
	h := maphash.String(x.seed, key)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.n == len(x.ring) {
		if len(x.ring) < x.max {
			x.growLocked()
		} else {
			x.dropHeadLocked()
		}
	}
	p := uint32((x.head + x.n) % len(x.ring))
	s := dedupeSlot{key: split64(h), content: split64(content), at: x.seconds(at)}
	if packed, ok := packID(id); ok {
		s.id = packed
	} else {
		x.oddIDs[p] = id
	}
	x.ring[p] = s
	x.n++
	x.putLocked(h, p)
	x.expireLocked(time.Now())
}

// idAt returns the id of slot p.
func (x *dedupeIndex) idAt(p uint32) string {
	if id, ok := x.oddIDs[p]; ok {
		return id
	}
	return unpackID(x.ring[p].id)
}

// expireLocked drops the slots older than the window from the head. A
// slot is kept for at least the window, and at most a second more.
func (x *dedupeIndex) expireLocked(now time.Time) {
	oldest := x.seconds(now.Add(-x.window))
	for x.n > 0 {
		if x.ring[x.head].at >= oldest {
			if _, latest := x.latestLocked(x.head); latest {
				break
			}
		}
		x.dropHeadLocked()
	}
}

// dropHeadLocked removes the oldest slot, and its key unless the key was
// added again since.
func (x *dedupeIndex) dropHeadLocked() {
	if i, latest := x.latestLocked(x.head); latest {
		x.removeLocked(i)
	}
	delete(x.oddIDs, uint32(x.head))
	x.head = (x.head + 1) % len(x.ring)
	x.n--
}

// growLocked makes the full ring larger (up to max), oldest slot first,
// and the table to match.
func (x *dedupeIndex) growLocked() {
	ring := make([]dedupeSlot, min(max(2*len(x.ring), 1024), x.max))
	odd := map[uint32]string{}
	for i := range x.n {
		old := (x.head + i) % len(x.ring)
		ring[i] = x.ring[old]
		if id, ok := x.oddIDs[uint32(old)]; ok {
			odd[uint32(i)] = id
		}
	}
	x.ring, x.oddIDs, x.head = ring, odd, 0
	size := 1
	for size < 2*len(ring) {
		size <<= 1
	}
	// Slots are in the order added, so putting each in turn leaves every
	// key at its latest.
	x.table, x.keys = make([]uint32, size), 0
	for i := range x.n {
		x.putLocked(join64(ring[i].key), uint32(i))
	}
}

// size returns the number of keys held.
func (x *dedupeIndex) size() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.keys
}

// packID packs an id made by IDGen (26 of Crockford's base32 digits, the
// first below 4, so 128 bits) into 16 bytes.
func packID(id string) ([16]byte, bool) {
	var out [16]byte
	if len(id) != 26 {
		return out, false
	}
	var hi, lo uint64
	for i := range 26 {
		d := strings.IndexByte(crockford, id[i])
		if d < 0 || i == 0 && d > 3 {
			return out, false
		}
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(d)
	}
	binary.BigEndian.PutUint64(out[:8], hi)
	binary.BigEndian.PutUint64(out[8:], lo)
	return out, true
}

// unpackID reverses packID.
func unpackID(b [16]byte) string {
	return encodeID(binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:]))
}

// appliedSeq returns the last accepted-batch sequence applied.
func (x *dedupeIndex) appliedSeq() uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.applied
}

// setApplied records that every accepted batch up to seq is applied.
func (x *dedupeIndex) setApplied(seq uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if seq > x.applied {
		x.applied = seq
	}
}
