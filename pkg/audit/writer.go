package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Option configures a Writer.
type Option func(*Writer)

// WithSigningKey makes the writer publish checkpoints signed with key.
// Without it the writer still chains its records but publishes no
// checkpoints.
func WithSigningKey(key ed25519.PrivateKey) Option {
	return func(w *Writer) { w.key = key }
}

// WithCheckpointInterval sets how often, at most, a checkpoint is
// published while records are being written (default one minute). Close
// publishes a last one.
func WithCheckpointInterval(d time.Duration) Option {
	return func(w *Writer) {
		if d > 0 {
			w.interval = d
		}
	}
}

// WithAckTimeout sets how long the writer waits for the store to answer a
// publish before it explains the position in a gap note as unconfirmed
// (default one minute). The caller's future still reports whatever answer
// comes later.
func WithAckTimeout(d time.Duration) Option {
	return func(w *Writer) {
		if d > 0 {
			w.ackTimeout = d
		}
	}
}

// noteRetry is how long after a failed gap note the writer waits before
// trying again on its own (Close always tries).
const noteRetry = time.Second

// position is a chain position the store has not yet settled.
type position struct {
	hash    string
	subject string
	// resolved: stored, or explained by a stored gap note.
	resolved bool
	// gapped: queued for, or carried by, a gap note.
	gapped bool
	// note holds the gaps a gap-note position carries.
	note []Gap
}

// NewWriter returns a writer on js with a fresh random chain.
func NewWriter(js jetstream.JetStream, opts ...Option) *Writer {
	var id [16]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand aborts the process instead)
	w := &Writer{
		js: js, chain: hex.EncodeToString(id[:]), last: GenesisHash,
		interval: time.Minute, ackTimeout: time.Minute, now: time.Now,
		open: map[uint64]*position{}, waterHash: GenesisHash,
	}
	for _, o := range opts {
		o(w)
	}
	return w
}

// Chain returns the writer's chain id.
func (w *Writer) Chain() string { return w.chain }

// publish takes the next chain position for m and hands it to the
// connection. Taking the position and sending are one critical section,
// so the store receives a chain's messages in chain order; the wait for
// the store's answer happens outside it. If the send itself fails nothing
// left the process, and the position is given back.
func (w *Writer) publish(m *nats.Msg, note []Gap) (*future, error) {
	w.send.Lock()
	if w.key != nil && w.seq == 0 && !w.genesisSent {
		// A signed checkpoint of the empty chain, sent ahead of its first
		// record, vouches for the chain from its start: a verifier given
		// the public key then refuses a chain without one as forged. A
		// failure here is made good by the interval checkpoints.
		w.genesisSent = true
		if cm, err := w.checkpointMsg(0, GenesisHash); err == nil {
			_, _ = w.js.PublishMsgAsync(cm, jetstream.WithStallWait(time.Minute))
		}
	}
	seq := w.seq + 1
	l := link{chain: w.chain, seq: seq, prev: w.last}
	l.hash = ChainHash(l.chain, seq, l.prev, m.Subject, m.Data)
	setLink(m, l)
	w.mu.Lock()
	w.open[seq] = &position{hash: l.hash, subject: m.Subject, note: note}
	w.mu.Unlock()
	// No client-side retries: a retried send would reach the store after
	// later positions. A failed position is explained by a gap note.
	f, err := w.js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute), jetstream.WithRetryAttempts(0))
	if err != nil {
		w.mu.Lock()
		delete(w.open, seq)
		w.mu.Unlock()
		w.send.Unlock()
		return nil, err
	}
	w.seq, w.last = seq, l.hash
	w.send.Unlock()
	out := &future{msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	go w.watch(seq, f, out)
	return out, nil
}

// watch waits for the store's answer to one position, settles the
// position and passes the answer on.
func (w *Writer) watch(seq uint64, f jetstream.PubAckFuture, out *future) {
	timer := time.NewTimer(w.ackTimeout)
	defer timer.Stop()
	timeout := timer.C
	for {
		select {
		case a := <-f.Ok():
			w.settle(seq, a, nil)
			out.ok <- a
			return
		case err := <-f.Err():
			w.settle(seq, nil, err)
			out.err <- err
			return
		case <-timeout:
			w.settle(seq, nil, nil)
			timeout = nil
		}
	}
}

