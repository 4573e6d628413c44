package patient

import (
	"encoding/json"
	"strings"
	"time"
)

// The index reads an identifier entry for every message that names a
// local identifier, and a record (sometimes twice) for every message,
// and writes both with json.Marshal. So the form json.Marshal writes
// (fields in declaration order, empty ones left out as the tags say, no
// white space, strings of printable ASCII without escapes) is read
// directly, and anything else goes through json.Unmarshal. Either way
// the value is what json.Unmarshal makes of the bytes.

// decodeWritten decodes val into v: with fast when val is in the form
// json.Marshal writes, else with json.Unmarshal.
func decodeWritten[T any](val []byte, v *T, fast func([]byte, *T) bool) error {
	if fast(val, v) {
		return nil
	}
	var zero T
	*v = zero
	return json.Unmarshal(val, v)
}

// decodeIdentifierRef decodes a stored identifier entry into ref.
func decodeIdentifierRef(val []byte, ref *identifierRef) error {
	return decodeWritten(val, ref, fastIdentifierRef)
}

// fastIdentifierRef reads val into ref when it is in the form
// json.Marshal writes an identifierRef in, and reports whether it was.
func fastIdentifierRef(val []byte, ref *identifierRef) bool {
	c := newWritten(val)
	var r identifierRef
	if !c.open() || !c.str("record", &r.Record, true) || !c.source("source", &r.Source, true) || !c.close() || !c.end() {
		return false
	}
	*ref = r
	return true
}

// decodeRecordJSON decodes a stored record into r.
func decodeRecordJSON(val []byte, r *Record) error {
	return decodeWritten(val, r, fastRecord)
}

// fastRecord reads val into r when it is in the form json.Marshal
// writes a Record in, and reports whether it was.
func fastRecord(val []byte, r *Record) bool {
	c := newWritten(val)
	var x Record
	ok := c.open() && c.str("nhsNumber", &x.NHSNumber, true) &&
		c.identifiers(&x.Identifiers) &&
		c.str("family", &x.Family, false) && c.strs("given", &x.Given) &&
		c.str("birthDate", &x.BirthDate, false) && c.str("gender", &x.Gender, false) &&
		c.str("postcode", &x.Postcode, false) && c.flag("deceased", &x.Deceased) &&
		c.str("gpPractice", &x.GPPractice, false) && c.str("gp", &x.GP, false) &&
		c.source("gpSource", &x.GPSource, false) && c.pds(&x.PDS) &&
		c.flags(&x.Flags) && c.consent(&x.Consent) &&
		c.flag("restricted", &x.Restricted) && c.source("restrictedSource", &x.RestrictedSource, false) &&
		c.str("mergedInto", &x.MergedInto, false) && c.source("mergeSource", &x.MergeSource, false) &&
		c.time("updatedAt", &x.UpdatedAt) && c.str("messageId", &x.MessageID, false) &&
		c.close() && c.end()
	if ok {
		*r = x
	}
	return ok
}

// written reads JSON in the form json.Marshal writes a struct in, one
// field after another. Each field method reads the field when it comes
// next (required: it must) and reports false on what json.Marshal would
// not have written there, after which the reader is not used again.
// The strings it reads share one copy of the JSON.
type written struct {
	b []byte
	s string // b's bytes, copied once
	i int    // where reading is
	// first is set when the object just opened has no field yet.
	first bool
}

func newWritten(val []byte) *written { return &written{b: val, s: string(val)} }

// next reports whether ch is the next byte, and reads it if so.
func (c *written) next(ch byte) bool {
	if c.i >= len(c.b) || c.b[c.i] != ch {
		return false
	}
	c.i++
	return true
}

// open reads the start of an object.
func (c *written) open() bool {
	c.first = true
	return c.next('{')
}

// close reads the end of an object.
func (c *written) close() bool {
	c.first = false
	return c.next('}')
}

// end reports whether everything was read.
func (c *written) end() bool { return c.i == len(c.b) }

// key reads the field name (with the comma before it, unless first)
// when it comes next, and reports whether it did.
func (c *written) key(name string) bool {
	i := c.i
	if !c.first {
		if i >= len(c.b) || c.b[i] != ',' {
			return false
		}
		i++
	}
	rest := c.s[i:]
	if len(rest) < len(name)+3 || rest[0] != '"' || rest[1:1+len(name)] != name || rest[1+len(name)] != '"' || rest[2+len(name)] != ':' {
		return false
	}
	c.i, c.first = i+len(name)+3, false
	return true
}

