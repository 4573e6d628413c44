package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jserr"
)

// Spans: how a batch stage catches up. A stage's consumer lets one batch
// be outstanding, so a stage that falls behind would still write per
// batch. Instead, the process holding the next batch takes it and the
// batches stored after it (up to spanLimits) as one span, and writes
// one set of outputs for the span.
//
// A span is fixed by a marker written before any output, on the stage's
// marker subject in the same stream as its inputs. The marker says where
// the span starts and ends; it is written with an expected last sequence
// for the marker subject, so two processes cannot fix overlapping spans
// (the second write fails and that process reads the first one's marker
// instead), and with a message id made from the span's start, so a retry
// of the same span finds the marker it wrote. Every output of a span is
// identified by the span's start and end, so a retried span is written
// once.
//
// A batch delivered to a process that lies inside a span fixed earlier
// was already handled (the span's outputs were stored before its first
// batch was acknowledged), and is acknowledged without work.

// Span marker headers.
const (
	headerSpanStart = "Junction-Span-Start"
	headerSpanEnd   = "Junction-Span-End"
)

// spanMarkerSubject is the marker subject of stage name, in the stream
// whose subjects start with prefix. It has one token more than any input
// or per-partition subject, so no consumer of inputs sees it.
func spanMarkerSubject(prefix, name string) string { return prefix + "._span." + name + "._m" }

// span is a run of a stage's input batches, by stream sequence.
type span struct{ start, end uint64 }

func (s span) contains(seq uint64) bool { return s.start <= seq && seq <= s.end }

// id names a span's outputs.
func (s span) id() string {
	return strconv.FormatUint(s.start, 10) + "-" + strconv.FormatUint(s.end, 10)
}

// spanLimits bound how much a span takes: the batches, and the entries
// and bytes in them.
type spanLimits struct {
	batches int
	entries int
	bytes   int
}

// defaultSpanLimits keep a span's audit and outbound writes well within a
// store message, and its memory small.
var defaultSpanLimits = spanLimits{batches: 64, entries: 256, bytes: 1 << 20}

// spanInput is one input batch of a span.
type spanInput struct {
	seq    uint64
	header nats.Header
	data   []byte
}

// spanner fixes the spans of one stage.
type spanner struct {
	js     jetstream.JetStream
	st     jetstream.Stream
	marker string
	// input is the stage's input filter (a subject that may hold
	// wildcards).
	input string
	// takes, when set, narrows input: only batches on subjects it takes
	// are the stage's (its consumer's filter subjects, which one
	// wildcard cannot express). A span reads past the others, so it
	// never leaves out a batch its consumer delivers.
	takes  func(subject string) bool
	limits spanLimits
	// count gives the entries in an input batch, for the limits.
	count func(data []byte) int
	// relevant, when set, reports whether an input batch holds anything
	// for this stage (an unreadable one does: it is dead-lettered). A span
	// of irrelevant batches writes nothing, so it needs no marker: it is
	// handled in this process alone, and any process that takes its
	// batches again finds nothing to write either.
	relevant func(h nats.Header, data []byte) bool
	// last is the latest span this process saw fixed.
	last span
}

// claim returns the span that starts at the delivered batch seq (its
// data in hand), with its inputs in order, or covered when seq lies in a
// span fixed before. A span started earlier but not finished (a crash, a
// failed write) is returned again whole, so its outputs are completed.
func (s *spanner) claim(ctx context.Context, seq uint64, h nats.Header, data []byte) (span, []spanInput, bool, error) {
	if s.last.start < seq && s.last.contains(seq) {
		return span{}, nil, true, nil
	}
	for attempt := 0; ; attempt++ {
		last, lastSeq, err := s.lastMarker(ctx)
		if err != nil {
			return span{}, nil, false, err
		}
		switch {
		case last.start == seq && last.end >= seq:
			s.last = last
			in, err := s.read(ctx, last, seq, h, data)
			return last, in, false, err
		case lastSeq != 0 && seq <= last.end:
			// Inside (or, for a redelivery, before) a span already fixed:
			// spans are contiguous, and their outputs are stored before
			// their first batch is acknowledged.
			s.last = last
			return span{}, nil, true, nil
		}
		in, err := s.readAhead(ctx, seq, h, data)
		if err != nil {
			return span{}, nil, false, err
		}
		sp := span{start: seq, end: in[len(in)-1].seq}
		if s.relevant != nil && !slices.ContainsFunc(in, func(i spanInput) bool { return s.relevant(i.header, i.data) }) {
			s.last = sp
			return span{}, nil, true, nil
		}
		fixed, err := s.fix(ctx, sp, lastSeq)
		if errors.Is(err, errSpanRace) && attempt < 5 {
			continue
		}
		if err != nil {
			return span{}, nil, false, err
		}
		s.last = fixed
		if fixed != sp {
			in, err = s.read(ctx, fixed, seq, h, data)
		}
		return fixed, in, false, err
	}
}

// errSpanRace reports that another process fixed a span first.
var errSpanRace = errors.New("another process fixed a span first")

