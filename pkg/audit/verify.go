package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/store"
)

// StoredMsg is one message of the audit stream as the store holds it.
type StoredMsg struct {
	// StreamSeq is the message's stream sequence: the order of storing.
	StreamSeq uint64
	Subject   string
	Header    nats.Header
	Data      []byte
}

// FindingKind names a way the audit stream disagrees with its chains.
type FindingKind string

// Finding kinds. Every finding is evidence of tampering (or of damage).
const (
	// FindBroken: a position's content does not match its own hash, its
	// previous hash is not the hash of the position before it, or its
	// hash is not the one a checkpoint vouched for.
	FindBroken FindingKind = "broken"
	// FindMissing: positions absent below a later stored position, with
	// no gap note explaining them.
	FindMissing FindingKind = "missing"
	// FindReordered: a position stored before the position preceding it.
	FindReordered FindingKind = "reordered"
	// FindDuplicate: a second stored message claims a position.
	FindDuplicate FindingKind = "duplicate"
	// FindTruncated: positions a checkpoint vouched for are gone from the
	// end of a chain.
	FindTruncated FindingKind = "truncated"
	// FindMalformed: a chained message or gap note that cannot be read.
	FindMalformed FindingKind = "malformed"
	// FindBadCheckpoint: a checkpoint that cannot be read, whose signature
	// does not verify, or whose signer is not one of the pinned keys.
	FindBadCheckpoint FindingKind = "bad_checkpoint"
	// FindUnchained: a record without chain headers stored after chained
	// records: only writers from before chaining wrote those.
	FindUnchained FindingKind = "unchained"
	// FindUnvouched: with pinned keys, a chain begun after the first
	// pinned checkpoint in the stream that no pinned checkpoint vouches
	// for. A writer with a signing key checkpoints its chain before its
	// first record, so such a chain was not written by one. (Chains begun
	// before any pinned checkpoint, as before a key was configured, are
	// not held to it.)
	FindUnvouched FindingKind = "unvouched"
	// FindRecreated: the audit stream was made well after the store's
	// ingress stream, so it was deleted (with every record in it) and
	// made again: no chain inside it can show that.
	FindRecreated FindingKind = "recreated"
	// FindUnreadable: stream messages the store counts but cannot produce:
	// its files are damaged (a block cut short or overwritten, as a torn
	// copy or a failing disk leaves it). The chain positions in them show
	// as missing or truncated too.
	FindUnreadable FindingKind = "unreadable"
)

// recreatedAllowance is how much younger than the ingress stream the
// audit stream may be before it counts as made again: Junction makes
// them together, within seconds.
const recreatedAllowance = time.Minute

// Finding is one place where the stream disagrees with its chains.
type Finding struct {
	Kind  FindingKind `json:"kind"`
	Chain string      `json:"chain,omitempty"`
	// Seq is the chain position concerned; Last ends a range of them
	// (missing and truncated positions).
	Seq  uint64 `json:"seq,omitempty"`
	Last uint64 `json:"last,omitempty"`
	// StreamSeq is the stream message concerned, where there is one.
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	Detail    string `json:"detail"`
}

func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(string(f.Kind))
	if f.Chain != "" {
		fmt.Fprintf(&b, " chain %s", f.Chain)
	}
	if f.Seq != 0 {
		fmt.Fprintf(&b, " position %d", f.Seq)
		if f.Last > f.Seq {
			fmt.Fprintf(&b, "-%d", f.Last)
		}
	}
	if f.StreamSeq != 0 {
		fmt.Fprintf(&b, " (stream seq %d)", f.StreamSeq)
	}
	b.WriteString(": ")
	b.WriteString(f.Detail)
	return b.String()
}

// CheckpointStatus describes the latest valid checkpoint of a chain.
type CheckpointStatus struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// PublicKey is the signer (standard base64).
	PublicKey string `json:"public_key"`
	// Pinned is true when the signer is one of the keys verification was
	// given; false means the signature verifies only against the key the
	// checkpoint carries, which proves nothing about who wrote it.
	Pinned bool `json:"pinned"`
}

