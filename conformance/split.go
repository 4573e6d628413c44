package conformance

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"time"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// Message is one HL7 v2 message found in a file.
type Message struct {
	// Line is the 1-based line where the message's MSH segment starts.
	Line int
	// Raw is the message's bytes exactly as in the file, from its MSH to
	// the start of the next MSH (or the end of the file).
	Raw []byte
}

// Split finds the HL7 v2 messages in data: each starts at a segment that
// begins "MSH" followed by a field separator (printable ASCII other than a
// letter, a digit or a space). Segments may end in CR, LF or CRLF, and a
// UTF-8 byte order mark may precede any MSH. Text before the first MSH is
// not a message; preamble reports whether any non-blank text was there.
func Split(data []byte) (msgs []Message, preamble bool) {
	line := 1
	start := -1 // start of the current message
	pos := 0
	for pos < len(data) {
		end := pos
		for end < len(data) && data[end] != '\r' && data[end] != '\n' {
			end++
		}
		seg := data[pos:end]
		off := pos
		if b, ok := bytes.CutPrefix(seg, bom); ok {
			seg, off = b, pos+len(bom)
		}
		if isMSH(seg) {
			if start >= 0 {
				msgs[len(msgs)-1].Raw = data[start:pos]
			}
			start = off
			msgs = append(msgs, Message{Line: line})
		} else if start < 0 && len(bytes.TrimSpace(seg)) > 0 {
			preamble = true
		}
		// Advance over the terminator: CRLF counts as one line end.
		pos = end
		if pos < len(data) {
			if data[pos] == '\r' && pos+1 < len(data) && data[pos+1] == '\n' {
				pos++
			}
			pos++
			line++
		}
	}
	if start >= 0 {
		msgs[len(msgs)-1].Raw = data[start:]
	}
	return msgs, preamble
}

var bom = []byte{0xEF, 0xBB, 0xBF}

func isMSH(seg []byte) bool {
	if len(seg) < 4 || seg[0] != 'M' || seg[1] != 'S' || seg[2] != 'H' {
		return false
	}
	c := seg[3]
	switch {
	case c <= ' ' || c >= 0x7f:
		return false
	case c >= '0' && c <= '9', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		return false
	}
	return true
}

// crockford is Crockford's base32 alphabet, as Junction message ids use.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// EnvelopeID returns a deterministic, 26-character message id (the shape
// of Junction's ids) derived from a file name and the message's index in
// it, so converting the same file again gives the same output.
func EnvelopeID(name string, index int) string {
	h := sha256.Sum256([]byte(name + "\x00" + strconv.Itoa(index)))
	hi := binary.BigEndian.Uint64(h[:8])
	lo := binary.BigEndian.Uint64(h[8:16])
	var b [26]byte
	for i := 25; i >= 0; i-- {
		b[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(b[:])
}

// DefaultReceivedAt is the receipt time given to messages converted
// offline when none is chosen: a fixed instant, so output is
// reproducible.
var DefaultReceivedAt = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// NewEnvelope wraps raw as an inbound HL7 v2 message from source, with
// the deterministic id EnvelopeID(name, index). Keys that ingress would
// extract (message type, control id, sender) are filled when raw parses.
func NewEnvelope(name string, index int, raw []byte, source string, received time.Time) *envelope.Envelope {
	env := &envelope.Envelope{
		ID:          EnvelopeID(name, index),
		Source:      source,
		ContentType: envelope.ContentTypeHL7v2,
		ReceivedAt:  received,
		Raw:         raw,
	}
	if m, err := hl7v2.Parse(raw); err == nil {
		env.MessageType = m.MessageType()
		env.ControlID = m.ControlID()
		env.Sender = m.SendingApp()
		if f := m.SendingFacility(); f != "" {
			env.Sender += "^" + f
		}
	}
	return env
}
