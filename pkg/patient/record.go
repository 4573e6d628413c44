// Package patient is Junction's patient index: one record per NHS number,
// kept in a JetStream KV bucket, that routes keep current from the
// messages they translate and read when they decide where a message goes.
//
// A record holds minimal demographics (name, birth date, gender,
// postcode, deceased), the registered GP practice (ODS code) and GP (GMP
// code), the local identifiers other systems know the patient by, flags
// (for example an active child-protection plan), a consent summary, the
// restricted (S-flag) marker and, after a merge, the NHS number of the
// surviving record.
//
// # Update rules
//
//   - A message never loses to an older one: each record remembers the
//     Source (receipt time, then message id) that last set its
//     demographics, and a Patient from an older or the same Source is
//     ignored. Flags, the consent summary and the restricted marker carry
//     their own Source or time and follow the same rule.
//   - A Patient resource sets the fields it carries and keeps the others:
//     an ADT message without PD1 does not clear the registered GP. One
//     marking an element deleted (nhs.JunctionExtClearedElement, from
//     HL7 v2's explicit null) clears it: address the postcode,
//     generalPractitioner the practice and GP (by GPSource, as SetGP),
//     deceased the deceased marker.
//   - The registered GP practice and GP carry their own Source
//     (GPSource), because a PDS lookup (package pds) sets them too: the
//     newer of a PD1 (by receipt) and a PDS answer (by the time PDS gave
//     it) wins; see Record.SetGP.
//   - A merge (a Patient with a link of type "replaced-by", as the PAS
//     translator emits for A34 and A40) sets MergedInto on the old record,
//     moves its local identifiers and flags to the survivor and points
//     those identifiers at the survivor. Every read and write follows
//     MergedInto chains, with a loop guard (ErrMergeLoop).
//   - A Patient without a valid NHS number updates the record its local
//     identifier points at, if any; otherwise it is counted as unindexed.
//
// # Keys
//
// Bucket keys never hold an NHS number or a local identifier: a record is
// stored under "p." and the hex HMAC-SHA256 of the normalised NHS number,
// and a local identifier under "x." and the hex HMAC-SHA256 of
// "system|value", whose value names the record key. Keys are safe to log;
// values hold patient data and never are.
package patient

import (
	"fmt"
	"slices"
	"time"
)

// Identifier is a local patient identifier (for example a hospital
// number): its FHIR system and value.
type Identifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

// Source identifies the message (or feed event) that set a value. Sources
// are ordered by receipt time, then by message id; Junction's message ids
// are time-sortable strings.
type Source struct {
	MessageID string    `json:"messageId,omitempty"`
	Received  time.Time `json:"received,omitzero"`
}

// After reports whether s is strictly newer than o.
func (s Source) After(o Source) bool {
	if !s.Received.Equal(o.Received) {
		return s.Received.After(o.Received)
	}
	return s.MessageID > o.MessageID
}

// IsZero reports whether s names nothing.
func (s Source) IsZero() bool { return s.MessageID == "" && s.Received.IsZero() }

// Flag is a coded marker on the patient, for example an active
// child-protection plan reported by social care.
type Flag struct {
	System  string `json:"system"`
	Code    string `json:"code"`
	Display string `json:"display,omitempty"`
	// Start and End bound the period the flag applies; zero means open.
	Start time.Time `json:"start,omitzero"`
	End   time.Time `json:"end,omitzero"`
	// Origin names the feed or system that asserted the flag, for example
	// "socialcare/LA-E09000033". It must not hold patient data.
	Origin string `json:"origin,omitempty"`
	// Source is the message that last set or cleared the flag.
	Source Source `json:"source"`
}

// ActiveAt reports whether the flag applies at t.
func (f Flag) ActiveAt(t time.Time) bool {
	if !f.Start.IsZero() && t.Before(f.Start) {
		return false
	}
	return f.End.IsZero() || t.Before(f.End)
}

// ConsentSummary is what a consent engine records about the patient's
// consent state, for rules to read. The index never decides consent.
type ConsentSummary struct {
	// HasActiveConsent reports at least one active FHIR Consent on file.
	HasActiveConsent bool `json:"hasActiveConsent,omitempty"`
	// OptedOut reports a national data opt-out.
	OptedOut bool `json:"optedOut,omitempty"`
	// UpdatedAt orders summaries: an older one never replaces a newer.
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
}

