package hl7v2

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/junction-fhir/junction/pkg/fault"
)

// Charset is the character set a message declares in MSH-18 (HL7 table
// 0211), as far as this package can decode it.
type Charset uint8

const (
	// CharsetDefault is an empty MSH-18: the feed's default, which this
	// package takes as UTF-8 where the text is UTF-8 and as 8859/1
	// (Windows-1252) where a value is not (see Charset.Decode).
	CharsetDefault Charset = iota
	// CharsetASCII is "ASCII", the 7-bit US-ASCII set, which names no
	// character above 0x7F: text is read as with CharsetDefault.
	CharsetASCII
	// CharsetLatin1 is "8859/1", ISO-8859-1 (Latin-1). Text read through
	// Segment.Component and Segment.Text is converted to UTF-8, the bytes
	// 0x80 to 0x9F as Windows-1252 (see Charset.Decode).
	CharsetLatin1
	// CharsetUTF8 is "UNICODE UTF-8". Text is passed through unchanged.
	CharsetUTF8
	// CharsetUnsupported is any other value, such as "8859/2", "8859/15",
	// "ISO IR87" or "UNICODE UTF-16". Text is passed through unchanged,
	// which is wrong for every byte above 0x7F, so translators should
	// reject such a message (see Message.CharsetSupported).
	CharsetUnsupported
)

// String returns the table 0211 code of c ("" for CharsetDefault and
// "unsupported" for CharsetUnsupported).
func (c Charset) String() string {
	switch c {
	case CharsetDefault:
		return ""
	case CharsetASCII:
		return "ASCII"
	case CharsetLatin1:
		return "8859/1"
	case CharsetUTF8:
		return "UNICODE UTF-8"
	}
	return "unsupported"
}

// CharsetOf returns the Charset of an MSH-18 value (its first repetition,
// unescaped). Case and surrounding spaces are ignored, and the names
// senders write for these sets in place of table 0211's are taken too:
// "UTF-8" and "UTF8" as "UNICODE UTF-8"; "ISO-8859-1" (and its spellings
// ISO8859-1, ISO_8859-1, LATIN1), table 0211's ISO 2022 name "ISO IR100",
// and "WINDOWS-1252" or "CP1252", which Decode reads as 8859/1 is read,
// as "8859/1"; "US-ASCII" and "ISO IR6" as "ASCII". So is
// "UNICODE", v2.3 and v2.4's code for ISO/IEC 10646 with no encoding
// named: a message read at all, its delimiters and segment names single
// bytes, is in an encoding that keeps ASCII as it is, which for Unicode is
// UTF-8 (text that is not is flagged, as under "UNICODE UTF-8").
func CharsetOf(code string) Charset {
	code = strings.ToUpper(strings.TrimSpace(code))
	switch code {
	case "":
		return CharsetDefault
	case "ASCII", "US-ASCII", "ISO IR6":
		return CharsetASCII
	case "8859/1", "ISO-8859-1", "ISO8859-1", "ISO_8859-1", "LATIN1", "LATIN-1", "ISO IR100", "WINDOWS-1252", "CP1252":
		return CharsetLatin1
	case "UNICODE UTF-8", "UTF-8", "UTF8", "UNICODE":
		return CharsetUTF8
	}
	return CharsetUnsupported
}

// Decode returns s, text in character set c, as UTF-8 that FHIR strings
// may hold: for CharsetLatin1 each byte becomes the rune of the same
// value, which is what ISO-8859-1 is, except the bytes 0x80 to 0x9F,
// which are read as Windows-1252 (0x92 the apostrophe U+2019, 0x96 the
// en dash, 0x80 the euro sign), as web browsers read text labelled
// ISO-8859-1: in ISO-8859-1 they are C1 control characters, which no
// name or address holds, and feeds typed on Windows send them for the
// punctuation word processors put in (O'Brien with a curly apostrophe).
// For CharsetDefault and CharsetASCII, which declare nothing above 0x7F,
// a value that is valid UTF-8 is kept as it is and one that is not is
// read as CharsetLatin1 is: English PAS and laboratory systems that send
// no MSH-18 send Latin-1 or Windows-1252 ("Si\xe2n"), which would
// otherwise lose each such letter to U+FFFD, while Latin-1 text that is
// also well-formed UTF-8 is rare (see Message.Latin1Assumed). Other sets
// are kept as they are, valid UTF-8 or not (CharsetUTF8 declares UTF-8,
// so bytes that are not become U+FFFD in JSON: Message.InvalidUTF8). Control
// characters other than tab, line feed and carriage return become
// U+FFFD (see Message.ControlChars).
func (c Charset) Decode(s string) string {
	switch c {
	case CharsetLatin1:
		s = latin1ToUTF8(s)
	case CharsetDefault, CharsetASCII:
		if !utf8.ValidString(s) {
			s = latin1ToUTF8(s)
		}
	}
	return withoutControls(s)
}

