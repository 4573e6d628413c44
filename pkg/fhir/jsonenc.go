package fhir

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"
)

// EncodeOptions says how a ModelEncoder writes a resource.
type EncodeOptions struct {
	// Prune leaves out empty strings, objects and arrays and nulls, at
	// every depth, as MarshalResource does. Without it, members follow
	// encoding/json's rules for the models' struct tags (omitempty), as
	// the models' own MarshalJSON does.
	Prune bool
	// EscapeHTML escapes "<", ">" and "&" in strings as \u003c, \u003e
	// and \u0026, as encoding/json does by default. Either way U+2028
	// and U+2029 are escaped and invalid UTF-8 becomes U+FFFD, as
	// encoding/json does.
	EscapeHTML bool
}

// ModelEncoder writes samply model resources as FHIR JSON in one pass,
// without the reflection of encoding/json on every value: the first
// resource of each Go type compiles an encoding plan (field offsets, JSON
// keys, the codes of the models' enumerations) that later resources of
// that type reuse. The zero value is ready to use and it is safe for
// concurrent use.
//
// The output is that of MarshalResource (with Prune) or of the model's
// MarshalJSON with resourceType moved first (without), byte for byte,
// for the shapes the models have: structs of pointers, strings, enums
// (int types with a Code method), json.Number, booleans, integers,
// slices and json.RawMessage. One difference is kept on purpose: a
// json.RawMessage is written as given (encoding/json compacts it).
type ModelEncoder struct {
	mu    sync.Mutex
	plans sync.Map // reflect.Type -> *plan
}

// planKind is how one Go type is written.
type planKind uint8

const (
	kindString planKind = iota
	kindNumber          // json.Number
	kindBool
	kindInt
	kindUint
	kindFloat
	kindEnum // an int type with a Code method (the models' code systems)
	kindPointer
	kindSlice
	kindRaw // json.RawMessage
	kindStruct
	kindOther // anything else, written by encoding/json
)

// plan is the compiled encoding of one Go type.
type plan struct {
	kind planKind
	typ  reflect.Type
	// size is the type's size, for integers and floats.
	size uintptr
	// elem is the pointed-to or item type of a pointer or slice.
	elem *plan
	// fields are a struct's exported fields, in declaration order.
	fields []fieldPlan
	// skips holds, per field, what appendFields needs to leave an unset
	// field out, packed so that a struct's are a few cache lines: the
	// offset of the word that is zero when the field is nil or empty
	// (the pointer, or the length of a slice or string) shifted left by
	// 2, skipWord when there is such a word, and skipOmitEmpty for
	// omitempty.
	skips []uint32
	// codes are Code() of an enumeration's values 0, 1, ...
	codes []string
}

// fieldPlan is one struct field.
type fieldPlan struct {
	offset    uintptr
	key       string // `"name":`
	omitEmpty bool
	plan      *plan
}

// Flags of plan.skips.
const (
	skipWord      = 1
	skipOmitEmpty = 2
)

// coder is implemented by the samply enum types.
type coder interface{ Code() string }

var (
	coderType  = reflect.TypeFor[coder]()
	numberType = reflect.TypeFor[json.Number]()
	rawType    = reflect.TypeFor[json.RawMessage]()
)

// maxEnumCodes bounds the codes of an enumeration looked up in advance;
// the models' largest code systems have a few hundred.
const maxEnumCodes = 4096