// settle records the store's answer for a position: ack set (stored or
// duplicate), err set (failed), or neither (no answer yet: unconfirmed).
func (w *Writer) settle(seq uint64, ack *jetstream.PubAck, err error) {
	w.mu.Lock()
	p := w.open[seq]
	if p == nil || p.resolved {
		w.mu.Unlock()
		return
	}
	isNote := p.note != nil
	if isNote && (ack == nil || ack.Duplicate) {
		// The note may not be stored: its gaps need explaining again, and
		// so does its own position.
		w.noting = false
		w.noteRetryAt = w.now().Add(noteRetry)
		for _, g := range p.note {
			if q := w.open[g.Seq]; q != nil && !q.resolved {
				w.gaps = append(w.gaps, g)
			}
		}
		p.note = nil
	}
	switch {
	case ack != nil && !ack.Duplicate:
		if isNote {
			w.noting = false
			for _, g := range p.note {
				if q := w.open[g.Seq]; q != nil {
					q.resolved = true
				}
			}
		}
		p.resolved = true
	case p.gapped:
		// Already explained (an unconfirmed position that then failed).
	default:
		g := Gap{Seq: seq, Hash: p.hash, Subject: p.subject, Reason: GapFailed}
		switch {
		case ack != nil:
			g.Reason, g.Original = GapDuplicate, ack.Sequence
		case err == nil:
			g.Reason = GapUnconfirmed
		}
		p.gapped = true
		w.gaps = append(w.gaps, g)
	}
	w.advance()
	flush := len(w.gaps) > 0 && !w.noting && !w.now().Before(w.noteRetryAt)
	cp := w.key != nil && w.water > w.cpSeq && !w.cpBusy && w.now().Sub(w.cpTime) >= w.interval
	if cp {
		w.cpBusy = true
	} else if w.key != nil && w.water > w.cpSeq && !w.cpPending && !w.closed {
		// Writes may stop here: sign what they left, one interval on,
		// rather than leave it uncovered until the next write.
		w.cpPending = true
		time.AfterFunc(max(w.interval-w.now().Sub(w.cpTime), time.Millisecond), w.trailingCheckpoint)
	}
	water, hash := w.water, w.waterHash
	w.mu.Unlock()
	if flush {
		w.flushGaps()
	}
	if cp {
		go w.checkpointAsync(water, hash)
	}
}

// advance moves the watermark over resolved positions. Called with mu.
func (w *Writer) advance() {
	for {
		p := w.open[w.water+1]
		if p == nil || !p.resolved {
			return
		}
		w.water++
		w.waterHash = p.hash
		delete(w.open, w.water)
	}
}

// flushGaps publishes a gap note for the queued gaps, unless one is in
// flight.
func (w *Writer) flushGaps() {
	w.mu.Lock()
	if w.noting || len(w.gaps) == 0 {
		w.mu.Unlock()
		return
	}
	gaps := w.gaps
	w.gaps, w.noting = nil, true
	w.mu.Unlock()
	data, err := json.Marshal(GapNote{Gaps: gaps})
	if err == nil {
		m := nats.NewMsg(SubjGap + "." + w.chain)
		m.Data = data
		_, err = w.publish(m, gaps)
	}
	if err != nil {
		w.mu.Lock()
		w.gaps = append(gaps, w.gaps...)
		w.noting = false
		w.noteRetryAt = w.now().Add(noteRetry)
		w.mu.Unlock()
	}
}

// trailingCheckpoint signs the settled prefix when writes stopped before
// an interval checkpoint covered it.
func (w *Writer) trailingCheckpoint() {
	w.mu.Lock()
	w.cpPending = false
	if w.closed || w.key == nil || w.water <= w.cpSeq {
		w.mu.Unlock()
		return
	}
	if w.cpBusy {
		// A checkpoint is being written; look again once it should be done.
		w.cpPending = true
		time.AfterFunc(w.interval, w.trailingCheckpoint)
		w.mu.Unlock()
		return
	}
	w.cpBusy = true
	water, hash := w.water, w.waterHash
	w.mu.Unlock()
	w.checkpointAsync(water, hash)
}