// latin1ToUTF8 returns the ISO-8859-1 text s as UTF-8.
func latin1ToUTF8(s string) string {
	i := 0
	for i < len(s) && s[i] < utf8.RuneSelf {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + (len(s)-i)/2 + 1)
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		switch ch := s[i]; {
		case ch < utf8.RuneSelf:
			b.WriteByte(ch)
		case ch <= 0x9F:
			b.WriteRune(windows1252[ch-0x80])
		default:
			b.WriteRune(rune(ch))
		}
	}
	return b.String()
}

// windows1252 holds the characters Windows-1252 gives the bytes 0x80 to
// 0x9F; the five it leaves undefined keep the C1 code point of the same
// value, as web browsers decode them.
var windows1252 = [32]rune{
	'\u20AC', '\u0081', '\u201A', '\u0192', '\u201E', '\u2026', '\u2020', '\u2021',
	'\u02C6', '\u2030', '\u0160', '\u2039', '\u0152', '\u008D', '\u017D', '\u008F',
	'\u0090', '\u2018', '\u2019', '\u201C', '\u201D', '\u2022', '\u2013', '\u2014',
	'\u02DC', '\u2122', '\u0161', '\u203A', '\u0153', '\u009D', '\u017E', '\u0178',
}

// readCharset returns MSH-18 of the header segment h as declared: the
// first repetition, unescaped, and the Charset it names.
func readCharset(h *Segment) (string, Charset) {
	if f := h.Field(18); f == "" || f == `""` {
		// `""`, the HL7 null, declares nothing either: senders that null
		// every field they leave unvalued send it.
		return "", CharsetDefault
	}
	code := Unescape(part(h.Field(18), h.d, 1, 1, 1), h.d)
	return code, CharsetOf(code)
}

// Charset returns the character set the message declares in MSH-18 (the
// first repetition; later ones name sets switched to by escape sequences,
// which this package does not decode).
func (m *Message) Charset() Charset { return m.cs }

// CharsetCode returns the first repetition of MSH-18 as sent, unescaped,
// such as "8859/1", or "" when there is none. It is not patient data, but
// it is the sender's text: quote it with care.
func (m *Message) CharsetCode() string { return m.csCode }

// CharsetSupported reports whether the message's text can be decoded to
// UTF-8: MSH-18 is empty, ASCII, 8859/1 or UNICODE UTF-8.
func (m *Message) CharsetSupported() bool { return m.cs != CharsetUnsupported }

// CharsetError returns nil when the message's character set can be
// decoded (CharsetSupported), else a permanent fault with code
// fault.CodeHL7Charset and HL7 error 103 (table value not found), whose
// Detail quotes MSH-18. Decoding such a message as if it were Latin-1 or
// UTF-8 would corrupt every non-ASCII character, names included, so
// translators reject it rather than guess.
func (m *Message) CharsetError() error {
	if m.CharsetSupported() {
		return nil
	}
	return fault.New(fault.CodeHL7Charset, "MSH-18 character set not supported").
		WithHL7(ErrCodeTableValue).
		WithDetail("unsupported MSH-18 character set " + strconv.Quote(quoteStart(m.csCode, 20)) +
			"; supported: ASCII, 8859/1, UNICODE UTF-8")
}

// InvalidUTF8 reports whether a message that declares UTF-8 in MSH-18
// (UNICODE UTF-8) holds bytes that are not UTF-8, as sent or made by
// \Xhh\ escape sequences (a Latin-1 \XE9\). Those bytes reach FHIR JSON
// as U+FFFD, so translators report it as a data-quality issue (as it is
// for a character set this package cannot decode, whose text is passed
// through). It is false for 8859/1, where every byte is a character, and
// for an empty MSH-18 or ASCII, whose text that is not UTF-8 is read as
// 8859/1 (Latin1Assumed).
func (m *Message) InvalidUTF8() bool {
	return (m.cs == CharsetUTF8 || m.cs == CharsetUnsupported) && m.notUTF8()
}

