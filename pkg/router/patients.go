package router

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/patient"
)

// patientView is what the patient index says about a message's patient,
// taken once per translation right after the message was applied to the
// index, and shared read-only by the routes of the source.
type patientView struct {
	// cel is the CEL variable patient: the record's map, or nil (an empty
	// map to CEL) when the patient is unknown.
	cel map[string]any
	// restricted reports a restricted (S-flag) patient.
	restricted bool
	// others and unidentified are the message's patients it does not
	// name by the NHS number the index knows them by: a relayed
	// message's patients named by a local identifier alone, and the
	// survivor of a merged number the message gives (see survivor); and
	// whether one is known to nobody (route.Input).
	others       []string
	unidentified bool
}

// indexTimeout bounds the index writes and reads of one message.
const indexTimeout = 30 * time.Second

// indexPatient applies a translated message to the patient index and
// returns the patient's record as it stands afterwards (a relayed one's
// is only read). A store that
// cannot be reached is a transient fault (the message is tried again,
// never dead-lettered); a bundle the index cannot read, or a record it
// cannot resolve, is counted and routed with the patient unknown.
func (r *Router) indexPatient(ctx context.Context, env *envelope.Envelope, tr *adapter.Translation) (patientView, error) {
	return r.indexMessage(ctx, env, tr, true)
}

// indexMessage is indexPatient; unless routed (for a source no route
// reads) it does not make the routes' view of the patient's record (the
// CEL variable, and the opt-out read it may hold), which nothing reads.
func (r *Router) indexMessage(ctx context.Context, env *envelope.Envelope, tr *adapter.Translation, routed bool) (patientView, error) {
	ix := r.o.Patients
	if tr.Parsed == nil {
		// Without a JSON bundle the route reports the message itself.
		return patientView{}, nil
	}
	if tr.Relayed {
		ctx, cancel := context.WithTimeout(ctx, indexTimeout)
		defer cancel()
		return r.relayedPatients(ctx, env, tr.Parsed)
	}
	ctx, cancel := context.WithTimeout(ctx, indexTimeout)
	defer cancel()
	if ix == nil {
		others, unidentified, err := r.unnamedPatients(ctx, env, tr.Parsed)
		return patientView{others: others, unidentified: unidentified}, err
	}
	count := func(outcome string, n int) {
		if n > 0 {
			r.o.Metrics.PatientIndex.WithLabelValues(env.Source, outcome).Add(float64(n))
		}
	}
	// One pass: the record comes back from applying the message, so a
	// message of one patient costs no further read.
	res, rec, err := ix.ApplyLookup(ctx, tr.Parsed, patient.Source{MessageID: env.ID, Received: env.ReceivedAt})
	count("updated", res.Updated)
	count("stale", res.Stale)
	count("merged", res.Merged)
	count("unindexed", res.Unindexed)
	count("identifiers_dropped", res.IdentifiersDropped)
	if err != nil {
		return r.indexFailed(env, err)
	}
	if rec != nil && r.o.PatientIndexed != nil {
		r.o.PatientIndexed(rec)
	}
	var view patientView
	if routed {
		if view, err = r.patientView(ctx, env, rec); err != nil {
			return patientView{}, err
		}
	}
	if n := survivor(rec); n != "" {
		view.others = []string{n}
	}
	others, unidentified, err := r.unnamedPatients(ctx, env, tr.Parsed)
	view.others, view.unidentified = append(view.others, others...), unidentified
	return view, err
}

// survivor returns, when rec was read by an NHS number merged into
// another (an A40, or PDS answering with a newer number), the surviving
// NHS number: the message is about that patient too, so consent decides
// by both numbers (one patient's opt-out recorded under the number now in
// use is not lost on a message sent with the old one) and the survivor's
// disclosure report shows the release.
func survivor(rec *patient.Record) string {
	if rec == nil || rec.ResolvedFrom == "" || rec.NHSNumber == rec.ResolvedFrom {
		return ""
	}
	return rec.NHSNumber
}

// relayedPatients reads, and never changes, the index records of the
// patients of bundle, a relayed message's translation (its PIDs are sent
// with a message Junction does not translate). The routes see the first
// PID's patient's record, and the message is restricted when any of its
// patients is: a bed swap's second patient may be the one whose address
// must not go.
func (r *Router) relayedPatients(ctx context.Context, env *envelope.Envelope, bundle map[string]any) (patientView, error) {
	var view patientView
	restricted, first := false, true
	var others []string
	unidentified := false
	for _, e := range patientEntries(bundle) {
		rec, found, err := r.lookupEntry(ctx, env, bundle, e)
		switch {
		case err != nil:
			return patientView{}, err
		case !found:
		case first:
			if view, err = r.patientView(ctx, env, rec); err != nil {
				return patientView{}, err
			}
		default:
			restricted = restricted || rec.Restricted
		}
		first = false
		// Consent is asked of every patient the message carries: one its
		// PID names by a local identifier alone is asked by the NHS
		// number the index knows, or else as a patient unknown.
		switch {
		case !namesNHS(e):
			others, unidentified = tell(rec, others, unidentified)
		case survivor(rec) != "":
			others = append(others, survivor(rec))
		}
	}
	view.restricted = view.restricted || restricted
	view.others, view.unidentified = others, unidentified
	return view, nil
}