// PDSCheck records the last answered lookup of a patient in the Personal
// Demographics Service, so that the patient is looked up again only once
// the answer is old. It holds no more patient data than the record does.
type PDSCheck struct {
	// CheckedAt is when PDS answered.
	CheckedAt time.Time `json:"checkedAt,omitzero"`
	// Outcome is "found" or "not_found".
	Outcome string `json:"outcome,omitempty"`
	// VersionID is the PDS record's meta.versionId.
	VersionID string `json:"versionId,omitempty"`
	// GPPractice is the registered practice PDS gave ("" when it gave
	// none, as for a restricted patient).
	GPPractice string `json:"gpPractice,omitempty"`
}

// Record is one patient's index entry.
type Record struct {
	// NHSNumber is the normalised ten-digit NHS number.
	NHSNumber string `json:"nhsNumber"`
	// Identifiers are the local identifiers cross-referenced to the
	// record.
	Identifiers []Identifier `json:"identifiers,omitempty"`

	Family    string   `json:"family,omitempty"`
	Given     []string `json:"given,omitempty"`
	BirthDate string   `json:"birthDate,omitempty"` // FHIR date as sent
	Gender    string   `json:"gender,omitempty"`    // FHIR administrative gender code
	Postcode  string   `json:"postcode,omitempty"`
	Deceased  bool     `json:"deceased,omitempty"`

	// GPPractice is the ODS code of the registered GP practice; GP is the
	// GMP code of the registered GP. GPSource is the message (or PDS
	// lookup) that last set them; see SetGP.
	GPPractice string `json:"gpPractice,omitempty"`
	GP         string `json:"gp,omitempty"`
	GPSource   Source `json:"gpSource,omitzero"`
	// PDS is what the last answered lookup of the patient in the Personal
	// Demographics Service said; zero when the patient was never looked up.
	PDS PDSCheck `json:"pds,omitzero"`

	Flags   []Flag         `json:"flags,omitempty"`
	Consent ConsentSummary `json:"consent,omitzero"`

	// Restricted marks a restricted (S-flag) patient. A Patient labelled
	// R (v3 Confidentiality) sets it; only SetRestricted clears it.
	Restricted       bool   `json:"restricted,omitempty"`
	RestrictedSource Source `json:"restrictedSource,omitzero"`

	// MergedInto is the NHS number of the surviving record after a merge;
	// MergeSource is the message that merged it.
	MergedInto  string `json:"mergedInto,omitempty"`
	MergeSource Source `json:"mergeSource,omitzero"`

	// UpdatedAt and MessageID are the receipt time and id of the message
	// that last set the demographics or GP registration.
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
	MessageID string    `json:"messageId,omitempty"`

	// Version is the KV revision the record was read at, for optimistic
	// concurrency; it is not stored.
	Version uint64 `json:"-"`
	// ResolvedFrom is, when a read followed a merge, the NHS number asked
	// for; it is not stored.
	ResolvedFrom string `json:"-"`
}

// SetGP sets the registered GP practice and GP, each when not empty, on
// behalf of src, unless they were set by a Source as new or newer, and
// reports whether it changed the record. Every setter (a Patient's
// generalPractitioner, as PD1 gives it, and a PDS lookup) goes through
// it, so the newer of the two wins whichever arrives last: a PDS answer
// is dated by the time of the lookup, an ADT message by its receipt.
func (r *Record) SetGP(practice, gp string, src Source) bool {
	if practice == "" && gp == "" {
		return false
	}
	if !src.After(r.GPSource) {
		return false
	}
	if practice != "" {
		r.GPPractice = practice
	}
	if gp != "" {
		r.GP = gp
	}
	r.GPSource = src
	return true
}

// ClearGP removes the registered practice and GP, as a message saying the
// patient has none does, when src is newer than what set them; it reports
// whether it did.
func (r *Record) ClearGP(src Source) bool {
	if !src.After(r.GPSource) {
		return false
	}
	r.GPPractice, r.GP, r.GPSource = "", "", src
	return true
}

// source returns the Source of the record's demographics.
func (r *Record) source() Source { return Source{MessageID: r.MessageID, Received: r.UpdatedAt} }

// addIdentifier adds id unless the record already has it, and reports
// whether it was added.
func (r *Record) addIdentifier(id Identifier) bool {
	if slices.Contains(r.Identifiers, id) {
		return false
	}
	r.Identifiers = append(r.Identifiers, id)
	return true
}

// setFlag stores f, replacing a flag with the same system and code unless
// that one comes from a newer Source, and reports whether it changed the
// record.
func (r *Record) setFlag(f Flag) bool {
	for i, old := range r.Flags {
		if old.System == f.System && old.Code == f.Code {
			if !f.Source.After(old.Source) {
				return false
			}
			r.Flags[i] = f
			return true
		}
	}
	r.Flags = append(r.Flags, f)
	return true
}

