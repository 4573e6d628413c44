package patient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/junction-fhir/junction/pkg/nhs"
)

// Result counts what one bundle did to the index. It holds no patient
// data, so it may be logged and counted.
type Result struct {
	// Event is the MessageHeader event code (for example "A40"), or "".
	Event string
	// Updated counts Patients whose data was written to a record.
	Updated int
	// Stale counts Patients ignored because their record was set by a
	// newer message.
	Stale int
	// Merged counts old records merged into a survivor.
	Merged int
	// Unindexed counts Patients with neither a valid NHS number nor a
	// local identifier the index knows, and merges whose survivor could
	// not be found.
	Unindexed int
	// IdentifiersDropped counts local identifiers beyond the first
	// MaxLocalIdentifiers of a Patient, which the index left out.
	IdentifiersDropped int
}

// ApplyJSON updates the index from a FHIR R4 message bundle in JSON; see
// Apply.
func (ix *Index) ApplyJSON(ctx context.Context, data []byte, src Source) (Result, error) {
	b, err := decodeBundle(data)
	if err != nil {
		return Result{}, err
	}
	return ix.Apply(ctx, b, src)
}

// Apply updates the index from a FHIR R4 message bundle as JSON-shaped
// maps (as the PAS translator emits and pkg/rules reads), received as
// src. Every Patient updates its record; Patients linked "replaced-by" to
// another Patient of the bundle are merged into it. See the package
// documentation for the rules. Apply is idempotent: applying the same
// bundle with the same Source again changes nothing, and finishes a merge
// interrupted part way.
func (ix *Index) Apply(ctx context.Context, bundle map[string]any, src Source) (Result, error) {
	p, err := parseBundle(bundle)
	if err != nil {
		return Result{}, err
	}
	res, _, err := ix.apply(ctx, &p, src)
	return res, err
}

// ApplyLookup applies the bundle as Apply does and returns the record
// Lookup would return right after, or nil where Lookup would return
// ErrNotFound. For a bundle of one Patient (or one patient's Flags) and
// no merge, as nearly every message is, the record is the one Apply just
// wrote or read, so no further read is made; otherwise the patient is
// looked up afresh. Routes call it once per message to fill the CEL
// variable `patient`.
func (ix *Index) ApplyLookup(ctx context.Context, bundle map[string]any, src Source) (Result, *Record, error) {
	p, err := parseBundle(bundle)
	if err != nil {
		return Result{}, nil, err
	}
	res, rec, err := ix.apply(ctx, &p, src)
	if err != nil {
		return res, nil, err
	}
	if len(p.patients) == 1 && len(p.merges) == 0 {
		// Nothing was written after the one record, and the record the
		// Patient resolves to is the one it was applied to.
		return res, rec, nil
	}
	rec, err = ix.lookup(ctx, &p)
	if errors.Is(err, ErrNotFound) {
		return res, nil, nil
	}
	return res, rec, err
}

// apply applies a parsed bundle and returns, with the result, the record
// the first Patient was applied to as it stood after (nil when it was
// not indexed).
func (ix *Index) apply(ctx context.Context, p *plan, src Source) (Result, *Record, error) {
	res := Result{Event: p.event, Unindexed: p.unresolved, IdentifiersDropped: p.droppedIDs}
	var first *Record
	for i := range p.patients {
		rec, err := ix.applyPatient(ctx, &p.patients[i], src, &res)
		if err != nil {
			return res, nil, err
		}
		if i == 0 {
			first = rec
		}
	}
	for i := range p.merges {
		if err := ix.applyMerge(ctx, &p.merges[i], src, &res); err != nil {
			return res, nil, err
		}
	}
	return res, first, nil
}

// locate returns the record key and NHS number for a Patient: by its NHS
// number, else by the first of its local identifiers the index knows.
// key is "" when neither finds one.
func (ix *Index) locate(ctx context.Context, pd *patientData) (key, nhsNumber string, err error) {
	if pd.nhsNumber != "" {
		key, err := ix.RecordKey(pd.nhsNumber)
		return key, pd.nhsNumber, err
	}
	for _, id := range pd.ids {
		ref, _, err := ix.readRef(ctx, ix.IdentifierKey(id))
		if err != nil {
			return "", "", err
		}
		if ref != nil {
			return ref.Record, "", nil
		}
	}
	return "", "", nil
}

