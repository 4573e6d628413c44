package patient

import (
	"bytes"
	"encoding/json"
)

// decodeIdentifierRef decodes a stored identifier entry into ref. An
// entry is read for every message naming a local identifier, so the form
// json.Marshal writes (the fields in order, strings of printable ASCII
// without escapes) is read directly; anything else goes through
// encoding/json. Either way ref is what json.Unmarshal makes of val.
func decodeIdentifierRef(val []byte, ref *identifierRef) error {
	if fastIdentifierRef(val, ref) {
		return nil
	}
	*ref = identifierRef{}
	return json.Unmarshal(val, ref)
}

// fastIdentifierRef reads val into ref when it is in the form
// json.Marshal writes an identifierRef in, and reports whether it was.
func fastIdentifierRef(val []byte, ref *identifierRef) bool {
	rest, ok := bytes.CutPrefix(val, []byte(`{"record":`))
	if !ok {
		return false
	}
	record, rest, ok := plainString(rest)
	if !ok {
		return false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"source":{`)); !ok {
		return false
	}
	var src Source
	received := []byte(`"received":`)
	if after, found := bytes.CutPrefix(rest, []byte(`"messageId":`)); found {
		if src.MessageID, rest, ok = plainString(after); !ok || src.MessageID == "" {
			return false // json.Marshal leaves an empty one out
		}
		received = []byte(`,"received":`)
	}
	if after, found := bytes.CutPrefix(rest, received); found {
		// As json.Unmarshal does, the time decodes itself from its
		// literal.
		lit, tail, ok := plainLiteral(after)
		if !ok || src.Received.UnmarshalJSON(lit) != nil || src.Received.IsZero() {
			return false
		}
		rest = tail
	}
	if !bytes.Equal(rest, []byte(`}}`)) {
		return false
	}
	*ref = identifierRef{Record: record, Source: src}
	return true
}

// plainString reads the JSON string at the start of b when it is
// printable ASCII without escapes (what it decodes to is then its bytes),
// and returns it with what follows.
func plainString(b []byte) (string, []byte, bool) {
	lit, rest, ok := plainLiteral(b)
	if !ok {
		return "", nil, false
	}
	return string(lit[1 : len(lit)-1]), rest, true
}

// plainLiteral is plainString returning the string's literal, quotes
// included.
func plainLiteral(b []byte) ([]byte, []byte, bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return b[:i+1], b[i+1:], true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, nil, false
		}
	}
	return nil, nil, false
}