// fix writes the marker of sp, expecting the marker subject's last
// sequence to be lastSeq. It returns the span fixed: sp, or the span an
// earlier attempt of this start fixed.
func (s *spanner) fix(ctx context.Context, sp span, lastSeq uint64) (span, error) {
	m := nats.NewMsg(s.marker)
	m.Header.Set(headerSpanStart, strconv.FormatUint(sp.start, 10))
	m.Header.Set(headerSpanEnd, strconv.FormatUint(sp.end, 10))
	m.Header.Set(jetstream.MsgIDHeader, "span|"+s.marker+"|"+strconv.FormatUint(sp.start, 10))
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(lastSeq, 10))
	ack, err := s.js.PublishMsg(ctx, m)
	if jserr.WrongLastSequence(err) {
		return span{}, errSpanRace
	}
	if err != nil {
		return span{}, fmt.Errorf("fixing a span: %w", err)
	}
	if !ack.Duplicate {
		return sp, nil
	}
	prev, err := s.st.GetMsg(ctx, ack.Sequence)
	if err != nil {
		return span{}, fmt.Errorf("reading a fixed span: %w", err)
	}
	got, ok := parseSpan(prev.Header)
	if !ok || got.start != sp.start {
		return span{}, fmt.Errorf("fixing a span: marker %d is not the span's", ack.Sequence)
	}
	return got, nil
}

// lastMarker returns the latest span fixed and its marker's sequence (0
// when there is none).
func (s *spanner) lastMarker(ctx context.Context) (span, uint64, error) {
	m, err := s.st.GetLastMsgForSubject(ctx, s.marker)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return span{}, 0, nil
	}
	if err != nil {
		return span{}, 0, fmt.Errorf("reading the last span: %w", err)
	}
	sp, ok := parseSpan(m.Header)
	if !ok {
		return span{}, 0, fmt.Errorf("reading the last span: marker %d is malformed", m.Sequence)
	}
	return sp, m.Sequence, nil
}

func parseSpan(h nats.Header) (span, bool) {
	a, err1 := strconv.ParseUint(h.Get(headerSpanStart), 10, 64)
	b, err2 := strconv.ParseUint(h.Get(headerSpanEnd), 10, 64)
	if err1 != nil || err2 != nil || b < a {
		return span{}, false
	}
	return span{start: a, end: b}, true
}

// readAhead returns the delivered batch and the input batches stored
// after it, within the limits.
func (s *spanner) readAhead(ctx context.Context, seq uint64, h nats.Header, data []byte) ([]spanInput, error) {
	in := []spanInput{{seq: seq, header: h, data: data}}
	entries, size := s.count(data), len(data)
	next := seq + 1
	// read counts every batch read, the stage's or not, so one span
	// reads at most limits.batches.
	for read := 1; read < s.limits.batches && entries < s.limits.entries && size < s.limits.bytes; read++ {
		m, err := s.st.GetMsg(ctx, next, jetstream.WithGetMsgSubject(s.input))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading ahead: %w", err)
		}
		if s.takes != nil && !s.takes(m.Subject) {
			next = m.Sequence + 1
			continue
		}
		n := s.count(m.Data)
		if entries+n > s.limits.entries || size+len(m.Data) > s.limits.bytes {
			break
		}
		in = append(in, spanInput{seq: m.Sequence, header: m.Header, data: m.Data})
		entries, size, next = entries+n, size+len(m.Data), m.Sequence+1
	}
	return in, nil
}

// read returns the input batches of a fixed span.
func (s *spanner) read(ctx context.Context, sp span, seq uint64, h nats.Header, data []byte) ([]spanInput, error) {
	in := []spanInput{{seq: seq, header: h, data: data}}
	next := seq + 1
	for next <= sp.end {
		m, err := s.st.GetMsg(ctx, next, jetstream.WithGetMsgSubject(s.input))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading a span: %w", err)
		}
		if m.Sequence > sp.end {
			break
		}
		if s.takes == nil || s.takes(m.Subject) {
			in = append(in, spanInput{seq: m.Sequence, header: m.Header, data: m.Data})
		}
		next = m.Sequence + 1
	}
	// An input the stream's limits removed since cannot be handled; the
	// rest of the span still is.
	return in, nil
}

// findSpan returns the start of the span holding seq among the markers on
// subject (one stage's) of st, or seq itself when no marker covers it (a
// batch handled on its own, before spans).
func findSpan(ctx context.Context, st jetstream.Stream, subject string, seq uint64) (uint64, error) {
	start, found, err := spanHolding(ctx, st, subject, seq)
	if err != nil || !found {
		return seq, err
	}
	return start, nil
}

// spanHolding reads the markers on subject from seq on (the marker of the
// span holding seq was written after seq was stored) and returns the
// start of the first span that reaches seq, if it holds seq.
func spanHolding(ctx context.Context, st jetstream.Stream, subject string, seq uint64) (uint64, bool, error) {
	next := seq
	for range maxSpanScan {
		m, err := st.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("finding a span: %w", err)
		}
		if sp, ok := parseSpan(m.Header); ok && sp.end >= seq {
			return sp.start, sp.start <= seq, nil
		}
		next = m.Sequence + 1
	}
	return 0, false, nil
}

// maxSpanScan bounds the markers of one stage a search reads: a span is
// fixed soon after its batches are stored, so its marker follows them
// closely.
const maxSpanScan = 4096

// findSpans returns, per stage name, the start of the span holding seq
// among the markers matching wildcard (one token of which, at index
// nameToken, names the stage) of st. Each stage's markers are searched on
// their own subject, so a stage far behind the others is found as surely
// as one keeping up. Stages without a span holding seq are absent.
func findSpans(ctx context.Context, st jetstream.Stream, wildcard string, nameToken int, seq uint64) (map[string]uint64, error) {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(wildcard))
	if err != nil {
		return nil, fmt.Errorf("finding spans: %w", err)
	}
	out := map[string]uint64{}
	for subj := range info.State.Subjects {
		toks := strings.Split(subj, ".")
		if nameToken >= len(toks) {
			continue
		}
		start, found, err := spanHolding(ctx, st, subj, seq)
		if err != nil {
			return nil, err
		}
		if found {
			out[toks[nameToken]] = start
		}
	}
	return out, nil
}
