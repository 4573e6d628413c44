package hl7v2

import (
	"bytes"
	"math"
	"strings"
	"sync/atomic"

	"github.com/junction-fhir/junction/pkg/fault"
)

// Table 0357 error condition codes used by this package.
const (
	// ErrCodeSegmentSequence is HL7 table 0357 code 100, segment sequence
	// error.
	ErrCodeSegmentSequence = "100"
	// ErrCodeRequiredField is HL7 table 0357 code 101, required field
	// missing.
	ErrCodeRequiredField = "101"
	// ErrCodeDataType is HL7 table 0357 code 102, data type error.
	ErrCodeDataType = "102"
	// ErrCodeTableValue is HL7 table 0357 code 103, table value not
	// found.
	ErrCodeTableValue = "103"
	// ErrCodeValueTooLong is HL7 table 0357 code 104 (since v2.7), value
	// too long: longer than the receiver can safely handle.
	ErrCodeValueTooLong = "104"
	// ErrCodeUnsupportedMessageType is HL7 table 0357 code 200,
	// unsupported message type.
	ErrCodeUnsupportedMessageType = "200"
	// ErrCodeUnsupportedEvent is HL7 table 0357 code 201, unsupported event
	// code.
	ErrCodeUnsupportedEvent = "201"
	// ErrCodeUnsupportedProcessingID is HL7 table 0357 code 202,
	// unsupported processing id.
	ErrCodeUnsupportedProcessingID = "202"
	// ErrCodeUnsupportedVersion is HL7 table 0357 code 203, unsupported
	// version id.
	ErrCodeUnsupportedVersion = "203"
	// ErrCodeRecordLocked is HL7 table 0357 code 206, application record
	// locked.
	ErrCodeRecordLocked = "206"
	// ErrCodeInternal is HL7 table 0357 code 207, application internal
	// error.
	ErrCodeInternal = "207"
)

// Delimiters are the separator and escape characters of a message, read
// from MSH-1 and MSH-2. Escape and Subcomponent are 0 when MSH-2 is too
// short to declare them. Truncation is HL7 v2.7's fifth encoding
// character (usually #), which ends a value cut short and is written \P\
// in data; 0 when MSH-2 declares none.
type Delimiters struct{ Field, Component, Repetition, Escape, Subcomponent, Truncation byte }

// DefaultDelimiters returns the standard delimiters | ^ ~ \ &.
func DefaultDelimiters() Delimiters {
	return Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&'}
}

