package patient

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// DefaultBucket is the KV bucket of the index when Config.Bucket is empty.
const DefaultBucket = "JUNCTION_PATIENTS"

// Key prefixes in the bucket: records and local identifiers.
const (
	recordPrefix     = "p."
	identifierPrefix = "x."
)

// maxHops bounds how many merges a read follows.
const maxHops = 16

// Errors returned by the index. None holds patient data.
var (
	// ErrNotFound reports that the index has no record for the patient.
	ErrNotFound = errors.New("patient index: no record")
	// ErrInvalidNHSNumber reports an NHS number that fails its check.
	ErrInvalidNHSNumber = errors.New("patient index: not a valid NHS number")
	// ErrMergeLoop reports a MergedInto chain that loops or is longer
	// than the index follows.
	ErrMergeLoop = errors.New("patient index: merge chain loops or is too long")
	// ErrConflict reports a record that kept changing under every
	// compare-and-set attempt.
	ErrConflict = errors.New("patient index: too many concurrent updates to one record")
)

// errMergedMeanwhile makes a write follow a merge that happened between
// resolving the chain and writing.
var errMergedMeanwhile = errors.New("patient index: record merged meanwhile")

// Config configures the index.
type Config struct {
	// Bucket is the KV bucket (DefaultBucket if empty).
	Bucket string
	// Buckets is how the store's buckets are opened (created with one
	// replica if zero).
	Buckets bucket.Policy
	// HashKey keys the HMAC that turns NHS numbers and local identifiers
	// into bucket keys; at least 16 bytes. Keep it secret: without it
	// keys cannot be linked to patients.
	HashKey []byte
	// MaxAttempts bounds compare-and-set attempts per write (16 if zero).
	MaxAttempts int
}

// Index is the patient index over a JetStream KV bucket. It is safe for
// concurrent use, within and across processes.
type Index struct {
	kv       jetstream.KeyValue
	key      []byte
	attempts int
	recent   recentRecords
	// writing serialises this Index's compare-and-set loops on one
	// record (by a stripe of its key). Without it, two goroutines
	// updating one record could starve each other: the one that had to
	// read afresh after a conflict kept losing to the one starting from
	// the remembered record that read had just left. Conflicts now come
	// only from other processes.
	writing [64]sync.Mutex
	// macs holds keyed HMAC states (*keyMAC) for reuse: a key is made
	// for every message, often three times, and a fresh HMAC costs its
	// key's hashing and several allocations.
	macs sync.Pool
}

// maxKeptMACInput bounds the input scratch of a keyMAC kept for reuse.
const maxKeptMACInput = 1 << 10

// keyMAC is an HMAC-SHA256 keyed with the Index's key, with scratch
// space for the input and the key made from it.
type keyMAC struct {
	h   hash.Hash
	in  []byte
	out []byte
	sum [sha256.Size]byte
}

// writeLock returns the lock serialising this Index's writes to key.
func (ix *Index) writeLock(key string) *sync.Mutex {
	var h uint32 = 2166136261
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return &ix.writing[h%uint32(len(ix.writing))]
}

// Open opens the bucket, as cfg.Buckets allows, and returns the index.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Index, error) {
	if len(cfg.HashKey) < 16 {
		return nil, errors.New("patient index: hash key must be at least 16 bytes")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 16
	}
	kv, err := cfg.Buckets.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket: cfg.Bucket, Description: "Junction: patient index", History: 1,
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("patient index: opening bucket %s: %w", cfg.Bucket, err)
	}
	return &Index{kv: kv, key: append([]byte(nil), cfg.HashKey...), attempts: cfg.MaxAttempts}, nil
}

// RecordKey returns the bucket key of the record for an NHS number
// (spaces and hyphens allowed): "p." and the hex HMAC-SHA256 of the
// normalised number. The key is safe to log.
func (ix *Index) RecordKey(nhsNumber string) (string, error) {
	n := nhs.Normalize(nhsNumber)
	if !nhs.ValidNumber(n) {
		return "", ErrInvalidNHSNumber
	}
	return ix.mac(recordPrefix, n, "", ""), nil
}

// IdentifierKey returns the bucket key of a local identifier: "x." and
// the hex HMAC-SHA256 of "system|value". The key is safe to log.
func (ix *Index) IdentifierKey(id Identifier) string {
	return ix.mac(identifierPrefix, id.System, "|", id.Value)
}

