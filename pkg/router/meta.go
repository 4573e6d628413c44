package router

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/jsonmap"
)

// The metadata of batch entries is JSON, written and read here without
// reflection: every stage reads it for every message. What is written is
// what encoding/json would write for the same value (so batches written
// before, and by other versions, read the same), and what is read is
// what encoding/json would read, for the values these functions write.

// errBadMeta reports entry metadata of the wrong shape.
var errBadMeta = errors.New("malformed batch entry metadata")

// appendEntryMeta appends m as JSON.
func appendEntryMeta(b []byte, m *entryMeta) []byte {
	str := func(name, v string, omitEmpty bool) {
		if omitEmpty && v == "" {
			return
		}
		if b[len(b)-1] != '{' {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = fhir.AppendJSONString(b, v, true)
	}
	b = append(b, '{')
	str("id", m.ID, false)
	str("src", m.Source, false)
	str("ct", m.ContentType, false)
	b = append(b, `,"rcv":"`...)
	b = m.ReceivedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	str("mt", m.MessageType, true)
	str("cid", m.ControlID, true)
	str("snd", m.Sender, true)
	str("dk", m.DedupeKey, true)
	b = append(b, `,"p":`...)
	b = strconv.AppendInt(b, int64(m.Partition), 10)
	str("tp", m.TraceParent, true)
	return append(b, '}')
}

// decodeEntryMeta reads what appendEntryMeta (or encoding/json) wrote.
func decodeEntryMeta(data []byte) (entryMeta, error) {
	var m entryMeta
	err := jsonmap.DecodeMembers(data, func(k string, v any) error {
		if v == nil {
			return nil // null leaves a field unset, as in encoding/json
		}
		if k == "p" {
			f, ok := v.(float64)
			if !ok || f != float64(int(f)) {
				return errBadMeta
			}
			m.Partition = int(f)
			return nil
		}
		s, ok := v.(string)
		if !ok {
			return errBadMeta
		}
		switch k {
		case "id":
			m.ID = s
		case "src":
			m.Source = s
		case "ct":
			m.ContentType = s
		case "rcv":
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return errBadMeta
			}
			m.ReceivedAt = t
		case "mt":
			m.MessageType = s
		case "cid":
			m.ControlID = s
		case "snd":
			m.Sender = s
		case "dk":
			m.DedupeKey = s
		case "tp":
			m.TraceParent = s
		}
		return nil
	})
	return m, err
}

// appendHeader appends h as JSON: its keys in order, each with its list
// of values.
func appendHeader(b []byte, h nats.Header) []byte {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = fhir.AppendJSONString(b, k, true)
		b = append(b, ':')
		vs := h[k]
		if vs == nil {
			b = append(b, "null"...)
			continue
		}
		b = append(b, '[')
		for j, v := range vs {
			if j > 0 {
				b = append(b, ',')
			}
			b = fhir.AppendJSONString(b, v, true)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// decodeHeader reads what appendHeader (or encoding/json) wrote.
func decodeHeader(data []byte) (nats.Header, error) {
	if string(data) == "null" {
		return nil, nil // encoding/json's nil header
	}
	if h, ok := scanHeader(data); ok {
		return h, nil
	}
	return readHeader(data)
}

// readHeader reads any JSON header through jsonmap.
func readHeader(data []byte) (nats.Header, error) {
	h := nats.Header{}
	err := jsonmap.DecodeMembers(data, func(k string, v any) error {
		if v == nil {
			h[k] = nil
			return nil
		}
		list, ok := v.([]any)
		if !ok {
			return errBadMeta
		}
		vs := make([]string, len(list))
		for i, e := range list {
			if vs[i], ok = e.(string); !ok {
				return errBadMeta
			}
		}
		h[k] = vs
		return nil
	})
	return h, err
}

// scanHeader reads a header as appendHeader writes the headers the
// engine sets, in a few allocations: one copy of data, of which every
// key and value is a part, one backing array for all the value lists,
// and the map. Anything else (a null list, a repeated key, whitespace, a
// string with an escape or a byte outside printable ASCII) it leaves to
// decodeHeader's general reading, returning false. A delivery stage
// reads a dozen headers of every entry, and building them through
// jsonmap took some 60 allocations an entry.
func scanHeader(data []byte) (nats.Header, bool) {
	s := string(data)
	at := func(i int) byte {
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	// str reads the string at i, returning it and the index after it.
	str := func(i int) (string, int, bool) {
		if at(i) != '"' {
			return "", 0, false
		}
		for j := i + 1; j < len(s); j++ {
			switch c := s[j]; {
			case c == '"':
				return s[i+1 : j], j + 1, true
			case c < 0x20 || c >= 0x7f || c == '\\':
				return "", 0, false
			}
		}
		return "", 0, false
	}
	if at(0) != '{' {
		return nil, false
	}
	// Each key is followed by `":` and no value can be (its quote is
	// followed by ',' or ']'), so these bound the keys and the strings.
	h := make(nats.Header, strings.Count(s, `":`))
	vals := make([]string, 0, strings.Count(s, `"`)/2)
	i := 1
	if at(i) == '}' {
		return h, len(s) == 2
	}
	for {
		k, j, ok := str(i)
		if !ok || at(j) != ':' || at(j+1) != '[' {
			return nil, false
		}
		i = j + 2
		start := len(vals)
		if at(i) == ']' {
			i++
		} else {
			for {
				v, j, ok := str(i)
				if !ok {
					return nil, false
				}
				vals = append(vals, v)
				i = j + 1
				if at(j) == ']' {
					break
				}
				if at(j) != ',' {
					return nil, false
				}
			}
		}
		if _, dup := h[k]; dup {
			return nil, false
		}
		if start == len(vals) {
			h[k] = []string{}
		} else {
			h[k] = vals[start:len(vals):len(vals)]
		}
		switch at(i) {
		case ',':
			i++
		case '}':
			return h, i+1 == len(s)
		default:
			return nil, false
		}
	}
}