// EncodingCharacters returns the MSH-2 text for d: component, repetition,
// escape, subcomponent and truncation characters, stopping at the first
// one that is 0.
func (d Delimiters) EncodingCharacters() string {
	b := make([]byte, 0, 5)
	for _, c := range [...]byte{d.Component, d.Repetition, d.Escape, d.Subcomponent, d.Truncation} {
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// Message is a parsed HL7 v2 message. It keeps one copy of the message
// text (its segments are slices of it) and the position of every field
// separator; values are sliced from that text on demand. A Message is
// immutable and safe for concurrent use.
//
// The text is kept as received, in the character set MSH-18 declares, so
// Encode gives the same bytes back; Component and Segment.Text decode
// values to UTF-8 (see Charset).
type Message struct {
	delims Delimiters
	cs     Charset
	csCode string
	segs   []Segment
	ptrs   []*Segment
}

// Segment is one segment of a Message.
type Segment struct {
	line string
	// seps holds the offset in line of every field separator.
	seps []int32
	d    Delimiters
	cs   Charset
	msh  bool
	// reps indexes the repetitions of the field last read by repetition,
	// when it has many: callers walk a field's repetitions one by one,
	// which without it rescans the field for each (a PID-3 of 50,000
	// identifiers took minutes). Atomic: a parsed message is read by
	// several goroutines.
	reps atomic.Pointer[repIndex]
}

// repIndex is where each repetition of one field starts and ends.
type repIndex struct {
	field int
	// bounds[k] and bounds[k+1]-1 delimit repetition k+1 (a separator
	// sits at bounds[k+1]-1); the last bound is the field's length + 1.
	bounds []int32
}

// repIndexMin is the fewest repetitions a field has before it is indexed:
// below it, rescanning costs less than the index.
const repIndexMin = 16

// repetitionsOf returns the index of field i (text f) when it has at
// least repIndexMin repetitions, building and keeping it, else nil.
func (s *Segment) repetitionsOf(i int, f string) *repIndex {
	if ix := s.reps.Load(); ix != nil && ix.field == i {
		return ix
	}
	n := 1
	for k := 0; k < len(f) && n < repIndexMin; k++ {
		if f[k] == s.d.Repetition {
			n++
		}
	}
	if n < repIndexMin {
		return nil
	}
	bounds := make([]int32, 1, strings.Count(f, string(s.d.Repetition))+2)
	for k := 0; k < len(f); k++ {
		if f[k] == s.d.Repetition {
			bounds = append(bounds, int32(k+1))
		}
	}
	bounds = append(bounds, int32(len(f)+1))
	ix := &repIndex{field: i, bounds: bounds}
	s.reps.Store(ix)
	return ix
}

// text returns repetition rep (from 1) of the field f ix indexes, or ""
// when there is none.
func (ix *repIndex) text(f string, rep int) string {
	if rep < 1 || rep >= len(ix.bounds) {
		return ""
	}
	return f[ix.bounds[rep-1] : ix.bounds[rep]-1]
}

func parseError(msg, hl7 string) *fault.Error {
	return fault.New(fault.CodeHL7Parse, msg).WithHL7(hl7)
}

// isBlank reports whether c may surround segments without meaning: CR,
// LF, space or tab.
func isBlank(c byte) bool { return c == '\r' || c == '\n' || c == ' ' || c == '\t' }

// validDelimiter reports whether c may serve as a delimiter: printable
// ASCII that is neither a letter, a digit nor a space.
func validDelimiter(c byte) bool {
	switch {
	case c <= ' ' || c >= 0x7f:
		return false
	case c >= '0' && c <= '9', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		return false
	}
	return true
}

func upperAlpha(c byte) bool { return c >= 'A' && c <= 'Z' }

func validSegmentName(line string, fs byte) bool {
	if len(line) < 3 || (len(line) > 3 && line[3] != fs) {
		return false
	}
	if !upperAlpha(line[0]) {
		return false
	}
	return nameChar(line[1]) && nameChar(line[2])
}

func nameChar(c byte) bool { return upperAlpha(c) || (c >= '0' && c <= '9') }

// quoteStart returns up to n leading bytes of s, quoted, for fault Detail.
func quoteStart(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "?")
}

// Parse parses one ER7-encoded HL7 v2 message. The delimiters are read
// from MSH-1 and MSH-2: MSH-2 must hold 2 to 5 distinct delimiter
// characters (component, repetition, then optionally escape, subcomponent
// and the v2.7 truncation character). Segments may end in CR, LF or CRLF.
// A leading UTF-8 byte order mark and blank or whitespace-only lines are
// skipped, as are lines of NUL or SUB (0x1A) bytes alone, the padding and
// end-of-file marks some senders leave after the last segment. Every
// segment name must be three characters, an upper-case
// letter followed by upper-case letters or digits. Parse copies raw, so the
// caller may reuse it afterwards. MSH-18 is read (see Message.Charset) but
// never rejected: a character set this package cannot decode is for the
// caller to refuse.
func Parse(raw []byte) (*Message, error) {
	b := raw
	if len(b) >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF {
		b = b[3:]
	}
	i := 0
	for i < len(b) && isBlank(b[i]) {
		i++
	}
	b = b[i:]
	if len(b) == 0 {
		return nil, parseError("message is empty", ErrCodeSegmentSequence)
	}
	if len(b) > math.MaxInt32 {
		return nil, parseError("message is too large", ErrCodeInternal)
	}
	if len(b) >= 4 && (string(b[:3]) == "FHS" || string(b[:3]) == "BHS") && validDelimiter(b[3]) {
		// A whole batch file in one frame: MLLP carries one message a
		// frame, and an acknowledgement answers one message.
		return nil, parseError("HL7 batches (FHS, BHS) are not accepted: send each message in its own frame", ErrCodeUnsupportedMessageType).
			WithDetail("segment 1 is " + string(b[:3]) + ", a batch header")
	}
	if len(b) < 3 || b[0] != 'M' || b[1] != 'S' || b[2] != 'H' {
		return nil, parseError("segment 1 is not MSH", ErrCodeSegmentSequence).
			WithDetail("segment 1 starts " + quoteStart(string(b), 3))
	}
	if len(b) < 4 || !validDelimiter(b[3]) {
		return nil, parseError("MSH-1 field separator invalid", ErrCodeDataType)
	}
	fs := b[3]
	k := 4
	for k < len(b) && b[k] != fs && b[k] != '\r' && b[k] != '\n' {
		k++
	}
	enc := b[4:k]
	if len(enc) < 2 || len(enc) > 5 {
		return nil, parseError("MSH-2 encoding characters invalid", ErrCodeDataType).
			WithDetail("MSH-2 must hold 2 to 5 characters")
	}
	for x, c := range enc {
		if !validDelimiter(c) {
			return nil, parseError("MSH-2 encoding characters invalid", ErrCodeDataType).
				WithDetail("MSH-2 holds a character that may not be a delimiter")
		}
		for _, c2 := range enc[:x] {
			if c2 == c {
				return nil, parseError("MSH-2 encoding characters invalid", ErrCodeDataType).
					WithDetail("MSH-2 repeats a character")
			}
		}
	}
	m := &Message{}
	m.delims = Delimiters{Field: fs, Component: enc[0], Repetition: enc[1]}
	if len(enc) > 2 {
		m.delims.Escape = enc[2]
	}
	if len(enc) > 3 {
		m.delims.Subcomponent = enc[3]
	}
	if len(enc) > 4 {
		m.delims.Truncation = enc[4]
	}

	s := string(b)
	nsep := strings.Count(s, s[3:4])
	// With CRLF ends both counts equal the segment count; if the estimate
	// is short, append grows segs, which only the pointers below refer to.
	nseg := max(strings.Count(s, "\r"), strings.Count(s, "\n")) + 1
	seps := make([]int32, 0, nsep)
	segs := make([]Segment, 0, nseg)
	d := m.delims
	pos := 0
	for pos < len(s) {
		start := pos
		first := len(seps)
		end := start
		for end < len(s) {
			c := s[end]
			if c == fs {
				seps = append(seps, int32(end-start))
			} else if c == '\r' || c == '\n' {
				break
			}
			end++
		}
		line := s[start:end]
		pos = end + 1
		if first == len(seps) && blankLine(line) {
			continue
		}
		if !validSegmentName(line, fs) {
			return nil, fault.Newf(fault.CodeHL7Parse, "segment %d has an invalid name", len(segs)+1).
				WithHL7(ErrCodeSegmentSequence).
				WithDetail("segment starts " + quoteStart(line, 4))
		}
		segs = append(segs, Segment{
			line: line,
			seps: seps[first:len(seps):len(seps)],
			d:    d,
			msh:  line[0] == 'M' && line[1] == 'S' && line[2] == 'H',
		})
	}
	m.segs = segs
	if len(segs) > 0 {
		m.csCode, m.cs = readCharset(&segs[0])
		if m.cs != CharsetDefault {
			for x := range segs {
				segs[x].cs = m.cs
			}
		}
	}
	m.ptrs = make([]*Segment, len(segs))
	for x := range segs {
		m.ptrs[x] = &m.segs[x]
	}
	return m, nil
}

// blankLine reports whether line holds nothing but spaces, tabs, NULs
// and SUBs (0x1A, a DOS end of file): no segment.
func blankLine(line string) bool {
	for i := 0; i < len(line); i++ {
		if c := line[i]; c != ' ' && c != '\t' && c != 0 && c != 0x1a {
			return false
		}
	}
	return true
}

// Delimiters returns the message's delimiters as read from MSH-1 and
// MSH-2.
func (m *Message) Delimiters() Delimiters { return m.delims }

// Truncation returns the v2.7 truncation character declared as the fifth
// character of MSH-2, or 0 if there is none.
func (m *Message) Truncation() byte { return m.delims.Truncation }

// Segments returns every segment in order. The slice is shared: callers
// must not modify it.
func (m *Message) Segments() []*Segment { return m.ptrs }

// Segment returns the first segment with the given name, or nil if there
// is none.
func (m *Message) Segment(name string) *Segment {
	for i := range m.segs {
		if m.segs[i].Name() == name {
			return &m.segs[i]
		}
	}
	return nil
}

// SegmentsNamed returns every segment with the given name, in order, or
// nil if there is none.
func (m *Message) SegmentsNamed(name string) []*Segment {
	var out []*Segment
	for i := range m.segs {
		if m.segs[i].Name() == name {
			out = append(out, &m.segs[i])
		}
	}
	return out
}

// ParseHeader parses only the first segment of raw, for answering input
// whose later segments do not parse (or were never all read) with an
// acknowledgement that still names the message: its MSH-10 in MSA-2, its
// version and acknowledgement mode. It fails as Parse does when the first
// segment is not a valid MSH, and when no segment separator follows it:
// a header cut short (input that stopped inside it) could name another
// message.
func ParseHeader(raw []byte) (*Message, error) {
	i := 0
	if len(raw) >= 3 && raw[0] == 0xEF && raw[1] == 0xBB && raw[2] == 0xBF {
		i = 3
	}
	for i < len(raw) && isBlank(raw[i]) {
		i++
	}
	end := bytes.IndexAny(raw[i:], "\r\n")
	if end < 0 {
		return nil, parseError("header segment not terminated", ErrCodeSegmentSequence)
	}
	return Parse(raw[:i+end])
}

// CountSegments returns how many segments have the given name, without
// allocating.
func (m *Message) CountSegments(name string) int {
	n := 0
	for i := range m.segs {
		if m.segs[i].Name() == name {
			n++
		}
	}
	return n
}

// msh returns the header segment; a parsed message always has one.
func (m *Message) msh() *Segment {
	if len(m.segs) == 0 {
		return &Segment{}
	}
	return &m.segs[0]
}

// MessageType returns MSH-9.1 and the trigger event (Event) joined by
// "^" whatever the message's component separator, such as "ADT^A01", or
// MSH-9.1 alone (such as "ACK") when there is no trigger event. Senders
// of v2.2 and v2.3 may leave MSH-9.2 empty and give the trigger in EVN-1
// only: such an ADT is still "ADT^A01", so routes that take A01 take it.
func (m *Message) MessageType() string {
	typ := m.msh().Component(9, 1, 1, 1)
	ev := m.Event()
	if ev == "" || typ == "" {
		return typ
	}
	return typ + "^" + ev
}

// Event returns the trigger event from MSH-9.2 or, when that is empty,
// from EVN-1, or for a message type of one event before MSH-9 carried
// events (HL7 v2.1 and v2.2: ORU, ORM), that event.
func (m *Message) Event() string {
	if ev := m.msh().Component(9, 1, 2, 1); ev != "" {
		return ev
	}
	if evn := m.Segment("EVN"); evn != nil {
		if ev := evn.Component(1, 1, 1, 1); ev != "" {
			return ev
		}
	}
	return impliedEvent(m.msh().Component(9, 1, 1, 1))
}

// impliedEvent returns the trigger event of a message type that had only
// one when MSH-9 named no event, or "".
func impliedEvent(typ string) string {
	switch typ {
	case "ORU":
		return "R01"
	case "ORM":
		return "O01"
	}
	return ""
}

// ControlID returns the message control id, MSH-10 (first component,
// unescaped).
func (m *Message) ControlID() string { return m.msh().Component(10, 1, 1, 1) }

// Version returns the version id, MSH-12.1, such as "2.5.1", or "" when
// MSH-12 is empty or the HL7 null "".
func (m *Message) Version() string { return notNull(m.msh().Component(12, 1, 1, 1)) }

// notNull returns v, or "" for the HL7 null "": in header fields that say
// how to read and answer a message, a sender's null (some null every
// field they leave unvalued) means what an empty field means.
func notNull(v string) string {
	if v == `""` {
		return ""
	}
	return v
}

// ProcessingID returns the processing id, MSH-11.1, such as "P".
func (m *Message) ProcessingID() string { return m.msh().Component(11, 1, 1, 1) }

// SendingApp returns MSH-3.1, the namespace id of the sending application.
func (m *Message) SendingApp() string { return m.msh().Component(3, 1, 1, 1) }

// SendingFacility returns MSH-4.1, the namespace id of the sending
// facility.
func (m *Message) SendingFacility() string { return m.msh().Component(4, 1, 1, 1) }

// ReceivingApp returns MSH-5.1, the namespace id of the receiving
// application.
func (m *Message) ReceivingApp() string { return m.msh().Component(5, 1, 1, 1) }

// ReceivingFacility returns MSH-6.1, the namespace id of the receiving
// facility.
func (m *Message) ReceivingFacility() string { return m.msh().Component(6, 1, 1, 1) }

// AcceptAckType returns MSH-15, the accept acknowledgement type ("AL",
// "NE", "ER", "SU"), or "" in original acknowledgement mode (MSH-15 empty
// or the HL7 null "").
func (m *Message) AcceptAckType() string { return notNull(m.msh().Component(15, 1, 1, 1)) }

// AppAckType returns MSH-16, the application acknowledgement type, or ""
// when it is empty or the HL7 null "".
func (m *Message) AppAckType() string { return notNull(m.msh().Component(16, 1, 1, 1)) }

// Encode returns the message in ER7 with every segment ended by CR. The
// delimiters and the text of every segment are kept exactly, so parsing
// the result gives an equal message.
func (m *Message) Encode() []byte {
	n := 0
	for i := range m.segs {
		n += len(m.segs[i].line) + 1
	}
	out := make([]byte, 0, n)
	for i := range m.segs {
		out = append(out, m.segs[i].line...)
		out = append(out, '\r')
	}
	return out
}

// String returns the message as Encode does. It holds patient data: never
// log it.
func (m *Message) String() string { return string(m.Encode()) }

// Name returns the three-character segment name, such as "PID".
func (s *Segment) Name() string {
	if len(s.line) < 3 {
		return s.line
	}
	return s.line[:3]
}

// String returns the segment's text as received, without its terminator.
// It holds patient data: never log it.
func (s *Segment) String() string { return s.line }

// FieldCount returns the number of fields after the name, counting
// trailing empty fields. For MSH it counts MSH-1.
func (s *Segment) FieldCount() int {
	if s.msh {
		return len(s.seps) + 1
	}
	return len(s.seps)
}

// Field returns the raw text of field i, all repetitions, with escape
// sequences left in place, or "" if the segment has no field i. Fields
// are numbered from 1; Field(0) returns the segment name. For MSH,
// Field(1) is the field separator and Field(2) the encoding characters.
// The text is in the message's character set, as received: Text unescapes
// and decodes a part of it.
func (s *Segment) Field(i int) string {
	if i <= 0 {
		if i == 0 {
			return s.Name()
		}
		return ""
	}
	if s.msh {
		if i == 1 {
			if len(s.line) < 4 {
				return "" // a later, empty MSH segment
			}
			return s.line[3:4]
		}
		i--
	}
	if i > len(s.seps) {
		return ""
	}
	start := int(s.seps[i-1]) + 1
	end := len(s.line)
	if i < len(s.seps) {
		end = int(s.seps[i])
	}
	return s.line[start:end]
}

// Repetitions returns the number of repetitions of field i, 0 if the field
// is empty or absent. MSH-1 and MSH-2 count as one repetition.
func (s *Segment) Repetitions(i int) int {
	f := s.Field(i)
	if f == "" || i <= 0 {
		return 0
	}
	if s.msh && i <= 2 {
		return 1
	}
	if ix := s.reps.Load(); ix != nil && ix.field == i {
		return len(ix.bounds) - 1
	}
	return strings.Count(f, string(s.d.Repetition)) + 1
}

// Repetition returns the raw text of repetition rep (from 1) of field i,
// with escape sequences left in place and in the message's character set,
// or "" if absent. A rep below 1 is taken as 1.
func (s *Segment) Repetition(i, rep int) string {
	f := s.Field(i)
	if i <= 0 {
		return ""
	}
	if s.msh && i <= 2 {
		if rep <= 1 {
			return f
		}
		return ""
	}
	if ix := s.repetitionsOf(i, f); ix != nil {
		return ix.text(f, max(rep, 1))
	}
	return nth(f, s.d.Repetition, rep)
}

// Component returns one value of field, unescaped: subcomponent sub of
// component comp of repetition rep. All indexes count from 1 and an index
// below 1 is taken as 1, so Component(f, 1, 2, 0) is the first
// subcomponent of the second component. It returns "" if the value is
// absent. MSH-1 and MSH-2 are returned whole for indexes up to 1. The HL7
// explicit null is returned as the two characters `""`. The value is
// decoded to UTF-8 from the message's character set after unescaping, so
// \XE9\ in an 8859/1 message gives "\u00e9" (see Charset.Decode).
func (s *Segment) Component(field, rep, comp, sub int) string {
	f := s.Field(field)
	if f == "" || field <= 0 {
		return ""
	}
	if s.msh && field <= 2 {
		if rep <= 1 && comp <= 1 && sub <= 1 {
			return f
		}
		return ""
	}
	if s.d.Subcomponent == 0 && sub > 1 {
		return ""
	}
	if ix := s.repetitionsOf(field, f); ix != nil {
		f, rep = ix.text(f, max(rep, 1)), 1
	}
	return s.cs.Decode(Unescape(part(f, s.d, rep, comp, sub), s.d))
}

// ComponentText returns component comp of repetition rep of field (from
// 1; below 1 is taken as 1) whole, unescaped and decoded as Component
// decodes it, with any subcomponent separator in it kept as the
// character it is. It is for a component of a primitive type, such as
// the text of a CE or CWE field (CE-2, CWE-9) or an ST description,
// which has no subcomponents: a separator there is one the sender did not
// escape ("U&E", "Penicillin & amoxicillin"), and reading the first
// subcomponent would cut the text at it.
func (s *Segment) ComponentText(field, rep, comp int) string {
	f := s.Field(field)
	if f == "" || field <= 0 || s.msh && field <= 2 {
		return s.Component(field, rep, comp, 1)
	}
	if ix := s.repetitionsOf(field, f); ix != nil {
		f, rep = ix.text(f, max(rep, 1)), 1
	}
	whole := s.d
	whole.Subcomponent = 0
	return s.cs.Decode(Unescape(part(f, whole, rep, comp, 1), s.d))
}

// part returns subcomponent sub of component comp of repetition rep (all
// from 1; below 1 is taken as 1) of the field text f, or "" if absent, in
// one pass over f. It is the nth part split at the repetition separator,
// then at the component separator, then (when there is one) at the
// subcomponent separator.
func part(f string, d Delimiters, rep, comp, sub int) string {
	rep, comp, sub = max(rep, 1), max(comp, 1), max(sub, 1)
	r, c, u := 1, 1, 1
	start := 0
	for i := 0; i < len(f); i++ {
		ch := f[i]
		switch {
		case ch == d.Repetition:
			if r == rep && c == comp && u == sub {
				return f[start:i]
			}
			r, c, u = r+1, 1, 1
		case ch == d.Component:
			if r == rep && c == comp && u == sub {
				return f[start:i]
			}
			c, u = c+1, 1
		case ch == d.Subcomponent && ch != 0:
			if r == rep && c == comp && u == sub {
				return f[start:i]
			}
			u++
		default:
			continue
		}
		if r > rep || r == rep && (c > comp || c == comp && u > sub) {
			return ""
		}
		start = i + 1
	}
	if r == rep && c == comp && u == sub {
		return f[start:]
	}
	return ""
}

// IsNull reports whether field i is the HL7 explicit null, the two
// characters `""`, which asks the receiver to delete the value.
func (s *Segment) IsNull(i int) bool { return s.Field(i) == `""` }

// nth returns the n-th (from 1) part of v split at sep; n below 1 is taken
// as 1.
func nth(v string, sep byte, n int) string {
	// One pass over the bytes: the parts are short, and a call to
	// strings.IndexByte per part cost more than it saved.
	start := 0
	for i := 0; i < len(v); i++ {
		if v[i] != sep {
			continue
		}
		if n <= 1 {
			return v[start:i]
		}
		n--
		start = i + 1
	}
	if n <= 1 {
		return v[start:]
	}
	return ""
}
