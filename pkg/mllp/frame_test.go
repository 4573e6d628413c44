package mllp

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/fault"
)

func frame(payload string) string { return "\x0b" + payload + "\x1c\r" }

const msg1 = "MSH|^~\\&|PAS|RXX01|JUNCTION|RXX01|20240301||ADT^A01|1|P|2.4\rPID|1||9990000018^^^NHS^NH||TESTPATIENT^ALEX\r"
const msg2 = "MSH|^~\\&|PAS|RXX01|JUNCTION|RXX01|20240301||ADT^A08|2|P|2.4\r"

func TestReadFrame(t *testing.T) {
	big := strings.Repeat("A", 3*readBufferSize+17)
	tests := []struct {
		name    string
		in      string
		max     int
		want    []string
		wantErr error
		// partial is the payload returned with the final error.
		partial string
		// strayData says partial holds bytes sent outside a frame.
		strayData bool
	}{
		{name: "one frame", in: frame(msg1), want: []string{msg1}, wantErr: io.EOF},
		{name: "two frames in one read", in: frame(msg1) + frame(msg2), want: []string{msg1, msg2}, wantErr: io.EOF},
		{name: "whitespace between frames", in: "\r\n " + frame(msg1) + "\n\r\t" + frame(msg2) + "\r\n", want: []string{msg1, msg2}, wantErr: io.EOF},
		{name: "empty input", in: "", wantErr: io.EOF},
		{name: "empty frame", in: frame(""), want: []string{""}, wantErr: io.EOF},
		{name: "payload bigger than the read buffer", in: frame(big), want: []string{big}, wantErr: io.EOF},
		{name: "exactly the limit", in: frame("12345"), max: 5, want: []string{"12345"}, wantErr: io.EOF},
		{name: "one byte over the limit", in: frame("123456"), max: 5, wantErr: ErrTooLarge, partial: "12345"},
		{name: "large over the limit", in: frame(big), max: readBufferSize + 3, wantErr: ErrTooLarge, partial: big[:readBufferSize+3]},
		{name: "second frame over the limit", in: frame("abc") + frame("abcdef"), max: 4, want: []string{"abc"}, wantErr: ErrTooLarge, partial: "abcd"},
		{name: "garbage before start", in: "hello" + frame(msg1), wantErr: ErrInvalidFrame, partial: "hello", strayData: true},
		{name: "unframed HL7", in: msg1, wantErr: ErrInvalidFrame, partial: msg1, strayData: true},
		{name: "garbage between frames", in: frame(msg1) + "x" + frame(msg2), want: []string{msg1}, wantErr: ErrInvalidFrame, partial: "x", strayData: true},
		{name: "missing CR after end block", in: "\x0b" + msg2 + "\x1c\x0b" + msg1 + "\x1c\r", wantErr: ErrInvalidFrame, partial: msg2},
		{name: "LF after end block", in: "\x0b" + msg2 + "\x1c\n", wantErr: ErrInvalidFrame, partial: msg2},
		{name: "end of input inside a frame", in: "\x0b" + msg2, wantErr: io.ErrUnexpectedEOF, partial: msg2},
		{name: "end of input after start block", in: "\x0b", wantErr: io.ErrUnexpectedEOF},
		{name: "end of input after end block", in: "\x0b" + msg2 + "\x1c", wantErr: io.ErrUnexpectedEOF, partial: msg2},
		{name: "start block inside payload kept", in: frame("a\x0bb"), want: []string{"a\x0bb"}, wantErr: io.EOF},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data err": iotest.DataErrReader,
	}
	for _, tt := range tests {
		for rname, wrap := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				r := NewReader(wrap(strings.NewReader(tt.in)), tt.max)
				var got []string
				var err error
				var last []byte
				for {
					var p []byte
					p, err = r.ReadFrame()
					if err != nil {
						last = p
						break
					}
					got = append(got, string(p))
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("frames (-want +got):\n%s", diff)
				}
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if tt.wantErr == io.EOF && err != io.EOF {
					t.Errorf("clean end must be io.EOF itself, got %#v", err)
				}
				switch {
				case tt.strayData:
					// Stray bytes are what the reader holds, without reading
					// more: at least the first of them.
					if len(last) == 0 || !strings.HasPrefix(tt.partial, string(last)) || (rname == "whole" && string(last) != tt.partial) {
						t.Errorf("stray bytes %q, want a prefix of %q (all of it when read whole)", last, tt.partial)
					}
				case string(last) != tt.partial:
					t.Errorf("partial payload %d bytes, want %d", len(last), len(tt.partial))
				}
				if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrInvalidFrame) {
					f := fault.As(err)
					if f == nil || (f.Code != fault.CodeFrameTooLarge && f.Code != fault.CodeFrameInvalid) {
						t.Errorf("frame error %v is not a coded fault", err)
					}
					if strings.Contains(err.Error(), "TESTPATIENT") || strings.Contains(err.Error(), "MSH") {
						t.Errorf("error text leaks payload: %v", err)
					}
				}
			})
		}
	}
}

