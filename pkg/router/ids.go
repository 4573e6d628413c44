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
	var out [26]byte
	// 128 bits: ms(48) hi(16) lo(64); encode 130 bits as 26 chars, top 2 zero.
	v := [2]uint64{ms<<16 | uint64(hi), lo}
	for i := 25; i >= 0; i-- {
		out[i] = crockford[v[1]&31]
		v[1] = v[1]>>5 | v[0]<<59
		v[0] >>= 5
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
