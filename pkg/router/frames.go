package router

import (
	"bytes"
	"encoding/binary"

	"github.com/klauspost/compress/s2"
)

// The batch formats (ingest and accepted batches, outbound batches) share
// one framing: a 4-byte magic, an entry count, then per entry a metadata
// part and a payload part, each prefixed with its length as a uvarint.

// frame is one entry: its metadata (JSON) and its payload.
type frame struct{ meta, payload []byte }

// appendFrames writes magic, the count and every frame, growing b once.
func appendFrames(b *bytes.Buffer, magic string, frames []frame) {
	n := len(magic) + binary.MaxVarintLen64
	for _, f := range frames {
		n += 2*binary.MaxVarintLen64 + len(f.meta) + len(f.payload)
	}
	b.Grow(n)
	var v [binary.MaxVarintLen64]byte
	uvarint := func(x int) { b.Write(binary.AppendUvarint(v[:0], uint64(x))) }
	b.WriteString(magic)
	uvarint(len(frames))
	for _, f := range frames {
		uvarint(len(f.meta))
		b.Write(f.meta)
		uvarint(len(f.payload))
		b.Write(f.payload)
	}
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

// frameCount returns the entry count a batch declares after its magic, or
// 1 when it cannot be read (the batch is then judged by whoever decodes
// it).
func frameCount(data []byte, magic string) int {
	if !bytes.HasPrefix(data, []byte(magic)) {
		return 1
	}
	n, k := binary.Uvarint(data[len(magic):])
	if k <= 0 || n == 0 || n > uint64(len(data)) {
		return 1
	}
	return int(n)
}

// Compressed batches: a batch's framed bytes stored as one S2 block
// behind a second magic (JGC2 for JGC1, JOB2 for JOB1), so the streams,
// their block caches and each copy of a batch between the engine and the
// store are a fraction of the size. Readers take both forms, so batches
// stored by an earlier version still read.

// maxBatchPlain bounds a decompressed batch, so a corrupt length cannot
// make a reader allocate without limit. Writers size batches by their
// frames to fit one store message, and NATS caps a message at 64 MiB.
const maxBatchPlain = 64 << 20

// compressFrames returns plain, a framed batch, compressed behind magic;
// or plain itself when compressing would not make it smaller, so a batch
// is never stored larger than its frames (writers size batches by them).
func compressFrames(magic string, plain []byte) []byte {
	out := make([]byte, len(magic), len(magic)+s2.MaxEncodedLen(len(plain)))
	copy(out, magic)
	enc := s2.Encode(out[len(out):cap(out)], plain)
	if len(magic)+len(enc) >= len(plain) {
		return plain
	}
	return out[:len(out)+len(enc)]
}

// uncompressFrames returns the framed batch in data: decompressed when
// data starts with magic, else data itself.
func uncompressFrames(data []byte, magic string) ([]byte, error) {
	if !bytes.HasPrefix(data, []byte(magic)) {
		return data, nil
	}
	n, err := s2.DecodedLen(data[len(magic):])
	if err != nil || n > maxBatchPlain {
		return nil, errBadBatch
	}
	plain, err := s2.Decode(make([]byte, n), data[len(magic):])
	if err != nil {
		return nil, errBadBatch
	}
	return plain, nil
}
