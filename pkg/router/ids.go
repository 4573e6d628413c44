package router

import (
	"crypto/rand"
	"encoding/binary"
	"hash/fnv"
	"sync"
	"time"
)

// crockford is Crockford's base32 alphabet: ids sort by time as strings and
// are safe as NATS subject tokens.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// IDGen makes 26-character, time-sortable, unique message ids (48 bits of
// milliseconds then 80 bits that increase within a millisecond).
type IDGen struct {
	mu     sync.Mutex
	lastMS uint64
	hi     uint16
	lo     uint64
}

// New returns a new id.
func (g *IDGen) New() string {
	g.mu.Lock()
	ms := uint64(time.Now().UnixMilli())
	if ms <= g.lastMS {
		ms = g.lastMS
		g.lo++
		if g.lo == 0 {
			g.hi++
		}
	} else {
		var b [10]byte
		_, _ = rand.Read(b[:])
		g.hi = binary.BigEndian.Uint16(b[:2]) >> 1 // room to increment
		g.lo = binary.BigEndian.Uint64(b[2:])
		g.lastMS = ms
	}
	hi, lo := g.hi, g.lo
	g.mu.Unlock()
	// 128 bits: ms(48) hi(16) lo(64).
	return encodeID(ms<<16|uint64(hi), lo)
}

// encodeID writes 128 bits, hi then lo, as 26 of Crockford's base32 digits
// (130 bits, the top two zero, so the first digit is below 4).
func encodeID(hi, lo uint64) string {
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// partitionOf maps a key to one of n partitions.
func partitionOf(key string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// PartitionOf returns the partition of n that patient key maps to, as
// the ingest path assigns it: messages of keys in different partitions
// are routed and delivered independently.
func PartitionOf(key string, n int) int { return partitionOf(key, n) }