// clearFlag ends the flag with system and code at the time at, on behalf
// of src, and reports whether it changed the record. The cleared flag
// stays, inactive from at, so that an older message setting it again
// loses; a flag never set is recorded as cleared for the same reason.
func (r *Record) clearFlag(system, code string, at time.Time, src Source) bool {
	f := Flag{System: system, Code: code, Start: at, End: at, Source: src}
	for _, old := range r.Flags {
		if old.System == system && old.Code == code {
			f = old
			f.Source = src
			if f.End.IsZero() || at.Before(f.End) {
				f.End = at
			}
			if !f.Start.IsZero() && f.Start.After(at) {
				f.Start = at
			}
		}
	}
	return r.setFlag(f)
}

// applyFlag applies one Flag resource received as src: an active one sets
// the flag, one no longer in force clears it (at its period's end, else
// at receipt). It reports whether the record changed.
func (r *Record) applyFlag(fd flagData, src Source) bool {
	if fd.cleared {
		at := fd.clearedAt
		if at.IsZero() {
			at = src.Received
		}
		return r.clearFlag(fd.flag.System, fd.flag.Code, at, src)
	}
	f := fd.flag
	f.Source = src
	return r.setFlag(f)
}

// String describes the record without patient data, for logs and errors.
func (r *Record) String() string {
	return fmt.Sprintf("patient record (version %d, %d identifiers, %d flags, merged %t)",
		r.Version, len(r.Identifiers), len(r.Flags), r.MergedInto != "")
}

// CEL returns the record as the CEL variable `patient` at the current
// time; see CELAt.
func (r *Record) CEL() map[string]any { return r.CELAt(time.Now()) }

// CELAt returns the record as JSON-shaped maps for the CEL variable
// `patient`, with flags judged active at now. A nil record gives an empty
// map, so `has(patient.nhsNumber)` tells a known patient. Keys:
//
//   - nhsNumber (string): the record's NHS number (the survivor's, after
//     a merge was followed).
//   - identifiers (list of maps with system, value): local identifiers.
//   - family (string), given (list of strings), birthDate (string,
//     FHIR date), gender (string), postcode (string), deceased (bool).
//   - gpPractice (string): ODS code of the registered practice; gp
//     (string): GMP code of the registered GP.
//   - flags (list of maps with code, system, display, origin, active
//     (bool), start and end (RFC 3339 strings, "" when open)).
//   - activeFlags (list of strings): the codes of the active flags.
//   - consent (map with hasActiveConsent, optedOut (bools)).
//   - restricted (bool): a restricted (S-flag) patient.
//   - merged (bool): the NHS number looked up was merged into this
//     record, or this record is merged into mergedInto (string).
//   - updated (string, RFC 3339) and messageId (string): the message
//     that last set the demographics.
func (r *Record) CELAt(now time.Time) map[string]any {
	if r == nil {
		return map[string]any{}
	}
	ids := make([]any, 0, len(r.Identifiers))
	for _, id := range r.Identifiers {
		ids = append(ids, map[string]any{"system": id.System, "value": id.Value})
	}
	flags := make([]any, 0, len(r.Flags))
	active := make([]any, 0, len(r.Flags))
	for _, f := range r.Flags {
		on := f.ActiveAt(now)
		flags = append(flags, map[string]any{
			"code": f.Code, "system": f.System, "display": f.Display, "origin": f.Origin,
			"active": on, "start": timeString(f.Start), "end": timeString(f.End),
		})
		if on {
			active = append(active, f.Code)
		}
	}
	given := make([]any, 0, len(r.Given))
	for _, g := range r.Given {
		given = append(given, g)
	}
	return map[string]any{
		"nhsNumber":   r.NHSNumber,
		"identifiers": ids,
		"family":      r.Family,
		"given":       given,
		"birthDate":   r.BirthDate,
		"gender":      r.Gender,
		"postcode":    r.Postcode,
		"deceased":    r.Deceased,
		"gpPractice":  r.GPPractice,
		"gp":          r.GP,
		"flags":       flags,
		"activeFlags": active,
		"consent": map[string]any{
			"hasActiveConsent": r.Consent.HasActiveConsent,
			"optedOut":         r.Consent.OptedOut,
		},
		"restricted": r.Restricted,
		"merged":     r.MergedInto != "" || r.ResolvedFrom != "",
		"mergedInto": r.MergedInto,
		"updated":    timeString(r.UpdatedAt),
		"messageId":  r.MessageID,
	}
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
