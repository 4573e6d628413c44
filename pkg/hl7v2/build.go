package hl7v2

import "strings"

// SegmentBuilder builds one segment value by value. Values are set by
// position (field, repetition, component, subcomponent, all from 1) and
// escaped with Escape when the segment is written, so data can never be
// read back as a delimiter. Trailing empty fields, repetitions,
// components and subcomponents are left out. The zero value is not
// usable; make one with NewSegment.
type SegmentBuilder struct {
	name string
	// fields[i] holds field i+1: repetitions of components of
	// subcomponents, unescaped.
	fields [][][][]string
}

// NewSegment returns an empty segment builder for the segment name, such
// as "PID". For "MSH", field 1 (the field separator) and field 2 (the
// encoding characters) are written from the delimiters by Encode and must
// not be set.
func NewSegment(name string) *SegmentBuilder {
	return &SegmentBuilder{name: name}
}

// Set sets one value. Positions below 1 are ignored, as is an empty value
// (which leaves the position empty). Setting a position again replaces
// its value.
func (s *SegmentBuilder) Set(field, rep, comp, sub int, value string) *SegmentBuilder {
	if field < 1 || rep < 1 || comp < 1 || sub < 1 || value == "" {
		return s
	}
	if s.name == "MSH" && field < 3 {
		return s
	}
	for len(s.fields) < field {
		s.fields = append(s.fields, nil)
	}
	f := s.fields[field-1]
	for len(f) < rep {
		f = append(f, nil)
	}
	r := f[rep-1]
	for len(r) < comp {
		r = append(r, nil)
	}
	c := r[comp-1]
	for len(c) < sub {
		c = append(c, "")
	}
	c[sub-1] = value
	r[comp-1] = c
	f[rep-1] = r
	s.fields[field-1] = f
	return s
}

// SetField sets the first repetition's first subcomponent of each
// component of field, in order: SetField(3, "a", "", "c") gives a^^c.
func (s *SegmentBuilder) SetField(field int, comps ...string) *SegmentBuilder {
	return s.SetRep(field, 1, comps...)
}

// SetRep sets the first subcomponent of each component of repetition rep
// of field, in order.
func (s *SegmentBuilder) SetRep(field, rep int, comps ...string) *SegmentBuilder {
	for i, v := range comps {
		s.Set(field, rep, i+1, 1, v)
	}
	return s
}

// SetComponent sets the subcomponents of one component of repetition rep
// of field, in order.
func (s *SegmentBuilder) SetComponent(field, rep, comp int, subs ...string) *SegmentBuilder {
	for i, v := range subs {
		s.Set(field, rep, comp, i+1, v)
	}
	return s
}

// Repetitions returns how many repetitions of field have been set (the
// highest one set), 0 when none.
func (s *SegmentBuilder) Repetitions(field int) int {
	if field < 1 || field > len(s.fields) {
		return 0
	}
	return len(s.fields[field-1])
}

// AppendTo appends the segment, escaped for d, to dst without a segment
// terminator.
func (s *SegmentBuilder) AppendTo(dst []byte, d Delimiters) []byte {
	dst = append(dst, s.name...)
	start := 0
	if s.name == "MSH" {
		dst = append(dst, d.Field)
		dst = append(dst, d.EncodingCharacters()...)
		start = 2
	}
	last := trimLast(len(s.fields), func(i int) bool { return !emptyField(s.fields[i]) })
	for i := start; i < last; i++ {
		dst = append(dst, d.Field)
		dst = appendField(dst, s.fields[i], d)
	}
	return dst
}

// String returns the segment with the standard delimiters. It may hold
// patient data: never log it.
func (s *SegmentBuilder) String() string {
	return string(s.AppendTo(nil, DefaultDelimiters()))
}

// trimLast returns one past the index of the last element of n for which
// set reports true, or 0.
func trimLast(n int, set func(int) bool) int {
	for n > 0 && !set(n-1) {
		n--
	}
	return n
}

func emptyField(f [][][]string) bool {
	for _, r := range f {
		if !emptyRep(r) {
			return false
		}
	}
	return true
}

func emptyRep(r [][]string) bool {
	for _, c := range r {
		if !emptyComp(c) {
			return false
		}
	}
	return true
}

func emptyComp(c []string) bool {
	for _, v := range c {
		if v != "" {
			return false
		}
	}
	return true
}

func appendField(dst []byte, f [][][]string, d Delimiters) []byte {
	n := trimLast(len(f), func(i int) bool { return !emptyRep(f[i]) })
	for i := 0; i < n; i++ {
		if i > 0 {
			dst = append(dst, d.Repetition)
		}
		r := f[i]
		nc := trimLast(len(r), func(j int) bool { return !emptyComp(r[j]) })
		for j := 0; j < nc; j++ {
			if j > 0 {
				dst = append(dst, d.Component)
			}
			c := r[j]
			ns := trimLast(len(c), func(k int) bool { return c[k] != "" })
			for k := 0; k < ns; k++ {
				if k > 0 {
					dst = append(dst, d.Subcomponent)
				}
				dst = append(dst, Escape(c[k], d)...)
			}
		}
	}
	return dst
}

// MessageBuilder collects segments and writes them as one ER7 message.
type MessageBuilder struct {
	d    Delimiters
	segs []*SegmentBuilder
}

// NewMessage returns a message builder writing with delimiters d. The
// delimiters must be distinct, printable and not alphanumeric, as
// DefaultDelimiters are.
func NewMessage(d Delimiters) *MessageBuilder {
	return &MessageBuilder{d: d}
}

// Add appends a segment and returns it, for setting its values.
func (m *MessageBuilder) Add(name string) *SegmentBuilder {
	s := NewSegment(name)
	m.segs = append(m.segs, s)
	return s
}

// Encode writes the message, every segment ended by a carriage return.
func (m *MessageBuilder) Encode() []byte {
	out := make([]byte, 0, 128*len(m.segs))
	for _, s := range m.segs {
		out = s.AppendTo(out, m.d)
		out = append(out, '\r')
	}
	return out
}

// EncodeText writes the message with line feeds in place of carriage
// returns, for printing on a terminal. Parse reads both forms alike.
func (m *MessageBuilder) EncodeText() string {
	return strings.ReplaceAll(string(m.Encode()), "\r", "\n")
}
