package hl7v2

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/junction-fhir/junction/pkg/fault"
)

func TestCharsetOf(t *testing.T) {
	tests := []struct {
		code string
		want Charset
	}{
		{"", CharsetDefault},
		{"  ", CharsetDefault},
		{"ASCII", CharsetASCII},
		{"8859/1", CharsetLatin1},
		{" 8859/1 ", CharsetLatin1},
		{"UNICODE UTF-8", CharsetUTF8},
		{"unicode utf-8", CharsetUTF8},
		{"UTF-8", CharsetUTF8},
		{"8859/15", CharsetUnsupported},
		{"8859/2", CharsetUnsupported},
		{"ISO IR87", CharsetUnsupported},
		{"UNICODE UTF-16", CharsetUnsupported},
		{"UNICODE", CharsetUTF8},
		{"8859/1x", CharsetUnsupported},
		// What senders write for the same sets: IANA names, as other
		// engines take them, and table 0211's ISO 2022 names.
		{"ISO-8859-1", CharsetLatin1},
		{"iso8859-1", CharsetLatin1},
		{"ISO_8859-1", CharsetLatin1},
		{"LATIN1", CharsetLatin1},
		{"ISO IR100", CharsetLatin1},
		{"WINDOWS-1252", CharsetLatin1},
		{"CP1252", CharsetLatin1},
		{"US-ASCII", CharsetASCII},
		{"ISO IR6", CharsetASCII},
		{"ISO-8859-15", CharsetUnsupported},
		{"ISO-8859-2", CharsetUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			if got := CharsetOf(tt.code); got != tt.want {
				t.Errorf("CharsetOf(%q) = %v, want %v", tt.code, got, tt.want)
			}
		})
	}
}

