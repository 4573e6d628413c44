package mllp

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func FuzzReader(f *testing.F) {
	for _, s := range []string{
		frame(msg1) + frame(msg2),
		"\r\n" + frame("") + "\n",
		"garbage" + frame(msg1),
		"\x0b" + msg1 + "\x1c\x0b",
		"\x0b" + msg1,
		"\x0b\x0b\x1c\r\x1c\r",
		"\x1c\r",
	} {
		f.Add([]byte(s), uint16(64))
	}
	f.Fuzz(func(t *testing.T, in []byte, limit uint16) {
		max := int(limit%4096) + 1
		r := NewReader(bytes.NewReader(in), max)
		var frames [][]byte
		for {
			p, err := r.ReadFrame()
			if err != nil {
				if len(p) > max {
					t.Fatalf("partial payload of %d bytes over the %d limit", len(p), max)
				}
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrInvalidFrame) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if len(p) > max {
				t.Fatalf("payload of %d bytes over the %d limit", len(p), max)
			}
			if bytes.IndexByte(p, EndBlock) >= 0 {
				t.Fatal("payload holds an end block")
			}
			frames = append(frames, bytes.Clone(p))
		}
		// Writing the frames again and reading them back gives the same
		// payloads.
		var buf bytes.Buffer
		for _, p := range frames {
			if err := WriteFrame(&buf, p); err != nil {
				t.Fatalf("WriteFrame: %v", err)
			}
		}
		r2 := NewReader(&buf, max)
		for i, want := range frames {
			got, err := r2.ReadFrame()
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("frame %d read back as %q, %v; want %q", i, got, err, want)
			}
		}
		if _, err := r2.ReadFrame(); err != io.EOF {
			t.Fatalf("after the frames: %v, want io.EOF", err)
		}
	})
}
