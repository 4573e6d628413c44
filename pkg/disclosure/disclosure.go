// Package disclosure builds a patient's disclosure report from the audit
// trail: every release of the patient's data to another organisation
// (who received what, when, from where, for what purpose and on what
// legal basis, with what withheld) and every release consent refused.
//
// The report is found by the keyed patient hash every record of a
// patient's message carries (audit.Record.Patient), never by patient data
// in the trail. It scans the audit stream over the report's window once
// (see Builder and Build), plus short reads from the receipt of any
// release delivered in the window but routed before it; records written
// before every record carried the hash (only the translation record did)
// are found from their translations in a second scan with a look-back,
// only when the window holds such records. Its cost is therefore that of
// every audit record in the window, not of the patient's own records; a
// per-patient index of releases is the next step when windows grow
// large.
package disclosure

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/route"
)

// Kind is what an entry reports.
type Kind string

// Kinds of entry.
const (
	// KindRelease is data delivered to a recipient.
	KindRelease Kind = "release"
	// KindRefused is a release consent refused: nothing was sent.
	KindRefused Kind = "refused"
)

// Org is an organisation as a report names it: Junction's name for the
// input or destination and, when configured, its ODS code.
type Org struct {
	Name string `json:"name"`
	ODS  string `json:"ods,omitempty"`
}

// Redaction is one resource consent kept back from a release, or one
// count of those not listed one by one.
type Redaction struct {
	// Outcome is withheld (left out) or stripped (sent without some
	// elements).
	Outcome string `json:"outcome"`
	// Count is how many resources this line covers.
	Count int `json:"count"`
	// What says which entry and why, as the audit record put it (entry
	// position, resource type, reason; never patient data).
	What string `json:"what"`
	Rule string `json:"rule,omitempty"`
}

// Entry is one line of a disclosure report.
type Entry struct {
	Kind Kind `json:"kind"`
	// Time is when the recipient acknowledged the data (a release) or
	// when consent refused it.
	Time      time.Time `json:"time"`
	MessageID string    `json:"message_id"`
	Source    Org       `json:"source"`
	Recipient Org       `json:"recipient"`
	Route     string    `json:"route"`
	// Purpose and LegalBasis are the route's declared ones.
	Purpose    string `json:"purpose,omitempty"`
	LegalBasis string `json:"legal_basis,omitempty"`
	// Classes are the data classes sent: FHIR resource types, or the HL7
	// v2 message type of a raw payload.
	Classes []string `json:"classes,omitempty"`
	// Decision is consent's outcome: permit, redact or deny.
	Decision string `json:"decision,omitempty"`
	// Rule is the consent rule that decided.
	Rule string `json:"rule,omitempty"`
	// Reason says why consent refused (refusals only).
	Reason string `json:"reason,omitempty"`
	// Redactions list what consent kept back; Redacted counts it.
	Redactions []Redaction `json:"redactions,omitempty"`
	Redacted   int         `json:"redacted"`
	// OptOutGate reports that the national data opt-out was checked for
	// this release (purposes beyond individual care) or refused it.
	OptOutGate bool `json:"opt_out_gate"`
	// ResentAsStored marks a release an operator resent from the dead
	// letters as it was stored, its input being gone: consent was not
	// decided again, so Decision is the one made when it was first
	// routed.
	ResentAsStored bool `json:"resent_as_stored,omitempty"`
	// Withheld, in the auditor's view, marks an entry withheld from the
	// patient's report.
	Withheld *Withholding `json:"withheld,omitempty"`
	// At locates the audit record the entry was made from, for paging.
	At Cursor `json:"-"`
}

// Cursor locates one audit record: the audit stream sequence of its
// message and its index in that message.
type Cursor struct {
	Seq   uint64
	Index int
}

// After reports whether c comes after d.
func (c Cursor) After(d Cursor) bool {
	return c.Seq > d.Seq || (c.Seq == d.Seq && c.Index > d.Index)
}

// String encodes the cursor for a URL: seq.index.
func (c Cursor) String() string { return fmt.Sprintf("%d.%d", c.Seq, c.Index) }

// ParseCursor reads a cursor String made.
func ParseCursor(s string) (Cursor, error) {
	seq, idx, ok := strings.Cut(s, ".")
	if !ok {
		return Cursor{}, errors.New("not a paging cursor")
	}
	q, err1 := strconv.ParseUint(seq, 10, 64)
	i, err2 := strconv.Atoi(idx)
	c := Cursor{Seq: q, Index: i}
	if err1 != nil || err2 != nil || i < 0 || c.String() != s {
		return Cursor{}, errors.New("not a paging cursor")
	}
	return c, nil
}

