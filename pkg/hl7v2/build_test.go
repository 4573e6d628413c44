package hl7v2

import (
	"testing"
)

func TestSegmentBuilder(t *testing.T) {
	tests := []struct {
		name  string
		build func(s *SegmentBuilder)
		seg   string
		want  string
	}{
		{"empty", func(*SegmentBuilder) {}, "PID", "PID"},
		{"field", func(s *SegmentBuilder) { s.SetField(1, "1") }, "PID", "PID|1"},
		{"gap fields", func(s *SegmentBuilder) { s.SetField(3, "a", "", "c") }, "PID", "PID|||a^^c"},
		{"repetitions", func(s *SegmentBuilder) { s.SetRep(3, 1, "x"); s.SetRep(3, 2, "y", "z") }, "PID", "PID|||x~y^z"},
		{"subcomponents", func(s *SegmentBuilder) { s.SetComponent(2, 1, 2, "a", "", "c") }, "SPM", "SPM||^a&&c"},
		{"trailing empties dropped", func(s *SegmentBuilder) { s.SetField(2, "a", "", ""); s.Set(9, 3, 1, 1, "") }, "OBR", "OBR||a"},
		{"escaping", func(s *SegmentBuilder) { s.SetField(3, "a|b^c~d\\e&f\ng") }, "NTE", `NTE|||a\F\b\S\c\R\d\E\e\T\f\.br\g`},
		{"replace", func(s *SegmentBuilder) { s.SetField(1, "x"); s.SetField(1, "y") }, "ORC", "ORC|y"},
		{"msh", func(s *SegmentBuilder) { s.SetField(1, "ignored"); s.SetField(3, "APP"); s.SetField(9, "OML", "O21") }, "MSH", `MSH|^~\&|APP||||||OML^O21`},
		{"bad positions ignored", func(s *SegmentBuilder) {
			s.Set(0, 1, 1, 1, "a")
			s.Set(1, 0, 1, 1, "a")
			s.Set(1, 1, 0, 1, "a")
			s.Set(1, 1, 1, 0, "a")
		}, "PID", "PID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSegment(tc.seg)
			tc.build(s)
			if got := s.String(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMessageBuilderRoundTrip(t *testing.T) {
	values := []string{"plain", "a|b", "c^d", "e~f", `g\h`, "i&j", "line1\nline2", "cr\rhere", "|^~\\&"}
	m := NewMessage(DefaultDelimiters())
	m.Add("MSH").SetField(9, "OML", "O21").SetField(10, "CTRL1").SetField(12, "2.5")
	for _, v := range values {
		s := m.Add("NTE")
		s.SetField(1, "1")
		s.Set(3, 1, 1, 1, v)
		s.Set(3, 2, 2, 2, v)
	}
	msg, err := Parse(m.Encode())
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := msg.ControlID(); got != "CTRL1" {
		t.Errorf("control id %q", got)
	}
	ntes := msg.SegmentsNamed("NTE")
	if len(ntes) != len(values) {
		t.Fatalf("%d NTE segments, want %d", len(ntes), len(values))
	}
	for i, v := range values {
		d := msg.Delimiters()
		if got := Unescape(ntes[i].Component(3, 1, 1, 1), d); got != v {
			t.Errorf("NTE %d rep 1: got %q, want %q", i, got, v)
		}
		if got := Unescape(ntes[i].Component(3, 2, 2, 2), d); got != v {
			t.Errorf("NTE %d rep 2.2.2: got %q, want %q", i, got, v)
		}
	}
	if got := m.EncodeText(); got[len(got)-1] != '\n' {
		t.Errorf("EncodeText does not end in a line feed")
	}
}
