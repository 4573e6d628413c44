package yamlx

import (
	"sort"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// String is a scalar string that remembers where it was written, so that
// callers checking it further (a CEL expression, say) can report problems at
// the right line and column.
//
// Pos is where the value is written: its first character, which for a
// quoted scalar is the quote, for a block scalar the | or > indicator, and
// for a scalar with an anchor or tag the anchor or tag. PosAt maps an offset
// in Value to its place in the file; PosAt(0) is where the text starts.
type String struct {
	Value string
	Pos   Pos

	m *posMap // nil when built by hand or decoded without the source text
}

// Equal reports whether s and o have the same Value and Pos. go-cmp uses it.
func (s String) Equal(o String) bool {
	return s.Value == o.Value && s.Pos == o.Pos
}

// posMap records, for each run of Value written contiguously on one line,
// where it starts in Value and in the file.
type posMap struct{ runs []run }

type run struct{ off, line, col int }

// PosAt returns the position in the file of the byte at offset in Value
// (clamped to Value). It is exact for plain scalars, for literal and folded
// block scalars and for quoted scalars, escapes included, when the String
// was decoded from a file; a hand-built String counts from Pos.
func (s String) PosAt(offset int) Pos {
	offset = max(0, min(offset, len(s.Value)))
	before := s.Value[:offset]
	if s.m == nil || len(s.m.runs) == 0 {
		p := s.Pos
		if nl := strings.LastIndexByte(before, '\n'); nl >= 0 {
			p.Line += strings.Count(before, "\n")
			p.Col = 1 + utf8.RuneCountInString(before[nl+1:])
		} else {
			p.Col += utf8.RuneCountInString(before)
		}
		return p
	}
	runs := s.m.runs
	i := max(0, sort.Search(len(runs), func(i int) bool { return runs[i].off > offset })-1)
	r := runs[i]
	col := r.col
	if offset > r.off {
		col += utf8.RuneCountInString(s.Value[r.off:offset])
	}
	return Pos{File: s.Pos.File, Line: r.line, Col: col}
}

// locate maps the characters of scalar n's value to the source text by
// walking both: a character that matches is where the source has it, source
// whitespace (indentation, folded line breaks) and quoting are skipped, and
// a value character with no source counterpart (a folded line break) is
// skipped over.
func (d *decoder) locate(n *yaml.Node) *posMap {
	if d.src == nil || n.Value == "" {
		return nil
	}
	block := n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0
	dq := n.Style&yaml.DoubleQuotedStyle != 0
	sq := n.Style&yaml.SingleQuotedStyle != 0
	line, col := n.Line, 1
	if block {
		line++ // content starts on the line after the header
	}
	if line < 1 || line > len(d.src.lines) {
		return nil
	}
	data := d.src.data
	i := d.src.lines[line-1]
	if c := d.cursor; !block && c[0] == line && c[1] <= n.Column {
		col, i = c[1], c[2] // go on from the last string on this line
	}
	step := func() { // advance one character in the source
		r, w := utf8.DecodeRune(data[i:])
		i += w
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	for !block && col < n.Column && i < len(data) && data[i] != '\n' {
		step()
	}
	d.cursor = [3]int{line, col, i}
	if !block { // skip an anchor or tag written before the value
		for i < len(data) && (data[i] == '&' || data[i] == '!') {
			for i < len(data) && data[i] != ' ' && data[i] != '\t' && data[i] != '\n' {
				step()
			}
			for i < len(data) && (data[i] == ' ' || data[i] == '\t') {
				step()
			}
		}
	}
	if (dq || sq) && i < len(data) {
		step() // the opening quote
	}

	m := &posMap{}
	val, j, joined := n.Value, 0, false
	for j < len(val) && i < len(data) {
		if dq && data[i] == '\\' && i+1 < len(data) && data[i+1] != '\n' && data[i+1] != '\r' {
			// An escape stands for one character of the value.
			m.runs = append(m.runs, run{j, line, col})
			_, w := utf8.DecodeRuneInString(val[j:])
			j += w
			for range escapeLen(data[i+1]) {
				if i < len(data) {
					step()
				}
			}
			joined = false
			continue
		}
		sr, _ := utf8.DecodeRune(data[i:])
		vr, vw := utf8.DecodeRuneInString(val[j:])
		switch {
		case sr == vr:
			if !joined {
				m.runs = append(m.runs, run{j, line, col})
			}
			joined = sr != '\n'
			j += vw
			step()
		case sr == ' ' || sr == '\t' || sr == '\r' || sr == '\n' || dq && sr == '\\' || sq && sr == '\'':
			joined = false
			step()
		default:
			joined = false
			j += vw
		}
	}
	return m
}

// escapeLen returns the length of a double-quoted escape sequence whose
// character after the backslash is c.
func escapeLen(c byte) int {
	switch c {
	case 'x':
		return 4
	case 'u':
		return 6
	case 'U':
		return 10
	}
	return 2
}
