package main

import "testing"

// TestCell checks that what a sender gave (a control id, an application
// name) cannot break a table's lines or forge one.
func TestCell(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"C1", "C1"},
		{"PAS|RX1", "PAS|RX1"},
		{"ab\ncd", `"ab\ncd"`},
		{"a\tb", `"a\tb"`},
		{"x\u202etxt.exe", `"x\u202etxt.exe"`},
		{"caf\xe9", `"caf\xe9"`},
		{"\x1b[31m", `"\x1b[31m"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := cell(tc.in); got != tc.want {
				t.Errorf("cell(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}
