package router

import (
	"errors"
	"slices"
	"strconv"
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