// applyPatient writes one (not merged) Patient to its record and points
// its local identifiers at it. It returns the record as a fresh read
// would return it (following merges, as Lookup does), or nil when the
// Patient is not indexed.
func (ix *Index) applyPatient(ctx context.Context, pd *patientData, src Source, res *Result) (*Record, error) {
	key, num, err := ix.locate(ctx, pd)
	if err != nil {
		return nil, err
	}
	if key == "" {
		res.Unindexed++
		return nil, nil
	}
	stale := false
	rec, target, err := ix.update(ctx, key, num, func(r *Record) (bool, error) {
		// Flags are ordered each by its own source (setFlag), so an
		// older message still sets a flag the record has not seen.
		changed := false
		for _, fd := range pd.flags {
			changed = r.applyFlag(fd, src) || changed
		}
		if pd.flagsOnly {
			// Nothing new (every flag came from a newer message) is as
			// stale as old demographics.
			stale = !changed
			return changed, nil
		}
		stale = r.Version != 0 && !r.source().IsZero() && !src.After(r.source())
		if pd.nhsNumber != "" && r.NHSNumber != "" && r.NHSNumber != pd.nhsNumber {
			// Reached through a merge: a message on the retired number,
			// sent after the merge, is no source for the survivor's
			// demographics (they would become the retired record's).
			stale = true
		}
		if stale {
			// An older message's fields lose, but the local identifiers
			// it names are still this patient's: they are a set, not a
			// value a newer message replaces.
			for _, id := range pd.ids {
				changed = r.addIdentifier(id) || changed
			}
			return changed, nil
		}
		pd.applyTo(r, src)
		return true, nil
	})
	if errors.Is(err, ErrNotFound) {
		res.Unindexed++ // the identifier pointed at a record since removed
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if stale {
		res.Stale++
	} else {
		res.Updated++
	}
	for _, id := range pd.ids {
		if err := ix.pointIdentifier(ctx, id, target, src); err != nil {
			return nil, err
		}
	}
	out, err := ix.readBack(target, rec)
	if err != nil {
		return nil, err
	}
	if target != key {
		out.ResolvedFrom = pd.nhsNumber
	}
	return out, nil
}

// readBack returns a copy of r, the record at key, as read would return
// it. When the Index remembers the record at r's revision (it just wrote
// or read it), that stored JSON is decoded, which spares encoding r
// again; otherwise it is asRead(r).
func (ix *Index) readBack(key string, r *Record) (*Record, error) {
	if r.Version != 0 {
		if s, ok := ix.recent.get(key); ok && s.rev == r.Version {
			return decodeRecord(key, s.val, s.rev)
		}
	}
	return asRead(r)
}

// asRead returns a copy of r as read would return it: decoded from its
// stored JSON, so fields the encoding leaves out or normalises compare
// equal to a fresh read.
func asRead(r *Record) (*Record, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("patient index: encoding record: %w", err)
	}
	var out Record
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("patient index: decoding record: %w", err)
	}
	out.Version = r.Version
	return &out, nil
}

// applyTo sets the fields pd carries on r, adds its identifiers and
// stamps r with src.
func (pd *patientData) applyTo(r *Record, src Source) {
	for _, id := range pd.ids {
		r.addIdentifier(id)
	}
	if pd.family != "" || pd.given != nil {
		r.Family, r.Given = pd.family, slices.Clone(pd.given)
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&r.BirthDate, pd.birthDate)
	set(&r.Gender, pd.gender)
	set(&r.Postcode, pd.postcode)
	r.SetGP(pd.gpPractice, pd.gp, src)
	if pd.deceased != nil {
		r.Deceased = *pd.deceased
	}
	// Elements the message deleted (HL7 v2's explicit null).
	if pd.clearedAddress {
		r.Postcode = ""
	}
	if pd.clearedGP {
		r.ClearGP(src)
	}
	if pd.clearedDeceased {
		r.Deceased = false
	}
	if pd.restricted && src.After(r.RestrictedSource) {
		r.Restricted, r.RestrictedSource = true, src
	}
	r.UpdatedAt, r.MessageID = src.Received, src.MessageID
}