func TestCharsetDecode(t *testing.T) {
	tests := []struct {
		name string
		cs   Charset
		in   string
		want string
	}{
		{"latin1 ascii only", CharsetLatin1, "SMITH", "SMITH"},
		{"latin1 e acute", CharsetLatin1, "ZO\xc9", "ZO\u00c9"},
		{"latin1 every high byte kind", CharsetLatin1, "\x80\xa0\xdc\xe9\xfc\xff", "\u20ac\u00a0\u00dc\u00e9\u00fc\u00ff"},
		// Windows-1252 punctuation sent as 8859/1: not C1 controls.
		{"latin1 curly apostrophe", CharsetLatin1, "O\x92BRIEN", "O\u2019BRIEN"},
		{"latin1 en dash and quotes", CharsetLatin1, "\x93A\x94 \x96 B", "\u201cA\u201d \u2013 B"},
		{"latin1 byte Windows-1252 leaves undefined", CharsetLatin1, "\x81\x8d\x8f\x90\x9d", "\u0081\u008d\u008f\u0090\u009d"},
		{"latin1 bytes that look like UTF-8", CharsetLatin1, "\xc3\xa9", "\u00c3\u00a9"},
		{"utf8 unchanged", CharsetUTF8, "Zo\u00e9", "Zo\u00e9"},
		{"utf8 invalid unchanged", CharsetUTF8, "ZO\xc9", "ZO\xc9"},
		// No character set declared (or ASCII, which names none above
		// 0x7F): UTF-8 as it is, and a value that is not UTF-8 as 8859/1,
		// as English PAS feeds send it, rather than U+FFFD.
		{"default utf8 unchanged", CharsetDefault, "Zo\u00eb", "Zo\u00eb"},
		{"default latin1 read as 8859/1", CharsetDefault, "ZO\xc9 SI\xe2N", "ZO\u00c9 SI\u00e2N"},
		{"default Windows-1252 apostrophe", CharsetDefault, "O\x92BRIEN", "O\u2019BRIEN"},
		{"ascii utf8 unchanged", CharsetASCII, "Zo\u00eb", "Zo\u00eb"},
		{"ascii latin1 read as 8859/1", CharsetASCII, "ZO\xc9", "ZO\u00c9"},
		{"unsupported unchanged", CharsetUnsupported, "ZO\xc9", "ZO\xc9"},
		{"empty", CharsetLatin1, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.cs.Decode(tt.in); got != tt.want {
				t.Errorf("Decode(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestLatin1Message reads a synthetic 8859/1 message: raw Latin-1 bytes
// and \Xhh\ escapes both come out as UTF-8, and Encode keeps the bytes.
func TestLatin1Message(t *testing.T) {
	raw := readTestdata(t, "latin1_8859_1.hl7")
	m := mustParse(t, raw)
	if m.Charset() != CharsetLatin1 || m.CharsetCode() != "8859/1" || !m.CharsetSupported() || m.CharsetError() != nil {
		t.Fatalf("charset = %v %q, supported %v, error %v", m.Charset(), m.CharsetCode(), m.CharsetSupported(), m.CharsetError())
	}
	if m.InvalidUTF8() {
		t.Error("InvalidUTF8 is true for an 8859/1 message")
	}
	tests := []struct {
		path string
		want string
	}{
		{"PID-5.1", "TESTPATIENT-M\u00dcLLER"},
		{"PID-5.2", "\u00c9LO\u00cfSE"},
		{"PID-11.1", "1 RUE DE L'\u00c9GLISE"},
		{"NTE-3.1", "Caf\u00e9 & cr\u00e8me \u00e0 la carte"},
		{"MSH-18", "8859/1"},
		{"MSH-9.1", "ADT"},
		// A whole repetition keeps its escape sequences, in UTF-8 like
		// every value (a CEL string must be).
		{"PID-5", "TESTPATIENT-M\u00dcLLER^\\XC9\\LO\u00cfSE^^^DR"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := m.Get(tt.path); got != tt.want {
				t.Errorf("Get(%q) = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
	pid := m.Segment("PID")
	if got := pid.Text(pid.Repetition(5, 1)); got != "TESTPATIENT-M\u00dcLLER^\u00c9LO\u00cfSE^^^DR" {
		t.Errorf("Text(PID-5) = %q", got)
	}
	if pid.Charset() != CharsetLatin1 {
		t.Errorf("segment charset = %v", pid.Charset())
	}
	if want := bytes.ReplaceAll(raw, []byte("\n"), []byte("\r")); !bytes.Equal(m.Encode(), want) {
		t.Errorf("Encode changed the bytes:\n got %q\nwant %q", m.Encode(), want)
	}
}

func TestMessageCharset(t *testing.T) {
	const head = "MSH|^~\\&|PAS|RX1|EPR|RX1|20240715120000||ADT^A01|C1|P|2.4||||||"
	const pid = "\rPID|1||9990000271^^^NHS^NH||ZO\xc9^\\XE9\\\r"
	tests := []struct {
		name        string
		msh18       string
		want        Charset
		code        string
		family      string
		given       string
		invalidUTF8 bool
		wantErr     bool
	}{
		{"absent", "", CharsetDefault, "", "ZO\u00c9", "\u00e9", false, false},
		// The HL7 null, which some senders put in every field they leave
		// unvalued: no character set declared, not an unknown one.
		{"null", `""`, CharsetDefault, "", "ZO\u00c9", "\u00e9", false, false},
		{"ascii", "ASCII", CharsetASCII, "ASCII", "ZO\u00c9", "\u00e9", false, false},
		{"latin1", "8859/1", CharsetLatin1, "8859/1", "ZO\u00c9", "\u00e9", false, false},
		{"latin1 then a switch set", "8859/1~ISO IR87", CharsetLatin1, "8859/1", "ZO\u00c9", "\u00e9", false, false},
		{"utf8", "UNICODE UTF-8", CharsetUTF8, "UNICODE UTF-8", "ZO\xc9", "\xe9", true, false},
		{"latin9", "8859/15", CharsetUnsupported, "8859/15", "ZO\xc9", "\xe9", true, true},
		{"utf16", "UNICODE UTF-16", CharsetUnsupported, "UNICODE UTF-16", "ZO\xc9", "\xe9", true, true},
		{"jis", "ISO IR87", CharsetUnsupported, "ISO IR87", "ZO\xc9", "\xe9", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, []byte(head+tt.msh18+pid))
			if m.Charset() != tt.want || m.CharsetCode() != tt.code {
				t.Errorf("charset = %v %q, want %v %q", m.Charset(), m.CharsetCode(), tt.want, tt.code)
			}
			seg := m.Segment("PID")
			if got := seg.Component(5, 1, 1, 1); got != tt.family {
				t.Errorf("family = %q, want %q", got, tt.family)
			}
			if got := seg.Component(5, 1, 2, 1); got != tt.given {
				t.Errorf("given = %q, want %q", got, tt.given)
			}
			if got := m.InvalidUTF8(); got != tt.invalidUTF8 {
				t.Errorf("InvalidUTF8 = %v, want %v", got, tt.invalidUTF8)
			}
			err := m.CharsetError()
			if (err != nil) != tt.wantErr || m.CharsetSupported() == tt.wantErr {
				t.Fatalf("CharsetError = %v, supported %v, want error %v", err, m.CharsetSupported(), tt.wantErr)
			}
			if err != nil {
				f := fault.As(err)
				if f == nil || f.Code != fault.CodeHL7Charset || f.HL7Err != ErrCodeTableValue || f.Class != fault.Permanent {
					t.Fatalf("CharsetError = %#v", err)
				}
				if !strings.Contains(f.Detail, tt.code) || strings.Contains(f.Msg, tt.code) {
					t.Errorf("fault message %q, detail %q: the code belongs in the detail only", f.Msg, f.Detail)
				}
			}
		})
	}
}

// TestInvalidUTF8 checks InvalidUTF8 (declared UTF-8, bytes that are not:
// U+FFFD) and Latin1Assumed (nothing declared, or ASCII, and bytes that
// are not UTF-8: read as 8859/1).
func TestInvalidUTF8(t *testing.T) {
	const utf8Head = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||UNICODE UTF-8"
	const asciiHead = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||ASCII"
	tests := []struct {
		name    string
		raw     string
		invalid bool
		latin1  bool
	}{
		{"ascii", "MSH|^~\\&|A\rPID|1||X", false, false},
		{"valid utf8", "MSH|^~\\&|A\rPID|1||Zo\u00e9", false, false},
		{"latin1 byte undeclared", "MSH|^~\\&|A\rPID|1||Zo\xe9", false, true},
		{"latin1 byte under ASCII", asciiHead + "\rPID|1||Zo\xe9", false, true},
		{"latin1 byte under UTF-8", utf8Head + "\rPID|1||Zo\xe9", true, false},
		{"truncated sequence in MSH", "MSH|^~\\&|A\xc3\rPID|1||X", false, true},
		{"truncated sequence under UTF-8", utf8Head + "\rPID|1||A\xc3", true, false},
		// An escaped byte is read as one sent raw.
		{"escaped invalid byte", "MSH|^~\\&|A\rPID|1||\\XE9\\", false, true},
		{"escaped invalid byte in a component", "MSH|^~\\&|A\rPID|1||X||ZO\\XEB\\^SIAN", false, true},
		{"escaped invalid byte under UTF-8", utf8Head + "\rPID|1||X||ZO\\XEB\\^SIAN", true, false},
		{"escaped UTF-8", "MSH|^~\\&|A\rPID|1||SI\\XC3A2\\N", false, false},
		// \E\ then the text "XE9": no hex sequence.
		{"escaped escape before X", "MSH|^~\\&|A\rPID|1||A\\E\\XE9", false, false},
		{"escaped invalid byte, 8859/1", "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/1\rPID|1||\\XE9\\", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, []byte(tt.raw))
			if got := m.InvalidUTF8(); got != tt.invalid {
				t.Errorf("InvalidUTF8 = %v, want %v", got, tt.invalid)
			}
			if got := m.Latin1Assumed(); got != tt.latin1 {
				t.Errorf("Latin1Assumed = %v, want %v", got, tt.latin1)
			}
		})
	}
}

// TestLooksUTF8 checks that a message declaring 8859/1 whose text reads
// as UTF-8 is told apart from Latin-1 text, and that no other character
// set is.
func TestLooksUTF8(t *testing.T) {
	const latin1 = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/1\r"
	tests := []struct {
		name string
		raw  string
		want bool
	}{
		{"utf8 letter", latin1 + "PID|1||X||ZO\u00cb^SI\u00c2N", true},
		{"utf8 curly apostrophe", latin1 + "PID|1||X||O\u2019BRIEN", true},
		{"latin1 letters", latin1 + "PID|1||X||ZO\xcb^SI\xc2N", false},
		{"latin1 letters side by side", latin1 + "PID|1||X||B\xc9\xc9", false},
		{"latin1 Windows-1252 apostrophe", latin1 + "PID|1||X||O\x92BRIEN", false},
		{"ascii", latin1 + "PID|1||X||SMITH", false},
		{"utf8 declared", "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||X||ZO\u00cb", false},
		{"nothing declared", "MSH|^~\\&|A\rPID|1||X||ZO\u00cb", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustParse(t, []byte(tt.raw)).LooksUTF8(); got != tt.want {
				t.Errorf("LooksUTF8 = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCharsetDecodeValidUTF8(t *testing.T) {
	var all []byte
	for c := 0; c < 256; c++ {
		all = append(all, byte(c))
	}
	got := CharsetLatin1.Decode(string(all))
	if !utf8.ValidString(got) || utf8.RuneCountInString(got) != 256 {
		t.Fatalf("Decode of every byte gave %d runes, valid %v", utf8.RuneCountInString(got), utf8.ValidString(got))
	}
	for i, r := range []rune(got) {
		want := rune(i)
		if i < 0x20 && i != '\t' && i != '\n' && i != '\r' {
			want = utf8.RuneError // FHIR strings hold no other control character
		}
		if i >= 0x80 && i <= 0x9f {
			want = windows1252[i-0x80]
		}
		if r != want {
			t.Fatalf("byte %#x decoded to %U, want %U", i, r, want)
		}
	}
}

// TestControlChars: control characters FHIR strings may not hold are
// reported on the message and read as U+FFFD, raw or escaped; tab, line
// feed and carriage return (an escaped line break) are kept and not
// reported.
func TestControlChars(t *testing.T) {
	tests := []struct {
		name, pid5, want string
		flagged          bool
	}{
		{"none", "TEST^ALEX", "ALEX", false},
		{"NUL", "TEST^AL\x00EX", "AL\ufffdEX", true},
		{"escape sequence", "TEST^AL\\X1B\\EX", "AL\ufffdEX", true},
		{"escaped line break", "TEST^AL\\.br\\EX\\X0D\\", "AL\nEX\r", false},
		{"tab kept", "TEST^AL\tEX", "AL\tEX", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, []byte("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||X||"+tt.pid5+"\r"))
			if got := m.ControlChars(); got != tt.flagged {
				t.Errorf("ControlChars() = %v, want %v", got, tt.flagged)
			}
			if got := m.Segment("PID").Component(5, 1, 2, 1); got != tt.want {
				t.Errorf("given name %q, want %q", got, tt.want)
			}
		})
	}
}

// TestHasControlMatchesRunes checks that testing bytes finds what testing
// the runes of a string finds, for every byte and pair of bytes (invalid
// UTF-8 included) and some text around them.
func TestHasControlMatchesRunes(t *testing.T) {
	var inputs []string
	for a := 0; a < 256; a++ {
		inputs = append(inputs, string([]byte{byte(a)}), "ZOË"+string([]byte{byte(a)})+"x")
		for b := 0; b < 256; b++ {
			inputs = append(inputs, string([]byte{byte(a), byte(b)}))
		}
	}
	for _, s := range inputs {
		if got, want := hasControl(s), strings.IndexFunc(s, isControl) >= 0; got != want {
			t.Fatalf("hasControl(%q) = %v, want %v", s, got, want)
		}
	}
}
