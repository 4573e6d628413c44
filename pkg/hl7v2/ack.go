package hl7v2

import (
	"strconv"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/fault"
)

// AckCode is an acknowledgement code, MSA-1 (HL7 table 0008).
type AckCode string

// Acknowledgement codes. The A codes answer in original mode or as an
// application acknowledgement; the C codes are enhanced-mode accept
// (commit) acknowledgements.
const (
	AckAA AckCode = "AA" // Application accept.
	AckAE AckCode = "AE" // Application error.
	AckAR AckCode = "AR" // Application reject.
	AckCA AckCode = "CA" // Commit accept.
	AckCE AckCode = "CE" // Commit error.
	AckCR AckCode = "CR" // Commit reject.
)

// Valid reports whether c is one of the six acknowledgement codes.
func (c AckCode) Valid() bool {
	switch c {
	case AckAA, AckAE, AckAR, AckCA, AckCE, AckCR:
		return true
	}
	return false
}

// Accepted reports whether c is AA or CA.
func (c AckCode) Accepted() bool { return c == AckAA || c == AckCA }

// Errored reports whether c is AE or CE: the receiver failed to process
// the message, and sending it again may succeed.
func (c AckCode) Errored() bool { return c == AckAE || c == AckCE }

// Rejected reports whether c is AR or CR: the receiver refused the message
// and sending it again unchanged will not help.
func (c AckCode) Rejected() bool { return c == AckAR || c == AckCR }

// Enhanced reports whether the message asks for enhanced-mode
// acknowledgement: MSH-15, the accept acknowledgement type, is not empty.
func (m *Message) Enhanced() bool { return m.AcceptAckType() != "" }

// AcceptCode returns CA in enhanced mode and AA in original mode.
func (m *Message) AcceptCode() AckCode {
	if m.Enhanced() {
		return AckCA
	}
	return AckAA
}

// ErrorCode returns CE in enhanced mode and AE in original mode.
func (m *Message) ErrorCode() AckCode {
	if m.Enhanced() {
		return AckCE
	}
	return AckAE
}

// RejectCode returns CR in enhanced mode and AR in original mode.
func (m *Message) RejectCode() AckCode {
	if m.Enhanced() {
		return AckCR
	}
	return AckAR
}

// AckError describes one error to report in an ERR segment.
type AckError struct {
	// Segment, Sequence, Field and Component locate the error: segment
	// name, its occurrence in the message (from 1), field and component
	// numbers. Zero values are left out.
	Segment                    string
	Sequence, Field, Component int
	// Code is the HL7 table 0357 error condition code; "207" if empty.
	Code string
	// Severity is "E" (error, the default), "W" (warning) or "I"
	// (information).
	Severity string
	// Text describes the error to the sender. It may hold message
	// content: it goes only into the ACK.
	Text string
}

// AckOptions holds what BuildAck and BuildRawAck need beyond the original
// message.
type AckOptions struct {
	// Code is MSA-1. If empty, BuildAck uses the accept code of the
	// message's mode, or its error code when Errors holds an error of
	// severity E; BuildRawAck uses AR.
	Code AckCode
	// Text is MSA-3, the text message.
	Text string
	// Errors become one ERR segment each.
	Errors []AckError
	// ControlID is the ACK's own message control id, MSH-10. If empty, the
	// decimal Unix time in nanoseconds of Time is used.
	ControlID string
	// Time is MSH-7; the current time if zero.
	Time time.Time
	// App and Facility are our own application and facility namespace ids
	// for MSH-3 and MSH-4. If empty, BuildAck copies the original's MSH-5
	// and MSH-6 (where the sender addressed us).
	App, Facility string
}

type ackWriter struct {
	b []byte
	d Delimiters
}

func (w *ackWriter) raw(s string)  { w.b = append(w.b, w.d.Field); w.b = append(w.b, s...) }
func (w *ackWriter) text(s string) { w.raw(Escape(s, w.d)) }
func (w *ackWriter) end()          { w.b = append(w.b, '\r') }

// components appends values joined by the component separator, dropping
// trailing empty ones. The values must already be escaped.
func (w *ackWriter) components(values ...string) {
	n := len(values)
	for n > 0 && values[n-1] == "" {
		n--
	}
	w.b = append(w.b, w.d.Field)
	for i, v := range values[:n] {
		if i > 0 {
			w.b = append(w.b, w.d.Component)
		}
		w.b = append(w.b, v...)
	}
}