// mac returns prefix followed by the hex HMAC-SHA256, under the Index's
// key, of a, b and c written one after another.
func (ix *Index) mac(prefix, a, b, c string) string {
	m, _ := ix.macs.Get().(*keyMAC)
	if m == nil {
		m = &keyMAC{h: hmac.New(sha256.New, ix.key)}
	} else {
		m.h.Reset()
	}
	m.in = append(append(append(m.in[:0], a...), b...), c...)
	m.h.Write(m.in)
	sum := m.h.Sum(m.sum[:0])
	m.out = hex.AppendEncode(append(m.out[:0], prefix...), sum)
	key := string(m.out)
	if cap(m.in) <= maxKeptMACInput {
		ix.macs.Put(m) // one for an outsized identifier is left to the collector
	}
	return key
}

// Get returns the record for an NHS number, following merges: the record
// of a merged number is its survivor's, with ResolvedFrom set to the
// number asked for.
func (ix *Index) Get(ctx context.Context, nhsNumber string) (*Record, error) {
	key, err := ix.RecordKey(nhsNumber)
	if err != nil {
		return nil, err
	}
	rec, hops, err := ix.resolve(ctx, key)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, ErrNotFound
	}
	if hops > 0 {
		rec.ResolvedFrom = nhs.Normalize(nhsNumber)
	}
	return rec, nil
}

// GetByIdentifier returns the record a local identifier belongs to,
// following merges.
func (ix *Index) GetByIdentifier(ctx context.Context, id Identifier) (*Record, error) {
	ref, _, err := ix.readRef(ctx, ix.IdentifierKey(id))
	if err != nil {
		return nil, err
	}
	if ref == nil {
		return nil, ErrNotFound
	}
	rec, _, err := ix.resolve(ctx, ref.Record)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, ErrNotFound
	}
	return rec, nil
}

// Update applies change to the record of an NHS number, following merges,
// with compare-and-set: change may run several times and must depend only
// on the record it is given; it runs while this Index holds the record's
// write lock, so it must not call the Index. A missing record is created.
// It returns the record as written.
func (ix *Index) Update(ctx context.Context, nhsNumber string, change func(*Record) error) (*Record, error) {
	key, err := ix.RecordKey(nhsNumber)
	if err != nil {
		return nil, err
	}
	rec, _, err := ix.update(ctx, key, nhs.Normalize(nhsNumber), func(r *Record) (bool, error) {
		return true, change(r)
	})
	return rec, err
}

// SetFlag sets a flag on the patient, replacing the flag with the same
// system and code unless that one was set by a newer Source. A missing
// record is created.
func (ix *Index) SetFlag(ctx context.Context, nhsNumber string, f Flag) (*Record, error) {
	if f.System == "" || f.Code == "" {
		return nil, errors.New("patient index: a flag needs a system and a code")
	}
	return ix.change(ctx, nhsNumber, func(r *Record) bool { return r.setFlag(f) })
}

// ClearFlag ends a flag at the time at, on behalf of src. The cleared flag
// stays on the record, inactive from at, so that an older message setting
// it again loses; a flag never set is recorded as cleared for the same
// reason.
func (ix *Index) ClearFlag(ctx context.Context, nhsNumber, system, code string, at time.Time, src Source) (*Record, error) {
	return ix.change(ctx, nhsNumber, func(r *Record) bool { return r.clearFlag(system, code, at, src) })
}

// SetConsent stores the consent summary unless the record holds a newer
// one (by UpdatedAt).
func (ix *Index) SetConsent(ctx context.Context, nhsNumber string, c ConsentSummary) (*Record, error) {
	return ix.change(ctx, nhsNumber, func(r *Record) bool {
		if !r.Consent.UpdatedAt.IsZero() && !c.UpdatedAt.After(r.Consent.UpdatedAt) {
			return false
		}
		r.Consent = c
		return true
	})
}

// SetRestricted sets or clears the restricted (S-flag) marker, unless a
// newer Source set it.
func (ix *Index) SetRestricted(ctx context.Context, nhsNumber string, restricted bool, src Source) (*Record, error) {
	return ix.change(ctx, nhsNumber, func(r *Record) bool {
		if !src.After(r.RestrictedSource) {
			return false
		}
		r.Restricted, r.RestrictedSource = restricted, src
		return true
	})
}

// change runs a conditional change on the record of an NHS number,
// following merges and creating a missing record.
func (ix *Index) change(ctx context.Context, nhsNumber string, f func(*Record) bool) (*Record, error) {
	key, err := ix.RecordKey(nhsNumber)
	if err != nil {
		return nil, err
	}
	rec, _, err := ix.update(ctx, key, nhs.Normalize(nhsNumber), func(r *Record) (bool, error) {
		return f(r), nil
	})
	return rec, err
}