// unnamedPatients returns, for a translated bundle of more than one
// Patient, the NHS numbers the index knows its Patients that name no NHS
// number by, and whether one is known to nobody: consent is asked of
// each, as of a relayed message's patients. (A bundle of one Patient is
// decided by its key, which the index has resolved already; a merge's
// retired record is its survivor.)
func (r *Router) unnamedPatients(ctx context.Context, env *envelope.Envelope, bundle map[string]any) ([]string, bool, error) {
	entries := patientEntries(bundle)
	if len(entries) < 2 {
		return nil, false, nil
	}
	var others []string
	unidentified := false
	for _, e := range entries {
		if namesNHS(e) || replaced(entryResource(e)) {
			continue
		}
		rec, _, err := r.lookupEntry(ctx, env, bundle, e)
		if err != nil {
			return nil, false, err
		}
		others, unidentified = tell(rec, others, unidentified)
	}
	return others, unidentified, nil
}

// replaced reports whether Patient res is replaced by another (a merge's
// retired record, the same person as its survivor).
func replaced(res map[string]any) bool {
	links, _ := res["link"].([]any)
	for _, l := range links {
		if lm, _ := l.(map[string]any); lm["type"] == "replaced-by" {
			return true
		}
	}
	return false
}

// patientEntries returns the entries of bundle whose resource is a
// Patient.
func patientEntries(bundle map[string]any) []any {
	entries, _ := bundle["entry"].([]any)
	var out []any
	for _, e := range entries {
		if rt, _ := entryResource(e)["resourceType"].(string); rt == "Patient" {
			out = append(out, e)
		}
	}
	return out
}

// entryResource returns the resource of Bundle entry e.
func entryResource(e any) map[string]any {
	em, _ := e.(map[string]any)
	res, _ := em["resource"].(map[string]any)
	return res
}

// namesNHS reports whether the resource of entry e names an NHS number.
func namesNHS(e any) bool {
	return len(consent.BundleNHSNumbers(entryResource(e))) > 0
}

// tell adds a patient named by a local identifier alone, whom the index
// knows as rec (nil: not at all), to those consent is asked of: by the
// NHS number the index knows, added to others, or else as a patient known
// to nobody.
func tell(rec *patient.Record, others []string, unidentified bool) ([]string, bool) {
	if rec != nil && rec.NHSNumber != "" {
		return append(others, rec.NHSNumber), unidentified
	}
	return others, true
}

// lookupEntry reads, and never changes, the index record of the Patient
// of entry e of bundle, reporting whether one was found. A record that
// cannot be read is a patient unknown (counted); only a store that
// cannot be reached is an error, to try the message again.
func (r *Router) lookupEntry(ctx context.Context, env *envelope.Envelope, bundle map[string]any, e any) (*patient.Record, bool, error) {
	if r.o.Patients == nil {
		// With no index, every patient is unknown to it.
		return nil, false, nil
	}
	one := map[string]any{"resourceType": "Bundle", "type": bundle["type"], "entry": []any{e}}
	rec, err := r.o.Patients.Lookup(ctx, one)
	switch {
	case errors.Is(err, patient.ErrNotFound):
		return nil, false, nil
	case err != nil:
		// A record that cannot be read is a patient unknown; the other
		// patients' restriction still counts.
		if _, err := r.indexFailed(env, err); err != nil {
			return nil, false, err
		}
		return nil, false, nil
	}
	return rec, true, nil
}

// patientView is what the routes see of rec, the record of env's patient
// (nil: none), with the opt-out list read now where a route reads it.
func (r *Router) patientView(ctx context.Context, env *envelope.Envelope, rec *patient.Record) (patientView, error) {
	if rec == nil {
		return patientView{}, nil
	}
	if r.o.OptedOut != nil && rec.NHSNumber != "" && r.patientRead[env.Source] {
		// The opt-out list is the consent engine's, read now so the
		// variable is always current; the index keeps no copy. Sources
		// whose routes never read the variable skip the read.
		out, err := r.o.OptedOut(ctx, rec.NHSNumber)
		if err != nil {
			return patientView{}, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "opt-out list unavailable", err)
		}
		rec.Consent.OptedOut = out
	}
	return patientView{cel: rec.CELAt(env.ReceivedAt), restricted: rec.Restricted}, nil
}

// indexFailed classifies an index error: what the message or the stored
// records make impossible is counted and leaves the patient unknown; the
// rest (the store unavailable, writers contending) is tried again later.
// The error never holds patient data.
func (r *Router) indexFailed(env *envelope.Envelope, err error) (patientView, error) {
	var pe *patient.ParseError
	if errors.As(err, &pe) || errors.Is(err, patient.ErrMergeLoop) || errors.Is(err, patient.ErrInvalidNHSNumber) {
		r.o.Metrics.PatientIndex.WithLabelValues(env.Source, "unreadable").Inc()
		return patientView{}, nil
	}
	// A record the store cannot hold (a huge name, say) would fail on
	// every retry.
	var apiErr *jetstream.APIError
	if errors.Is(err, nats.ErrMaxPayload) || errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		r.o.Metrics.PatientIndex.WithLabelValues(env.Source, "too_large").Inc()
		return patientView{}, nil
	}
	if errors.Is(err, patient.ErrConflict) {
		// The store answers; other processes updated the same record
		// first, again and again.
		return patientView{}, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "patient index record busy: other processes updating it; tried again", err)
	}
	return patientView{}, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "patient index unavailable", err)
}

// byPartition runs fn(0..len(envs)-1) with the messages of one partition
// one after another, in batch order, and partitions in parallel. Messages
// of one patient share a partition, so the later one is applied to the
// patient index (and reads it) only after the earlier one was applied.
func byPartition(envs []*envelope.Envelope, fn func(i int)) {
	var groups [][]int
	at := map[int]int{}
	for i, env := range envs {
		g, ok := at[env.Partition]
		if !ok {
			g = len(groups)
			at[env.Partition] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	parallel(len(groups), func(g int) {
		for _, i := range groups[g] {
			fn(i)
		}
	})
}
