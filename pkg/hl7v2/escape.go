package hl7v2

import "strings"

// needsEscape reports whether c must be escaped under d.
func needsEscape(c byte, d Delimiters) bool {
	if c == '\r' || c == '\n' {
		return true
	}
	if c == 0 {
		return false
	}
	return c == d.Field || c == d.Component || c == d.Repetition || c == d.Escape || c == d.Subcomponent || c == d.Truncation
}

// Escape returns s with every delimiter replaced by its HL7 escape
// sequence: \F\ field, \S\ component, \T\ subcomponent, \R\ repetition,
// \E\ escape and, when d declares one, \P\ truncation (written with
// d.Escape in place of the backslash). A line
// feed becomes \.br\ and a carriage return \X0D\, so Unescape(Escape(s))
// gives s back. When d has no escape character (d.Escape is 0) nothing can
// be escaped: delimiters, CR and LF are replaced by spaces instead.
func Escape(s string, d Delimiters) string {
	i := 0
	for i < len(s) && !needsEscape(s[i], d) {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	e := d.Escape
	for ; i < len(s); i++ {
		c := s[i]
		if !needsEscape(c, d) {
			b.WriteByte(c)
			continue
		}
		if e == 0 {
			b.WriteByte(' ')
			continue
		}
		b.WriteByte(e)
		switch c {
		case '\n':
			b.WriteString(".br")
		case '\r':
			b.WriteString("X0D")
		case d.Field:
			b.WriteByte('F')
		case d.Component:
			b.WriteByte('S')
		case d.Subcomponent:
			b.WriteByte('T')
		case d.Repetition:
			b.WriteByte('R')
		case d.Escape:
			b.WriteByte('E')
		case d.Truncation:
			b.WriteByte('P')
		}
		b.WriteByte(e)
	}
	return b.String()
}

// Unescape returns s with HL7 escape sequences decoded: \F\ \S\ \T\ \R\
// \E\ and (v2.7, when d declares a truncation character) \P\ become the
// delimiters of d, \Xhh..\ the bytes of its hexadecimal
// digits (an even number of them) and \.br\ a line feed. Highlighting
// (\H\ start, \N\ normal text), which HL7 lets any text value hold and
// plain text cannot show, is dropped: `\H\SMITH\N\` is "SMITH". Any
// other sequence, such as character set changes, other formatting
// commands or locally defined \Z..\ sequences, is kept as it is, as is
// an escape character without a closing one. Unescape never fails; when d has no
// escape character it returns s unchanged.
func Unescape(s string, d Delimiters) string {
	e := d.Escape
	if e == 0 {
		return s
	}
	i := strings.IndexByte(s, e)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for i < len(s) {
		c := s[i]
		if c != e {
			b.WriteByte(c)
			i++
			continue
		}
		j := strings.IndexByte(s[i+1:], e)
		if j < 0 {
			b.WriteString(s[i:])
			break
		}
		end := i + 1 + j + 1
		if !decodeSequence(&b, s[i+1:end-1], d) {
			b.WriteString(s[i:end])
		}
		i = end
	}
	return b.String()
}

// decodeSequence writes the meaning of escape sequence seq (without its
// escape characters) to b, reporting false, having written nothing, if seq
// is not understood.
func decodeSequence(b *strings.Builder, seq string, d Delimiters) bool {
	if len(seq) == 1 {
		var c byte
		switch seq[0] {
		case 'F':
			c = d.Field
		case 'S':
			c = d.Component
		case 'T':
			c = d.Subcomponent
		case 'R':
			c = d.Repetition
		case 'E':
			c = d.Escape
		case 'P':
			c = d.Truncation
		case 'H', 'N':
			return true
		}
		if c == 0 {
			return false
		}
		b.WriteByte(c)
		return true
	}
	if seq == ".br" {
		b.WriteByte('\n')
		return true
	}
	if len(seq) >= 3 && seq[0] == 'X' && len(seq)%2 == 1 {
		hex := seq[1:]
		for i := 0; i < len(hex); i++ {
			if unhex(hex[i]) < 0 {
				return false
			}
		}
		for i := 0; i < len(hex); i += 2 {
			b.WriteByte(byte(unhex(hex[i])<<4 | unhex(hex[i+1])))
		}
		return true
	}
	return false
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}