// planFor returns the plan of t, compiling it (and the types it holds)
// on first use.
func (e *ModelEncoder) planFor(t reflect.Type) *plan {
	if p, ok := e.plans.Load(t); ok {
		return p.(*plan)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	building := map[reflect.Type]*plan{}
	p := e.compile(t, building)
	for typ, bp := range building {
		e.plans.Store(typ, bp)
	}
	return p
}

// compile builds the plan of t. building holds the plans being built,
// so recursive types (Extension holds Extension) refer to themselves.
func (e *ModelEncoder) compile(t reflect.Type, building map[reflect.Type]*plan) *plan {
	if p, ok := e.plans.Load(t); ok {
		return p.(*plan)
	}
	if p, ok := building[t]; ok {
		return p
	}
	p := &plan{typ: t, size: t.Size()}
	building[t] = p
	if t.Kind() == reflect.Int && t.Implements(coderType) {
		// The models' codes run from 0 (iota) to the last; Code gives
		// "<unknown>" after them. Values past the table are looked up
		// when written.
		p.kind = kindEnum
		v := reflect.New(t).Elem()
		for i := 0; i < maxEnumCodes; i++ {
			v.SetInt(int64(i))
			code := v.Interface().(coder).Code()
			if code == "<unknown>" {
				break
			}
			p.codes = append(p.codes, code)
		}
		return p
	}
	switch t.Kind() {
	case reflect.String:
		p.kind = kindString
		if t == numberType {
			p.kind = kindNumber
		}
	case reflect.Bool:
		p.kind = kindBool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		p.kind = kindInt
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		p.kind = kindUint
	case reflect.Float32, reflect.Float64:
		p.kind = kindFloat
	case reflect.Pointer:
		p.kind = kindPointer
		p.elem = e.compile(t.Elem(), building)
	case reflect.Slice:
		if t == rawType {
			p.kind = kindRaw
			break
		}
		if t.Elem().Kind() == reflect.Uint8 {
			p.kind = kindOther // base64, as encoding/json writes it
			break
		}
		p.kind = kindSlice
		p.elem = e.compile(t.Elem(), building)
	case reflect.Struct:
		p.kind = kindStruct
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if name == "-" && opts == "" {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			f := fieldPlan{
				offset:    sf.Offset,
				key:       strconv.Quote(name) + ":",
				omitEmpty: hasOption(opts, "omitempty"),
				plan:      e.compile(sf.Type, building),
			}
			var word uintptr
			var flags uint32
			switch {
			case f.plan.kind == kindPointer:
				word, flags = sf.Offset, skipWord
			case f.plan.kind == kindSlice || f.plan.kind == kindRaw:
				word, flags = sf.Offset+unsafe.Offsetof(sliceHeader{}.len), skipWord
			case f.plan.kind == kindString: // not json.Number: empty, it is written as 0
				word, flags = sf.Offset+unsafe.Sizeof(uintptr(0)), skipWord
			}
			if f.omitEmpty {
				flags |= skipOmitEmpty
			}
			if word > math.MaxUint32>>2 {
				word, flags = 0, flags&^skipWord // a struct too large to pack: no shortcut
			}
			p.fields = append(p.fields, f)
			p.skips = append(p.skips, uint32(word)<<2|flags)
		}
	default:
		p.kind = kindOther
	}
	return p
}

func hasOption(opts, name string) bool {
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		if o == name {
			return true
		}
	}
	return false
}

// AppendResource appends the FHIR JSON of resource, a samply model
// resource or a pointer to one, to buf: resourceType (the Go type's name)
// first, then the model's fields in order, as opts says.
func (e *ModelEncoder) AppendResource(buf []byte, resource any, opts EncodeOptions) []byte {
	v := reflect.ValueOf(resource)
	for v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Pointer {
		v = v.Elem()
	}
	var ptr unsafe.Pointer
	switch {
	case v.Kind() == reflect.Pointer && !v.IsNil():
		ptr = v.UnsafePointer()
		v = v.Elem()
	case v.Kind() == reflect.Struct:
		c := reflect.New(v.Type())
		c.Elem().Set(v)
		ptr = c.UnsafePointer()
	default:
		return append(buf, "null"...)
	}
	p := e.planFor(v.Type())
	buf = append(buf, `{"resourceType":`...)
	buf = appendString(buf, v.Type().Name(), opts.EscapeHTML)
	mark := len(buf)
	buf = append(buf, ',')
	out, n := p.appendFields(buf, ptr, opts)
	if n == 0 {
		return append(out[:mark], '}')
	}
	return append(out, '}')
}

// appendFields appends the struct's members at p, comma-separated, and
// returns how many it wrote.
func (p *plan) appendFields(buf []byte, ptr unsafe.Pointer, opts EncodeOptions) ([]byte, int) {
	n := 0
	for i, skip := range p.skips {
		// Most members of a model are unset: leave them out before
		// looking further.
		if skip&skipWord != 0 && (opts.Prune || skip&skipOmitEmpty != 0) && *(*uintptr)(unsafe.Add(ptr, skip>>2)) == 0 {
			continue
		}
		f := &p.fields[i]
		fp := unsafe.Add(ptr, f.offset)
		if !opts.Prune && f.omitEmpty && skip&skipWord == 0 && f.plan.isEmpty(fp) {
			continue
		}
		mark := len(buf)
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, f.key...)
		var empty bool
		buf, empty = f.plan.appendValue(buf, fp, opts)
		if empty {
			buf = buf[:mark]
			continue
		}
		n++
	}
	return buf, n
}