// Directory gives organisations' ODS codes by Junction name.
type Directory struct {
	Sources      map[string]string
	Destinations map[string]string
}

// key is one destination of one route for one message.
type key struct{ msg, route, dest string }

// state is what the trail has said so far of one key.
type state struct {
	source     string
	decision   *audit.Record
	redactions []Redaction
	classes    []string
	// asStored: an operator resent the payload as stored since the
	// decision (audit.OutcomeResentAsStored).
	asStored bool
}

// Builder turns audit records into a patient's entries. Records that
// carry the patient's hash (audit.Record.Patient) are kept as they come,
// so one pass over the window's records finds them, whichever stage wrote
// them and however long after the translation.
//
// Records written before the stages all carried the hash have only the
// translation record naming the patient, and neither Patient nor
// NoPatient on their consent, queued and delivered records. For those the
// Builder falls back to two passes over the same records: Mark finds the
// patient's messages by their translation records, then Add (or AddAt)
// keeps those messages' records. Two passes, because the stages of one
// message write their records independently, so a delivery may be stored
// before the translation that names the patient. Add also marks, so a
// record stored after its translation is kept in one pass; Legacy reports
// whether Add met an old record of a message not marked yet, which only
// the fallback can place.
//
// Entries orders the kept records by time.
type Builder struct {
	at      Cursor
	patient string
	dir     Directory
	mine    map[string]bool
	kept    []kept
	legacy  bool
}

// kept is one record of the patient's and where it was read.
type kept struct {
	r  audit.Record
	at Cursor
}

// NewBuilder returns a builder for the patient with keyed hash patient.
func NewBuilder(patient string, dir Directory) *Builder {
	return &Builder{patient: patient, dir: dir, mine: map[string]bool{}}
}

// Mark takes a record of the fallback's first pass: a translation record
// naming the patient makes its message the patient's, so that Add keeps
// the message's records that do not carry the hash themselves.
func (b *Builder) Mark(r audit.Record) {
	if b.patient != "" && r.Event == audit.Translated && r.Patient == b.patient {
		b.mine[r.MessageID] = true
	}
}

// Add takes a record: one that carries the patient's hash is kept, and so
// is an old record (see Builder) of a message marked as the patient's.
func (b *Builder) Add(r audit.Record) {
	b.add(r, Cursor{})
}

// AddAt is Add for a record read at pos; the entries made from it carry
// its cursor. Every record of a pass must be given, in stream order.
func (b *Builder) AddAt(pos audit.Position, r audit.Record) {
	b.add(r, b.next(pos))
}

// next returns the cursor of the record read at pos.
func (b *Builder) next(pos audit.Position) Cursor {
	if pos.Seq != b.at.Seq {
		b.at = Cursor{Seq: pos.Seq}
	} else {
		b.at.Index++
	}
	return b.at
}

// Legacy reports whether Add met a record written before records carried
// the patient hash whose message was not marked as the patient's when it
// came: it may be the patient's, which only the fallback (Mark over the
// window and a look-back, then Add again) can tell.
func (b *Builder) Legacy() bool { return b.legacy }

// reported reports whether the report reads records of event ev.
func reported(ev audit.Event) bool {
	return ev == audit.Consent || ev == audit.Queued || ev == audit.Delivered || ev == audit.Replayed
}

// mineRecord reports whether r, a record the report reads, is the
// patient's: it carries the patient's hash, as its patient or as one of
// the further patients of a message about several, or it is an old
// record of a marked message.
func (b *Builder) mineRecord(r audit.Record) bool {
	switch {
	case slices.Contains(r.Patients, b.patient):
		return true
	case r.Patient != "":
		return r.Patient == b.patient
	case r.NoPatient:
		return false
	}
	return b.mine[r.MessageID]
}

func (b *Builder) add(r audit.Record, at Cursor) {
	if b.patient == "" {
		return
	}
	b.Mark(r)
	if r.Destination == "" || !reported(r.Event) {
		return
	}
	if !b.mineRecord(r) {
		if r.Patient == "" && !r.NoPatient {
			b.legacy = true
		}
		return
	}
	b.kept = append(b.kept, kept{r: r, at: at})
}