// read returns the record at key with its KV revision in Version, or nil
// when there is none.
func (ix *Index) read(ctx context.Context, key string) (*Record, error) {
	e, err := ix.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("patient index: reading %s: %w", key, err)
	}
	r, err := decodeRecord(key, e.Value(), e.Revision())
	if err != nil {
		return nil, err
	}
	ix.recent.remember(key, e.Value(), e.Revision())
	return r, nil
}

// decodeRecord decodes the stored JSON of the record at key, read at
// revision rev.
func decodeRecord(key string, val []byte, rev uint64) (*Record, error) {
	var r Record
	if err := decodeRecordJSON(val, &r); err != nil {
		return nil, fmt.Errorf("patient index: decoding %s: %w", key, errors.New("stored record is not valid JSON"))
	}
	r.Version = rev
	return &r, nil
}

// remembered returns the record at key as this Index last read or wrote
// it, when it remembers it, is not merged and is stored under its own
// NHS number's key. It may be stale (see recentRecords).
func (ix *Index) remembered(key string) (*Record, bool) {
	s, ok := ix.recent.get(key)
	if !ok {
		return nil, false
	}
	r, err := decodeRecord(key, s.val, s.rev)
	if err != nil || r.MergedInto != "" {
		return nil, false
	}
	if k, err := ix.RecordKey(r.NHSNumber); err != nil || k != key {
		return nil, false
	}
	return r, true
}

// resolve reads the record at key and follows MergedInto to the end of
// the chain. It returns nil when the first record is absent, and the
// number of merges followed.
func (ix *Index) resolve(ctx context.Context, key string) (*Record, int, error) {
	r, _, hops, err := ix.resolveAt(ctx, key)
	return r, hops, err
}

// resolveAt is resolve that also returns the key it read last: the
// returned record's, or the absent record's when it returns nil.
func (ix *Index) resolveAt(ctx context.Context, key string) (*Record, string, int, error) {
	seen := map[string]bool{}
	for hops := 0; hops <= maxHops; hops++ {
		if seen[key] {
			return nil, key, hops, ErrMergeLoop
		}
		seen[key] = true
		r, err := ix.read(ctx, key)
		if err != nil || r == nil {
			return nil, key, hops, err
		}
		if r.MergedInto == "" {
			return r, key, hops, nil
		}
		next, err := ix.RecordKey(r.MergedInto)
		if err != nil {
			return nil, key, hops, fmt.Errorf("patient index: record %s: merged into an invalid NHS number", key)
		}
		key = next
	}
	return nil, key, maxHops, ErrMergeLoop
}

// resolveKey returns the key at the end of key's merge chain, or key when
// the record is absent.
func (ix *Index) resolveKey(ctx context.Context, key string) (string, error) {
	r, _, err := ix.resolve(ctx, key)
	if err != nil {
		return "", err
	}
	if r == nil {
		return key, nil
	}
	return ix.RecordKey(r.NHSNumber)
}

// update applies change to the record at the end of key's merge chain
// with compare-and-set, creating a record with NHS number nhsNumber when
// there is none. change reports whether it changed the record; an
// unchanged record is not written. update returns the record and the key
// it lives under.
func (ix *Index) update(ctx context.Context, key, nhsNumber string, change func(*Record) (bool, error)) (*Record, string, error) {
	for attempt := 0; attempt < ix.attempts; attempt++ {
		if attempt == 0 {
			// A record this Index wrote or read lately, not merged, is
			// where the chain ends unless it changed since; the
			// compare-and-set write finds out.
			if r, ok := ix.remembered(key); ok {
				rec, err := ix.modifyFrom(ctx, key, nhsNumber, start{rec: r, known: true, remembered: true}, change, true)
				if errors.Is(err, errMergedMeanwhile) {
					continue
				}
				return rec, key, err
			}
		}
		rec, at, _, err := ix.resolveAt(ctx, key)
		if err != nil {
			return nil, "", err
		}
		// The record at the end of the chain was just read: modify starts
		// from that read instead of reading it again. Its write is a
		// compare-and-set at that read's revision, as after a read of its
		// own, and a conflict reads afresh.
		target, first := key, start{known: rec == nil && at == key} // known absent
		if rec != nil {
			if target, err = ix.RecordKey(rec.NHSNumber); err != nil {
				return nil, "", err
			}
			first = start{rec: rec, known: at == target}
		}
		num := nhsNumber
		if target != key {
			num = "" // taken from the stored survivor
		}
		rec, err = ix.modifyFrom(ctx, target, num, first, change, true)
		if errors.Is(err, errMergedMeanwhile) {
			continue
		}
		return rec, target, err
	}
	return nil, "", ErrConflict
}