// applyMerge merges the old record(s) of m into the survivor's. The
// writes are ordered so that a crash part way leaves nothing lost and a
// redelivery finishes the merge: the survivor gains the identifiers and
// flags first, the identifiers are pointed at it next, and the old record
// is marked merged (and emptied) last, only if it did not change since it
// was read.
func (ix *Index) applyMerge(ctx context.Context, m *merge, src Source, res *Result) error {
	survivorKey, _, err := ix.locate(ctx, &m.survivor)
	if err != nil {
		return err
	}
	if survivorKey == "" {
		res.Unindexed++
		return nil
	}
	// The message says the survivor is active: a newer merge undoes an
	// older merge of the survivor itself (and so a loop).
	_, err = ix.modify(ctx, survivorKey, "", func(r *Record) (bool, error) {
		if r.MergedInto == "" || !src.After(r.MergeSource) {
			return false, nil
		}
		r.MergedInto, r.MergeSource = "", src
		return true, nil
	}, false)
	if errors.Is(err, ErrNotFound) {
		res.Unindexed++
		return nil
	}
	if err != nil {
		return err
	}
	target, err := ix.resolveKey(ctx, survivorKey)
	if err != nil {
		return err
	}
	survivor, err := ix.read(ctx, target)
	if err != nil {
		return err
	}
	if survivor == nil {
		res.Unindexed++
		return nil
	}

	// The old records: by the old NHS number and by the old identifiers.
	type oldRecord struct{ key, nhsNumber string }
	var olds []oldRecord
	if m.old.nhsNumber != "" {
		k, err := ix.RecordKey(m.old.nhsNumber)
		if err != nil {
			return err
		}
		olds = append(olds, oldRecord{k, m.old.nhsNumber})
	}
	for _, id := range m.old.ids {
		ref, _, err := ix.readRef(ctx, ix.IdentifierKey(id))
		if err != nil {
			return err
		}
		if ref == nil || ref.Source.After(src) {
			// A newer message pointed the identifier where it is now: the
			// record there is not the one this message retires.
			continue
		}
		if !slices.ContainsFunc(olds, func(o oldRecord) bool { return o.key == ref.Record }) {
			olds = append(olds, oldRecord{ref.Record, ""})
		}
	}

	// Identifiers named in the message move even when no old record
	// holds them.
	if err := ix.moveInto(ctx, target, m.old.ids, nil, false, src); err != nil {
		return err
	}
	for _, o := range olds {
		if o.key == target {
			continue
		}
		merged, err := ix.mergeOne(ctx, o.key, o.nhsNumber, target, survivor.NHSNumber, src)
		if err != nil {
			return err
		}
		if merged {
			res.Merged++
		}
	}
	return nil
}

// mergeOne merges the record at oldKey into the survivor at target. A
// missing old record with a known NHS number is created, merged, so that
// later messages for the old number reach the survivor. It reports
// whether it merged.
func (ix *Index) mergeOne(ctx context.Context, oldKey, oldNHS, target, survivorNHS string, src Source) (bool, error) {
	for attempt := 0; attempt < ix.attempts; attempt++ {
		old, err := ix.read(ctx, oldKey)
		if err != nil {
			return false, err
		}
		if old == nil && oldNHS == "" {
			return false, nil
		}
		if old != nil && old.MergeSource.After(src) {
			return false, nil // a newer message decided this record's merge
		}
		if old != nil && old.MergedInto != "" && len(old.Identifiers) == 0 && len(old.Flags) == 0 {
			// Done already when its chain ends at the survivor: merged
			// into it, or into a record merged on into it since (this
			// message applied again, or sent again). Rewriting it would
			// move it along the chain, and change what an undone later
			// merge leaves.
			into, err := ix.RecordKey(old.MergedInto)
			if err != nil {
				return false, err
			}
			end, err := ix.resolveKey(ctx, into)
			if err != nil {
				return false, err
			}
			if end == target {
				return false, nil
			}
		}
		if old != nil {
			if err := ix.moveInto(ctx, target, old.Identifiers, old.Flags, old.Restricted, src); err != nil {
				return false, err
			}
		}
		rec := old
		if rec == nil {
			rec = &Record{NHSNumber: oldNHS}
		}
		rec.MergedInto, rec.MergeSource = survivorNHS, src
		rec.Identifiers, rec.Flags = nil, nil
		val, err := jsonRecord(rec)
		if err != nil {
			return false, err
		}
		_, err = ix.put(ctx, oldKey, val, rec.Version)
		if isConflict(err) {
			continue // the old record changed: move what it has now
		}
		if err != nil {
			return false, fmt.Errorf("patient index: writing %s: %w", oldKey, err)
		}
		return true, nil
	}
	return false, ErrConflict
}