// Latin1Assumed reports whether a message that declares no character set
// (an empty MSH-18) or ASCII holds bytes that are not UTF-8, as sent or
// made by \Xhh\ escape sequences, which Charset.Decode reads as 8859/1
// (Windows-1252). That is most likely right for a feed from an English
// trust, but it is a guess: translators report it as a data-quality
// issue, so the feed can be made to declare its character set.
func (m *Message) Latin1Assumed() bool {
	return (m.cs == CharsetDefault || m.cs == CharsetASCII) && m.notUTF8()
}

// notUTF8 reports whether the message holds bytes that are not UTF-8,
// raw or made by \Xhh\ escape sequences.
func (m *Message) notUTF8() bool {
	for i := range m.segs {
		if !utf8.ValidString(m.segs[i].line) {
			return true
		}
	}
	return m.anyHexEscaped(func(s string) bool { return !utf8.ValidString(s) })
}

// LooksUTF8 reports whether a message that declares 8859/1 holds text
// that reads as UTF-8 instead: a line with bytes above 0x7F that are all
// well-formed UTF-8 sequences ("ZO\xC3\x8B", ZOË in UTF-8, which 8859/1
// makes "ZOÃ‹"). In Latin-1 text a letter above 0x7F is seldom followed
// by one from 0x80 to 0xBF, as each byte after a UTF-8 lead byte must be,
// so such a message is most likely UTF-8 labelled wrongly, and its text
// reaches FHIR garbled: translators report it as a data-quality issue.
// It is false for every other character set.
func (m *Message) LooksUTF8() bool {
	if m.cs != CharsetLatin1 {
		return false
	}
	for i := range m.segs {
		if line := m.segs[i].line; !isASCII(line) && utf8.ValidString(line) {
			return true
		}
	}
	return false
}

// isASCII reports whether s holds no byte above 0x7F.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// anyHexEscaped reports whether bad holds for the unescaped text of any
// value of the message holding a \Xhh\ escape sequence. A value is the
// text between two delimiters of any kind, which is as far as an escape
// sequence reaches.
func (m *Message) anyHexEscaped(bad func(string) bool) bool {
	d := m.delims
	if d.Escape == 0 {
		return false
	}
	marker := string([]byte{d.Escape, 'X'})
	isDelim := func(r rune) bool {
		c := byte(r)
		return r < utf8.RuneSelf && c != 0 && (c == d.Field || c == d.Component || c == d.Repetition || c == d.Subcomponent)
	}
	for i := range m.segs {
		line := m.segs[i].line
		if !strings.Contains(line, marker) {
			continue
		}
		for _, v := range strings.FieldsFunc(line, isDelim) {
			if strings.Contains(v, marker) && bad(Unescape(v, d)) {
				return true
			}
		}
	}
	return false
}

// Text returns raw, a value of this segment with escape sequences in
// place (from Field or Repetition, or a part of one), unescaped and
// decoded from the message's character set to UTF-8: what Component
// returns for a single value. Use it for text split or cleaned by other
// means before unescaping.
func (s *Segment) Text(raw string) string { return s.cs.Decode(Unescape(raw, s.d)) }

// ControlChars reports whether the message holds control characters other
// than tab, line feed and carriage return (a NUL in a name, say), as sent
// or made by \Xhh\ escape sequences. FHIR strings may not hold them:
// Charset.Decode, and so Component and Text, give U+FFFD for each, and
// translators report it as a data-quality issue.
func (m *Message) ControlChars() bool {
	for i := range m.segs {
		if hasControl(m.segs[i].line) {
			return true
		}
	}
	return m.anyHexEscaped(hasControl)
}

// hasControl reports whether s holds a control character isControl
// refuses. It tests bytes, not runes: every such character is one byte
// below 0x20, and no byte of a multi-byte UTF-8 sequence (nor U+FFFD for
// an invalid one) is below 0x80.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && isControl(rune(c)) {
			return true
		}
	}
	return false
}

// isControl reports whether r is a control character FHIR strings may not
// hold: C0 other than tab, line feed and carriage return.
func isControl(r rune) bool { return r < 0x20 && r != '\t' && r != '\n' && r != '\r' }

// withoutControls returns s with each control character FHIR strings may
// not hold replaced by U+FFFD.
func withoutControls(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && isControl(rune(c)) {
			return strings.Map(func(r rune) rune {
				if isControl(r) {
					return utf8.RuneError
				}
				return r
			}, s)
		}
	}
	return s
}

// Charset returns the character set of the segment's message.
func (s *Segment) Charset() Charset { return s.cs }
