package hl7v2

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/google/go-cmp/cmp"
)

// corporaDir is the shared third-party corpora, relative to this package.
var corporaDir = filepath.Join("..", "..", "..", "shared", "corpora")

type corpusMessage struct {
	name string
	raw  []byte
}

// isMSHLine reports whether line starts an HL7 message: "MSH" then a
// delimiter character.
func isMSHLine(line []byte) bool {
	line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
	return len(line) > 3 && bytes.HasPrefix(line, []byte("MSH")) && validDelimiter(line[3])
}

// splitMessages cuts a file holding several messages, with comment and
// blank lines between them, into messages: each starts at an MSH line and
// runs to the next blank line, comment line or MSH line.
func splitMessages(data []byte) [][]byte {
	var out [][]byte
	var cur [][]byte
	flush := func() {
		if len(cur) > 0 {
			out = append(out, bytes.Join(cur, []byte("\r")))
			cur = nil
		}
	}
	for _, raw := range bytes.Split(data, []byte("\n")) {
		line := bytes.TrimRight(raw, "\r")
		switch {
		case isMSHLine(line):
			flush()
			cur = append(cur, line)
		case len(bytes.TrimSpace(line)) == 0, bytes.HasPrefix(line, []byte("//")), bytes.HasPrefix(line, []byte("/*")), bytes.HasPrefix(line, []byte(" *")):
			flush()
		case len(cur) > 0:
			cur = append(cur, line)
		}
	}
	flush()
	return out
}

// corpusMessages returns the messages of the HL7 v2 corpora. Single-message
// files are returned exactly as stored, so their own line ends and byte
// order marks are exercised; multi-message files are split.
func corpusMessages(t testing.TB) []corpusMessage {
	t.Helper()
	var out []corpusMessage
	found := false
	for _, dir := range []string{"hapi-hl7v2", filepath.Join("ms-fhir-converter", "messages")} {
		entries, err := os.ReadDir(filepath.Join(corporaDir, dir))
		if err != nil {
			continue
		}
		found = true
		for _, e := range entries {
			if e.IsDir() || strings.HasSuffix(e.Name(), ".md") || strings.HasPrefix(e.Name(), "LICENSE") {
				continue
			}
			data, err := os.ReadFile(filepath.Join(corporaDir, dir, e.Name()))
			if err != nil {
				t.Fatalf("read corpus file: %v", err)
			}
			msgs := splitMessages(data)
			switch {
			case len(msgs) == 0:
				// Not an HL7 message (a guide or an encoded payload).
			case len(msgs) == 1 && isMSHLine(bytes.TrimLeft(data, "\r\n")):
				out = append(out, corpusMessage{name: filepath.Join(dir, e.Name()), raw: data})
			default:
				for i, m := range msgs {
					out = append(out, corpusMessage{name: filepath.Join(dir, e.Name()) + "#" + string(rune('a'+i%26)) + strings.Repeat("'", i/26), raw: m})
				}
			}
		}
	}
	if !found {
		corpustest.Missing(t, "corpora not found at %s: skipping corpus tests", corporaDir)
	}
	return out
}

func TestCorpora(t *testing.T) {
	msgs := corpusMessages(t)
	if len(msgs) < 100 {
		t.Fatalf("found only %d corpus messages", len(msgs))
	}
	for _, c := range msgs {
		t.Run(c.name, func(t *testing.T) {
			m, err := Parse(c.raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if m.MessageType() == "" {
				t.Error("no message type")
			}
			// Every non-blank line of the input is one segment.
			want := 0
			for _, line := range bytes.FieldsFunc(c.raw, func(r rune) bool { return r == '\r' || r == '\n' }) {
				if len(bytes.TrimSpace(bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")))) > 0 {
					want++
				}
			}
			if got := len(m.Segments()); got != want {
				t.Errorf("%d segments, want %d", got, want)
			}
			enc := m.Encode()
			again, err := Parse(enc)
			if err != nil {
				t.Fatalf("Parse(Encode()): %v", err)
			}
			if diff := cmp.Diff(fields(m), fields(again)); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			if !bytes.Equal(enc, again.Encode()) {
				t.Error("Encode is not stable")
			}
			// Every component of every field reads without panicking and
			// an ACK for the message parses.
			for _, s := range m.Segments() {
				for f := 1; f <= s.FieldCount(); f++ {
					for r := 1; r <= s.Repetitions(f); r++ {
						_ = s.Component(f, r, 1, 1)
					}
				}
			}
			code, ctrl, _, err := ParseAck(BuildAck(m, AckOptions{ControlID: "T1", App: "JUNCTION"}))
			if err != nil {
				t.Fatalf("ParseAck(BuildAck()): %v", err)
			}
			if code != m.AcceptCode() || ctrl != m.ControlID() {
				t.Errorf("ACK %s %q, want %s %q", code, ctrl, m.AcceptCode(), m.ControlID())
			}
		})
	}
}

func TestCorpusOddDelimiters(t *testing.T) {
	msgs := corpusMessages(t)
	seen := map[Delimiters]bool{}
	for _, c := range msgs {
		if m, err := Parse(c.raw); err == nil {
			seen[m.Delimiters()] = true
		}
	}
	// The HAPI corpus holds messages with "^~\}", "^~}" (no subcomponent)
	// and a "^" field separator.
	for _, d := range []Delimiters{
		{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '}'},
		{Field: '|', Component: '^', Repetition: '~', Escape: '}'},
		{Field: '^', Component: '~', Repetition: '|', Escape: '\\', Subcomponent: '&'},
	} {
		if !seen[d] {
			t.Errorf("no corpus message parsed with delimiters %q%s", d.Field, d.EncodingCharacters())
		}
	}
}
