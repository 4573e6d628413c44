package patient

import (
	"encoding/json"
	"time"
)

// encodeRecord returns r's JSON for the bucket, byte for byte as
// json.Marshal writes it. Records are written for nearly every message,
// so a record whose strings are all printable ASCII that json.Marshal
// leaves as they are is written directly; any other goes through
// json.Marshal.
func encodeRecord(r *Record) ([]byte, error) {
	e := encoder{b: make([]byte, 0, 512), ok: true}
	e.record(r)
	if e.ok {
		return e.b, nil
	}
	return json.Marshal(r)
}

// encoder appends JSON as json.Marshal writes it; ok turns false at the
// first value it would write otherwise.
type encoder struct {
	b  []byte
	ok bool
	// first is set when the object just opened has no field yet.
	first bool
}

func (e *encoder) open() { e.b, e.first = append(e.b, '{'), true }

func (e *encoder) close() { e.b, e.first = append(e.b, '}'), false }

// key writes the name of the next field.
func (e *encoder) key(name string) {
	if !e.first {
		e.b = append(e.b, ',')
	}
	e.b = append(append(append(e.b, '"'), name...), '"', ':')
	e.first = false
}

// value writes string v, which json.Marshal leaves as it is when it is
// printable ASCII other than the quote, the backslash and the three
// characters it escapes for HTML.
func (e *encoder) value(v string) {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			e.ok = false
			return
		}
	}
	e.b = append(append(append(e.b, '"'), v...), '"')
}

// str writes string field name, unless omitted (omitempty) when empty.
func (e *encoder) str(name, v string, omitempty bool) {
	if omitempty && v == "" {
		return
	}
	e.key(name)
	e.value(v)
}

// flag writes bool field name (omitempty) when true.
func (e *encoder) flag(name string, v bool) {
	if v {
		e.key(name)
		e.b = append(e.b, "true"...)
	}
}

// time writes time field name (omitzero) when not zero, as the time
// writes itself: Time.MarshalJSON quotes the text Time.AppendText
// appends, and fails where it fails.
func (e *encoder) time(name string, t time.Time) {
	if t.IsZero() {
		return
	}
	e.key(name)
	b, err := t.AppendText(append(e.b, '"'))
	if err != nil {
		e.ok = false // json.Marshal reports it
		return
	}
	e.b = append(b, '"')
}

// source writes Source field name; an optional one (omitzero, by
// Source.IsZero) is left out when zero.
func (e *encoder) source(name string, s Source, omitzero bool) {
	if omitzero && s.IsZero() {
		return
	}
	e.key(name)
	e.open()
	e.str("messageId", s.MessageID, true)
	e.time("received", s.Received)
	e.close()
}

// writeArray writes array field name (omitempty) of vs, each element
// written by one.
func writeArray[T any](e *encoder, name string, vs []T, one func(T)) {
	if len(vs) == 0 {
		return
	}
	e.key(name)
	for i, v := range vs {
		sep := byte(',')
		if i == 0 {
			sep = '['
		}
		e.b = append(e.b, sep)
		one(v)
	}
	e.b = append(e.b, ']')
}

// record writes r as json.Marshal writes a Record.
func (e *encoder) record(r *Record) {
	e.open()
	e.str("nhsNumber", r.NHSNumber, false)
	writeArray(e, "identifiers", r.Identifiers, func(id Identifier) {
		e.open()
		e.str("system", id.System, false)
		e.str("value", id.Value, false)
		e.close()
	})
	e.str("family", r.Family, true)
	writeArray(e, "given", r.Given, e.value)
	e.str("birthDate", r.BirthDate, true)
	e.str("gender", r.Gender, true)
	e.str("postcode", r.Postcode, true)
	e.flag("deceased", r.Deceased)
	e.str("gpPractice", r.GPPractice, true)
	e.str("gp", r.GP, true)
	e.source("gpSource", r.GPSource, true)
	// PDSCheck and ConsentSummary have no IsZero method: omitzero leaves
	// them out when every field is its zero value.
	if r.PDS != (PDSCheck{}) {
		e.key("pds")
		e.open()
		e.time("checkedAt", r.PDS.CheckedAt)
		e.str("outcome", r.PDS.Outcome, true)
		e.str("versionId", r.PDS.VersionID, true)
		e.str("gpPractice", r.PDS.GPPractice, true)
		e.close()
	}
	writeArray(e, "flags", r.Flags, func(f Flag) {
		e.open()
		e.str("system", f.System, false)
		e.str("code", f.Code, false)
		e.str("display", f.Display, true)
		e.time("start", f.Start)
		e.time("end", f.End)
		e.str("origin", f.Origin, true)
		e.source("source", f.Source, false)
		e.close()
	})
	if r.Consent != (ConsentSummary{}) {
		e.key("consent")
		e.open()
		e.flag("hasActiveConsent", r.Consent.HasActiveConsent)
		e.flag("optedOut", r.Consent.OptedOut)
		e.time("updatedAt", r.Consent.UpdatedAt)
		e.close()
	}
	e.flag("restricted", r.Restricted)
	e.source("restrictedSource", r.RestrictedSource, true)
	e.str("mergedInto", r.MergedInto, true)
	e.source("mergeSource", r.MergeSource, true)
	e.time("updatedAt", r.UpdatedAt)
	e.str("messageId", r.MessageID, true)
	e.close()
}
