package consent

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// DefaultConsentBucket and DefaultOptOutBucket are the buckets the
// Consents and the opt-out list are kept in when StoreConfig names none.
// Their keys are patient hashes under the store's hash key.
const (
	DefaultConsentBucket = "consent"
	DefaultOptOutBucket  = "optout"
)

// StoreConfig configures the JetStream KV buckets of consent state.
type StoreConfig struct {
	// ConsentBucket holds each patient's Consents ("consent" if empty).
	ConsentBucket string
	// OptOutBucket holds the national data opt-out list ("optout" if
	// empty).
	OptOutBucket string
	// Buckets is how the store's buckets are opened (created with one
	// replica if zero).
	Buckets bucket.Policy
	// HashKey keys the hash that turns a patient key into a bucket key;
	// at least 16 bytes. Keep it secret: without it, keys cannot be
	// linked to NHS numbers.
	HashKey []byte
	// OptOutMaxAge is how old the opt-out list may be before it counts as
	// stale; entries also expire from the bucket after it.
	OptOutMaxAge time.Duration
}

// asOfKey holds the date of the opt-out list; hashes are hex, so it cannot
// clash with a patient key.
const asOfKey = "meta.as-of"

// Store keeps Consents per patient and the national data opt-out list in
// JetStream KV. Keys are keyed hashes of the NHS number, never the number.
// It implements Source.
type Store struct {
	consents jetstream.KeyValue
	optout   jetstream.KeyValue
	key      []byte
	maxAge   time.Duration
}

// storedConsents is the value kept per patient.
type storedConsents struct {
	Consents []json.RawMessage `json:"consents"`
}

// OpenStore opens the buckets, as cfg.Buckets allows, and returns the
// store.
func OpenStore(ctx context.Context, js jetstream.JetStream, cfg StoreConfig) (*Store, error) {
	if len(cfg.HashKey) < 16 {
		return nil, errors.New("consent store: hash key must be at least 16 bytes")
	}
	if cfg.OptOutMaxAge <= 0 {
		return nil, errors.New("consent store: opt-out maximum age must be positive")
	}
	if cfg.ConsentBucket == "" {
		cfg.ConsentBucket = DefaultConsentBucket
	}
	if cfg.OptOutBucket == "" {
		cfg.OptOutBucket = DefaultOptOutBucket
	}
	s := &Store{key: append([]byte(nil), cfg.HashKey...), maxAge: cfg.OptOutMaxAge}
	var err error
	s.consents, err = cfg.Buckets.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket: cfg.ConsentBucket, Description: "Junction: FHIR Consents per patient", History: 1,
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("consent store: opening bucket %s: %w", cfg.ConsentBucket, err)
	}
	s.optout, err = cfg.Buckets.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket: cfg.OptOutBucket, Description: "Junction: national data opt-out list", History: 1,
		Storage: jetstream.FileStorage, TTL: cfg.OptOutMaxAge,
	})
	if err != nil {
		return nil, fmt.Errorf("consent store: opening bucket %s: %w", cfg.OptOutBucket, err)
	}
	return s, nil
}

// PatientHash returns the bucket key of a patient: the hex HMAC-SHA256 of
// the normalised NHS number under the store's key.
func (s *Store) PatientHash(patientKey string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(nhs.Normalize(patientKey)))
	return hex.EncodeToString(m.Sum(nil))
}

// PutConsent validates a Consent against the profile and stores it for its
// patient, replacing a stored Consent with the same id. A Consent outside
// the profile is refused with Issues (use errors.As to get them). A
// withdrawal is a Consent with status inactive, or DeleteConsent; either
// applies to every decision made after it returns.
func (s *Store) PutConsent(ctx context.Context, data []byte) (Policy, error) {
	pol, issues := ParsePolicy(data)
	if len(issues) > 0 {
		return Policy{}, issues
	}
	if pol.ID == "" {
		return Policy{}, Issues{{Code: "required", Location: "Consent.id", Message: "a stored Consent needs an id"}}
	}
	raw := json.RawMessage(append([]byte(nil), data...))
	err := s.update(ctx, pol.Patient, func(list []json.RawMessage) ([]json.RawMessage, error) {
		out := list[:0]
		for _, c := range list {
			old, _ := parseStored(c)
			if old.ID != pol.ID {
				out = append(out, c)
			}
		}
		return append(out, raw), nil
	})
	if err != nil {
		return Policy{}, err
	}
	return pol, nil
}

