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
	if m, ok := scanEntryMeta(data); ok {
		return m, nil
	}
	return readEntryMeta(data)
}

// readEntryMeta reads any JSON entry metadata through jsonmap.
func readEntryMeta(data []byte) (entryMeta, error) {
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
// and the map. Anything else (a null list, a repeated key, or what
// plainScanner leaves) it leaves to readHeader, returning false. A
// delivery stage reads a dozen headers of every entry, and building them
// through jsonmap took some 60 allocations an entry.
func scanHeader(data []byte) (nats.Header, bool) {
	p := plainScanner{s: string(data)}
	if !p.eat('{') {
		return nil, false
	}
	// Each key is followed by `":` and no value can be (its quote is
	// followed by ',' or ']'), so these bound the keys and the strings.
	h := make(nats.Header, strings.Count(p.s, `":`))
	vals := make([]string, 0, strings.Count(p.s, `"`)/2)
	if p.eat('}') {
		return h, p.done()
	}
	for {
		k, ok := p.str()
		if !ok || !p.eat(':') || !p.eat('[') {
			return nil, false
		}
		start := len(vals)
		if !p.eat(']') {
			for {
				v, ok := p.str()
				if !ok {
					return nil, false
				}
				vals = append(vals, v)
				if p.eat(']') {
					break
				}
				if !p.eat(',') {
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
		if p.eat('}') {
			return h, p.done()
		}
		if !p.eat(',') {
			return nil, false
		}
	}
}

// scanEntryMeta reads entry metadata as appendEntryMeta writes it, its
// strings parts of one copy of data. Anything else (a key it does not
// write, or written twice, a null, a number other than a plain integer,
// or what plainScanner leaves) it leaves to decodeEntryMeta's general
// reading, returning false; so it does with a time that does not parse,
// which that reading refuses.
func scanEntryMeta(data []byte) (entryMeta, bool) {
	var m entryMeta
	p := plainScanner{s: string(data)}
	if !p.eat('{') {
		return m, false
	}
	if p.eat('}') {
		return m, p.done()
	}
	var seen uint16
	for {
		k, ok := p.str()
		if !ok || !p.eat(':') {
			return m, false
		}
		var bit uint16
		switch k {
		case "p":
			bit = 1 << 0
			if m.Partition, ok = p.int(); !ok {
				return m, false
			}
		case "rcv":
			bit = 1 << 1
			v, ok := p.str()
			if !ok {
				return m, false
			}
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return m, false
			}
			m.ReceivedAt = t
		default:
			var dst *string
			for i, f := range [...]struct {
				key string
				dst *string
			}{{"id", &m.ID}, {"src", &m.Source}, {"ct", &m.ContentType}, {"mt", &m.MessageType}, {"cid", &m.ControlID},
				{"snd", &m.Sender}, {"dk", &m.DedupeKey}, {"tp", &m.TraceParent}} {
				if f.key == k {
					dst, bit = f.dst, 1<<(i+2)
					break
				}
			}
			if dst == nil {
				return m, false
			}
			if *dst, ok = p.str(); !ok {
				return m, false
			}
		}
		if seen&bit != 0 {
			return m, false
		}
		seen |= bit
		if p.eat('}') {
			return m, p.done()
		}
		if !p.eat(',') {
			return m, false
		}
	}
}

// plainScanner reads JSON as this file's writers write it: without
// whitespace, its strings printable ASCII without escapes, its numbers
// integers. Its methods report false on anything else, for the caller to
// leave the data to jsonmap.
type plainScanner struct {
	s string
	i int
}

// eat skips c if it is next.
func (p *plainScanner) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// done reports whether everything was read.
func (p *plainScanner) done() bool { return p.i == len(p.s) }

// str reads a string: a part of s.
func (p *plainScanner) str() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	for j := p.i; j < len(p.s); j++ {
		switch c := p.s[j]; {
		case c == '"':
			v := p.s[p.i:j]
			p.i = j + 1
			return v, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return "", false
		}
	}
	return "", false
}

// int reads an integer of at most 15 digits (which a float64, as jsonmap
// reads numbers, holds exactly), without a leading zero.
func (p *plainScanner) int() (int, bool) {
	j := p.i
	if j < len(p.s) && p.s[j] == '-' {
		j++
	}
	k := j
	for k < len(p.s) && p.s[k] >= '0' && p.s[k] <= '9' {
		k++
	}
	if k == j || k-j > 15 || p.s[j] == '0' && k-j > 1 {
		return 0, false
	}
	n, err := strconv.Atoi(p.s[p.i:k])
	if err != nil {
		return 0, false
	}
	p.i = k
	return n, true
}