// ChainReport summarises one chain.
type ChainReport struct {
	Chain string `json:"chain"`
	// Stored counts the chain's stored messages (records and gap notes).
	Stored int `json:"stored"`
	// Last is the highest position stored.
	Last uint64 `json:"last"`
	// Explained lists positions absent from the stream that the writer
	// explained in gap notes (failed, duplicate or unconfirmed writes).
	Explained []Gap `json:"explained,omitempty"`
	// Checkpoint is the latest valid checkpoint, or nil when there is none.
	Checkpoint *CheckpointStatus `json:"checkpoint,omitempty"`
	// Uncovered counts positions after the latest checkpoint (all of them
	// when there is none): their removal from the end could not be seen.
	Uncovered uint64 `json:"uncovered"`
	// Expired counts the positions before the chain's first stored one,
	// 1 to Expired, on an audit stream given limits by hand (an age or a
	// size, see KeepsEverything): the stream removed them as its oldest
	// messages, which is not tampering. Where more positions are missing
	// there, in all chains together, than the stream's first sequence
	// says it removed, or on a stream that keeps everything, they are
	// missing (FindMissing).
	Expired uint64 `json:"expired,omitempty"`
}

// Report is the result of verifying the audit stream.
type Report struct {
	// Messages counts the stream messages read.
	Messages int `json:"messages"`
	// Unchained counts record messages without chain headers (written
	// before chaining).
	Unchained int `json:"unchained"`
	// Checkpoints counts checkpoint messages read.
	Checkpoints int `json:"checkpoints"`
	// KeysPinned is true when verification was given public keys.
	KeysPinned bool          `json:"keys_pinned"`
	Chains     []ChainReport `json:"chains"`
	// Findings lists every disagreement, by chain and position.
	Findings []Finding `json:"findings"`
}

// Tampered reports whether verification found anything wrong.
func (r *Report) Tampered() bool { return len(r.Findings) > 0 }

// entry is what the verifier keeps of one stored chained message.
type entry struct {
	stream uint64
	prev   string
	hash   string // as stated
	ok     bool   // the content hashes to the stated hash
}

type checkpointSeen struct {
	c      Checkpoint
	stream uint64
	pinned bool
}

type chainState struct {
	// first is the stream sequence of the chain's first message.
	first   uint64
	entries map[uint64]entry
	gaps    map[uint64]Gap
	cps     []checkpointSeen
	stored  int
}

// Verifier recomputes the audit chains from the stream's messages, fed in
// stream order. It keeps a few hashes per message, not the records.
type Verifier struct {
	keys []ed25519.PublicKey
	// chained is set once a chained message has been read.
	chained bool
	// firstPinned is the stream sequence of the first checkpoint signed
	// by a given key, 0 before one.
	firstPinned uint64
	// headExpired is how many messages the stream's limits removed from
	// its head (0 on a stream without limits, or one that allows deletes
	// or purges): a chain's first positions, as many at most, may be gone
	// as expired.
	headExpired uint64
	chains      map[string]*chainState
	findings    []Finding
	rep         Report
}

// NewVerifier returns a verifier that trusts checkpoints signed by any of
// keys. With no keys, checkpoints whose signature verifies against the key
// they carry are used but reported as not pinned.
func NewVerifier(keys ...ed25519.PublicKey) *Verifier {
	return &Verifier{keys: keys, chains: map[string]*chainState{}, rep: Report{KeysPinned: len(keys) > 0}}
}

func (v *Verifier) chain(id string) *chainState {
	c := v.chains[id]
	if c == nil {
		c = &chainState{entries: map[uint64]entry{}, gaps: map[uint64]Gap{}}
		v.chains[id] = c
	}
	return c
}

// Add takes the next stream message.
func (v *Verifier) Add(m StoredMsg) {
	v.rep.Messages++
	if id := chainOfSubject(m.Subject, SubjCheckpoint); id != "" {
		v.addCheckpoint(id, m)
		return
	}
	l, err := parseLink(m.Header)
	if errors.Is(err, errUnchained) && chainOfSubject(m.Subject, SubjGap) == "" {
		v.rep.Unchained++
		if v.chained {
			v.findings = append(v.findings, Finding{Kind: FindUnchained, StreamSeq: m.StreamSeq,
				Detail: "a record without chain headers stored after chained records; only writers from before chaining wrote those"})
		}
		return
	}
	v.chained = true
	if err != nil {
		v.findings = append(v.findings, Finding{Kind: FindMalformed, StreamSeq: m.StreamSeq, Detail: "unreadable chain headers: " + err.Error()})
		return
	}
	c := v.chain(l.chain)
	if c.first == 0 || m.StreamSeq < c.first {
		c.first = m.StreamSeq
	}
	c.stored++
	ok := ChainHash(l.chain, l.seq, l.prev, m.Subject, m.Data) == l.hash
	if prior, dup := c.entries[l.seq]; dup {
		v.findings = append(v.findings, Finding{Kind: FindDuplicate, Chain: l.chain, Seq: l.seq, StreamSeq: m.StreamSeq,
			Detail: fmt.Sprintf("a second message claims this position, first stored at stream seq %d", prior.stream)})
		return
	}
	c.entries[l.seq] = entry{stream: m.StreamSeq, prev: l.prev, hash: l.hash, ok: ok}
	if id := chainOfSubject(m.Subject, SubjGap); id != "" && ok {
		var n GapNote
		if err := json.Unmarshal(m.Data, &n); err != nil || id != l.chain {
			v.findings = append(v.findings, Finding{Kind: FindMalformed, Chain: l.chain, Seq: l.seq, StreamSeq: m.StreamSeq, Detail: "unreadable gap note"})
			return
		}
		for _, g := range n.Gaps {
			if _, seen := c.gaps[g.Seq]; !seen && g.Seq < l.seq {
				c.gaps[g.Seq] = g
			}
		}
	}
}

