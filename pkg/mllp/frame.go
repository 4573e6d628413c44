// Package mllp implements the Minimal Lower Layer Protocol used to carry
// HL7 v2 messages over TCP: framing (a start block 0x0B, the payload, an
// end block 0x1C and a carriage return 0x0D), a concurrent server and a
// simple request/reply client, with optional TLS.
//
// Nothing in this package logs or puts into an error string any part of a
// payload: payloads hold patient data.
package mllp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/junction-fhir/junction/pkg/budget"
	"github.com/junction-fhir/junction/pkg/fault"
)

// Frame bytes.
const (
	// StartBlock starts every frame (vertical tab).
	StartBlock byte = 0x0B
	// EndBlock ends the payload of every frame (file separator).
	EndBlock byte = 0x1C
	// CarriageReturn follows EndBlock.
	CarriageReturn byte = 0x0D
)

// DefaultMaxMessageBytes is the payload size limit used when none is
// given: 1 MiB.
const DefaultMaxMessageBytes = 1 << 20

// Sentinel errors. The errors returned by this package wrap them in a
// *fault.Error (codes fault.CodeFrameTooLarge and fault.CodeFrameInvalid),
// so test for them with errors.Is.
var (
	// ErrTooLarge reports a frame whose payload exceeds the size limit.
	ErrTooLarge = errors.New("mllp: frame too large")
	// ErrInvalidFrame reports bytes that break the framing rules.
	ErrInvalidFrame = errors.New("mllp: invalid frame")
	// ErrIncompleteFrame reports a frame cut short: the peer closed the
	// connection, or sent nothing more for the read timeout, inside it.
	ErrIncompleteFrame = errors.New("mllp: incomplete frame")
	// ErrBusy reports a frame refused because the listener's frames
	// already hold its whole buffer budget (Server.MaxBufferedBytes).
	ErrBusy = errors.New("mllp: listener busy")
)

// FreeFrameBytes is what each frame may hold without drawing on the
// listener's buffer budget (Server.MaxBufferedBytes): most HL7 v2
// messages fit, so a sender of ordinary messages is never refused for
// others' large or unfinished frames.
const FreeFrameBytes = 64 << 10

func busy() error {
	return fault.Wrap(fault.Transient, fault.CodeFrameBusy, "listener busy: too many large frames being received; resend later", ErrBusy)
}

func tooLarge(limit int) error {
	return fault.Wrap(fault.Permanent, fault.CodeFrameTooLarge, fmt.Sprintf("frame payload exceeds %d bytes", limit), ErrTooLarge)
}

func invalidFrame(msg string) error {
	return fault.Wrap(fault.Permanent, fault.CodeFrameInvalid, msg, ErrInvalidFrame)
}

// readBufferSize is the size of a Reader's read buffer; it bounds how far
// a Reader may read past the size limit before reporting ErrTooLarge.
const readBufferSize = 16 << 10

// keepBufferBytes is the largest payload buffer a Reader keeps between
// frames; a larger one (and what it drew on the budget) is released so
// an idle connection does not pin it.
const keepBufferBytes = FreeFrameBytes

// Reader reads MLLP frames from a byte stream. It is not safe for
// concurrent use.
type Reader struct {
	br      *bufio.Reader
	max     int
	buf     []byte
	inFrame bool
	// endCROptional, set for a client reading replies and a server
	// reading messages, lets an end block with nothing after it yet, or
	// with the next frame's start block or whitespace skipped between
	// frames (a line feed in place of the carriage return), complete a
	// frame: some systems end a frame with 0x1C alone, or with 0x1C and
	// a line feed, and waiting for a carriage return that never comes
	// would time out an answered send and deliver it twice, or answer a
	// whole message only at the read timeout. Taking the line feed in
	// the same read as the end block, as it is taken when it comes
	// later, gives the frame the same answer however the bytes were
	// split into reads.
	// A line feed there is taken in place of the carriage return.
	// pendingCR is then set until a later carriage return (or line
	// feed), which is skipped as whitespace between frames, is read or
	// given up on.
	endCROptional bool
	pendingCR     bool
	// onStart, if set, is called when a start block has been read.
	onStart func()
	// budget, if set, is drawn on for buf's capacity beyond
	// FreeFrameBytes; drawn is how much buf holds of it.
	budget *budget.Bytes
	drawn  int64
}

// Release gives back what the Reader's buffer drew on its budget and
// drops the buffer. Call it when the connection is done.
func (r *Reader) Release() {
	r.buf = nil
	if r.budget != nil && r.drawn > 0 {
		r.budget.Give(r.drawn)
		r.drawn = 0
	}
}

// NewReader returns a Reader of frames from r whose payloads may not
// exceed maxBytes (DefaultMaxMessageBytes if maxBytes is not positive).
func NewReader(r io.Reader, maxBytes int) *Reader {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxMessageBytes
	}
	return &Reader{br: bufio.NewReaderSize(r, readBufferSize), max: maxBytes}
}

// InFrame reports whether the last ReadFrame stopped inside a frame: it
// read a start block but not the end of the frame.
func (r *Reader) InFrame() bool { return r.inFrame }

