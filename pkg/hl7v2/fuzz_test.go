package hl7v2

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// addSeeds adds every testdata message and, when present, every corpus
// message to f.
func addSeeds(f *testing.F, add func([]byte)) {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		add(b)
	}
	if _, err := os.Stat(corporaDir); err == nil {
		for _, c := range corpusMessages(f) {
			add(c.raw)
		}
	}
}

func FuzzParse(f *testing.F) {
	addSeeds(f, func(b []byte) { f.Add(b) })
	f.Add([]byte("MSH|^~\\&#|A\r\nPID|1|\\X41\\|a~b^c&d\n\n"))
	f.Add([]byte("MSH*^~\\&*X\rZZ1*\"\"*"))
	f.Add([]byte("MSH|^~\\&|A\rMSH\rMSH|\rMSH|x|y"))
	// Hostile shapes: many repetitions, components and segments, a field
	// of escapes, and NUL and control bytes.
	f.Add([]byte("MSH|^~\\&|A|B|||||ADT^A01|1|P|2.4\rPID|1||" + strings.Repeat("1~", 2000) + "\r"))
	f.Add([]byte("MSH|^~\\&|A|B|||||ADT^A01|1|P|2.4\rPID|1||" + strings.Repeat("^&", 2000) + "\r"))
	f.Add([]byte("MSH|^~\\&|A|B|||||ADT^A01|1|P|2.4\r" + strings.Repeat("NTE|1\r", 2000)))
	f.Add([]byte("MSH|^~\\&|A|B|||||ADT^A01|1|P|2.4\rNTE|1||" + strings.Repeat("\\X00\\\\F\\", 500) + "\r"))
	f.Add([]byte("MSH|^~\\&|A\x00|B\x0b|||||ADT^A01|1\x1c|P|2.4\r\x00\r"))
	f.Add([]byte("MSH|^~\\&|A|B|||||ADT^A01|1|P|2.4||||||8859/1\rPID|1||\xc9^\\XE9\\\xff\r"))
	f.Add([]byte("MSH|^~\\&|A|B|||||ADT^A01|1|P|2.4||||||8859/15\rPID|1||\xc9\r"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := Parse(raw)
		if err != nil {
			if m != nil {
				t.Fatal("Parse returned a message and an error")
			}
			return
		}
		enc := m.Encode()
		again, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse(Encode()) failed: %v", err)
		}
		if diff := cmp.Diff(fields(m), fields(again)); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
		if !bytes.Equal(enc, again.Encode()) {
			t.Fatal("Encode is not stable")
		}
		if again.Delimiters() != m.Delimiters() {
			t.Fatal("delimiters changed")
		}
		if again.Charset() != m.Charset() || again.CharsetCode() != m.CharsetCode() {
			t.Fatal("charset changed")
		}
		if (m.CharsetError() == nil) != m.CharsetSupported() {
			t.Fatal("CharsetError disagrees with CharsetSupported")
		}
		_ = m.InvalidUTF8()
		_ = m.ControlChars()
		// Readers must not panic on whatever parsed.
		_ = m.MessageType() + m.Event() + m.ControlID() + m.Version()
		for _, s := range m.Segments() {
			for i := 0; i <= s.FieldCount()+1; i++ {
				_ = s.Component(i, 2, 2, 2) + s.Repetition(i, 1)
				_ = s.Repetitions(i)
				// 8859/1 text always decodes to valid UTF-8.
				if v := s.Component(i, 1, 1, 1); m.Charset() == CharsetLatin1 && !utf8.ValidString(v) {
					t.Fatalf("8859/1 value decoded to invalid UTF-8 %q", v)
				}
				if v := s.ComponentText(i, 1, 2); m.Charset() == CharsetLatin1 && !utf8.ValidString(v) {
					t.Fatalf("8859/1 component decoded to invalid UTF-8 %q", v)
				}
			}
		}
		for _, p := range []string{"PID-3", "PID-3[2].1.2", "MSH-2", "MSH-1.1", "OBX[2]-5", "ZZ1-1"} {
			_ = m.Get(p)
		}
		if _, _, _, err := ParseAck(BuildAck(m, AckOptions{Text: string(raw), Errors: []AckError{{Segment: "PID", Text: string(raw)}}})); err != nil {
			t.Fatalf("BuildAck produced an unparsable ACK: %v", err)
		}
	})
}

func FuzzUnescape(f *testing.F) {
	addSeeds(f, func(b []byte) { f.Add(string(b)) })
	for _, s := range []string{`\F\\S\\T\\R\\E\`, `\X0D0A\`, `\X4\`, `\.br\`, `\H\x\N\`, `\`, `\\`, `a\Zq\F\`, `a\P\b#`} {
		f.Add(s)
	}
	d := DefaultDelimiters()
	odd := Delimiters{Field: '*', Component: '$', Repetition: '!', Escape: '?', Subcomponent: '%'}
	trunc := Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&', Truncation: '#'}
	f.Fuzz(func(t *testing.T, s string) {
		// Unescape never fails and never grows its input.
		for _, dd := range []Delimiters{d, odd, trunc, {Field: '|', Component: '^', Repetition: '~'}} {
			if u := Unescape(s, dd); len(u) > len(s) {
				t.Fatalf("Unescape grew %q to %q", s, u)
			}
		}
		// Escaping any text and unescaping it gives the text back.
		for _, dd := range []Delimiters{d, odd, trunc} {
			if got := Unescape(Escape(s, dd), dd); got != s {
				t.Fatalf("Unescape(Escape(%q)) = %q", s, got)
			}
		}
	})
}
