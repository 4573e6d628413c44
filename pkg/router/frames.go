package router

import (
	"bytes"
	"encoding/binary"
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