// literal reads a string literal of printable ASCII without escapes and
// returns where it starts and ends, quotes included.
func (c *written) literal() (start, end int, ok bool) {
	if c.i >= len(c.b) || c.b[c.i] != '"' {
		return 0, 0, false
	}
	for j := c.i + 1; j < len(c.b); j++ {
		switch ch := c.b[j]; {
		case ch == '"':
			start, c.i = c.i, j+1
			return start, j + 1, true
		case ch < 0x20 || ch > 0x7e || ch == '\\':
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// str reads string field name into dst; an optional one
// (omitempty) is never written empty.
func (c *written) str(name string, dst *string, required bool) bool {
	if !c.key(name) {
		return !required
	}
	start, end, ok := c.literal()
	if !ok || !required && end-start == 2 {
		return false
	}
	*dst = c.s[start+1 : end-1]
	return true
}

// strs reads the optional string array field name into dst; it is
// never written empty.
func (c *written) strs(name string, dst *[]string) bool {
	var out []string
	n, ok := c.array(name, func() bool {
		start, end, ok := c.literal()
		if ok {
			out = append(out, c.s[start+1:end-1])
		}
		return ok
	})
	if n > 0 {
		*dst = out
	}
	return ok
}

// flag reads the optional bool field name (omitempty: written only
// when true).
func (c *written) flag(name string, dst *bool) bool {
	if !c.key(name) {
		return true
	}
	*dst = true
	if !strings.HasPrefix(c.s[c.i:], "true") {
		return false
	}
	c.i += len("true")
	return true
}

// time reads the optional time field name (omitzero) as json.Unmarshal
// does: the time decodes itself from its literal.
func (c *written) time(name string, dst *time.Time) bool {
	if !c.key(name) {
		return true
	}
	start, end, ok := c.literal()
	return ok && dst.UnmarshalJSON(c.b[start:end]) == nil && !dst.IsZero()
}

// array reads the optional array field name, each element read by one,
// and never written empty; it returns how many elements it read.
func (c *written) array(name string, one func() bool) (int, bool) {
	if !c.key(name) {
		return 0, true
	}
	for n := 0; ; n++ {
		open := byte(',') // before every element but the first
		if n == 0 {
			open = '['
		}
		if !c.next(open) || !one() {
			return 0, false
		}
		if c.next(']') {
			return n + 1, true
		}
	}
}

// object reads object field name with fields, when it comes next; an
// optional one (omitzero) is never written without a field.
func (c *written) object(name string, required bool, fields func() bool) bool {
	if !c.key(name) {
		return !required
	}
	if !c.open() || !fields() {
		return false
	}
	if !required && c.first {
		return false
	}
	return c.close()
}

// source reads Source field name.
func (c *written) source(name string, dst *Source, required bool) bool {
	return c.object(name, required, func() bool {
		return c.str("messageId", &dst.MessageID, false) && c.time("received", &dst.Received)
	})
}

// identifiers reads Record.Identifiers.
func (c *written) identifiers(dst *[]Identifier) bool {
	var out []Identifier
	n, ok := c.array("identifiers", func() bool {
		var id Identifier
		ok := c.open() && c.str("system", &id.System, true) && c.str("value", &id.Value, true) && c.close()
		out = append(out, id)
		return ok
	})
	if n > 0 {
		*dst = out
	}
	return ok
}

// flags reads Record.Flags.
func (c *written) flags(dst *[]Flag) bool {
	var out []Flag
	n, ok := c.array("flags", func() bool {
		var f Flag
		ok := c.open() && c.str("system", &f.System, true) && c.str("code", &f.Code, true) &&
			c.str("display", &f.Display, false) && c.time("start", &f.Start) && c.time("end", &f.End) &&
			c.str("origin", &f.Origin, false) && c.source("source", &f.Source, true) && c.close()
		out = append(out, f)
		return ok
	})
	if n > 0 {
		*dst = out
	}
	return ok
}

// pds reads Record.PDS.
func (c *written) pds(dst *PDSCheck) bool {
	return c.object("pds", false, func() bool {
		return c.time("checkedAt", &dst.CheckedAt) && c.str("outcome", &dst.Outcome, false) &&
			c.str("versionId", &dst.VersionID, false) && c.str("gpPractice", &dst.GPPractice, false)
	})
}

// consent reads Record.Consent.
func (c *written) consent(dst *ConsentSummary) bool {
	return c.object("consent", false, func() bool {
		return c.flag("hasActiveConsent", &dst.HasActiveConsent) && c.flag("optedOut", &dst.OptedOut) &&
			c.time("updatedAt", &dst.UpdatedAt)
	})
}
