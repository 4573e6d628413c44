package hl7v2

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/fault"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("read testdata: %v", err)
	}
	return b
}

func mustParse(t testing.TB, raw []byte) *Message {
	t.Helper()
	m, err := Parse(raw)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return m
}

// fields returns every field of every segment, for comparing messages.
func fields(m *Message) [][]string {
	var out [][]string
	for _, s := range m.Segments() {
		f := []string{s.Name()}
		for i := 1; i <= s.FieldCount(); i++ {
			f = append(f, s.Field(i))
		}
		out = append(out, f)
	}
	return out
}

func TestParseTestdata(t *testing.T) {
	tests := []struct {
		file     string
		segments []string
		delims   Delimiters
		header   map[string]string
		paths    map[string]string
	}{
		{
			file:     "adt_a01_v23_crlf.hl7",
			segments: []string{"MSH", "EVN", "PID", "PV1"},
			delims:   DefaultDelimiters(),
			header: map[string]string{
				"type": "ADT^A01", "event": "A01", "control": "MSG0001", "version": "2.3",
				"sendApp": "PASAPP", "sendFac": "RXX01", "recvApp": "JUNCTION", "recvFac": "RXX01",
			},
			paths: map[string]string{
				"MSH-1":      "|",
				"MSH-2":      `^~\&`,
				"MSH-3":      "PASAPP",
				"MSH-9":      "ADT^A01",
				"MSH-9.2":    "A01",
				"PID-3":      "9990000018^^^NHS^NH",
				"PID-3[1]":   "9990000018^^^NHS^NH",
				"PID-3[2]":   "H123456^^^RXX01^MR",
				"PID-3[2].1": "H123456",
				"PID-3[2].5": "MR",
				"PID-3[3]":   "",
				"PID-5.1":    "TESTPATIENT",
				"PID-5.2":    "ALEX",
				"PID-5.3":    "J",
				"PID-5.9":    "",
				"pid-5-2":    "ALEX",
				"PID.5.2":    "ALEX",
				"PID-11.5":   "ZZ99 9ZZ",
				"PV1-3.3":    "BED3",
				"PV1-19.1":   "V0001",
				"PV1-99":     "",
				"ZZZ-1":      "",
			},
		},
		{
			file:     "adt_a01_v251_crlf.hl7",
			segments: []string{"MSH", "EVN", "PID", "PD1", "NK1", "PV1", "OBX", "OBX", "ZPD"},
			delims:   DefaultDelimiters(),
			header: map[string]string{
				"type": "ADT^A01", "event": "A01", "control": "MSG0002", "version": "2.5.1",
				"sendApp": "PASAPP", "sendFac": "RXX01", "recvApp": "JUNCTION", "recvFac": "RXX01",
			},
			paths: map[string]string{
				"MSH-3":      "PASAPP^2.16.840.1.113883.2.1.3.2.4.18.1^ISO",
				"MSH-3.2":    "2.16.840.1.113883.2.1.3.2.4.18.1",
				"MSH-9.3":    "ADT_A01",
				"MSH-15":     "AL",
				"MSH-18":     "8859/1",
				"PID-3.4":    "NHS",
				"PID-3.4.1":  "NHS",
				"PID-3.4.2":  "2.16.840.1.113883.2.1.4.1",
				"PID-3.4.3":  "ISO",
				"PID-3.4.4":  "",
				"PID-3.7":    "20200101",
				"PID-5[2].2": "BEE",
				"PID-30":     `""`,
				"PID-31":     "",
				"OBX-5":      "172",
				"OBX[1]-5":   "172",
				"OBX[2]-5":   "70.5",
				"OBX[2]-6.2": "kilogram",
				"OBX[3]-5":   "",
				"PV1-44":     "20240301120000",
				"ZPD-2.2":    "VALUE",
				"ZPD-5":      "",
			},
		},
		{
			file:     "truncation_hash.hl7",
			segments: []string{"MSH", "PID", "OBR", "OBX", "OBX"},
			delims:   Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&', Truncation: '#'},
			header: map[string]string{
				"type": "ORU^R01", "event": "R01", "control": "LAB0001", "version": "2.7",
				"sendApp": "LABAPP", "sendFac": "LAB01", "recvApp": "JUNCTION", "recvFac": "RXX01",
			},
			paths: map[string]string{
				"MSH-2":    `^~\&#`,
				"OBX[2]-5": "Normal morphology#",
			},
		},
		{
			file:     "star_delims.hl7",
			segments: []string{"MSH", "EVN", "PID"},
			delims:   Delimiters{Field: '*', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&'},
			header: map[string]string{
				"type": "ADT^A08", "event": "A08", "control": "STAR0001", "version": "2.4",
				"sendApp": "OLDAPP", "sendFac": "SITE", "recvApp": "JUNCTION", "recvFac": "RXX01",
			},
			paths: map[string]string{
				"MSH-1":   "*",
				"MSH-2":   `^~\&`,
				"PID-3.1": "9990000115",
				"PID-5.2": "RILEY|PIPE",
				"PID-8":   "U",
			},
		},
		{
			file:     "escapes.hl7",
			segments: []string{"MSH", "PID", "OBX", "OBX", "OBX", "OBX"},
			delims:   DefaultDelimiters(),
			header: map[string]string{
				"type": "ORU^R01", "event": "R01", "control": "ESC0001", "version": "2.4",
				"sendApp": "LABAPP", "sendFac": "LAB01", "recvApp": "JUNCTION", "recvFac": "RXX01",
			},
			paths: map[string]string{
				"OBX[1]-5":   `Pipe \F\ hat \S\ amp \T\ tilde \R\ slash \E\ end`,
				"OBX[1]-5.1": `Pipe | hat ^ amp & tilde ~ slash \ end`,
				"OBX[2]-5.1": "Line one\nLine two\r\nLine three",
				"OBX[3]-5.1": `Bold and \Zlocal\ kept`, // highlighting dropped
				"OBX[4]-5.1": `Broken \X4\ and dangling \`,
			},
		},
		{
			file:     "bom_lf.hl7",
			segments: []string{"MSH", "EVN", "PID", "PV1"},
			delims:   DefaultDelimiters(),
			header: map[string]string{
				"type": "ADT^A03", "event": "A03", "control": "BOM0001", "version": "2.4",
				"sendApp": "PASAPP", "sendFac": "RXX01", "recvApp": "JUNCTION", "recvFac": "RXX01",
			},
			paths: map[string]string{
				"PID-3.1": "9990000026",
				"PV1-44":  "20240305100000",
			},
		},
		{
			file:     "short_encoding.hl7",
			segments: []string{"MSH", "PID"},
			delims:   Delimiters{Field: '|', Component: '^', Repetition: '~'},
			header: map[string]string{
				"type": "ADT^A04", "event": "A04", "control": "SHORT001", "version": "2.1",
				"sendApp": "OLDAPP", "sendFac": "SITE", "recvApp": "JUNCTION", "recvFac": "RXX01",
			},
			paths: map[string]string{
				"MSH-2":     "^~",
				"PID-5.2":   `SAM\F\&X`,
				"PID-5.2.1": `SAM\F\&X`,
				"PID-5.2.2": "",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			m := mustParse(t, readTestdata(t, tt.file))
			var names []string
			for _, s := range m.Segments() {
				names = append(names, s.Name())
			}
			if diff := cmp.Diff(tt.segments, names); diff != "" {
				t.Errorf("segments (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.delims, m.Delimiters()); diff != "" {
				t.Errorf("delimiters (-want +got):\n%s", diff)
			}
			header := map[string]string{
				"type": m.MessageType(), "event": m.Event(), "control": m.ControlID(), "version": m.Version(),
				"sendApp": m.SendingApp(), "sendFac": m.SendingFacility(),
				"recvApp": m.ReceivingApp(), "recvFac": m.ReceivingFacility(),
			}
			if diff := cmp.Diff(tt.header, header); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			got := map[string]string{}
			for p := range tt.paths {
				got[p] = m.Get(p)
			}
			if diff := cmp.Diff(tt.paths, got); diff != "" {
				t.Errorf("Get (-want +got):\n%s", diff)
			}
			again := mustParse(t, m.Encode())
			if diff := cmp.Diff(fields(m), fields(again)); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		wantMsg string
		wantHL7 string
	}{
		{"empty", "", "message is empty", "100"},
		{"only blank lines", "\r\n \n\t\r", "message is empty", "100"},
		{"bom only", "\xef\xbb\xbf", "message is empty", "100"},
		{"not MSH", "PID|1\rMSH|^~\\&|", "segment 1 is not MSH", "100"},
		{"MLLP framing left on", "\x0bMSH|^~\\&|A\r\x1c\r", "segment 1 is not MSH", "100"},
		{"lower case msh", "msh|^~\\&|A", "segment 1 is not MSH", "100"},
		{"file batch", "FHS|^~\\&|LAB\rBHS|^~\\&|LAB\rMSH|^~\\&|A\rBTS|1\rFTS|1", "HL7 batches (FHS, BHS) are not accepted: send each message in its own frame", "200"},
		{"batch", "BHS|^~\\&|LAB\rMSH|^~\\&|A\rBTS|1", "HL7 batches (FHS, BHS) are not accepted: send each message in its own frame", "200"},
		{"segment named like a batch header", "BHSX|1\rMSH|^~\\&|A", "segment 1 is not MSH", "100"},
		{"MSH alone", "MSH", "MSH-1 field separator invalid", "102"},
		{"alphanumeric field separator", "MSHA^~\\&A", "MSH-1 field separator invalid", "102"},
		{"space field separator", "MSH ^~\\& ", "MSH-1 field separator invalid", "102"},
		{"CR after MSH", "MSH\rPID|1", "MSH-1 field separator invalid", "102"},
		{"empty MSH-2", "MSH||A|B", "MSH-2 encoding characters invalid", "102"},
		{"one character MSH-2", "MSH|^|A|B", "MSH-2 encoding characters invalid", "102"},
		{"six character MSH-2", "MSH|^~\\&#!|A", "MSH-2 encoding characters invalid", "102"},
		{"repeated MSH-2 character", "MSH|^^\\&|A", "MSH-2 encoding characters invalid", "102"},
		{"letter in MSH-2", "MSH|^~X&|A", "MSH-2 encoding characters invalid", "102"},
		{"space in MSH-2", "MSH|^ \\&|A", "MSH-2 encoding characters invalid", "102"},
		{"bad second segment", "MSH|^~\\&|A\rPI|1", "segment 2 has an invalid name", "100"},
		{"lower case segment", "MSH|^~\\&|A\rpid|1", "segment 2 has an invalid name", "100"},
		{"digit first", "MSH|^~\\&|A\r1ID|1", "segment 2 has an invalid name", "100"},
		{"name too long", "MSH|^~\\&|A\rPIDX|1", "segment 2 has an invalid name", "100"},
		{"wrong separator after name", "MSH|^~\\&|A\rPID^1", "segment 2 has an invalid name", "100"},
		{"wrapped text line", "MSH|^~\\&|A\rNTE|1||first line\nsecond line", "segment 3 has an invalid name", "100"},
		{"indented segment", "MSH|^~\\&|A\r PID|1", "segment 2 has an invalid name", "100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.raw))
			if err == nil {
				t.Fatalf("Parse succeeded with %d segments, want error", len(m.Segments()))
			}
			f := fault.As(err)
			if f == nil {
				t.Fatalf("error %v is not a fault", err)
			}
			got := []string{string(f.Code), f.Msg, f.HL7Err}
			want := []string{string(fault.CodeHL7Parse), tt.wantMsg, tt.wantHL7}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("fault (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSegmentEnds(t *testing.T) {
	want := [][]string{
		{"MSH", "|", `^~\&`, "A", "", ""},
		{"PID", "1", "", "X^Y", ""},
		{"ZXY"},
		{"NTE", "", ""},
	}
	tests := []struct {
		name string
		raw  string
	}{
		{"CR", "MSH|^~\\&|A||\rPID|1||X^Y|\rZXY\rNTE||\r"},
		{"LF", "MSH|^~\\&|A||\nPID|1||X^Y|\nZXY\nNTE||\n"},
		{"CRLF", "MSH|^~\\&|A||\r\nPID|1||X^Y|\r\nZXY\r\nNTE||\r\n"},
		{"mixed and no final end", "MSH|^~\\&|A||\r\nPID|1||X^Y|\nZXY\rNTE||"},
		{"blank lines and BOM", "\xef\xbb\xbf\r\n\r\n  MSH|^~\\&|A||\r\n\r\n\t \r\nPID|1||X^Y|\r\r\rZXY\n\nNTE||\r\n \r\n\r\n"},
		// Padding and a DOS end of file after the last segment.
		{"trailing NUL", "MSH|^~\\&|A||\rPID|1||X^Y|\rZXY\rNTE||\r\x00"},
		{"trailing SUB", "MSH|^~\\&|A||\r\nPID|1||X^Y|\r\nZXY\r\nNTE||\r\n\x1a"},
		{"NULs after the last end", "MSH|^~\\&|A||\rPID|1||X^Y|\rZXY\rNTE||\r\x00\x00\x00\r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, []byte(tt.raw))
			if diff := cmp.Diff(want, fields(m)); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
			const enc = "MSH|^~\\&|A||\rPID|1||X^Y|\rZXY\rNTE||\r"
			if diff := cmp.Diff(enc, string(m.Encode())); diff != "" {
				t.Errorf("Encode (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLaterEmptyMSH(t *testing.T) {
	m := mustParse(t, []byte("MSH|^~\\&|A\rMSH\r"))
	s := m.Segments()[1]
	got := []any{s.Name(), s.FieldCount(), s.Field(1), s.Field(2), s.Repetitions(1), s.Component(1, 1, 1, 1)}
	if diff := cmp.Diff([]any{"MSH", 1, "", "", 0, ""}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestSegmentAccessors(t *testing.T) {
	m := mustParse(t, []byte("MSH|^~\\&|APP^1.2&3|FAC\r"+
		"PID|1||A~B^b2~~D||\"\"|X&Y^Z|\"\"^N|\r"))
	type result struct {
		Count  int
		Fields []string
		Reps   []int
		Nulls  []bool
	}
	tests := []struct {
		seg  string
		want result
	}{
		{"MSH", result{
			Count:  4,
			Fields: []string{"MSH", "|", `^~\&`, "APP^1.2&3", "FAC", ""},
			Reps:   []int{0, 1, 1, 1, 1, 0},
			Nulls:  []bool{false, false, false, false, false, false},
		}},
		{"PID", result{
			Count:  8,
			Fields: []string{"PID", "1", "", "A~B^b2~~D", "", `""`, "X&Y^Z", `""^N`, "", ""},
			Reps:   []int{0, 1, 0, 4, 0, 1, 1, 1, 0, 0},
			Nulls:  []bool{false, false, false, false, false, true, false, false, false, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.seg, func(t *testing.T) {
			s := m.Segment(tt.seg)
			got := result{Count: s.FieldCount()}
			for i := range tt.want.Fields {
				got.Fields = append(got.Fields, s.Field(i))
				got.Reps = append(got.Reps, s.Repetitions(i))
				got.Nulls = append(got.Nulls, s.IsNull(i))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	comps := []struct {
		seg                   string
		field, rep, comp, sub int
		want                  string
	}{
		{"MSH", 1, 1, 1, 1, "|"},
		{"MSH", 2, 0, 0, 0, `^~\&`},
		{"MSH", 2, 1, 2, 1, ""},
		{"MSH", 1, 2, 1, 1, ""},
		{"MSH", 3, 1, 2, 1, "1.2"},
		{"MSH", 3, 1, 2, 2, "3"},
		{"MSH", 3, 1, 1, 0, "APP"},
		{"MSH", 9, 1, 1, 1, ""},
		{"PID", 3, 2, 2, 1, "b2"},
		{"PID", 3, 4, 1, 1, "D"},
		{"PID", 3, 3, 1, 1, ""},
		{"PID", 3, 5, 1, 1, ""},
		{"PID", 6, 1, 1, 2, "Y"},
		{"PID", 6, 1, 2, 0, "Z"},
		{"PID", 6, 1, 3, 1, ""},
		{"PID", 7, 1, 1, 1, `""`},
		{"PID", 0, 1, 1, 1, ""},
		{"PID", -1, 1, 1, 1, ""},
	}
	for _, tt := range comps {
		name := fmt.Sprintf("%s(%d,%d,%d,%d)", tt.seg, tt.field, tt.rep, tt.comp, tt.sub)
		t.Run(name, func(t *testing.T) {
			if got := m.Segment(tt.seg).Component(tt.field, tt.rep, tt.comp, tt.sub); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestComponentText: a component read whole keeps a subcomponent
// separator the sender did not escape, as text, where Component reads
// the first subcomponent.
func TestComponentText(t *testing.T) {
	m := mustParse(t, []byte("MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.4||||||8859/1\r"+
		"OBR|1|||UE^U&E^L~X^A & B \\T\\ C|||\"\"|Z\xe9&1\r"))
	obr := m.Segment("OBR")
	tests := []struct {
		field, rep, comp int
		want             string
	}{
		{4, 1, 2, "U&E"},
		{4, 1, 1, "UE"},
		{4, 2, 2, "A & B & C"},
		{4, 3, 2, ""},
		{7, 1, 1, `""`},
		{8, 1, 1, "Z\u00e9&1"},
		{9, 1, 1, ""},
		{1, 0, 0, "1"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("OBR(%d,%d,%d)", tt.field, tt.rep, tt.comp), func(t *testing.T) {
			if got := obr.ComponentText(tt.field, tt.rep, tt.comp); got != tt.want {
				t.Errorf("ComponentText = %q, want %q", got, tt.want)
			}
		})
	}
	if got := obr.Component(4, 1, 2, 1); got != "U" {
		t.Errorf("Component(4, 1, 2, 1) = %q, want the first subcomponent %q", got, "U")
	}
	if got := m.Segment("MSH").ComponentText(2, 1, 1); got != `^~\&` {
		t.Errorf("MSH-2 = %q", got)
	}
}

func TestMessageHeader(t *testing.T) {
	tests := []struct {
		name      string
		raw       string
		typ, ev   string
		enhanced  bool
		codes     []AckCode
		segsNamed int
	}{
		{"event from MSH-9", "MSH|^~\\&|||||||ADT^A01|1|P|2.4\rEVN|A02", "ADT^A01", "A01", false, []AckCode{"AA", "AE", "AR"}, 1},
		{"event from EVN", "MSH|^~\\&|||||||ADT|1|P|2.4\rEVN|A02", "ADT^A02", "A02", false, []AckCode{"AA", "AE", "AR"}, 1},
		{"ACK alone", "MSH|^~\\&|||||||ACK|1|P|2.4\rMSA|AA|1", "ACK", "", false, []AckCode{"AA", "AE", "AR"}, 0},
		// Before MSH-9 carried events, ORU and ORM had one each.
		{"v2.1 ORU", "MSH|^~\\&|||||||ORU|1|P|2.1\rPID|1", "ORU^R01", "R01", false, []AckCode{"AA", "AE", "AR"}, 0},
		{"v2.2 ORM", "MSH|^~\\&|||||||ORM|1|P|2.2\rPID|1", "ORM^O01", "O01", false, []AckCode{"AA", "AE", "AR"}, 0},
		{"empty EVN-1", "MSH|^~\\&|||||||ADT|1|P|2.4\rEVN|", "ADT", "", false, []AckCode{"AA", "AE", "AR"}, 1},
		{"enhanced", "MSH|^~\\&|||||||ORU^R01|1|P|2.5|||AL|NE\rEVN|R01\rEVN|X", "ORU^R01", "R01", true, []AckCode{"CA", "CE", "CR"}, 2},
		{"odd component separator", "MSH|$~\\&|||||||ADT$A04|1|P|2.4", "ADT^A04", "A04", false, []AckCode{"AA", "AE", "AR"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, []byte(tt.raw))
			got := []any{m.MessageType(), m.Event(), m.Enhanced(), []AckCode{m.AcceptCode(), m.ErrorCode(), m.RejectCode()}, len(m.SegmentsNamed("EVN")), m.CountSegments("EVN")}
			want := []any{tt.typ, tt.ev, tt.enhanced, tt.codes, tt.segsNamed, tt.segsNamed}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseCopiesInput(t *testing.T) {
	raw := []byte("MSH|^~\\&|APP|FAC\rPID|1||9990000018\r")
	m := mustParse(t, raw)
	for i := range raw {
		raw[i] = 'X'
	}
	if got := m.Get("PID-3"); got != "9990000018" {
		t.Errorf("after reusing the input, PID-3 = %q", got)
	}
}

func TestParsePath(t *testing.T) {
	tests := []struct {
		path string
		want Path
		ok   bool
	}{
		{"PID-3", Path{Segment: "PID", Field: 3}, true},
		{"pid.3", Path{Segment: "PID", Field: 3}, true},
		{"OBX[12]-5[3].2.1", Path{Segment: "OBX", Occurrence: 12, Field: 5, Repetition: 3, Component: 2, Subcomponent: 1}, true},
		{"ZX1-1-2-3", Path{Segment: "ZX1", Field: 1, Component: 2, Subcomponent: 3}, true},
		{"PID", Path{}, false},
		{"PID-", Path{}, false},
		{"PID-0", Path{}, false},
		{"PID-3.0", Path{}, false},
		{"PID-3[0]", Path{}, false},
		{"PID-3[1", Path{}, false},
		{"PID-3.1.2.3", Path{}, false},
		{"PID-3x", Path{}, false},
		{"PID-1234567", Path{}, false},
		{"1ID-3", Path{}, false},
		{"P D-3", Path{}, false},
		{"PID[]-3", Path{}, false},
		{"PID_3", Path{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, ok := ParsePath(tt.path)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if ok {
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestEncodingCharacters(t *testing.T) {
	tests := []struct {
		d    Delimiters
		want string
	}{
		{DefaultDelimiters(), `^~\&`},
		{Delimiters{Field: '|', Component: '^', Repetition: '~'}, "^~"},
		{Delimiters{Field: '*', Component: '$', Repetition: '!', Escape: '?'}, "$!?"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.d.EncodingCharacters(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
