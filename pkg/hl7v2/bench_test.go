package hl7v2

import (
	"bytes"
	"testing"
)

// benchMessage returns a synthetic ADT^A01 of about 1 KB.
func benchMessage(b *testing.B) []byte {
	b.Helper()
	raw := readTestdata(b, "adt_a01_v251_crlf.hl7")
	raw = append(raw, "AL1|1|DA|1545^PENICILLIN^L|SV|RASH\r\nAL1|2|FA|2222^PEANUT^L|MO|HIVES\r\nDG1|1||I10^Essential hypertension^I10|||A\r\n"+
		"NTE|1|L|Synthetic note for benchmarking \\T\\ parsing speed only\r\n"...)
	if len(raw) < 900 || len(raw) > 1200 {
		b.Fatalf("bench message is %d bytes", len(raw))
	}
	return raw
}

func BenchmarkParse(b *testing.B) {
	raw := benchMessage(b)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	m, err := Parse(benchMessage(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if m.Get("PID-3.1") == "" || m.Get("OBX[2]-5") == "" || m.Get("PV1-44") == "" {
			b.Fatal("missing value")
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	m, err := Parse(benchMessage(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Encode()
	}
}

func BenchmarkBuildAck(b *testing.B) {
	m, err := Parse(benchMessage(b))
	if err != nil {
		b.Fatal(err)
	}
	opts := AckOptions{ControlID: "ACK1", Time: ackTime, App: "JUNCTION", Facility: "RXX01"}
	b.ReportAllocs()
	for b.Loop() {
		_ = BuildAck(m, opts)
	}
}

func BenchmarkUnescape(b *testing.B) {
	s := string(bytes.Repeat([]byte(`text \F\ more \S\ and \X0D0A\ `), 10))
	d := DefaultDelimiters()
	b.ReportAllocs()
	for b.Loop() {
		_ = Unescape(s, d)
	}
}

// BenchmarkCharsetChecks measures the checks a translator makes of every
// message before mapping it: invalid UTF-8, UTF-8 labelled 8859/1 and
// control characters.
func BenchmarkCharsetChecks(b *testing.B) {
	m, err := Parse(benchMessage(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if m.InvalidUTF8() || m.LooksUTF8() || m.ControlChars() {
			b.Fatal("bench message flagged")
		}
	}
}
