package yamlx

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Pos is a place in a file. Line and Col start at 1; zero means unknown.
type Pos struct {
	File      string
	Line, Col int
}

// String returns "file:line:col", leaving out the file when it is empty and
// the parts that are unknown.
func (p Pos) String() string {
	var parts []string
	if p.File != "" {
		parts = append(parts, p.File)
	}
	if p.Line > 0 {
		parts = append(parts, strconv.Itoa(p.Line))
		if p.Col > 0 {
			parts = append(parts, strconv.Itoa(p.Col))
		}
	}
	return strings.Join(parts, ":")
}

// Error is one problem at one place in a configuration file.
type Error struct {
	Pos Pos
	Msg string
}

// Error returns "file:line:col: msg".
func (e *Error) Error() string {
	if p := e.Pos.String(); p != "" {
		return p + ": " + e.Msg
	}
	return e.Msg
}

// Errors is every problem found. Decode functions return it sorted by file,
// line and column.
type Errors []*Error

// Error joins the errors with newlines, one per line.
func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, err := range e {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}

// Add appends a problem at p. It is a convenience for callers doing their
// own validation after decoding.
func (e *Errors) Add(p Pos, format string, args ...any) {
	*e = append(*e, &Error{Pos: p, Msg: fmt.Sprintf(format, args...)})
}

// Err returns the errors sorted by position as an error, or nil when there
// are none.
func (e Errors) Err() error {
	if len(e) == 0 {
		return nil
	}
	sorted := slices.Clone(e)
	slices.SortStableFunc(sorted, func(a, b *Error) int {
		return cmp.Or(strings.Compare(a.Pos.File, b.Pos.File), cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Col, b.Pos.Col))
	})
	return sorted
}
