// Package jsonmap decodes and encodes JSON-shaped Go values: objects as
// map[string]any, arrays as []any, numbers as float64, and strings, bools
// and nil. It gives the same results as encoding/json (Unmarshal into a
// map[string]any, Marshal of such a value) at a fraction of the cost,
// because the route path handles every translated FHIR bundle in this
// form: once decoded for CEL, once encoded for each destination.
//
// One difference: a number whose text is not what encoding its float64
// value writes (72.50, 1.000, 1E-7, or more digits than a float64 holds)
// is decoded as a json.Number holding that text, and encoded back as it
// came. In FHIR a decimal's precision is significant ("1.000" is not
// "1"), so a bundle that is decoded, redacted and encoded again must not
// change its numbers. Readers wanting a value take Float64 of either.
//
// The differential fuzz tests hold it to encoding/json: same values
// decoded (a json.Number compared by its float64), same bytes encoded,
// same inputs refused; and every number read is written back unchanged.
package jsonmap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth is how deeply arrays and objects may nest, as in
// encoding/json.
const maxDepth = 10000

// Decode parses data, which must hold one JSON object, as
// json.Unmarshal(data, &m) with m a map[string]any would.
func Decode(data []byte) (map[string]any, error) {
	d := newDecoder(data)
	d.space()
	if d.i >= len(d.data) {
		return nil, errors.New("jsonmap: unexpected end of JSON input")
	}
	if d.data[d.i] != '{' {
		if d.data[d.i] == 'n' {
			// null leaves a map unset, as encoding/json does.
			if err := d.literal("null"); err != nil {
				return nil, err
			}
			if err := d.end(); err != nil {
				return nil, err
			}
			return nil, nil
		}
		if _, err := d.value(0); err != nil {
			return nil, err
		}
		if err := d.end(); err != nil {
			return nil, err
		}
		return nil, errors.New("jsonmap: JSON value is not an object")
	}
	v, err := d.object(0)
	if err != nil {
		return nil, err
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return v, nil
}

// DecodeMembers parses data, which must hold one JSON object, and calls
// member with each of its members in order, the value decoded as Decode
// would decode it. A repeated key is passed each time it appears. It
// suits small flat objects read into a struct: no map is built. An error
// from member stops the parse and is returned.
func DecodeMembers(data []byte, member func(key string, v any) error) error {
	d := newDecoder(data)
	d.space()
	if d.i >= len(d.data) || d.data[d.i] != '{' {
		return d.syntax("looking for beginning of object")
	}
	if err := d.members(1, member); err != nil {
		return err
	}
	return d.end()
}

// DecodeValue parses data, which must hold one JSON value, as
// json.Unmarshal(data, &v) with v an any would.
func DecodeValue(data []byte) (any, error) {
	d := newDecoder(data)
	d.space()
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return v, nil
}

// decoder reads one JSON document. src is data as one string, made
// once: keys and strings without escapes are slices of it, so they cost
// no allocation of their own. They keep src alive while any of them is
// referenced, which for a decoded document is about as long as the
// document itself.
type decoder struct {
	data []byte
	src  string
	i    int
	// stack holds the elements of the arrays and the values of the
	// objects being read, and keys the objects' keys, so each is built
	// once at its final size. Keys are kept apart so that they are not
	// boxed as interfaces, an allocation each.
	stack []any
	keys  []string
	// The fields below serve long documents only (see long): short ones,
	// such as a message's metadata, have too little to share to pay for
	// them.
	//
	// elems is the unused rest of the chunk the arrays' elements are
	// copied into: one allocation serves many small arrays (most of a
	// bundle's hold one element). Each array is a slice of the chunk
	// with no room to grow, so appending to one copies it rather than
	// writing over the next.
	elems []any
	// boxed holds string values already made into interfaces, so that a
	// value a document repeats (a system, a profile, a reference) shares
	// one: each conversion of a string to an interface is an allocation.
	boxed *[boxedSlots]any
}

// Sizes for long documents: longDoc is the length from which a document
// is long (a translated bundle is several kilobytes); stackSize the
// values and keys pending the stacks start with, enough for the nesting
// of a FHIR bundle, so that they do not grow step by step on every
// document; elemsChunk the array elements of a chunk of elems; and
// boxedSlots the size of boxed, a power of two.
const (
	longDoc    = 2048
	stackSize  = 32
	elemsChunk = 64
	boxedSlots = 64
)

func newDecoder(data []byte) decoder {
	return decoder{data: data, src: string(data)}
}

// long reports whether the document is long enough for the decoder's
// shared allocations.
func (d *decoder) long() bool { return len(d.data) >= longDoc }

// reserve gives a long document's stacks their starting size.
func (d *decoder) reserve() {
	if d.stack == nil && d.long() {
		d.stack = make([]any, 0, stackSize)
		d.keys = make([]string, 0, stackSize)
	}
}

func (d *decoder) syntax(what string) error {
	if d.i >= len(d.data) {
		return errors.New("jsonmap: unexpected end of JSON input")
	}
	return fmt.Errorf("jsonmap: invalid character %q %s at offset %d", d.data[d.i], what, d.i)
}

func (d *decoder) space() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// end checks nothing but white space follows the value.
func (d *decoder) end() error {
	d.space()
	if d.i < len(d.data) {
		return d.syntax("after top-level value")
	}
	return nil
}

func (d *decoder) value(depth int) (any, error) {
	if d.i >= len(d.data) {
		return nil, d.syntax("")
	}
	switch c := d.data[d.i]; {
	case c == '{':
		m, err := d.object(depth)
		if err != nil {
			return nil, err
		}
		return m, nil
	case c == '[':
		return d.array(depth)
	case c == '"':
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		return d.box(s), nil
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	default:
		return nil, d.syntax("looking for beginning of value")
	}
}

// box returns s as an interface: the one made before when s was the
// last string of its slot in boxed.
func (d *decoder) box(s string) any {
	if s == "" || !d.long() {
		return s
	}
	if d.boxed == nil {
		d.boxed = new([boxedSlots]any)
	}
	n := len(s)
	h := uint(n) ^ uint(s[n-1])<<1 ^ uint(s[n/2])<<3 ^ uint(s[n*3/4])<<5
	slot := &d.boxed[h%boxedSlots]
	if v, ok := (*slot).(string); ok && v == s {
		return *slot
	}
	*slot = s
	return *slot
}

func (d *decoder) literal(word string) error {
	for k := 0; k < len(word); k++ {
		if d.i >= len(d.data) || d.data[d.i] != word[k] {
			return d.syntax("in literal " + word)
		}
		d.i++
	}
	return nil
}

func (d *decoder) object(depth int) (map[string]any, error) {
	if depth++; depth > maxDepth {
		return nil, errors.New("jsonmap: exceeded max depth")
	}
	d.reserve()
	base, kbase := len(d.stack), len(d.keys)
	defer func() { d.stack, d.keys = d.stack[:base], d.keys[:kbase] }()
	err := d.members(depth, func(k string, v any) error {
		d.keys = append(d.keys, k)
		d.stack = append(d.stack, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	keys, values := d.keys[kbase:], d.stack[base:]
	m := make(map[string]any, len(keys))
	for j, k := range keys {
		m[k] = values[j] // a repeated key: the last wins
	}
	return m, nil
}

// members reads the object at d.i (on its opening brace), its values
// nested at depth, and calls member with each member in order.
func (d *decoder) members(depth int, member func(k string, v any) error) error {
	d.i++ // {
	d.space()
	if d.i < len(d.data) && d.data[d.i] == '}' {
		d.i++
		return nil
	}
	for {
		d.space()
		if d.i >= len(d.data) || d.data[d.i] != '"' {
			return d.syntax("looking for beginning of object key string")
		}
		k, err := d.str()
		if err != nil {
			return err
		}
		d.space()
		if d.i >= len(d.data) || d.data[d.i] != ':' {
			return d.syntax("after object key")
		}
		d.i++
		d.space()
		v, err := d.value(depth)
		if err != nil {
			return err
		}
		if err := member(k, v); err != nil {
			return err
		}
		d.space()
		if d.i >= len(d.data) {
			return d.syntax("")
		}
		switch d.data[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return d.syntax("after object key:value pair")
		}
	}
}

func (d *decoder) array(depth int) ([]any, error) {
	if depth++; depth > maxDepth {
		return nil, errors.New("jsonmap: exceeded max depth")
	}
	d.i++ // [
	d.reserve()
	base := len(d.stack)
	defer func() { d.stack = d.stack[:base] }()
	d.space()
	if d.i < len(d.data) && d.data[d.i] == ']' {
		d.i++
		return []any{}, nil
	}
	for {
		d.space()
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		d.stack = append(d.stack, v)
		d.space()
		if d.i >= len(d.data) {
			return nil, d.syntax("")
		}
		switch d.data[d.i] {
		case ',':
			d.i++
			continue
		case ']':
			d.i++
		default:
			return nil, d.syntax("after array element")
		}
		break
	}
	if !d.long() {
		return append([]any(nil), d.stack[base:]...), nil
	}
	n := len(d.stack) - base
	if len(d.elems) < n {
		d.elems = make([]any, max(n, elemsChunk))
	}
	out := d.elems[:n:n]
	d.elems = d.elems[n:]
	copy(out, d.stack[base:])
	return out, nil
}

func (d *decoder) number() (any, error) {
	start := d.i
	if d.data[d.i] == '-' {
		d.i++
	}
	digits := func() int {
		n := 0
		for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
			d.i++
			n++
		}
		return n
	}
	switch {
	case d.i < len(d.data) && d.data[d.i] == '0':
		d.i++
	case d.i < len(d.data) && d.data[d.i] >= '1' && d.data[d.i] <= '9':
		digits()
	default:
		return nil, d.syntax("in numeric literal")
	}
	if d.i < len(d.data) && d.data[d.i] == '.' {
		d.i++
		if digits() == 0 {
			return nil, d.syntax("after decimal point in numeric literal")
		}
	}
	if d.i < len(d.data) && (d.data[d.i] == 'e' || d.data[d.i] == 'E') {
		d.i++
		if d.i < len(d.data) && (d.data[d.i] == '+' || d.data[d.i] == '-') {
			d.i++
		}
		if digits() == 0 {
			return nil, d.syntax("in exponent of numeric literal")
		}
	}
	lit := d.data[start:d.i]
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		return nil, fmt.Errorf("jsonmap: number %s out of range of float64", lit)
	}
	var buf [32]byte
	if canon, err := appendFloat(buf[:0], f); err != nil || !bytes.Equal(canon, lit) {
		return json.Number(lit), nil
	}
	return f, nil
}

// Float64 returns the value of a decoded number, a float64 or a
// json.Number, and whether v is one.
func Float64(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

// str reads a string at d.i (on its opening quote).
func (d *decoder) str() (string, error) {
	d.i++ // "
	start := d.i
	ascii := true
	for d.i < len(d.data) {
		c := d.data[d.i]
		switch {
		case c == '"':
			b := d.data[start:d.i]
			d.i++
			if !ascii && !utf8.Valid(b) {
				return d.slow(b), nil
			}
			return d.src[start : d.i-1], nil
		case c == '\\':
			return d.escaped(start)
		case c < 0x20:
			return "", d.syntax("in string literal")
		case c >= utf8.RuneSelf:
			ascii = false
		}
		d.i++
	}
	return "", d.syntax("")
}

// slow returns b, which holds no escapes, with each invalid UTF-8 byte
// replaced by U+FFFD, as encoding/json does.
func (d *decoder) slow(b []byte) string {
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		out = utf8.AppendRune(out, r)
		b = b[n:]
	}
	return string(out)
}

// escaped reads the rest of a string from start, where an escape was
// found at d.i.
func (d *decoder) escaped(start int) (string, error) {
	out := make([]byte, 0, d.i-start+16)
	out = append(out, d.data[start:d.i]...)
	// The bytes before the escape may hold invalid UTF-8 too.
	if !utf8.Valid(out) {
		out = []byte(d.slow(out))
	}
	for d.i < len(d.data) {
		c := d.data[d.i]
		switch {
		case c == '"':
			d.i++
			return string(out), nil
		case c < 0x20:
			return "", d.syntax("in string literal")
		case c == '\\':
			d.i++
			if d.i >= len(d.data) {
				return "", d.syntax("")
			}
			switch e := d.data[d.i]; e {
			case '"', '\\', '/':
				out = append(out, e)
				d.i++
			case 'b':
				out = append(out, '\b')
				d.i++
			case 'f':
				out = append(out, '\f')
				d.i++
			case 'n':
				out = append(out, '\n')
				d.i++
			case 'r':
				out = append(out, '\r')
				d.i++
			case 't':
				out = append(out, '\t')
				d.i++
			case 'u':
				d.i++
				r, ok := d.hex4()
				if !ok {
					return "", d.syntax("in \\u hexadecimal character escape")
				}
				if utf16.IsSurrogate(r) {
					r = d.lowSurrogate(r)
				}
				out = utf8.AppendRune(out, r)
			default:
				return "", d.syntax("in string escape code")
			}
		case c < utf8.RuneSelf:
			out = append(out, c)
			d.i++
		default:
			r, n := utf8.DecodeRune(d.data[d.i:])
			out = utf8.AppendRune(out, r)
			d.i += n
		}
	}
	return "", d.syntax("")
}

// lowSurrogate completes the high surrogate r with a following \uXXXX
// low surrogate, or returns U+FFFD (leaving what follows unread) as
// encoding/json does for an unpaired one.
func (d *decoder) lowSurrogate(r rune) rune {
	if d.i+6 <= len(d.data) && d.data[d.i] == '\\' && d.data[d.i+1] == 'u' {
		save := d.i
		d.i += 2
		if r2, ok := d.hex4(); ok {
			if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
				return dec
			}
		}
		d.i = save
	}
	return utf8.RuneError
}

// hex4 reads four hex digits as a rune.
func (d *decoder) hex4() (rune, bool) {
	if d.i+4 > len(d.data) {
		return 0, false
	}
	var r rune
	for _, c := range d.data[d.i : d.i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	d.i += 4
	return r, true
}