// restart forgets the records kept and the legacy note, keeping the
// marks, before the window is read again.
func (b *Builder) restart() {
	b.kept, b.at, b.legacy = nil, Cursor{}, false
}

// undecided returns the destinations (message, route, destination) of
// the releases kept whose routing records (consent decision, queued) are
// not: the message was routed before the window and delivered within it.
func (b *Builder) undecided() []key {
	routed := map[key]bool{}
	for _, k := range b.kept {
		if k.r.Event == audit.Queued {
			routed[key{k.r.MessageID, k.r.Route, k.r.Destination}] = true
		}
	}
	var out []key
	for _, k := range b.kept {
		id := key{k.r.MessageID, k.r.Route, k.r.Destination}
		if k.r.Event == audit.Delivered && !routed[id] {
			routed[id] = true
			out = append(out, id)
		}
	}
	return out
}

// complete keeps r, read at pos outside the window, if it is a routing
// record of the patient's for one of the destinations in wanted that is
// not yet complete. It reports whether r completed one: the queued record
// is the last one the route stage writes for a destination.
func (b *Builder) complete(pos audit.Position, r audit.Record, wanted map[key]bool) bool {
	at := b.next(pos)
	id := key{r.MessageID, r.Route, r.Destination}
	redecided := r.Event == audit.Replayed && r.Outcome == audit.OutcomeRedecided
	if !wanted[id] || (r.Event != audit.Consent && r.Event != audit.Queued && !redecided) || !b.mineRecord(r) {
		return false
	}
	b.kept = append(b.kept, kept{r: r, at: at})
	if r.Event == audit.Queued {
		delete(wanted, id)
		return true
	}
	return false
}

// clockSkew is how far the clock of a process delivering a payload may
// be behind that of the process that routed it (see ordered).
const clockSkew = 5 * time.Second

// ordered returns the records kept in the order their stages acted.
// Stages stamp their records when they act, so in time order a
// destination's decision comes before its queueing and delivery, except
// when the delivery stage runs in another process whose clock is behind:
// a delivery is therefore placed after its destination's routing
// records stamped up to clockSkew after it.
func (b *Builder) ordered() []kept {
	routed := map[key][]time.Time{}
	for _, k := range b.kept {
		if k.r.Event != audit.Delivered {
			id := key{k.r.MessageID, k.r.Route, k.r.Destination}
			routed[id] = append(routed[id], k.r.Time)
		}
	}
	type placed struct {
		kept
		at time.Time
	}
	recs := make([]placed, len(b.kept))
	for i, k := range b.kept {
		recs[i] = placed{k, k.r.Time}
		if k.r.Event != audit.Delivered {
			continue
		}
		for _, t := range routed[key{k.r.MessageID, k.r.Route, k.r.Destination}] {
			if !t.Before(recs[i].at) && !t.After(k.r.Time.Add(clockSkew)) {
				recs[i].at = t
			}
		}
	}
	sort.SliceStable(recs, func(i, j int) bool {
		if !recs[i].at.Equal(recs[j].at) {
			return recs[i].at.Before(recs[j].at)
		}
		// At one time, a delivery comes after the routing records.
		return recs[i].r.Event != audit.Delivered && recs[j].r.Event == audit.Delivered
	})
	out := make([]kept, len(recs))
	for i, r := range recs {
		out[i] = r.kept
	}
	return out
}

