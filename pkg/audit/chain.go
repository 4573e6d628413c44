package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/junction-fhir/junction/pkg/store"
)

// Chain headers. Every stream message a Writer publishes carries them; the
// message body is unchanged (a JSON array of Records on the message's
// subject), so readers that ignore headers, such as Trail, read old and new
// messages alike.
const (
	// HeaderChain is the id of the writer's chain: 32 hex digits, random
	// per Writer.
	HeaderChain = "Junction-Audit-Chain"
	// HeaderSeq is the message's position in its chain, from 1.
	HeaderSeq = "Junction-Audit-Seq"
	// HeaderPrev is the chain hash of the previous position (GenesisHash
	// at position 1).
	HeaderPrev = "Junction-Audit-Prev"
	// HeaderHash is the message's own chain hash (see ChainHash).
	HeaderHash = "Junction-Audit-Hash"
)

// GenesisHash is the previous hash of a chain's first position.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Subjects of chain bookkeeping, beside the per-message audit subjects.
// Message ids are ULIDs, so these never collide with Subject(id), and Trail,
// which reads one exact subject, never sees them.
const (
	// SubjCheckpoint prefixes signed checkpoints: SubjCheckpoint + "." + chain.
	SubjCheckpoint = store.SubjAudit + ".checkpoint"
	// SubjGap prefixes gap notes: SubjGap + "." + chain. Gap notes are
	// chained messages like any other.
	SubjGap = store.SubjAudit + ".gap"
)

// chainDomain separates chain hashes from every other SHA-256 use.
const chainDomain = "junction-audit-chain-v1\n"

// ChainHash is the hash of one chained message: the hex SHA-256 of
//
//	"junction-audit-chain-v1\n" chain "\n" seq "\n" prev "\n" subject "\n" data
//
// with seq in decimal. Chain ids, hashes and NATS subjects hold no
// newline, and data comes last, so the encoding is unambiguous. The subject
// is covered so that moving records to another message's trail is caught.
func ChainHash(chain string, seq uint64, prev, subject string, data []byte) string {
	h := sha256.New()
	h.Write([]byte(chainDomain))
	h.Write([]byte(chain))
	h.Write([]byte{'\n'})
	h.Write(strconv.AppendUint(nil, seq, 10))
	h.Write([]byte{'\n'})
	h.Write([]byte(prev))
	h.Write([]byte{'\n'})
	h.Write([]byte(subject))
	h.Write([]byte{'\n'})
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// link is the chain position a stream message claims.
type link struct {
	chain string
	seq   uint64
	prev  string
	hash  string
}

// errUnchained marks a message without chain headers (written before
// chaining, or by something else).
var errUnchained = errors.New("no chain headers")

// parseLink reads the chain headers of a message.
func parseLink(h nats.Header) (link, error) {
	var l link
	if h == nil {
		return l, errUnchained
	}
	l.chain = h.Get(HeaderChain)
	seq, prev, hash := h.Get(HeaderSeq), h.Get(HeaderPrev), h.Get(HeaderHash)
	if l.chain == "" && seq == "" && prev == "" && hash == "" {
		return l, errUnchained
	}
	if !isHex(l.chain, 32) {
		return l, fmt.Errorf("chain id %q is not 32 hex digits", l.chain)
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != seq {
		return l, fmt.Errorf("chain position %q is not a positive decimal", seq)
	}
	l.seq = n
	if !isHex(prev, 64) {
		return l, errors.New("previous hash is not 64 hex digits")
	}
	if !isHex(hash, 64) {
		return l, errors.New("hash is not 64 hex digits")
	}
	l.prev, l.hash = prev, hash
	return l, nil
}

// setLink writes the chain headers of m.
func setLink(m *nats.Msg, l link) {
	m.Header.Set(HeaderChain, l.chain)
	m.Header.Set(HeaderSeq, strconv.FormatUint(l.seq, 10))
	m.Header.Set(HeaderPrev, l.prev)
	m.Header.Set(HeaderHash, l.hash)
}

// isHex reports whether s is n lower-case hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// chainOfSubject returns the chain id after prefix+".", or "".
func chainOfSubject(subject, prefix string) string {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok {
		return ""
	}
	return rest
}

// GapReason says why a chain position holds no stored message of its own.
type GapReason string

// Gap reasons.
const (
	// GapDuplicate: the store acknowledged the message as a duplicate of
	// one it already held (same dedupe id, possibly written by another
	// process's chain), so it stored nothing at this position.
	GapDuplicate GapReason = "duplicate"
	// GapFailed: the store answered the publish with an error.
	GapFailed GapReason = "failed"
	// GapUnconfirmed: no answer came within the writer's ack timeout; the
	// message may or may not be stored.
	GapUnconfirmed GapReason = "unconfirmed"
)

// Gap explains one chain position whose publish was not confirmed stored.
// It states the position's chain hash, so the chain can still be checked
// across it.
type Gap struct {
	Seq    uint64    `json:"seq"`
	Hash   string    `json:"hash"`
	Reason GapReason `json:"reason"`
	// Subject is the audit subject the lost message was for.
	Subject string `json:"subject"`
	// Original is the stream sequence of the message the store kept
	// instead (duplicates only).
	Original uint64 `json:"original,omitempty"`
}

// GapNote is the body of a gap note.
type GapNote struct {
	Gaps []Gap `json:"gaps"`
}