// isEmpty is encoding/json's test for omitempty.
func (p *plan) isEmpty(ptr unsafe.Pointer) bool {
	switch p.kind {
	case kindString, kindNumber:
		return len(*(*string)(ptr)) == 0
	case kindBool:
		return !*(*bool)(ptr)
	case kindInt, kindEnum:
		return p.int(ptr) == 0
	case kindUint:
		return p.uint(ptr) == 0
	case kindFloat:
		return p.float(ptr) == 0
	case kindPointer:
		return *(*unsafe.Pointer)(ptr) == nil
	case kindSlice, kindRaw:
		return (*sliceHeader)(ptr).len == 0
	case kindOther:
		v := reflect.NewAt(p.typ, ptr).Elem()
		switch v.Kind() {
		case reflect.Map, reflect.Array:
			return v.Len() == 0
		case reflect.Interface:
			return v.IsNil()
		}
	}
	return false
}

// sliceHeader is the layout of a Go slice.
type sliceHeader struct {
	data unsafe.Pointer
	len  int
	cap  int
}

func (p *plan) int(ptr unsafe.Pointer) int64 {
	switch p.size {
	case 1:
		return int64(*(*int8)(ptr))
	case 2:
		return int64(*(*int16)(ptr))
	case 4:
		return int64(*(*int32)(ptr))
	}
	return *(*int64)(ptr)
}

func (p *plan) uint(ptr unsafe.Pointer) uint64 {
	switch p.size {
	case 1:
		return uint64(*(*uint8)(ptr))
	case 2:
		return uint64(*(*uint16)(ptr))
	case 4:
		return uint64(*(*uint32)(ptr))
	}
	return *(*uint64)(ptr)
}

func (p *plan) float(ptr unsafe.Pointer) float64 {
	if p.size == 4 {
		return float64(*(*float32)(ptr))
	}
	return *(*float64)(ptr)
}

// appendValue appends the value at ptr and reports whether it was empty,
// in which case nothing was appended. Only with Prune is a value ever
// empty.
func (p *plan) appendValue(buf []byte, ptr unsafe.Pointer, opts EncodeOptions) ([]byte, bool) {
	switch p.kind {
	case kindString:
		s := *(*string)(ptr)
		if s == "" && opts.Prune {
			return buf, true
		}
		return appendString(buf, s, opts.EscapeHTML), false
	case kindNumber:
		s := *(*string)(ptr)
		if s == "" {
			s = "0" // as encoding/json writes it
		}
		return append(buf, s...), false
	case kindBool:
		return strconv.AppendBool(buf, *(*bool)(ptr)), false
	case kindInt:
		return strconv.AppendInt(buf, p.int(ptr), 10), false
	case kindUint:
		return strconv.AppendUint(buf, p.uint(ptr), 10), false
	case kindFloat:
		return appendFloat(buf, p.float(ptr), int(p.size*8)), false
	case kindEnum:
		var code string
		if i := p.int(ptr); i >= 0 && i < int64(len(p.codes)) {
			code = p.codes[i]
		} else {
			code = reflect.NewAt(p.typ, ptr).Elem().Interface().(coder).Code()
		}
		if code == "" && opts.Prune {
			return buf, true
		}
		return appendString(buf, code, opts.EscapeHTML), false
	case kindPointer:
		elem := *(*unsafe.Pointer)(ptr)
		if elem == nil {
			if opts.Prune {
				return buf, true
			}
			return append(buf, "null"...), false
		}
		return p.elem.appendValue(buf, elem, opts)
	case kindRaw:
		raw := *(*[]byte)(ptr)
		if len(raw) == 0 {
			if opts.Prune {
				return buf, true
			}
			if raw == nil {
				return append(buf, "null"...), false
			}
		}
		return append(buf, raw...), false
	case kindSlice:
		h := (*sliceHeader)(ptr)
		if h.len == 0 {
			switch {
			case opts.Prune:
				return buf, true
			case h.data == nil:
				return append(buf, "null"...), false
			}
		}
		mark := len(buf)
		buf = append(buf, '[')
		n := 0
		for i := 0; i < h.len; i++ {
			item := len(buf)
			if n > 0 {
				buf = append(buf, ',')
			}
			var empty bool
			buf, empty = p.elem.appendValue(buf, unsafe.Add(h.data, uintptr(i)*p.elem.size), opts)
			if empty {
				buf = buf[:item]
				continue
			}
			n++
		}
		if n == 0 && opts.Prune {
			return buf[:mark], true
		}
		return append(buf, ']'), false
	case kindStruct:
		mark := len(buf)
		buf = append(buf, '{')
		out, n := p.appendFields(buf, ptr, opts)
		if n == 0 && opts.Prune {
			return buf[:mark], true
		}
		return append(out, '}'), false
	}
	// kindOther: not a shape the models have; encoding/json writes it.
	raw, err := json.Marshal(reflect.NewAt(p.typ, ptr).Interface())
	if err != nil || (opts.Prune && isEmptyJSON(raw)) {
		return buf, opts.Prune
	}
	if !opts.EscapeHTML {
		raw = bytes.ReplaceAll(raw, []byte(`\u003c`), []byte("<"))
		raw = bytes.ReplaceAll(raw, []byte(`\u003e`), []byte(">"))
		raw = bytes.ReplaceAll(raw, []byte(`\u0026`), []byte("&"))
	}
	return append(buf, raw...), false
}

