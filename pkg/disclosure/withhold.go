package disclosure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/jserr"
)

// Bucket is the KV bucket of withholdings, keyed by patient hash.
const Bucket = "disclosure_withholdings"

// Limits on a withholding's text.
const (
	maxExemption = 200
	maxReason    = 2000
	maxName      = 64
)

// Withholding withholds one entry (a message's release to a destination)
// from the patient's report under an exemption of the Data Protection
// Act 2018 Schedule 3 (for example serious harm to the physical or
// mental health of the patient or another person), decided by an
// authorised person. Auditors still see the entry, marked.
type Withholding struct {
	MessageID   string `json:"message_id"`
	Destination string `json:"destination"`
	// Exemption names the Schedule 3 exemption relied on.
	Exemption string `json:"exemption"`
	// Reason is the decision-maker's explanation. It is kept in the
	// withholdings bucket only, never in the audit trail.
	Reason string `json:"reason"`
	// Time is when the entry was withheld.
	Time time.Time `json:"time"`
}

// Validate checks a withholding's fields. Its errors never quote them.
func (w Withholding) Validate() error {
	var errs []error
	if !validName(w.MessageID) {
		errs = append(errs, errors.New("message_id: required, up to 64 letters, digits, '-' and '_'"))
	}
	if !validName(w.Destination) {
		errs = append(errs, errors.New("destination: required, up to 64 letters, digits, '-' and '_'"))
	}
	if !validText(w.Exemption, maxExemption) {
		errs = append(errs, fmt.Errorf("exemption: required, up to %d characters of text", maxExemption))
	}
	if !validText(w.Reason, maxReason) {
		errs = append(errs, fmt.Errorf("reason: required, up to %d characters of text", maxReason))
	}
	return errors.Join(errs...)
}

func validName(s string) bool {
	if s == "" || len(s) > maxName {
		return false
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validText(s string, limit int) bool {
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > limit {
		return false
	}
	for _, c := range s {
		if unicode.IsControl(c) && c != '\n' && c != '\t' {
			return false
		}
	}
	return true
}

// Store keeps withholdings in the Bucket KV bucket: one key per patient
// hash, its value the JSON list of the patient's withholdings.
type Store struct {
	kv jetstream.KeyValue
}

// OpenStore opens the withholdings bucket, as buckets allows.
func OpenStore(ctx context.Context, js jetstream.JetStream, buckets bucket.Policy) (*Store, error) {
	kv, err := buckets.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Junction: disclosure report entries withheld from patients (DPA 2018 Schedule 3), by patient hash",
		History: 5, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", Bucket, err)
	}
	return &Store{kv: kv}, nil
}

// Withhold adds w to the patient's withholdings. Withholding the same
// entry again replaces the earlier decision.
func (s *Store) Withhold(ctx context.Context, patient string, w Withholding) error {
	if err := w.Validate(); err != nil {
		return err
	}
	for attempt := 0; attempt < 5; attempt++ {
		list, rev, err := read(ctx, s.kv, patient)
		if err != nil {
			return err
		}
		out := list[:0:0]
		for _, x := range list {
			if x.MessageID != w.MessageID || x.Destination != w.Destination {
				out = append(out, x)
			}
		}
		out = append(out, w)
		data, err := json.Marshal(out)
		if err != nil {
			return fmt.Errorf("encoding withholdings: %w", err)
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, patient, data)
		} else {
			_, err = s.kv.Update(ctx, patient, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return fmt.Errorf("storing withholding: %w", err)
		}
	}
	return errors.New("storing withholding: the patient's withholdings keep changing")
}

// isWrongSequence reports a compare-and-set that lost a race.
func isWrongSequence(err error) bool { return jserr.WrongLastSequence(err) }

// Withheld returns the patient's withholdings.
func (s *Store) Withheld(ctx context.Context, patient string) ([]Withholding, error) {
	list, _, err := read(ctx, s.kv, patient)
	return list, err
}

// ReadWithheld returns the patient's withholdings without creating the
// bucket: none when it does not exist.
func ReadWithheld(ctx context.Context, js jetstream.JetStream, patient string) ([]Withholding, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", Bucket, err)
	}
	list, _, err := read(ctx, kv, patient)
	return list, err
}

// read returns the patient's withholdings and their revision (0: none).
func read(ctx context.Context, kv jetstream.KeyValue, patient string) ([]Withholding, uint64, error) {
	e, err := kv.Get(ctx, patient)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading withholdings: %w", err)
	}
	var list []Withholding
	if err := json.Unmarshal(e.Value(), &list); err != nil {
		return nil, 0, fmt.Errorf("decoding withholdings: %w", err)
	}
	return list, e.Revision(), nil
}
