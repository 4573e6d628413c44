package router

import (
	"encoding/binary"
	"hash/maphash"
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
// It is sized for a million keys, so each costs little: a 40-byte slot in
// a ring kept in the order added (the message id packed into 16 bytes),
// and a map from key hash to slot. About 76 bytes a key in all, where
// strings, times and a map of values took 193.
type dedupeIndex struct {
	seed   maphash.Seed
	window time.Duration
	max    int

	mu sync.Mutex
	// slot maps a key hash to its latest slot in ring.
	slot map[uint64]uint32
	// ring holds n slots from head, oldest first, wrapping round; a slot
	// whose key was added again since is stale, and skipped as it leaves.
	ring    []dedupeSlot
	head, n int
	// oddIDs holds, by slot, the ids that are not in IDGen's form.
	oddIDs map[uint32]string
	// applied is the last accepted-batch stream sequence applied.
	applied uint64
}

type dedupeSlot struct {
	key     uint64
	content uint64
	at      int64 // Unix nanoseconds
	id      [16]byte
}

// newDedupeIndex returns an index holding keys for window, and at most
// maxKeys (at least one) of them.
func newDedupeIndex(window time.Duration, maxKeys int) *dedupeIndex {
	return &dedupeIndex{seed: maphash.MakeSeed(), window: window, max: max(maxKeys, 1), slot: map[uint64]uint32{}, oddIDs: map[uint32]string{}}
}

// dedupeKeyOf is the key a message is deduplicated by.
func dedupeKeyOf(env *envelope.Envelope) string {
	if env.DedupeKey != "" {
		return env.DedupeKey
	}
	return env.ID
}

// contentHash hashes what makes two messages the same message (see
// sameMessage: for HL7 v2 everything after MSH).
func (x *dedupeIndex) contentHash(env *envelope.Envelope) uint64 {
	b := env.Raw
	if env.ContentType == envelope.ContentTypeHL7v2 {
		b = afterFirstSegment(b)
	}
	return maphash.Bytes(x.seed, b)
}

// lookup returns the id stored under key and whether its content hash
// equals content.
func (x *dedupeIndex) lookup(key string, content uint64) (id string, same, found bool) {
	h := maphash.String(x.seed, key)
	x.mu.Lock()
	defer x.mu.Unlock()
	p, ok := x.slot[h]
	if !ok {
		return "", false, false
	}
	return x.idAt(p), x.ring[p].content == content, true
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
	s := dedupeSlot{key: h, content: content, at: at.UnixNano()}
	if packed, ok := packID(id); ok {
		s.id = packed
	} else {
		x.oddIDs[p] = id
	}
	x.ring[p] = s
	x.n++
	x.slot[h] = p
	x.expireLocked(time.Now())
}

// idAt returns the id of slot p.
func (x *dedupeIndex) idAt(p uint32) string {
	if id, ok := x.oddIDs[p]; ok {
		return id
	}
	return unpackID(x.ring[p].id)
}

func (x *dedupeIndex) expireLocked(now time.Time) {
	oldest := now.Add(-x.window).UnixNano()
	for x.n > 0 {
		s := x.ring[x.head]
		if p, ok := x.slot[s.key]; ok && int(p) == x.head && s.at >= oldest {
			break
		}
		x.dropHeadLocked()
	}
}

// dropHeadLocked removes the oldest slot, and its key unless the key was
// added again since.
func (x *dedupeIndex) dropHeadLocked() {
	s := x.ring[x.head]
	if p, ok := x.slot[s.key]; ok && int(p) == x.head {
		delete(x.slot, s.key)
	}
	delete(x.oddIDs, uint32(x.head))
	x.head = (x.head + 1) % len(x.ring)
	x.n--
}

// growLocked makes the full ring larger (up to max), oldest slot first.
func (x *dedupeIndex) growLocked() {
	ring := make([]dedupeSlot, min(max(2*len(x.ring), 1024), x.max))
	odd := map[uint32]string{}
	for i := range x.n {
		old := (x.head + i) % len(x.ring)
		ring[i] = x.ring[old]
		if p, ok := x.slot[ring[i].key]; ok && int(p) == old {
			x.slot[ring[i].key] = uint32(i)
		}
		if id, ok := x.oddIDs[uint32(old)]; ok {
			odd[uint32(i)] = id
		}
	}
	x.ring, x.oddIDs, x.head = ring, odd, 0
}

// size returns the number of keys held.
func (x *dedupeIndex) size() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.slot)
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