func isEmptyJSON(raw []byte) bool {
	switch string(raw) {
	case `""`, "null", "{}", "[]":
		return true
	}
	return false
}

// appendFloat appends f as encoding/json writes floats.
func appendFloat(buf []byte, f float64, bits int) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return append(buf, "null"...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	buf = strconv.AppendFloat(buf, f, format, -1, bits)
	if format == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		n := len(buf)
		if n >= 4 && buf[n-4] == 'e' && buf[n-3] == '-' && buf[n-2] == '0' {
			buf[n-2] = buf[n-1]
			buf = buf[:n-1]
		}
	}
	return buf
}

// AppendJSONString appends s as a JSON string escaped as encoding/json
// escapes it: U+2028 and U+2029 escaped, invalid UTF-8 as U+FFFD, and,
// when escapeHTML is set, "<", ">" and "&" as \u003c, \u003e and \u0026.
func AppendJSONString(buf []byte, s string, escapeHTML bool) []byte {
	return appendString(buf, s, escapeHTML)
}

// plainASCII[c] is set for the ASCII bytes written as they are in a JSON
// string; htmlSafe also leaves out "<", ">" and "&".
var plainASCII, htmlSafe = func() (plain, safe [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		plain[c] = c != '"' && c != '\\'
		safe[c] = plain[c] && c != '<' && c != '>' && c != '&'
	}
	return plain, safe
}()

func appendString(buf []byte, s string, escapeHTML bool) []byte {
	const hex = "0123456789abcdef"
	plain := &plainASCII
	if escapeHTML {
		plain = &htmlSafe
	}
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		// Skip plain bytes 8 at a time: most of a bundle's strings are
		// plain (URLs, codes, ids).
		if escapeHTML {
			for i+8 <= len(s) && plainWord(load8(s, i))|htmlWord(load8(s, i)) == 0 {
				i += 8
			}
		} else {
			for i+8 <= len(s) && plainWord(load8(s, i)) == 0 {
				i += 8
			}
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if plain[c] {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '\\', '"':
				buf = append(buf, '\\', c)
			case '\b':
				buf = append(buf, '\\', 'b')
			case '\f':
				buf = append(buf, '\\', 'f')
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// load8 returns the 8 bytes of s from i as a little-endian word.
func load8(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

const (
	wordOnes  = 0x0101010101010101
	wordHighs = 0x8080808080808080
)

// plainWord returns 0 when the 8 bytes of x are all ASCII that a JSON
// string holds as they are (not a control character, '"' or '\\'),
// testing them at once: (v - ones) & ^v & highs is non-zero when a byte
// of v is zero.
func plainWord(x uint64) uint64 {
	q := x ^ (wordOnes * '"')
	b := x ^ (wordOnes * '\\')
	return (x | (x-wordOnes*0x20)&^x | (q-wordOnes)&^q | (b-wordOnes)&^b) & wordHighs
}

// htmlWord is plainWord for "<", ">" and "&": 0 when x holds none.
func htmlWord(x uint64) uint64 {
	l := x ^ (wordOnes * '<')
	g := x ^ (wordOnes * '>')
	a := x ^ (wordOnes * '&')
	return ((l-wordOnes)&^l | (g-wordOnes)&^g | (a-wordOnes)&^a) & wordHighs
}
