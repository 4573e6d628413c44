package pas

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// appendResource appends the FHIR JSON of a samply model resource to buf:
// the same bytes fhir.MarshalResource gives (resourceType first, then the
// model's fields in order, without empty strings, objects and arrays,
// strings escaped as encoding/json escapes them), written in one pass.
// fhir.MarshalResource marshals, re-compacts the nested MarshalJSON
// output, validates and prunes, several passes that made up most of the
// translation time. TestAppendResourceMatchesMarshal keeps the two equal.
func appendResource(buf []byte, resource any) []byte {
	v := reflect.ValueOf(resource)
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	buf = append(buf, `{"resourceType":`...)
	buf = appendString(buf, v.Type().Name())
	mark := len(buf)
	buf = append(buf, ',')
	if out, empty := appendFields(buf, v); !empty {
		return append(out, '}')
	}
	return append(buf[:mark], '}')
}

// coder is implemented by the samply enum types.
type coder interface{ Code() string }

var (
	coderType  = reflect.TypeOf((*coder)(nil)).Elem()
	numberType = reflect.TypeOf(json.Number(""))
	fieldCache sync.Map // reflect.Type -> []field
)

type field struct {
	index int
	key   string // `"name":`
}

func fieldsOf(t reflect.Type) []field {
	if f, ok := fieldCache.Load(t); ok {
		return f.([]field)
	}
	var out []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		out = append(out, field{index: i, key: strconv.Quote(name) + ":"})
	}
	fieldCache.Store(t, out)
	return out
}

// appendFields appends the non-empty fields of struct v, comma-separated,
// and reports whether there were none (then buf is returned unchanged).
func appendFields(buf []byte, v reflect.Value) ([]byte, bool) {
	start, n := len(buf), 0
	for _, f := range fieldsOf(v.Type()) {
		mark := len(buf)
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, f.key...)
		var empty bool
		buf, empty = appendValue(buf, v.Field(f.index))
		if empty {
			buf = buf[:mark]
			continue
		}
		n++
	}
	return buf, n == 0 && len(buf) == start
}

// appendValue appends v and reports whether it was empty (nothing
// appended).
func appendValue(buf []byte, v reflect.Value) ([]byte, bool) {
	if v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return buf, true
		}
		v = v.Elem()
	}
	t := v.Type()
	if t.Kind() != reflect.Struct && t.Implements(coderType) {
		code := v.Interface().(coder).Code()
		if code == "" {
			return buf, true
		}
		return appendString(buf, code), false
	}
	switch v.Kind() {
	case reflect.String:
		s := v.String()
		if s == "" {
			return buf, true
		}
		if t == numberType {
			return append(buf, s...), false
		}
		return appendString(buf, s), false
	case reflect.Bool:
		return strconv.AppendBool(buf, v.Bool()), false
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(buf, v.Int(), 10), false
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.AppendUint(buf, v.Uint(), 10), false
	case reflect.Float32, reflect.Float64:
		return strconv.AppendFloat(buf, v.Float(), 'g', -1, t.Bits()), false
	case reflect.Slice:
		if v.Len() == 0 {
			return buf, true
		}
		if t.Elem().Kind() == reflect.Uint8 { // json.RawMessage
			return append(buf, v.Bytes()...), false
		}
		mark := len(buf)
		buf = append(buf, '[')
		n := 0
		for i := 0; i < v.Len(); i++ {
			item := len(buf)
			if n > 0 {
				buf = append(buf, ',')
			}
			var empty bool
			buf, empty = appendValue(buf, v.Index(i))
			if empty {
				buf = buf[:item]
				continue
			}
			n++
		}
		if n == 0 {
			return buf[:mark], true
		}
		return append(buf, ']'), false
	case reflect.Struct:
		mark := len(buf)
		buf = append(buf, '{')
		out, empty := appendFields(buf, v)
		if empty {
			return buf[:mark], true
		}
		return append(out, '}'), false
	}
	return buf, true
}

// appendString appends s as a JSON string escaped as encoding/json does
// by default (HTML-safe, U+2028 and U+2029 escaped, invalid UTF-8 as
// U+FFFD).
func appendString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
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