// Entries returns the entries of the records kept, oldest first.
func (b *Builder) Entries() []Entry {
	recs := b.ordered()
	states := map[key]*state{}
	var out []Entry
	for _, k := range recs {
		r := k.r
		id := key{r.MessageID, r.Route, r.Destination}
		st := states[id]
		if st == nil {
			st = &state{}
			states[id] = st
		}
		if r.Source != "" {
			st.source = r.Source
		}
		switch r.Event {
		case audit.Consent:
			switch r.Outcome {
			case route.OutcomeWithheld, route.OutcomeStripped:
				st.redactions = append(st.redactions, redaction(r))
			default:
				// A new decision (a replay decides again) starts afresh.
				rc := r
				st.decision, st.redactions, st.classes, st.asStored = &rc, nil, nil, false
				if r.Outcome == string(consent.Deny) {
					out = append(out, b.entry(KindRefused, r, k.at, st))
				}
			}
		case audit.Queued:
			st.classes = r.Classes
		case audit.Replayed:
			switch r.Outcome {
			case audit.OutcomeRedecided:
				// Decided again before it was sent: what is sent in its
				// place is the new decision's.
				st.classes = r.Classes
			case audit.OutcomeResentAsStored:
				st.asStored = true
			}
		case audit.Delivered:
			out = append(out, b.entry(KindRelease, r, k.at, st))
		}
	}
	// A delivery placed after later routing records keeps its own time.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// redaction reads a per-resource consent record.
func redaction(r audit.Record) Redaction {
	n := 1
	if r.Rule == "audit:limit" {
		var more int
		if _, err := fmt.Sscanf(r.Reason, "%d more", &more); err == nil && more > 0 {
			n = more
		}
	}
	return Redaction{Outcome: r.Outcome, Count: n, What: r.Reason, Rule: r.Rule}
}

// entry makes the entry for record r of a key in state st.
func (b *Builder) entry(kind Kind, r audit.Record, at Cursor, st *state) Entry {
	e := Entry{
		Kind: kind, Time: r.Time, MessageID: r.MessageID, Route: r.Route, At: at,
		Source:    Org{Name: st.source, ODS: b.dir.Sources[st.source]},
		Recipient: Org{Name: r.Destination, ODS: b.dir.Destinations[r.Destination]},
	}
	if d := st.decision; d != nil {
		e.Purpose, e.LegalBasis, e.Decision, e.Rule = d.Purpose, d.LegalBasis, d.Outcome, d.Rule
		// The organisations as they were when consent decided, where the
		// record says (records written before it did not).
		if d.RecipientODS != "" {
			e.Recipient.ODS = d.RecipientODS
		}
		if d.SourceODS != "" {
			e.Source.ODS = d.SourceODS
		}
		e.OptOutGate = strings.HasPrefix(d.Rule, "gate:opt-out") ||
			consent.OptOutApplies(consent.Purpose(d.Purpose), consent.LegalBasis(d.LegalBasis))
	}
	if kind == KindRefused {
		e.Reason = r.Reason
		return e
	}
	e.ResentAsStored = st.asStored
	e.Classes = append([]string(nil), st.classes...)
	e.Redactions = append([]Redaction(nil), st.redactions...)
	for _, x := range st.redactions {
		e.Redacted += x.Count
	}
	return e
}

// View selects what a report shows.
type View struct {
	// Auditor shows entries withheld from the patient, marked; otherwise
	// they are left out.
	Auditor bool
	// Proxy is a report for someone acting for the patient: entries
	// whose purpose is safeguarding are left out unless
	// IncludeSafeguarding, and the consent rules, reasons and per-resource
	// details (which can name sensitive labels such as sexual health, or
	// the patient's own opt-out) are left out of every entry, counts kept.
	Proxy               bool
	IncludeSafeguarding bool
}

// Apply returns the entries a view shows, given the patient's
// withholdings.
func Apply(entries []Entry, withheld []Withholding, v View) []Entry {
	out := make([]Entry, 0, len(entries))
	for _, e := range entries {
		if v.Proxy && !v.IncludeSafeguarding && e.Purpose == string(consent.PurposeSafeguarding) {
			continue
		}
		if w := find(withheld, e); w != nil {
			if !v.Auditor {
				continue
			}
			e.Withheld = w
		}
		if v.Proxy {
			e.Rule, e.Reason, e.Redactions = "", "", nil
		}
		out = append(out, e)
	}
	return out
}

// find returns the withholding that covers e, if any.
func find(ws []Withholding, e Entry) *Withholding {
	for i := range ws {
		if ws[i].MessageID == e.MessageID && ws[i].Destination == e.Recipient.Name {
			w := ws[i]
			return &w
		}
	}
	return nil
}

// Within returns the entries from from to to, inclusive.
func Within(entries []Entry, from, to time.Time) []Entry {
	out := make([]Entry, 0, len(entries))
	for _, e := range entries {
		if !e.Time.Before(from) && !e.Time.After(to) {
			out = append(out, e)
		}
	}
	return out
}

// Discloses reports whether a message's trail recs holds an entry of the
// patient's (keyed hash patient) disclosure report for destination: what
// a withholding can take out of the report.
func Discloses(recs []audit.Record, patient, destination string) bool {
	b := NewBuilder(patient, Directory{})
	for _, r := range recs {
		b.Mark(r)
	}
	for _, r := range recs {
		b.Add(r)
	}
	for _, k := range b.kept {
		if k.r.Destination == destination {
			return true
		}
	}
	return false
}