// ReadFrame returns the payload of the next frame, without the framing
// bytes.
//
// The returned slice is only valid until the next call to ReadFrame,
// which reuses its memory; copy it to keep it.
//
// Between frames, CR, LF, space and tab are skipped; any other byte before
// a start block is an error wrapping ErrInvalidFrame, as is an end block
// not followed by a carriage return (for clients and servers, by a
// carriage return, other whitespace or a start block, or by nothing yet). A payload longer than the limit is an
// error wrapping ErrTooLarge, reported as soon as the limit is passed: the
// Reader never holds more than the limit plus its 16 KiB read buffer. At a
// clean end of input, between frames, ReadFrame returns io.EOF; if the
// input ends inside a frame it returns io.ErrUnexpectedEOF. Errors from
// the underlying reader are returned as they are.
//
// With any error but io.EOF, the returned slice holds the part of the
// payload read before the error (up to the limit), or nil; for data
// outside a frame, the stray bytes read and already buffered, up to the
// next start block and the limit. After an error
// the stream is out of step: stop reading and close it.
func (r *Reader) ReadFrame() ([]byte, error) {
	if cap(r.buf) > keepBufferBytes {
		r.Release()
	}
	r.inFrame = false
	for {
		c, err := r.br.ReadByte()
		if err != nil {
			return nil, err
		}
		if c == StartBlock {
			break
		}
		if !isBetweenFrames(c) {
			return r.stray(c), invalidFrame("data outside a frame")
		}
	}
	r.inFrame = true
	if r.onStart != nil {
		r.onStart()
	}
	r.buf = r.buf[:0]
	r.pendingCR = false
	for {
		chunk, err := r.br.ReadSlice(EndBlock)
		n := len(chunk)
		if err == nil {
			n-- // drop the end block
		}
		if len(r.buf)+n > r.max {
			if !r.grow(r.max - len(r.buf)) {
				return r.buf, busy()
			}
			r.buf = append(r.buf, chunk[:r.max-len(r.buf)]...)
			return r.buf, tooLarge(r.max)
		}
		if !r.grow(n) {
			return r.buf, busy()
		}
		r.buf = append(r.buf, chunk[:n]...)
		if err == nil {
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return r.buf, err
	}
	if r.endCROptional && r.br.Buffered() == 0 {
		r.inFrame, r.pendingCR = false, true
		return r.buf, nil
	}
	c, err := r.br.ReadByte()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return r.buf, err
	}
	if c != CarriageReturn && !(r.endCROptional && c == '\n') {
		if r.endCROptional && (c == StartBlock || isBetweenFrames(c)) {
			// The next frame's start block, or whitespace the next read
			// skips.
			_ = r.br.UnreadByte()
			r.inFrame = false
			return r.buf, nil
		}
		return r.buf, invalidFrame("end block not followed by a carriage return")
	}
	r.inFrame = false
	return r.buf, nil
}

// isBetweenFrames reports whether c is whitespace a sender may write
// between frames (CR, LF, space, tab), which is skipped.
func isBetweenFrames(c byte) bool { return c == '\r' || c == '\n' || c == ' ' || c == '\t' }

// stray returns the byte c read outside a frame and those already
// buffered after it, up to the next start block and the size limit, so
// that what a sender sent unframed can be kept for inspection. It reads
// nothing more from the connection.
func (r *Reader) stray(c byte) []byte {
	more, _ := r.br.Peek(r.br.Buffered())
	if i := bytes.IndexByte(more, StartBlock); i >= 0 {
		more = more[:i]
	}
	r.buf = append(r.buf[:0], c)
	r.buf = append(r.buf, more[:min(len(more), r.max-1)]...)
	return r.buf
}

// grow makes room for n more bytes in r.buf without letting its capacity
// pass the size limit. It reports false, leaving r.buf as it was, when
// the budget cannot cover the larger buffer.
func (r *Reader) grow(n int) bool {
	need := len(r.buf) + n
	if need <= cap(r.buf) {
		return true
	}
	c := max(2*cap(r.buf), need, 4096)
	c = max(min(c, r.max), need)
	if r.budget != nil {
		if more := int64(max(c-FreeFrameBytes, 0)) - r.drawn; more > 0 {
			if !r.budget.Take(more) {
				return false
			}
			r.drawn += more
		}
	}
	b := make([]byte, len(r.buf), c)
	copy(b, r.buf)
	r.buf = b
	return true
}

// appendFrame appends payload framed to dst.
func appendFrame(dst, payload []byte) ([]byte, error) {
	if bytes.IndexByte(payload, EndBlock) >= 0 {
		return dst, invalidFrame("payload holds an end block byte")
	}
	dst = append(dst, StartBlock)
	dst = append(dst, payload...)
	return append(dst, EndBlock, CarriageReturn), nil
}

// WriteFrame writes payload as one frame with a single call to w.Write. A
// payload holding an end block byte (0x1C) cannot be framed: WriteFrame
// then writes nothing and returns an error wrapping ErrInvalidFrame.
func WriteFrame(w io.Writer, payload []byte) error {
	buf, err := appendFrame(make([]byte, 0, len(payload)+3), payload)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}