func positive(n int) string {
	if n <= 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func (w *ackWriter) header(enc, app, facility, toApp, toFacility string, opts AckOptions, event, processing, version, charset string) {
	t := opts.Time
	if t.IsZero() {
		t = time.Now()
	}
	ctrl := opts.ControlID
	if ctrl == "" {
		ctrl = strconv.FormatInt(t.UnixNano(), 10)
	}
	w.b = append(w.b, "MSH"...)
	w.b = append(w.b, w.d.Field)
	w.b = append(w.b, enc...)
	w.raw(app)
	w.raw(facility)
	w.raw(toApp)
	w.raw(toFacility)
	w.raw(t.Format("20060102150405-0700"))
	w.raw("")
	if event == "" {
		w.raw("ACK")
	} else {
		w.components("ACK", Escape(event, w.d), "ACK")
	}
	w.text(ctrl)
	w.raw(processing)
	w.raw(version)
	if charset != "" {
		for range 5 { // MSH-13 to MSH-17
			w.raw("")
		}
		w.raw(charset)
	}
	w.end()
}

func (w *ackWriter) msa(code AckCode, ctrl, text string) {
	w.b = append(w.b, "MSA"...)
	w.text(string(code))
	w.raw(ctrl)
	if text != "" {
		w.text(text)
	}
	w.end()
}

func (w *ackWriter) err(e AckError, v25 bool) {
	code := e.Code
	if code == "" {
		code = ErrCodeInternal
	}
	rep := ""
	if e.Field > 0 {
		rep = "1"
	}
	w.b = append(w.b, "ERR"...)
	if v25 {
		sev := e.Severity
		if sev == "" {
			sev = "E"
		}
		w.raw("")
		// ERR-2 is an ERL: segment ^ sequence ^ field ^ field repetition ^
		// component.
		w.components(Escape(e.Segment, w.d), positive(e.Sequence), positive(e.Field), rep, positive(e.Component))
		w.components(Escape(code, w.d), Escape(e.Text, w.d), "HL70357")
		w.text(sev)
	} else {
		// ERR-1 is an ELD: segment ^ sequence ^ field ^ code&text&table.
		ce := Escape(code, w.d)
		if s := w.d.Subcomponent; s != 0 {
			ce += string(s) + Escape(e.Text, w.d) + string(s) + "HL70357"
		}
		w.components(Escape(e.Segment, w.d), positive(e.Sequence), positive(e.Field), ce)
	}
	w.end()
}

// atLeast25 reports whether version v is 2.5 or later; an empty or
// unreadable version counts as later.
func atLeast25(v string) bool { return versionAtLeast(v, 5) }

// versionAtLeast reports whether version v is 2.minor or later; an empty
// or unreadable version counts as later.
func versionAtLeast(v string, minor int) bool {
	major, rest := leadingInt(v)
	if major < 0 {
		return true
	}
	if major != 2 {
		return major > 2
	}
	if len(rest) < 2 || rest[0] != '.' {
		return false
	}
	m, _ := leadingInt(rest[1:])
	return m < 0 || m >= minor
}

// VersionAtLeast reports whether the message's version (MSH-12) is
// 2.minor or later, such as VersionAtLeast(7) for the data types HL7
// v2.7 changed; an empty or unreadable version counts as later.
func (m *Message) VersionAtLeast(minor int) bool { return versionAtLeast(m.Version(), minor) }

func leadingInt(s string) (int, string) {
	n, i := 0, 0
	for i < len(s) && i < 6 && s[i] >= '0' && s[i] <= '9' {
		n = n*10 + int(s[i]-'0')
		i++
	}
	if i == 0 {
		return -1, s
	}
	return n, s[i:]
}

// BuildAck builds the acknowledgement of orig, with orig's delimiters and
// CR segment ends:
//
//	MSH: MSH-3/4 ours (opts.App, opts.Facility), MSH-5/6 orig's MSH-3/4,
//	     MSH-7 opts.Time, MSH-9 "ACK^<event>^ACK" (just "ACK" when orig
//	     has no event), MSH-10 opts.ControlID, MSH-11 and MSH-12 copied,
//	     MSH-18 copied when orig values it.
//	MSA: MSA-1 code, MSA-2 orig's MSH-10, MSA-3 opts.Text.
//	ERR: one per opts.Errors. For version 2.5 and later: ERR-2 location
//	     segment^sequence^field^repetition^component, ERR-3
//	     code^text^HL70357, ERR-4 severity. Before 2.5: ERR-1
//	     segment^sequence^field^code&text&HL70357.
//
// All text from opts is escaped. If orig is nil, BuildAck returns
// BuildRawAck(opts).
func BuildAck(orig *Message, opts AckOptions) []byte {
	if orig == nil || len(orig.segs) == 0 {
		return BuildRawAck(opts)
	}
	h := orig.msh()
	w := &ackWriter{d: orig.delims, b: make([]byte, 0, 256)}
	app, facility := h.Field(5), h.Field(6)
	if opts.App != "" {
		app = Escape(opts.App, w.d)
	}
	if opts.Facility != "" {
		facility = Escape(opts.Facility, w.d)
	}
	// MSH-18 as the message declared it: the ACK echoes the sender's
	// fields byte for byte (MSH-3 to MSH-6, MSA-2), so it is in the
	// message's character set; Junction's own text is ASCII.
	charset := h.Field(18)
	if charset == `""` {
		charset = ""
	}
	w.header(h.Field(2), app, facility, h.Field(3), h.Field(4), opts, orig.Event(), h.Field(11), h.Field(12), charset)
	code := opts.Code
	if code == "" {
		code = orig.AcceptCode()
		for _, e := range opts.Errors {
			if e.Severity == "" || e.Severity == "E" {
				code = orig.ErrorCode()
				break
			}
		}
	}
	w.msa(code, h.Field(10), opts.Text)
	v25 := atLeast25(orig.Version())
	for _, e := range opts.Errors {
		w.err(e, v25)
	}
	return w.b
}

// BuildRawAck builds an acknowledgement for input that could not be
// parsed: default delimiters, MSH-9 "ACK", MSH-11 "P", MSH-12 "2.5", an
// empty MSA-2, and ERR segments in the 2.5 style, one per opts.Errors or,
// if there is none, one with code 207 and opts.Text. MSA-1 is AR unless
// opts.Code says otherwise.
func BuildRawAck(opts AckOptions) []byte {
	d := DefaultDelimiters()
	w := &ackWriter{d: d, b: make([]byte, 0, 256)}
	w.header(d.EncodingCharacters(), Escape(opts.App, d), Escape(opts.Facility, d), "", "", opts, "", "P", "2.5", "")
	code := opts.Code
	if code == "" {
		code = AckAR
	}
	w.msa(code, "", opts.Text)
	errs := opts.Errors
	if len(errs) == 0 {
		errs = []AckError{{Code: ErrCodeInternal, Text: opts.Text}}
	}
	for _, e := range errs {
		w.err(e, true)
	}
	return w.b
}

// ParseAck parses an acknowledgement and returns MSA-1, MSA-2 as sent
// (the whole field, escape sequences kept, for comparing with MSH-10 as
// sent: an ACK whose MSA-2 adds a component, "ID^X", has not echoed the
// message's id) and the text: MSA-3 unescaped or, when that is empty,
// the text of the first ERR segment (ERR-3.2, else ERR-8, else ERR-1.4.2).
// It returns a *fault.Error (fault.CodeHL7Parse) if raw does not parse or
// has no MSA segment.
func ParseAck(raw []byte) (code AckCode, controlID, text string, err error) {
	m, err := Parse(raw)
	if err != nil {
		return "", "", "", err
	}
	msa := m.Segment("MSA")
	if msa == nil {
		return "", "", "", parseError("acknowledgement has no MSA segment", ErrCodeSegmentSequence)
	}
	code = AckCode(msa.Component(1, 1, 1, 1))
	controlID = msa.Field(2)
	text = Unescape(msa.Field(3), m.delims)
	if text == "" {
		if e := m.Segment("ERR"); e != nil {
			text = e.Component(3, 1, 2, 1)
			if text == "" {
				text = Unescape(e.Repetition(8, 1), m.delims)
			}
			if text == "" {
				text = e.Component(1, 1, 4, 2)
			}
		}
	}
	return code, controlID, text, nil
}

// ErrorFromFault returns an AckError describing err: Code is the fault's
// HL7 table 0357 code (207 if it has none), Text its caller-only detail
// (or safe message) and Severity "E".
func ErrorFromFault(err error) AckError {
	e := AckError{Code: ErrCodeInternal, Severity: "E", Text: fault.DetailOf(err)}
	if f := fault.As(err); f != nil && f.HL7Err != "" {
		e.Code = f.HL7Err
	}
	return e
}

// AckErrorCodes returns the HL7 table 0357 code of each ERR segment of an
// acknowledgement, in order: ERR-3.1 (version 2.5 and later) or, when that
// is empty, ERR-1.4.1 (the older ELD form). Segments naming no code are
// skipped. It returns nil if raw does not parse.
func AckErrorCodes(raw []byte) []string {
	m, err := Parse(raw)
	if err != nil {
		return nil
	}
	var codes []string
	for _, e := range m.SegmentsNamed("ERR") {
		c := e.Component(3, 1, 1, 1)
		if c == "" {
			c = e.Component(1, 1, 4, 1)
		}
		if c != "" {
			codes = append(codes, c)
		}
	}
	return codes
}

// AckErrorDetail describes every ERR segment of an acknowledgement for
// the people who fix what the receiver refused, one per segment joined
// by "; ": its code and text (ERR-3, or the older ERR-1.4), where it is
// (ERR-2 segment^sequence^field^repetition^component, or ERR-1's first
// components, as "PID-3[1] #1"), and the receiver's message to its user
// (ERR-8) when it says more. It may hold what the receiver quoted of
// the message: it is a detail, never logged. It returns "" when raw does
// not parse or has no ERR.
func AckErrorDetail(raw []byte) string {
	m, err := Parse(raw)
	if err != nil {
		return ""
	}
	var parts []string
	for _, e := range m.SegmentsNamed("ERR") {
		code, text := e.Component(3, 1, 1, 1), e.Component(3, 1, 2, 1)
		seg, seq, field, rep := e.Component(2, 1, 1, 1), e.Component(2, 1, 2, 1), e.Component(2, 1, 3, 1), e.Component(2, 1, 4, 1)
		if code == "" && text == "" {
			code, text = e.Component(1, 1, 4, 1), e.Component(1, 1, 4, 2)
			seg, seq, field, rep = e.Component(1, 1, 1, 1), e.Component(1, 1, 2, 1), e.Component(1, 1, 3, 1), ""
		}
		var b strings.Builder
		if code != "" {
			b.WriteString("ERR " + code)
		}
		if text != "" {
			if b.Len() > 0 {
				b.WriteString(" ")
			}
			b.WriteString(text)
		}
		if seg != "" {
			where := seg
			if field != "" {
				where += "-" + field
				if rep != "" {
					where += "[" + rep + "]"
				}
			}
			if seq != "" && seq != "1" {
				where += " #" + seq
			}
			b.WriteString(" at " + where)
		}
		if msg := Unescape(e.Repetition(8, 1), m.delims); msg != "" && msg != text {
			if b.Len() > 0 {
				b.WriteString(": ")
			}
			b.WriteString(msg)
		}
		if b.Len() > 0 {
			parts = append(parts, b.String())
		}
	}
	return strings.Join(parts, "; ")
}

// NeverTaken reports whether an acknowledgement's ERR codes say the
// receiver will never take the message as it is, whenever it is sent:
// 100 to 103 (segment sequence, required field missing, data type, table
// value: what the message holds is wrong), 104 (value too long: larger
// than it handles), 200 to 203 (message type, event, processing id or
// version not supported). A reject (AR, CR) carrying one is no "not ready
// now": receivers that answer content errors AR rather than AE are many.
func NeverTaken(codes []string) bool {
	for _, c := range codes {
		switch c {
		case ErrCodeSegmentSequence, ErrCodeRequiredField, ErrCodeDataType, ErrCodeTableValue, ErrCodeValueTooLong, ErrCodeUnsupportedMessageType, ErrCodeUnsupportedEvent, ErrCodeUnsupportedProcessingID, ErrCodeUnsupportedVersion:
			return true
		}
	}
	return false
}

// RetryLater reports whether an error acknowledgement's ERR codes all say
// the receiver could not take the message for now, not that the message
// is wrong: 206 (application record locked) or 207 (application internal
// error, which is what a receiver whose store is down answers). It is
// false when there are no codes.
func RetryLater(codes []string) bool {
	for _, c := range codes {
		if c != ErrCodeRecordLocked && c != ErrCodeInternal {
			return false
		}
	}
	return len(codes) > 0
}