// DeleteConsent removes a patient's Consent by id; a missing one is not an
// error.
func (s *Store) DeleteConsent(ctx context.Context, patientKey, id string) error {
	return s.update(ctx, patientKey, func(list []json.RawMessage) ([]json.RawMessage, error) {
		out := list[:0]
		for _, c := range list {
			old, _ := parseStored(c)
			if old.ID != id {
				out = append(out, c)
			}
		}
		return out, nil
	})
}

// update applies change to a patient's Consents with compare-and-set,
// retrying when another writer got there first.
func (s *Store) update(ctx context.Context, patientKey string, change func([]json.RawMessage) ([]json.RawMessage, error)) error {
	key := s.PatientHash(patientKey)
	for attempt := 0; attempt < 10; attempt++ {
		var cur storedConsents
		var rev uint64
		e, err := s.consents.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("consent store: reading consents: %w", err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &cur); err != nil {
				return fmt.Errorf("consent store: decoding stored consents: %w", err)
			}
		}
		next, err := change(cur.Consents)
		if err != nil {
			return err
		}
		val, err := json.Marshal(storedConsents{Consents: next})
		if err != nil {
			return fmt.Errorf("consent store: encoding consents: %w", err)
		}
		if rev != 0 && bytes.Equal(val, e.Value()) {
			// The same Consents again (a resend): nothing is written, so
			// nothing queued for the patient counts it as a change.
			return nil
		}
		if rev == 0 {
			_, err = s.consents.Create(ctx, key, val)
		} else {
			_, err = s.consents.Update(ctx, key, val, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return fmt.Errorf("consent store: writing consents: %w", err)
		}
	}
	return errors.New("consent store: too many concurrent updates to one patient's consents")
}

// isWrongSequence reports a compare-and-set conflict.
func isWrongSequence(err error) bool { return jserr.WrongLastSequence(err) }

// Policies returns the patient's stored Consents. A stored Consent that no
// longer parses is an error: deciding without it could disclose what it
// denies.
func (s *Store) Policies(ctx context.Context, patientKey string) ([]Policy, error) {
	e, err := s.consents.Get(ctx, s.PatientHash(patientKey))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("consent store: reading consents: %w", err)
	}
	var cur storedConsents
	if err := json.Unmarshal(e.Value(), &cur); err != nil {
		return nil, fmt.Errorf("consent store: decoding stored consents: %w", err)
	}
	out := make([]Policy, 0, len(cur.Consents))
	for i, c := range cur.Consents {
		pol, issues := parseStored(c)
		if len(issues) > 0 {
			return nil, fmt.Errorf("consent store: stored consent %d: %w", i, issues)
		}
		out = append(out, pol)
	}
	return out, nil
}