func TestReadFrameReusesBuffer(t *testing.T) {
	r := NewReader(strings.NewReader(frame("first")+frame("second")), 0)
	a, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	keep := string(a)
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if keep != "first" {
		t.Errorf("copied payload changed to %q", keep)
	}
}

// endlessFrame is a reader of a start block followed by n bytes of 'A'
// and no end block, counting what was read.
type endlessFrame struct {
	n, read int64
}

func (e *endlessFrame) Read(p []byte) (int, error) {
	if e.read >= e.n+1 {
		return 0, io.EOF
	}
	k := int64(len(p))
	if rem := e.n + 1 - e.read; k > rem {
		k = rem
	}
	for i := range p[:k] {
		p[i] = 'A'
	}
	if e.read == 0 && k > 0 {
		p[0] = StartBlock
	}
	e.read += k
	return int(k), nil
}

func TestReadFrameEndlessStreamIsCut(t *testing.T) {
	const limit = 64 << 10
	src := &endlessFrame{n: 50 << 20}
	r := NewReader(src, limit)
	p, err := r.ReadFrame()
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v, want ErrTooLarge", err)
	}
	if len(p) != limit {
		t.Errorf("partial payload %d bytes, want %d", len(p), limit)
	}
	if cap(p) > limit {
		t.Errorf("buffer grew to %d bytes, over the %d limit", cap(p), limit)
	}
	if src.read > limit+readBufferSize+1 {
		t.Errorf("read %d bytes of the stream for a %d byte limit", src.read, limit)
	}
}

// countingWriter records each Write call.
type countingWriter struct {
	calls int
	buf   bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.calls++
	return w.buf.Write(p)
}

func TestWriteFrame(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    string
		wantErr error
	}{
		{"message", msg1, "\x0b" + msg1 + "\x1c\r", nil},
		{"empty", "", "\x0b\x1c\r", nil},
		{"end block in payload", "a\x1cb", "", ErrInvalidFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &countingWriter{}
			err := WriteFrame(w, []byte(tt.payload))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, w.buf.String()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			wantCalls := 1
			if tt.wantErr != nil {
				wantCalls = 0
			}
			if w.calls != wantCalls {
				t.Errorf("%d Write calls, want %d", w.calls, wantCalls)
			}
			if tt.wantErr == nil {
				got, err := NewReader(&w.buf, 0).ReadFrame()
				if err != nil || string(got) != tt.payload {
					t.Errorf("reading back: %q, %v", got, err)
				}
			}
		})
	}
}

func TestWriteFrameError(t *testing.T) {
	err := WriteFrame(iotestErrWriter{}, []byte("x"))
	if !errors.Is(err, errWrite) {
		t.Errorf("error %v, want %v", err, errWrite)
	}
}

var errWrite = errors.New("write refused")

type iotestErrWriter struct{}

func (iotestErrWriter) Write([]byte) (int, error) { return 0, errWrite }

// TestClientReaderEndWithoutCR checks the reading of frames whose end
// block has no carriage return after it, as clients and servers read
// them: at the end of what has arrived, and before the next frame's
// start block or a line feed in the same read. Anything else after an
// end block is still an invalid frame.
func TestClientReaderEndWithoutCR(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr error
	}{
		{"end of input", "\x0bA\x1c", []string{"A"}, io.EOF},
		{"next frame straight after", "\x0bA\x1c\x0bB\x1c\r", []string{"A", "B"}, io.EOF},
		{"carriage return as usual", "\x0bA\x1c\r\x0bB\x1c\r", []string{"A", "B"}, io.EOF},
		{"line feed after the end block", "\x0bA\x1c\n\x0bB\x1c\n", []string{"A", "B"}, io.EOF},
		{"other byte after the end block", "\x0bA\x1cX", nil, ErrInvalidFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tt.in), 0)
			r.endCROptional = true
			var got []string
			var err error
			for {
				var p []byte
				if p, err = r.ReadFrame(); err != nil {
					break
				}
				got = append(got, string(p))
			}
			if !slices.Equal(got, tt.want) || !errors.Is(err, tt.wantErr) {
				t.Errorf("frames %q, error %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
