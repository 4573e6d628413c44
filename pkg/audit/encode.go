package audit

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// EncodeRecords encodes recs as one stream message holds them: a JSON
// array, byte for byte what json.Marshal writes for a []Record (readers
// and the hash chain take the bytes as they are), without reflection.
// Every record a route or delivery stage handles is encoded here, and
// encoding/json's reflection was about a third of those stages' own CPU.
func EncodeRecords(recs []Record) ([]byte, error) {
	if recs == nil {
		return []byte("null"), nil
	}
	n := 2
	for i := range recs {
		n += sizeHint(&recs[i])
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i := range recs {
		if i > 0 {
			b = append(b, ',')
		}
		var ok bool
		if b, ok = appendRecord(b, &recs[i]); !ok {
			// A time outside what RFC 3339 writes: encoding/json's
			// answer (an error), as before.
			data, err := json.Marshal(recs)
			if err != nil {
				return nil, fmt.Errorf("encoding audit records: %w", err)
			}
			return data, nil
		}
	}
	return append(b, ']'), nil
}

// appendRecord appends r as encoding/json writes it, fields in their
// order, omitting the empty ones tagged omitempty; false if r's time
// cannot be written.
func appendRecord(b []byte, r *Record) ([]byte, bool) {
	b = append(b, `{"time":"`...)
	b, err := r.Time.AppendText(b) // as Time.MarshalJSON, unquoted
	if err != nil {
		return nil, false
	}
	b = append(b, '"')
	b = appendField(b, "message_id", r.MessageID, false)
	b = appendField(b, "event", string(r.Event), false)
	b = appendField(b, "source", r.Source, true)
	b = appendField(b, "route", r.Route, true)
	b = appendField(b, "destination", r.Destination, true)
	b = appendField(b, "outcome", r.Outcome, true)
	b = appendField(b, "reason", r.Reason, true)
	b = appendField(b, "code", r.Code, true)
	b = appendField(b, "rule", r.Rule, true)
	if r.Attempt != 0 {
		b = strconv.AppendInt(append(b, `,"attempt":`...), int64(r.Attempt), 10)
	}
	b = appendField(b, "hash", r.Hash, true)
	b = appendField(b, "stream", r.Stream, true)
	if r.Seq != 0 {
		b = strconv.AppendUint(append(b, `,"seq":`...), r.Seq, 10)
	}
	if r.SentSeq != 0 {
		b = strconv.AppendUint(append(b, `,"sent_seq":`...), r.SentSeq, 10)
	}
	b = appendField(b, "status", r.Status, true)
	b = appendField(b, "location", r.Location, true)
	b = appendField(b, "trace_id", r.TraceID, true)
	b = appendField(b, "patient", r.Patient, true)
	if r.NoPatient {
		b = append(b, `,"no_patient":true`...)
	}
	b = appendList(b, "patients", r.Patients)
	b = appendField(b, "principal", r.Principal, true)
	b = appendField(b, "endpoint", r.Endpoint, true)
	b = appendField(b, "purpose", r.Purpose, true)
	b = appendField(b, "legal_basis", r.LegalBasis, true)
	b = appendField(b, "recipient_ods", r.RecipientODS, true)
	b = appendField(b, "source_ods", r.SourceODS, true)
	b = appendList(b, "classes", r.Classes)
	return append(b, '}'), true
}

// appendField appends ,"key":v, or nothing for an empty v when
// omitEmpty.
func appendField(b []byte, key, v string, omitEmpty bool) []byte {
	if omitEmpty && v == "" {
		return b
	}
	b = append(append(append(b, ",\""...), key...), "\":"...)
	return appendString(b, v)
}

// appendList appends ,"key":[...], or nothing for an empty list (as
// omitempty).
func appendList(b []byte, key string, vs []string) []byte {
	if len(vs) == 0 {
		return b
	}
	b = append(append(append(b, ",\""...), key...), "\":["...)
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, v)
	}
	return append(b, ']')
}

// appendString appends s as a JSON string. Printable ASCII that needs no
// escape (all that records hold: ids, hex hashes, names, codes) is
// written as it is; anything else is left to encoding/json, so escapes
// are its own.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// sizeHint is about how long r's encoding is, unless its strings need
// escapes: its strings, and for each field set about a dozen bytes of
// key and punctuation.
func sizeHint(r *Record) int {
	n := 48 // time, braces
	for _, v := range [...]string{r.MessageID, string(r.Event), r.Source, r.Route, r.Destination, r.Outcome, r.Reason, r.Code,
		r.Rule, r.Hash, r.Stream, r.Status, r.Location, r.TraceID, r.Patient, r.Principal, r.Endpoint, r.Purpose, r.LegalBasis,
		r.RecipientODS, r.SourceODS} {
		if v != "" {
			n += len(v) + 12
		}
	}
	for _, vs := range [...][]string{r.Patients, r.Classes} {
		for _, v := range vs {
			n += len(v) + 3
		}
	}
	return n + 2*16 // the numbers and no_patient
}