func (v *Verifier) addCheckpoint(id string, m StoredMsg) {
	v.rep.Checkpoints++
	bad := func(why string) {
		v.findings = append(v.findings, Finding{Kind: FindBadCheckpoint, Chain: id, StreamSeq: m.StreamSeq, Detail: why})
	}
	var c Checkpoint
	dec := json.NewDecoder(bytes.NewReader(m.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		bad("unreadable checkpoint")
		return
	}
	if c.Chain != id {
		bad(fmt.Sprintf("checkpoint names chain %s on this chain's subject", c.Chain))
		return
	}
	pub, err := c.check()
	if err != nil {
		bad(err.Error())
		return
	}
	pinned := false
	for _, k := range v.keys {
		if k.Equal(pub) {
			pinned = true
		}
	}
	if len(v.keys) > 0 && !pinned {
		bad("signed by a key that is not one of the given public keys")
		return
	}
	ch := v.chain(id)
	ch.cps = append(ch.cps, checkpointSeen{c: c, stream: m.StreamSeq, pinned: pinned})
	if pinned && (v.firstPinned == 0 || m.StreamSeq < v.firstPinned) {
		v.firstPinned = m.StreamSeq
	}
}

// Report finishes verification.
func (v *Verifier) Report() *Report {
	rep := v.rep
	findings := append([]Finding(nil), v.findings...)
	ids := make([]string, 0, len(v.chains))
	for id := range v.chains {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	// The messages the limits removed are every chain's: the positions
	// missing at the starts of all chains together can have expired only
	// if they were no more than those.
	headExpired := v.headExpired
	var headMissing uint64
	for _, c := range v.chains {
		headMissing += c.headMissing()
	}
	if headMissing > headExpired {
		headExpired = 0
	}
	for _, id := range ids {
		cr, fs := v.chains[id].check(id, v.firstPinned, headExpired)
		rep.Chains = append(rep.Chains, cr)
		findings = append(findings, fs...)
	}
	sort.SliceStable(findings, func(i, j int) bool {
		a, b := findings[i], findings[j]
		if a.Chain != b.Chain {
			return a.Chain < b.Chain
		}
		if a.Seq != b.Seq {
			return a.Seq < b.Seq
		}
		return a.StreamSeq < b.StreamSeq
	})
	rep.Findings = findings
	if rep.Findings == nil {
		rep.Findings = []Finding{}
	}
	return &rep
}

// headMissing counts the positions at the start of the chain, before
// its first stored or explained one, that check finds missing.
func (c *chainState) headMissing() uint64 {
	var last uint64
	for s := range c.entries {
		last = max(last, s)
	}
	var n uint64
	for n < last {
		if _, ok := c.entries[n+1]; ok {
			break
		}
		if _, ok := c.gaps[n+1]; ok {
			break
		}
		n++
	}
	return n
}

// check walks one chain from position 1. A chain begun after stream
// sequence vouchAfter (not 0: the first pinned checkpoint) must be
// vouched for by a pinned checkpoint. Positions before the first one
// stored are counted as expired, not missing, when there are at most
// headExpired of them (the messages the stream's limits removed).
func (c *chainState) check(id string, vouchAfter uint64, headExpired uint64) (ChainReport, []Finding) {
	cr := ChainReport{Chain: id, Stored: c.stored}
	var fs []Finding
	for s := range c.entries {
		cr.Last = max(cr.Last, s)
	}
	prevHash, prevOK := GenesisHash, true
	var prevSeq, prevStream uint64
	for s := uint64(1); s <= cr.Last; s++ {
		e, present := c.entries[s]
		if !present {
			if g, explained := c.gaps[s]; explained {
				cr.Explained = append(cr.Explained, g)
				prevHash, prevOK = g.Hash, true
				continue
			}
			end := s
			for end+1 <= cr.Last {
				if _, p := c.entries[end+1]; p {
					break
				}
				if _, g := c.gaps[end+1]; g {
					break
				}
				end++
			}
			if s == 1 && end <= headExpired {
				cr.Expired = end
			} else {
				fs = append(fs, Finding{Kind: FindMissing, Chain: id, Seq: s, Last: end, Detail: "no stored message and no gap note for these positions"})
			}
			s, prevOK = end, false
			continue
		}
		if prevStream != 0 && e.stream < prevStream {
			fs = append(fs, Finding{Kind: FindReordered, Chain: id, Seq: s, StreamSeq: e.stream,
				Detail: fmt.Sprintf("stored before position %d (stream seq %d)", prevSeq, prevStream)})
		}
		prevSeq, prevStream = s, e.stream
		switch {
		case !e.ok:
			fs = append(fs, Finding{Kind: FindBroken, Chain: id, Seq: s, StreamSeq: e.stream, Detail: "content does not match its hash"})
			// The next link is not checked: this position's content is
			// not trustworthy, and one alteration gives one finding.
			prevHash, prevOK = e.hash, false
			continue
		case prevOK && e.prev != prevHash:
			fs = append(fs, Finding{Kind: FindBroken, Chain: id, Seq: s, StreamSeq: e.stream,
				Detail: fmt.Sprintf("previous hash is not the hash of position %d (one of the two was rewritten)", s-1)})
		}
		prevHash, prevOK = e.hash, true
	}
	// Checkpoints: each must agree with what is stored; the latest bounds
	// truncation.
	var latest *checkpointSeen
	for i := range c.cps {
		cp := &c.cps[i]
		if latest == nil || cp.c.Seq > latest.c.Seq {
			latest = cp
		}
		if cp.c.Seq > cr.Last {
			continue
		}
		var have string
		if e, ok := c.entries[cp.c.Seq]; ok && e.ok {
			have = e.hash
		} else if g, ok := c.gaps[cp.c.Seq]; ok && !inEntries(c.entries, cp.c.Seq) {
			have = g.Hash
		}
		if have != "" && have != cp.c.Hash {
			fs = append(fs, Finding{Kind: FindBroken, Chain: id, Seq: cp.c.Seq, StreamSeq: c.entries[cp.c.Seq].stream,
				Detail: fmt.Sprintf("hash differs from the checkpoint of %s (stream seq %d)", cp.c.Time.UTC().Format(time.RFC3339), cp.stream)})
		}
	}
	if vouchAfter != 0 && c.stored > 0 && c.first > vouchAfter && !slices.ContainsFunc(c.cps, func(cp checkpointSeen) bool { return cp.pinned }) {
		fs = append(fs, Finding{Kind: FindUnvouched, Chain: id,
			Detail: "no checkpoint signed by a given key vouches for this chain; a writer with the signing key checkpoints its chain before its first record"})
	}
	cr.Uncovered = cr.Last
	if latest != nil {
		cr.Checkpoint = &CheckpointStatus{Seq: latest.c.Seq, Time: latest.c.Time, PublicKey: latest.c.PublicKey, Pinned: latest.pinned}
		if latest.c.Seq > cr.Last {
			fs = append(fs, Finding{Kind: FindTruncated, Chain: id, Seq: cr.Last + 1, Last: latest.c.Seq,
				Detail: fmt.Sprintf("positions the checkpoint of %s (stream seq %d) vouched for are gone", latest.c.Time.UTC().Format(time.RFC3339), latest.stream)})
			cr.Uncovered = 0
		} else {
			cr.Uncovered = cr.Last - latest.c.Seq
		}
	}
	return cr, fs
}

func inEntries(m map[uint64]entry, s uint64) bool {
	_, ok := m[s]
	return ok
}

// Verify checks a whole audit stream given as its messages in stream order.
func Verify(msgs []StoredMsg, keys ...ed25519.PublicKey) *Report {
	v := NewVerifier(keys...)
	for _, m := range msgs {
		v.Add(m)
	}
	return v.Report()
}

// VerifyStream reads the audit stream from its first message to the last
// one stored when it starts, and verifies it. It also compares the
// stream's creation with the ingress stream's (FindRecreated): deleting
// the whole stream leaves no chain to break.
func VerifyStream(ctx context.Context, js jetstream.JetStream, keys ...ed25519.PublicKey) (*Report, error) {
	v := NewVerifier(keys...)
	var unreadable []Finding
	info, err := readStream(ctx, js, v.Add, func(first, last uint64) {
		unreadable = append(unreadable, Finding{Kind: FindUnreadable, StreamSeq: first,
			Detail: fmt.Sprintf("stream messages %d-%d are counted by the store but cannot be read: its files are damaged; restore them from a backup (the embedded server's log, component nats, names the failing block)", first, last)})
	})
	if err != nil {
		return nil, err
	}
	// Limits remove the oldest messages, those before the first; a
	// stream that allows deletes or purges (Junction refuses to start on
	// one) could have lost its head to anyone, so there it is missing.
	if cfg := info.Config; cfg.DenyDelete && cfg.DenyPurge && !KeepsEverything(cfg) && info.State.FirstSeq > 1 {
		v.headExpired = info.State.FirstSeq - 1
	}
	rep := v.Report()
	rep.Findings = append(rep.Findings, unreadable...)
	f, err := Recreated(ctx, js)
	if err != nil {
		return nil, err
	}
	if f != nil {
		rep.Findings = append(rep.Findings, *f)
	}
	return rep, nil
}

// Recreated returns a FindRecreated finding when the audit stream was
// made more than a minute after the ingress stream, else nil (also when
// there is no ingress stream).
func Recreated(ctx context.Context, js jetstream.JetStream) (*Finding, error) {
	return recreated(ctx, js, recreatedAllowance)
}

// recreated is Recreated with the allowance given.
func recreated(ctx context.Context, js jetstream.JetStream, allowance time.Duration) (*Finding, error) {
	audit, err := js.Stream(ctx, store.StreamAudit)
	if err != nil {
		return nil, fmt.Errorf("opening audit stream: %w", err)
	}
	ingress, err := js.Stream(ctx, store.StreamIngress)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening ingress stream: %w", err)
	}
	made, since := audit.CachedInfo().Created, ingress.CachedInfo().Created
	if made.Sub(since) <= allowance {
		return nil, nil
	}
	return &Finding{Kind: FindRecreated, Detail: fmt.Sprintf("the audit stream was made at %s, %s after the ingress stream (%s): it was deleted and made again, and the records of the messages before it are gone",
		made.UTC().Format(time.RFC3339), made.Sub(since).Round(time.Second), since.UTC().Format(time.RFC3339))}, nil
}

// ReadStream passes every message of the audit stream, up to the last one
// stored when it starts, to fn in stream order. Messages the store counts
// but cannot produce (damaged files) are an error.
func ReadStream(ctx context.Context, js jetstream.JetStream, fn func(StoredMsg)) error {
	_, err := readStream(ctx, js, fn, nil)
	return err
}

// readStream is ReadStream. With unreadable set, messages the store counts
// but cannot produce are passed to it as ranges of stream sequences, and
// the read goes on after them, instead of stopping there. It returns
// the stream's configuration and state as the read began.
func readStream(ctx context.Context, js jetstream.JetStream, fn func(StoredMsg), unreadable func(first, last uint64)) (*jetstream.StreamInfo, error) {
	st, err := js.Stream(ctx, store.StreamAudit)
	if err != nil {
		return nil, fmt.Errorf("opening audit stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading audit stream info: %w", err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return info, nil
	}
	var damaged error
	var runs []SeqRange
	onDamage := func(r SeqRange) error {
		if unreadable == nil {
			damaged = fmt.Errorf("reading audit stream: the store counts messages %d-%d of %d but cannot read them, so the records from %d on cannot be checked: its files are damaged; restore them from a backup (the embedded server's log, component nats, names the failing block)", r.First, r.Last, last, r.First)
			return damaged
		}
		runs = append(runs, r)
		return nil
	}
	defer func() {
		// Each sequence once (MergeRuns).
		for _, r := range MergeRuns(runs) {
			unreadable(r.First, r.Last)
		}
	}()
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: info.State.FirstSeq}
	err = readPast(ctx, st, cfg, last, int(min(last-info.State.FirstSeq+1, 1000)), func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		fn(StoredMsg{StreamSeq: md.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
		return false, nil
	}, onDamage)
	if err != nil && err != damaged {
		return info, fmt.Errorf("reading audit stream: %w", err)
	}
	return info, err
}

// PublicKeyString is the standard base64 form checkpoints carry.
func PublicKeyString(k ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(k) }
