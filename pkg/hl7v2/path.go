package hl7v2

// Path is a parsed value location such as "OBX[2]-5[1].3.2". Zero indexes
// mean "not given".
type Path struct {
	// Segment is the three-character segment name, upper case.
	Segment string
	// Occurrence selects the n-th segment with that name (from 1).
	Occurrence int
	// Field is the field number (from 1, HL7 numbering).
	Field int
	// Repetition selects a repetition of the field (from 1).
	Repetition int
	// Component selects a component (from 1).
	Component int
	// Subcomponent selects a subcomponent (from 1).
	Subcomponent int
}

// ParsePath parses a path in the syntax Get accepts. It reports false if
// the path is malformed.
func ParsePath(path string) (Path, bool) {
	var p Path
	if len(path) < 5 {
		return p, false
	}
	var name [3]byte
	for i := 0; i < 3; i++ {
		c := path[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		if !nameChar(c) {
			return p, false
		}
		name[i] = c
	}
	if !upperAlpha(name[0]) {
		return p, false
	}
	rest := path[3:]
	var ok bool
	if rest[0] == '[' {
		if p.Occurrence, rest, ok = bracket(rest); !ok {
			return p, false
		}
	}
	if len(rest) == 0 || (rest[0] != '-' && rest[0] != '.') {
		return p, false
	}
	if p.Field, rest, ok = number(rest[1:]); !ok {
		return p, false
	}
	if len(rest) > 0 && rest[0] == '[' {
		if p.Repetition, rest, ok = bracket(rest); !ok {
			return p, false
		}
	}
	if len(rest) > 0 {
		if rest[0] != '-' && rest[0] != '.' {
			return p, false
		}
		if p.Component, rest, ok = number(rest[1:]); !ok {
			return p, false
		}
	}
	if len(rest) > 0 {
		if rest[0] != '-' && rest[0] != '.' {
			return p, false
		}
		if p.Subcomponent, rest, ok = number(rest[1:]); !ok {
			return p, false
		}
	}
	if len(rest) != 0 {
		return p, false
	}
	if path[0] == name[0] && path[1] == name[1] && path[2] == name[2] {
		p.Segment = path[:3]
	} else {
		p.Segment = string(name[:])
	}
	return p, true
}

// number reads a positive decimal of at most 6 digits from the start of s.
func number(s string) (int, string, bool) {
	n, i := 0, 0
	for i < len(s) && i < 7 && s[i] >= '0' && s[i] <= '9' {
		n = n*10 + int(s[i]-'0')
		i++
	}
	if i == 0 || i > 6 || n < 1 {
		return 0, s, false
	}
	return n, s[i:], true
}

// bracket reads "[n]" from the start of s.
func bracket(s string) (int, string, bool) {
	n, rest, ok := number(s[1:])
	if !ok || len(rest) == 0 || rest[0] != ']' {
		return 0, s, false
	}
	return n, rest[1:], true
}

// Get returns the value at path, or "" if the path is malformed or the
// value is absent.
//
// The path is SEG[n]-F[r].C.S where SEG is a segment name (case is
// ignored), [n] picks the n-th segment of that name (default the first), F
// is the field number, [r] a repetition (default the first), C a component
// and S a subcomponent. "-" and "." are interchangeable separators.
//
// Without a component ("PID-5", "PID-3[2]") Get returns the whole
// repetition as it appears in the message: components still joined by the
// message's component separator and escape sequences left as they are, so
// no delimiter is ever ambiguous. With a component ("PID-5.1") Get returns
// that component's first subcomponent, unescaped; with a subcomponent
// ("PID-3.4.2") that subcomponent, unescaped. Every value is decoded to
// UTF-8 from the message's character set as Component does (a whole
// repetition with its escape sequences still in place). MSH-1 and MSH-2
// are returned whole (the field separator and the encoding characters).
func (m *Message) Get(path string) string {
	p, ok := ParsePath(path)
	if !ok {
		return ""
	}
	return m.GetPath(p)
}

// GetPath returns the value at p, with the rules of Get.
func (m *Message) GetPath(p Path) string {
	occ := p.Occurrence
	if occ < 1 {
		occ = 1
	}
	var seg *Segment
	for i := range m.segs {
		if m.segs[i].Name() == p.Segment {
			occ--
			if occ == 0 {
				seg = &m.segs[i]
				break
			}
		}
	}
	if seg == nil {
		return ""
	}
	if p.Component == 0 && p.Subcomponent == 0 {
		// In UTF-8 like every value, escape sequences kept.
		return seg.cs.Decode(seg.Repetition(p.Field, p.Repetition))
	}
	return seg.Component(p.Field, p.Repetition, p.Component, p.Subcomponent)
}