// ImportOptOuts replaces the opt-out list with nhsNumbers, dated asOf (when
// the list was produced). Numbers that are no longer listed are removed
// and numbers newly listed added; those listed already are not written
// again, so importing the national list again (at each start, from a file
// that did not change) costs one read of the keys, not millions of
// writes. The date is written last, so an interrupted import leaves the
// previous date (or none) and the list goes stale rather than wrong.
func (s *Store) ImportOptOuts(ctx context.Context, nhsNumbers []string, asOf time.Time) error {
	want := make(map[string]bool, len(nhsNumbers))
	for i, n := range nhsNumbers {
		if !nhs.ValidNumber(n) {
			return fmt.Errorf("consent store: opt-out list entry %d is not a valid NHS number", i)
		}
		want[s.PatientHash(n)] = true
	}
	lister, err := s.optout.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("consent store: listing opt-outs: %w", err)
	}
	var stale []string
	have := map[string]bool{}
	for k := range lister.Keys() {
		switch {
		case k == asOfKey:
		case want[k]:
			have[k] = true
		default:
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		if err := s.optout.Delete(ctx, k); err != nil {
			return fmt.Errorf("consent store: removing an opt-out: %w", err)
		}
	}
	for k := range want {
		if have[k] {
			continue
		}
		if _, err := s.optout.Put(ctx, k, []byte("1")); err != nil {
			return fmt.Errorf("consent store: storing an opt-out: %w", err)
		}
	}
	if _, err := s.optout.Put(ctx, asOfKey, []byte(asOf.UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("consent store: storing the opt-out list date: %w", err)
	}
	return nil
}

// OptOutsAsOf returns the date of the stored opt-out list; ok is false
// when no list is stored or its date is unreadable.
func (s *Store) OptOutsAsOf(ctx context.Context) (asOf time.Time, ok bool, err error) {
	e, err := s.optout.Get(ctx, asOfKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("consent store: reading the opt-out list date: %w", err)
	}
	asOf, perr := time.Parse(time.RFC3339Nano, string(e.Value()))
	return asOf, perr == nil, nil
}

// OptedOut reports whether the patient is on the stored opt-out list,
// whatever the list's age: one read, for rules that show the flag (the
// consent decision itself uses OptOut, which also judges staleness).
func (s *Store) OptedOut(ctx context.Context, patientKey string) (bool, error) {
	_, err := s.optout.Get(ctx, s.PatientHash(patientKey))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("consent store: reading an opt-out: %w", err)
	}
	return true, nil
}

// OptOut returns the patient's opt-out state at now. The list is stale when
// it has no date or its date is more than OptOutMaxAge before now.
func (s *Store) OptOut(ctx context.Context, patientKey string, now time.Time) (OptOutStatus, error) {
	var st OptOutStatus
	e, err := s.optout.Get(ctx, asOfKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		st.Stale = true
	case err != nil:
		return st, fmt.Errorf("consent store: reading the opt-out list date: %w", err)
	default:
		asOf, perr := time.Parse(time.RFC3339Nano, string(e.Value()))
		st.Stale = perr != nil || now.Sub(asOf) > s.maxAge
	}
	_, err = s.optout.Get(ctx, s.PatientHash(patientKey))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return st, fmt.Errorf("consent store: reading an opt-out: %w", err)
	default:
		st.OptedOut = true
	}
	return st, nil
}

// Changes is what a consent decision rests on that can change after it:
// when each patient's Consents were last written (by bucket key; absent
// or zero: none stored), and, when asked for, which patients are on the
// opt-out list now.
type Changes struct {
	Patients map[string]time.Time
	OptedOut map[string]bool
}

// After reports whether, for the patients with bucket keys hashes, a
// Consent was written after t or, with optOut (the decision applied the
// opt-out gate, and so found none of them on the list), one of them is
// on the opt-out list now.
func (c Changes) After(hashes []string, t time.Time, optOut bool) bool {
	for _, h := range hashes {
		if c.Patients[h].After(t) || optOut && c.OptedOut[h] {
			return true
		}
	}
	return false
}

// LastChanges returns, for the patients with bucket keys hashes (see
// PatientHash), when each last had a Consent stored, replaced or
// withdrawn and, with optOut, whether each is on the opt-out list: one
// read a distinct patient, two with optOut. A decision that permitted a
// disclosure under the opt-out gate found its patients off the list, so a
// patient on it now was added since; an import that leaves a patient off
// changes nothing for them. Changes that come with time alone (a
// Consent's period ending, the list growing stale) are not writes and are
// not seen.
func (s *Store) LastChanges(ctx context.Context, hashes []string, optOut bool) (Changes, error) {
	c := Changes{Patients: make(map[string]time.Time, len(hashes))}
	if optOut {
		c.OptedOut = make(map[string]bool, len(hashes))
	}
	for _, h := range hashes {
		if _, done := c.Patients[h]; done {
			continue
		}
		e, err := s.consents.Get(ctx, h)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			c.Patients[h] = time.Time{}
		case err != nil:
			return c, fmt.Errorf("consent store: reading consents: %w", err)
		default:
			c.Patients[h] = e.Created()
		}
		if !optOut {
			continue
		}
		_, err = s.optout.Get(ctx, h)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return c, fmt.Errorf("consent store: reading an opt-out: %w", err)
		default:
			c.OptedOut[h] = true
		}
	}
	return c, nil
}
