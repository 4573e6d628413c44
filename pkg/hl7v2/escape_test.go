package hl7v2

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEscape(t *testing.T) {
	def := DefaultDelimiters()
	odd := Delimiters{Field: '*', Component: '$', Repetition: '!', Escape: '?', Subcomponent: '%'}
	noEsc := Delimiters{Field: '|', Component: '^', Repetition: '~'}
	trunc := Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&', Truncation: '#'}
	tests := []struct {
		name string
		in   string
		d    Delimiters
		want string
	}{
		{"plain", "TESTPATIENT ALEX", def, "TESTPATIENT ALEX"},
		{"empty", "", def, ""},
		{"all delimiters", `a|b^c&d~e\f`, def, `a\F\b\S\c\T\d\R\e\E\f`},
		{"line ends", "one\ntwo\rthree\r\n", def, `one\.br\two\X0D\three\X0D\\.br\`},
		{"odd delimiters", "a*b$c%d!e?f|g^", odd, "a?F?b?S?c?T?d?R?e?E?f|g^"},
		{"no escape character", "a|b^c~d&e\nf", noEsc, "a b c d&e f"},
		{"utf-8 untouched", "Zoë ^ Ünal", def, `Zoë \S\ Ünal`},
		// v2.7: a truncation character declared in MSH-2 is escaped in
		// data, as \P\, so it is not read as a value cut short.
		{"truncation character", "FLAT #3", trunc, `FLAT \P\3`},
		{"no truncation character", "FLAT #3", def, "FLAT #3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Escape(tt.in, tt.d)); diff != "" {
				t.Errorf("Escape (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnescape(t *testing.T) {
	def := DefaultDelimiters()
	odd := Delimiters{Field: '*', Component: '$', Repetition: '!', Escape: '?', Subcomponent: '%'}
	tests := []struct {
		name string
		in   string
		d    Delimiters
		want string
	}{
		{"plain", "TESTPATIENT", def, "TESTPATIENT"},
		{"all delimiters", `a\F\b\S\c\T\d\R\e\E\f`, def, `a|b^c&d~e\f`},
		{"line break", `one\.br\two`, def, "one\ntwo"},
		{"hex", `\X0D0A\`, def, "\r\n"},
		{"hex lower case digits", `\X4a6b\`, def, "Jk"},
		{"hex multibyte", `caf\XC3A9\`, def, "café"},
		{"odd number of hex digits", `\X4\`, def, `\X4\`},
		{"bad hex digit", `\X4G\`, def, `\X4G\`},
		{"empty hex", `\X\`, def, `\X\`},
		{"highlight dropped", `\H\bold\N\ text`, def, `bold text`},
		{"highlight with odd delimiters", "?H?bold?N?", odd, "bold"},
		{"local kept", `\Zabc\F\`, def, `\Zabc\F\`},
		{"local then known", `\Zabc\\F\`, def, `\Zabc\|`},
		{"format kept", `\.sp2\x`, def, `\.sp2\x`},
		{"dangling escape", `end\`, def, `end\`},
		{"unclosed sequence", `a\F`, def, `a\F`},
		{"empty sequence", `a\\b`, def, `a\\b`},
		{"odd delimiters", "?F?x?S??E?", odd, "*x$?"},
		{"subcomponent missing", `a\T\b`, Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\'}, `a\T\b`},
		{"no escape character", `a\F\b`, Delimiters{Field: '|', Component: '^', Repetition: '~'}, `a\F\b`},
		{"sequence after unknown", `\Q\\F\`, def, `\Q\|`},
		{"truncation character", `FLAT \P\3`, Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&', Truncation: '#'}, "FLAT #3"},
		{"truncation character not declared", `FLAT \P\3`, def, `FLAT \P\3`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Unescape(tt.in, tt.d)); diff != "" {
				t.Errorf("Unescape (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEscapeRoundTrip(t *testing.T) {
	inputs := []string{
		"", "simple", `|^~\&`, "\\E\\ literal", "multi\r\nline\ntext\r", `\X41\`, "\x00\x01\xff",
		"TESTPATIENT^ALEX~9990000018|&", "FLAT #3#",
	}
	for _, d := range []Delimiters{DefaultDelimiters(), {Field: '*', Component: '$', Repetition: '!', Escape: '?', Subcomponent: '%'}, {Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&', Truncation: '#'}} {
		for _, in := range inputs {
			t.Run(d.EncodingCharacters()+" "+in, func(t *testing.T) {
				esc := Escape(in, d)
				for i := 0; i < len(esc); i++ {
					c := esc[i]
					if c == d.Field || c == d.Component || c == d.Repetition || c == d.Subcomponent || c == '\r' || c == '\n' || (c != 0 && c == d.Truncation) {
						t.Fatalf("Escape(%q) = %q still holds delimiter %q", in, esc, c)
					}
				}
				if got := Unescape(esc, d); got != in {
					t.Errorf("Unescape(Escape(%q)) = %q", in, got)
				}
			})
		}
	}
}