// checkpointMsg builds the signed checkpoint of position seq.
func (w *Writer) checkpointMsg(seq uint64, hash string) (*nats.Msg, error) {
	c := signCheckpoint(Checkpoint{Chain: w.chain, Seq: seq, Hash: hash, Time: w.now()}, w.key)
	data, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding audit checkpoint: %w", err)
	}
	m := nats.NewMsg(SubjCheckpoint + "." + w.chain)
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, "junction-audit-checkpoint-"+w.chain+"-"+strconv.FormatUint(seq, 10))
	return m, nil
}

// checkpointAsync publishes an interval checkpoint. A failure is retried
// at the next interval.
func (w *Writer) checkpointAsync(seq uint64, hash string) {
	err := errors.New("not sent")
	if m, merr := w.checkpointMsg(seq, hash); merr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), w.ackTimeout)
		_, err = w.js.PublishMsg(ctx, m)
		cancel()
	}
	w.mu.Lock()
	w.cpBusy = false
	w.cpTime = w.now()
	if err == nil && seq > w.cpSeq {
		w.cpSeq = seq
	}
	w.mu.Unlock()
}

// Checkpoint publishes a signed checkpoint of the chain's settled prefix
// now, if a signing key is set and the prefix grew since the last one.
func (w *Writer) Checkpoint(ctx context.Context) error {
	w.mu.Lock()
	seq, hash := w.water, w.waterHash
	skip := w.key == nil || seq == 0 || seq <= w.cpSeq
	w.mu.Unlock()
	if skip {
		return nil
	}
	m, err := w.checkpointMsg(seq, hash)
	if err != nil {
		return err
	}
	if _, err := w.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("writing audit checkpoint: %w", err)
	}
	w.mu.Lock()
	if seq > w.cpSeq {
		w.cpSeq, w.cpTime = seq, w.now()
	}
	w.mu.Unlock()
	return nil
}

// Close waits until every position the writer took is stored or explained
// by a stored gap note, then publishes a last checkpoint. Writes after
// Close still work but are not waited for.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	wait := closeAnswerWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	explainAt := time.Now().Add(wait)
	for {
		w.mu.Lock()
		open, gaps, noting := len(w.open), len(w.gaps), w.noting
		w.mu.Unlock()
		if open == 0 {
			break
		}
		if !explainAt.IsZero() && !time.Now().Before(explainAt) {
			// Publishes lost with a server (one stopped, a stream that
			// lost its quorum) are answered only at the ack timeout,
			// which can outlast the shutdown: they are explained now as
			// unconfirmed, as that timeout would, so that the chain is
			// whole if their gap note can be stored.
			explainAt = time.Time{}
			w.explainUnanswered()
		}
		if gaps > 0 && !noting {
			w.mu.Lock()
			w.noteRetryAt = time.Time{}
			w.mu.Unlock()
			w.flushGaps()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("closing audit writer: %d chain positions unsettled: %w", open, ctx.Err())
		case <-tick.C:
		}
	}
	return w.Checkpoint(ctx)
}

// closeAnswerWait is how long Close waits for the store to answer the
// positions still open before it explains those without an answer as
// unconfirmed (at most half the time its context leaves).
const closeAnswerWait = 5 * time.Second

// explainUnanswered settles every open position the store has not
// answered, and that no gap note explains yet, as unconfirmed: what the
// ack timeout does, sooner. An answer that comes later still settles
// the position (a stored record beside a note explaining it is whole).
func (w *Writer) explainUnanswered() {
	w.mu.Lock()
	var seqs []uint64
	for seq, p := range w.open {
		if !p.resolved && !p.gapped {
			seqs = append(seqs, seq)
		}
	}
	w.mu.Unlock()
	slices.Sort(seqs)
	for _, seq := range seqs {
		w.settle(seq, nil, nil)
	}
}

// future is the PubAckFuture a Writer hands out: the store's answer,
// passed on after the writer has settled the chain position.
type future struct {
	msg *nats.Msg
	ok  chan *jetstream.PubAck
	err chan error
}

func (f *future) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *future) Err() <-chan error            { return f.err }
func (f *future) Msg() *nats.Msg               { return f.msg }
