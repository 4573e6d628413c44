package mllp

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// benchPayload is a synthetic message of about 1 KB.
var benchPayload = []byte(strings.Repeat(msg1, 1024/len(msg1)+1)[:1024])

// repeatReader serves the same bytes forever.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], r.data[r.off:])
		n += k
		r.off = (r.off + k) % len(r.data)
	}
	return n, nil
}

func BenchmarkReadFrame(b *testing.B) {
	var framed bytes.Buffer
	if err := WriteFrame(&framed, benchPayload); err != nil {
		b.Fatal(err)
	}
	r := NewReader(&repeatReader{data: framed.Bytes()}, 0)
	b.SetBytes(int64(len(benchPayload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteFrame(b *testing.B) {
	b.SetBytes(int64(len(benchPayload)))
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteFrame(io.Discard, benchPayload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRoundTripTCP(b *testing.B) {
	s := &Server{Addr: "127.0.0.1:0", Handler: HandlerFunc(func(_ context.Context, _ *ConnInfo, p []byte) ([]byte, bool) {
		return p[:64], false
	})}
	if err := s.Listen(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.Serve(context.Background()) }()
	defer func() { _ = s.Shutdown(context.Background()) }()
	c, err := Dial(context.Background(), s.ListenAddr().String(), nil, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Send(context.Background(), benchPayload); err != nil {
			b.Fatal(err)
		}
	}
}
