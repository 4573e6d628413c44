package router

import (
	"hash/maphash"
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
type dedupeIndex struct {
	seed   maphash.Seed
	window time.Duration
	max    int

	mu      sync.Mutex
	entries map[uint64]dedupeEntry
	// fifo holds keys in insertion order for expiry; head is the oldest.
	fifo []fifoItem
	head int
	// applied is the last accepted-batch stream sequence applied.
	applied uint64
}

type dedupeEntry struct {
	id      string
	content uint64
	at      time.Time
}

type fifoItem struct {
	key uint64
	at  time.Time
}

func newDedupeIndex(window time.Duration, max int) *dedupeIndex {
	return &dedupeIndex{seed: maphash.MakeSeed(), window: window, max: max, entries: map[uint64]dedupeEntry{}}
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
	e, ok := x.entries[h]
	if !ok {
		return "", false, false
	}
	return e.id, e.content == content, true
}

// add records key as accepted under id.
func (x *dedupeIndex) add(key, id string, content uint64, at time.Time) {
	h := maphash.String(x.seed, key)
	x.mu.Lock()
	defer x.mu.Unlock()
	x.fifo = append(x.fifo, fifoItem{key: h, at: at})
	x.entries[h] = dedupeEntry{id: id, content: content, at: at}
	x.expireLocked(time.Now())
}

func (x *dedupeIndex) expireLocked(now time.Time) {
	for x.head < len(x.fifo) {
		it := x.fifo[x.head]
		// An item is stale when its key was added again since.
		if e, ok := x.entries[it.key]; ok && e.at.Equal(it.at) {
			if len(x.entries) <= x.max && now.Sub(it.at) <= x.window {
				break
			}
			delete(x.entries, it.key)
		}
		x.head++
	}
	// Compact the queue once its dead head dominates.
	if x.head > 1024 && x.head*2 > len(x.fifo) {
		x.fifo = append(x.fifo[:0], x.fifo[x.head:]...)
		x.head = 0
	}
}

// size returns the number of keys held.
func (x *dedupeIndex) size() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.entries)
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