// moveInto adds identifiers, flags and the restricted marker to the
// record at target (following merges) and points the identifiers at it.
func (ix *Index) moveInto(ctx context.Context, target string, ids []Identifier, flags []Flag, restricted bool, src Source) error {
	if len(ids) == 0 && len(flags) == 0 && !restricted {
		return nil
	}
	_, final, err := ix.update(ctx, target, "", func(r *Record) (bool, error) {
		changed := false
		for _, id := range ids {
			changed = r.addIdentifier(id) || changed
		}
		for _, f := range flags {
			changed = r.setFlag(f) || changed
		}
		if restricted && !r.Restricted {
			r.Restricted, r.RestrictedSource = true, src
			changed = true
		}
		return changed, nil
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := ix.pointIdentifier(ctx, id, final, src); err != nil {
			return err
		}
	}
	return nil
}

// Lookup returns the record of the bundle's patient: the first Patient
// not merged into another, found by NHS number, else by a local
// identifier the index knows, following merges. It returns ErrNotFound
// when the index knows no such patient. Routes call it after Apply to
// fill the CEL variable `patient`.
func (ix *Index) Lookup(ctx context.Context, bundle map[string]any) (*Record, error) {
	p, err := parseBundle(bundle)
	if err != nil {
		return nil, err
	}
	return ix.lookup(ctx, &p)
}

// lookup is Lookup of a parsed bundle.
func (ix *Index) lookup(ctx context.Context, p *plan) (*Record, error) {
	for i := range p.patients {
		key, _, err := ix.locate(ctx, &p.patients[i])
		if err != nil {
			return nil, err
		}
		if key == "" {
			continue
		}
		rec, hops, err := ix.resolve(ctx, key)
		if err != nil {
			return nil, err
		}
		if rec == nil {
			continue
		}
		if hops > 0 {
			rec.ResolvedFrom = p.patients[i].nhsNumber
		}
		return rec, nil
	}
	return nil, ErrNotFound
}

// MergeInto merges the record of the NHS number old into the record of
// survivor, as a merge message (A40) naming the two numbers would, on
// behalf of src: the old record is marked merged and its local
// identifiers, flags and restricted marker move to the survivor. A
// missing survivor record is created; a missing old record is created
// merged, so later messages for the old number reach the survivor. It
// reports whether a record was merged (false when the merge was done
// already, or a newer Source decided the old record's merge).
func (ix *Index) MergeInto(ctx context.Context, old, survivor string, src Source) (bool, error) {
	oldN, survN := nhs.Normalize(old), nhs.Normalize(survivor)
	if !nhs.ValidNumber(oldN) || !nhs.ValidNumber(survN) {
		return false, ErrInvalidNHSNumber
	}
	if oldN == survN {
		return false, nil
	}
	// The survivor must exist for the merge to find it.
	if _, err := ix.change(ctx, survN, func(*Record) bool { return false }); err != nil {
		return false, err
	}
	var res Result
	m := merge{old: patientData{nhsNumber: oldN}, survivor: patientData{nhsNumber: survN}}
	if err := ix.applyMerge(ctx, &m, src, &res); err != nil {
		return false, err
	}
	return res.Merged > 0, nil
}
