package jsonmap

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/junction-fhir/junction/pkg/fhir"
)

// Encode returns v as JSON, byte for byte as json.Marshal(v) would.
// JSON-shaped values (map[string]any, []any, string, float64, bool, nil)
// are encoded here; any other value, wherever it sits, goes through
// encoding/json (a json.Number, as Decode makes for a number it keeps
// the text of, is written as that text).
func Encode(v any) ([]byte, error) {
	return Append(make([]byte, 0, 1024), v)
}

// Append appends the encoding of v (see Encode) to dst.
func Append(dst []byte, v any) ([]byte, error) {
	e := encoder{keys: make([]string, 0, initialKeys)}
	return e.value(dst, v, 0)
}

// initialKeys is room for the keys of the maps being encoded at once,
// from the top one down, in a FHIR Bundle of ordinary depth.
const initialKeys = 64

// encoder keeps the keys of the maps being encoded as a stack: a map's
// sorted keys sit above those of the maps it is in, so sorting every
// map's keys costs no allocation once the stack has grown to the
// deepest path's.
type encoder struct {
	keys []string
}

func (e *encoder) value(dst []byte, v any, depth int) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case string:
		return appendString(dst, x), nil
	case bool:
		if x {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case float64:
		return appendFloat(dst, x)
	case map[string]any:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return e.object(dst, x, depth)
	case []any:
		if x == nil {
			return append(dst, "null"...), nil
		}
		if depth >= maxDepth {
			return nil, fmt.Errorf("jsonmap: value nested more than %d deep", maxDepth)
		}
		dst = append(dst, '[')
		for i, el := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = e.value(dst, el, depth+1); err != nil {
				return nil, err
			}
		}
		return append(dst, ']'), nil
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("jsonmap: %w", err)
		}
		return append(dst, b...), nil
	}
}

func (e *encoder) object(dst []byte, m map[string]any, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return nil, fmt.Errorf("jsonmap: value nested more than %d deep", maxDepth)
	}
	// This map's keys are e.keys[start:end]; the maps in its values push
	// theirs above end and pop them before returning, so the span stays
	// as sorted here even when the stack is reallocated.
	start := len(e.keys)
	for k := range m {
		e.keys = append(e.keys, k)
	}
	end := len(e.keys)
	slices.Sort(e.keys[start:end])
	dst = append(dst, '{')
	for i := start; i < end; i++ {
		if i > start {
			dst = append(dst, ',')
		}
		k := e.keys[i]
		dst = appendString(dst, k)
		dst = append(dst, ':')
		var err error
		if dst, err = e.value(dst, m[k], depth+1); err != nil {
			return nil, err
		}
	}
	e.keys = e.keys[:start]
	return append(dst, '}'), nil
}

// appendFloat formats f as encoding/json does: like ES6, plain decimal
// for magnitudes from 1e-6 up to 1e21, exponent form outside it.
func appendFloat(dst []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, fmt.Errorf("jsonmap: unsupported value: %s", strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// e-07 becomes e-7, as encoding/json writes it.
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst, nil
}

// appendString appends s as a JSON string, escaped as encoding/json
// escapes it (HTML's <, > and & included), with pkg/fhir's escaper.
func appendString(dst []byte, s string) []byte {
	return fhir.AppendJSONString(dst, s, true)
}

// Clone returns a deep copy of a JSON-shaped value; values of other types
// are copied through encoding/json (as json.Marshal then json.Unmarshal
// into an any would).
func Clone(v any) (any, error) {
	switch x := v.(type) {
	case nil, string, bool, float64, json.Number:
		return x, nil
	case map[string]any:
		if x == nil {
			return nil, nil
		}
		out := make(map[string]any, len(x))
		for k, el := range x {
			c, err := Clone(el)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case []any:
		if x == nil {
			return nil, nil
		}
		out := make([]any, len(x))
		for i, el := range x {
			c, err := Clone(el)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("jsonmap: %w", err)
		}
		return DecodeValue(b)
	}
}
