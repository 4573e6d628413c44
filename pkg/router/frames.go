package router

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sync"

	"github.com/klauspost/compress/s2"
)

// The batch formats (ingest and accepted batches, outbound batches) share
// one framing: a 4-byte magic, an entry count, then per entry a metadata
// part and a payload part, each prefixed with its length as a uvarint.

// frame is one entry: its metadata (JSON) and its payload.
type frame struct{ meta, payload []byte }

// appendFrames appends magic, the count and every frame to dst, growing
// it at most once.
func appendFrames(dst []byte, magic string, frames []frame) []byte {
	n := len(magic) + binary.MaxVarintLen64
	for _, f := range frames {
		n += 2*binary.MaxVarintLen64 + len(f.meta) + len(f.payload)
	}
	dst = slices.Grow(dst, n)
	dst = append(dst, magic...)
	dst = binary.AppendUvarint(dst, uint64(len(frames)))
	for _, f := range frames {
		dst = binary.AppendUvarint(dst, uint64(len(f.meta)))
		dst = append(dst, f.meta...)
		dst = binary.AppendUvarint(dst, uint64(len(f.payload)))
		dst = append(dst, f.payload...)
	}
	return dst
}

// readFrames reverses appendFrames, refusing a wrong magic, more than
// maxCount entries, a length past the end and trailing bytes. The parts
// alias data.
func readFrames(data []byte, magic string, maxCount uint64) ([]frame, error) {
	if !bytes.HasPrefix(data, []byte(magic)) {
		return nil, errBadBatch
	}
	p := data[len(magic):]
	next := func() ([]byte, error) {
		n, k := binary.Uvarint(p)
		if k <= 0 || n > uint64(len(p)-k) {
			return nil, errBadBatch
		}
		v := p[k : k+int(n)]
		p = p[k+int(n):]
		return v, nil
	}
	count, k := binary.Uvarint(p)
	if k <= 0 || count > maxCount || count > uint64(len(p)) {
		return nil, errBadBatch
	}
	p = p[k:]
	out := make([]frame, 0, count)
	for range count {
		meta, err := next()
		if err != nil {
			return nil, err
		}
		payload, err := next()
		if err != nil {
			return nil, err
		}
		out = append(out, frame{meta: meta, payload: payload})
	}
	if len(p) != 0 {
		return nil, errBadBatch
	}
	return out, nil
}

// batchFormat is a batch format: its frames under the plain magic, or
// compressed under the second. Compressed, a batch is the second magic,
// the entry count as a uvarint (so a stage can size a span without
// decompressing) and the framed bytes as one S2 block. That makes the
// streams, their block caches and each copy of a batch between the engine
// and the store a fraction of the size. Readers take both forms, so
// batches stored by an earlier version still read.
type batchFormat struct{ plain, compressed string }

// maxBatchPlain bounds a decompressed batch, so a corrupt length cannot
// make a reader allocate without limit. Writers size batches by their
// frames to fit one store message, and NATS caps a message at 64 MiB.
const maxBatchPlain = 64 << 20

// encode frames the entries and compresses them; or leaves them framed
// when compressing would not make them smaller, so a batch is never
// stored larger than its frames (writers size batches by them). The
// framed bytes and the compressor's output are scratch from a pool (see
// encodeWith).
func (f batchFormat) encode(frames []frame) []byte {
	sc := encodeScratchPool.Get().(*encodeScratch)
	defer encodeScratchPool.Put(sc)
	return f.encodeWith(sc, frames)
}

// encodeWith is encode with the working memory sc, reused from one batch
// to the next; the result is a fresh slice of its own size, so a batch
// costs the garbage collector about its compressed size, not twice its
// framed size. A stage that encodes one batch at a time keeps its own sc:
// a pool is emptied by every other garbage collection and shared by
// stages whose batches differ in size, so under load most of its
// scratch was allocated again.
func (f batchFormat) encodeWith(sc *encodeScratch, frames []frame) []byte {
	defer sc.trim()
	sc.plain = appendFrames(sc.plain[:0], f.plain, frames)
	plain := sc.plain
	if need := s2.MaxEncodedLen(len(plain)); cap(sc.out) < need {
		sc.out = make([]byte, need)
	}
	enc := s2.Encode(sc.out[:cap(sc.out)], plain)
	var count [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(count[:], uint64(len(frames)))
	size := len(f.compressed) + n + len(enc)
	if size >= len(plain) {
		return bytes.Clone(plain)
	}
	out := make([]byte, 0, size)
	out = append(out, f.compressed...)
	out = append(out, count[:n]...)
	return append(out, enc...)
}

// encodeScratch is the working memory of batch encoding: the entries'
// frames and metadata as a writer builds them, the framed bytes and the
// compressor's output.
type encodeScratch struct {
	frames     []frame
	metas      []byte
	plain, out []byte
}

// trim lets go of scratch grown past maxPooledScratch by an unusually
// large batch, and of the frames' references to their payloads.
func (sc *encodeScratch) trim() {
	clear(sc.frames)
	if cap(sc.plain)+cap(sc.out)+cap(sc.metas) > maxPooledScratch {
		*sc = encodeScratch{}
	}
}

// encodeScratchPool keeps encodeScratch between batches of writers that
// keep none of their own.
var encodeScratchPool = sync.Pool{New: func() any { return new(encodeScratch) }}

const maxPooledScratch = 8 << 20

// decode reverses encode, refusing more than maxCount entries (0: no more
// than the framed bytes could hold) and a compressed batch whose count is
// not its frames'. The parts alias data or its decompressed copy.
func (f batchFormat) decode(data []byte, maxCount uint64) ([]frame, error) {
	want := -1
	if bytes.HasPrefix(data, []byte(f.compressed)) {
		n, k := binary.Uvarint(data[len(f.compressed):])
		if k <= 0 {
			return nil, errBadBatch
		}
		block := data[len(f.compressed)+k:]
		size, err := s2.DecodedLen(block)
		if err != nil || size > maxBatchPlain {
			return nil, errBadBatch
		}
		if data, err = s2.Decode(make([]byte, size), block); err != nil {
			return nil, errBadBatch
		}
		want = int(min(n, maxBatchPlain))
	}
	if maxCount == 0 {
		maxCount = uint64(len(data))
	}
	frames, err := readFrames(data, f.plain, maxCount)
	if err != nil {
		return nil, err
	}
	if want >= 0 && want != len(frames) {
		return nil, errBadBatch
	}
	return frames, nil
}

// count returns the entry count a batch declares, or 1 when it cannot be
// read (the batch is then judged by whoever decodes it).
func (f batchFormat) count(data []byte) int {
	magic := f.plain
	if bytes.HasPrefix(data, []byte(f.compressed)) {
		magic = f.compressed
	} else if !bytes.HasPrefix(data, []byte(magic)) {
		return 1
	}
	n, k := binary.Uvarint(data[len(magic):])
	// Framed, each entry takes at least a byte; compressed, at least
	// a byte of the decompressed frames.
	limit := uint64(len(data))
	if magic == f.compressed {
		limit = maxBatchPlain
	}
	if k <= 0 || n == 0 || n > limit {
		return 1
	}
	return int(n)
}