// modify applies change to the record at key (not following merges) with
// compare-and-set. A missing record is created with NHS number nhsNumber,
// or ErrNotFound returned when nhsNumber is "". With notMerged, a record
// found merged gives errMergedMeanwhile.
func (ix *Index) modify(ctx context.Context, key, nhsNumber string, change func(*Record) (bool, error), notMerged bool) (*Record, error) {
	return ix.modifyFrom(ctx, key, nhsNumber, start{}, change, notMerged)
}

// start is where a modify's first attempt starts instead of reading the
// record.
type start struct {
	// rec is the record at key (nil when absent) when known.
	rec   *Record
	known bool
	// remembered marks rec as remembered rather than read just now: it
	// may be stale, so it may start a compare-and-set write but cannot
	// decide that nothing needs writing, nor fail the change.
	remembered bool
}

// modifyFrom is modify whose first attempt starts from first when it is
// known, instead of reading the record. first.rec may be changed.
func (ix *Index) modifyFrom(ctx context.Context, key, nhsNumber string, first start, change func(*Record) (bool, error), notMerged bool) (*Record, error) {
	mu := ix.writeLock(key)
	mu.Lock()
	defer mu.Unlock()
	limit := ix.attempts
	if first.remembered {
		limit++ // an attempt on a remembered record is not one on the store's
	}
	for attempt := 0; attempt < limit; attempt++ {
		r := first.rec
		if attempt > 0 || !first.known {
			var err error
			if r, err = ix.read(ctx, key); err != nil {
				return nil, err
			}
		}
		if r == nil {
			if nhsNumber == "" {
				return nil, ErrNotFound
			}
			r = &Record{NHSNumber: nhsNumber}
		} else if notMerged && r.MergedInto != "" {
			return nil, errMergedMeanwhile
		}
		changed, err := change(r)
		if (err != nil || !changed && r.Version != 0) && attempt == 0 && first.known && first.remembered {
			continue // not to write is decided on a read
		}
		if err != nil {
			return nil, err
		}
		if !changed && r.Version != 0 {
			return r, nil
		}
		val, err := jsonRecord(r)
		if err != nil {
			return nil, err
		}
		rev, err := ix.put(ctx, key, val, r.Version)
		if isConflict(err) {
			ix.recent.forget(key)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("patient index: writing %s: %w", key, err)
		}
		ix.recent.remember(key, val, rev)
		r.Version = rev
		return r, nil
	}
	return nil, ErrConflict
}

// put creates key when rev is 0 and otherwise updates it at rev.
func (ix *Index) put(ctx context.Context, key string, val []byte, rev uint64) (uint64, error) {
	if rev == 0 {
		return ix.kv.Create(ctx, key, val)
	}
	return ix.kv.Update(ctx, key, val, rev)
}

// isConflict reports a compare-and-set conflict.
func isConflict(err error) bool { return jserr.WrongLastSequence(err) }

// identifierRef is the value under a local identifier's key: the record
// key it belongs to and the Source that said so.
type identifierRef struct {
	Record string `json:"record"`
	Source Source `json:"source"`
}

// readRef reads a local identifier entry and its revision.
func (ix *Index) readRef(ctx context.Context, key string) (*identifierRef, uint64, error) {
	e, err := ix.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("patient index: reading %s: %w", key, err)
	}
	var ref identifierRef
	if err := decodeIdentifierRef(e.Value(), &ref); err != nil {
		return nil, 0, fmt.Errorf("patient index: decoding %s: %w", key, errors.New("stored entry is not valid JSON"))
	}
	return &ref, e.Revision(), nil
}

// pointIdentifier points a local identifier at a record key unless a
// newer Source pointed it elsewhere.
func (ix *Index) pointIdentifier(ctx context.Context, id Identifier, recordKey string, src Source) error {
	key := ix.IdentifierKey(id)
	for attempt := 0; attempt < ix.attempts; attempt++ {
		ref, rev, err := ix.readRef(ctx, key)
		if err != nil {
			return err
		}
		if ref != nil && (ref.Record == recordKey || ref.Source.After(src)) {
			return nil
		}
		val, err := json.Marshal(identifierRef{Record: recordKey, Source: src})
		if err != nil {
			return fmt.Errorf("patient index: encoding identifier entry: %w", err)
		}
		_, err = ix.put(ctx, key, val, rev)
		if isConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("patient index: writing %s: %w", key, err)
		}
		return nil
	}
	return ErrConflict
}

// jsonRecord encodes a record for the bucket.
func jsonRecord(r *Record) ([]byte, error) {
	val, err := encodeRecord(r)
	if err != nil {
		return nil, fmt.Errorf("patient index: encoding record: %w", err)
	}
	return val, nil
}
