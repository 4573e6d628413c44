package disclosure

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/router"
)

// DefaultWindow is how far back a report looks when no start is given.
const DefaultWindow = 90 * 24 * time.Hour

// Default look-back and look-ahead of the audit scan around a window.
const (
	// DefaultLookback is how long before the window the translation of a
	// release recorded the old way may have been recorded (delivery
	// retries included). It matters only for records written before every
	// record of a patient's message carried the patient hash (see
	// Builder): the report reads that far back only when the window holds
	// such records. Releases recorded since need no look-back, however
	// late their delivery.
	DefaultLookback = 24 * time.Hour
	// lookahead is how long after its time a record may reach the store.
	lookahead = 5 * time.Minute
	// idSkew is how long before its message id's time a message's
	// records may have been stored (clocks of different processes).
	idSkew = time.Minute
	// routeLag is how long after its receipt a message's routing records
	// are looked for (a route stage's backlog): it bounds the read for a
	// release whose routing records are not found.
	routeLag = 24 * time.Hour
)

// Options are a report's window, view and organisation names.
type Options struct {
	// From and To bound the entries' times (inclusive).
	From, To time.Time
	// Lookback is how far before From the fallback scan for old records
	// starts, to find the translations of messages released within the
	// window (default DefaultLookback). It is read only when the window
	// holds records written before every record carried the patient hash
	// (see Builder).
	Lookback  time.Duration
	View      View
	Directory Directory
}

// Report is a patient's disclosure report.
type Report struct {
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	Generated time.Time `json:"generated"`
	// View is patient or auditor.
	View    string  `json:"view"`
	Entries []Entry `json:"entries"`
	// Note says how the report was made, and first, when it is
	// incomplete, why.
	Note string `json:"note"`
	// Unreadable lists the runs of audit stream messages read for the
	// report that the store counts but cannot produce (its files are
	// damaged there): releases recorded in them are missing from it.
	Unreadable []audit.SeqRange `json:"unreadable,omitempty"`
}

// scanNote describes how reports are made.
const scanNote = "Built from the audit trail: every audit record stored in the window was read (and, for releases routed before the window, their routing records; for records of the older format, a look-back for translations). Releases are deliveries the recipient acknowledged; refusals are deliveries consent refused."

// Build reads the audit stream over the window and returns the report for
// the patient with keyed hash patient (see audit.Record.Patient), after
// the patient's withholdings (see Store) and the view.
func Build(ctx context.Context, js jetstream.JetStream, patient string, withheld []Withholding, opt Options) (*Report, error) {
	if patient == "" {
		return nil, errors.New("disclosure report: no patient")
	}
	if opt.To.Before(opt.From) {
		return nil, errors.New("disclosure report: the window ends before it starts")
	}
	b := NewBuilder(patient, opt.Directory)
	unreadable, err := collect(ctx, js, b, opt.From, opt.To, opt.Lookback)
	if err != nil {
		return nil, fmt.Errorf("disclosure report: %w", err)
	}
	view := "patient"
	if opt.View.Auditor {
		view = "auditor"
	}
	rep := &Report{
		From: opt.From, To: opt.To, Generated: time.Now().UTC(), View: view,
		Entries: Apply(Within(b.Entries(), opt.From, opt.To), withheld, opt.View),
		Note:    scanNote, Unreadable: unreadable,
	}
	if len(unreadable) > 0 {
		rep.Note = IncompleteNote(unreadable) + " " + scanNote
	}
	return rep, nil
}

// IncompleteNote says why a report is incomplete: the audit stream
// messages in runs could not be read. Each is named once, however the
// runs overlap (audit.MergeRuns).
func IncompleteNote(runs []audit.SeqRange) string {
	runs = audit.MergeRuns(runs)
	parts := make([]string, len(runs))
	for i, r := range runs {
		parts[i] = strconv.FormatUint(r.First, 10) + "-" + strconv.FormatUint(r.Last, 10)
	}
	return "INCOMPLETE: audit stream messages " + strings.Join(parts, ", ") + " could not be read (the store's files are damaged there), so releases recorded in them are missing from this report; restore the audit stream from a backup and make the report again."
}

// collect gives b the audit records it needs for a window from from to
// to: one pass over the records stored in the window; then, only if that
// met records of the old format (see Builder), the fallback: Mark over
// the look-back lb before the window (the window's translations were
// marked in the first pass) and Add over the window again; then the
// routing records, stored before the window, of releases delivered in it.
//
// Runs of audit messages the store cannot produce (damaged files) are
// skipped and returned merged (audit.MergeRuns): the passes can meet the
// same damage, or parts of it, each sequence is named once.
func collect(ctx context.Context, js jetstream.JetStream, b *Builder, from, to time.Time, lb time.Duration) ([]audit.SeqRange, error) {
	if lb <= 0 {
		lb = DefaultLookback
	}
	var unreadable []audit.SeqRange
	skip := func(r audit.SeqRange) { unreadable = append(unreadable, r) }
	window := audit.ScanOptions{From: from, To: to.Add(lookahead), Unreadable: skip}
	add := func(p audit.Position, r audit.Record) error {
		b.AddAt(p, r)
		return nil
	}
	if err := audit.ScanStream(ctx, js, window, add); err != nil {
		return nil, err
	}
	if b.Legacy() {
		before := audit.ScanOptions{From: from.Add(-lb), To: from.Add(-time.Nanosecond), Unreadable: skip}
		if err := audit.ScanStream(ctx, js, before, func(_ audit.Position, r audit.Record) error {
			b.Mark(r)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("looking back for translations of old records: %w", err)
		}
		b.restart()
		if err := audit.ScanStream(ctx, js, window, add); err != nil {
			return nil, fmt.Errorf("reading old records again: %w", err)
		}
	}
	if err := completeRouting(ctx, js, b, from, skip); err != nil {
		return nil, err
	}
	return audit.MergeRuns(unreadable), nil
}

// completeRouting reads, for each release kept whose routing records are
// not (its message was routed before the window start from), the audit
// stream from its message's receipt (the time in its id) until they turn
// up, and at most routeLag on or up to the window. The route stage records
// a message soon after its receipt, so each read is short however late
// the delivery, and a read keeps the routing records of other such
// releases it passes too. A release whose routing records are not found
// is reported without its decision and data classes.
func completeRouting(ctx context.Context, js jetstream.JetStream, b *Builder, from time.Time, unreadable func(audit.SeqRange)) error {
	wanted := map[key]bool{}
	var order []key
	for _, k := range b.undecided() {
		if _, ok := router.IDTime(k.msg); ok {
			wanted[k] = true
			order = append(order, k)
		}
	}
	sort.Slice(order, func(i, j int) bool { return order[i].msg < order[j].msg })
	for _, k := range order {
		if !wanted[k] {
			continue // found by an earlier read
		}
		at, _ := router.IDTime(k.msg)
		start, end := at.Add(-idSkew), from.Add(-time.Nanosecond)
		if !start.Before(from) {
			continue // routed within the window: its records, if any, were read
		}
		if lag := at.Add(routeLag); lag.Before(end) {
			end = lag
		}
		b.at = Cursor{}
		var doneSeq uint64
		opt := audit.ScanOptions{From: start, To: end, Unreadable: unreadable}
		err := audit.ScanStream(ctx, js, opt, func(p audit.Position, r audit.Record) error {
			if doneSeq != 0 && p.Seq != doneSeq {
				// The audit message that completed k has been read whole.
				return audit.ErrStopScan
			}
			b.complete(p, r, wanted)
			if !wanted[k] && doneSeq == 0 {
				doneSeq = p.Seq
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading the routing records of releases routed before the window: %w", err)
		}
	}
	return nil
}

// DirectoryFrom reads organisations' ODS codes from the consent config.
func DirectoryFrom(cc config.ConsentConfig) Directory {
	d := Directory{Sources: map[string]string{}, Destinations: map[string]string{}}
	for name, s := range cc.Sources {
		d.Sources[name] = s.ODS
	}
	for name, x := range cc.Destinations {
		d.Destinations[name] = x.ODS
	}
	return d
}

// ParseWindow reads a report's window: from and to as RFC 3339 times or
// dates (YYYY-MM-DD, English calendar days; a date to runs to the end of
// that day). Missing,
// to is now and from is DefaultWindow before to.
func ParseWindow(from, to string, now time.Time) (time.Time, time.Time, error) {
	parse := func(name, s string, end bool) (time.Time, error) {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t.UTC(), nil
		}
		if len(s) != len(time.DateOnly) {
			return time.Time{}, fmt.Errorf("%s: use an RFC 3339 time or a date (YYYY-MM-DD)", name)
		}
		start, next, err := fhir.DateSpan(s, false)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s: use an RFC 3339 time or a date (YYYY-MM-DD)", name)
		}
		if end {
			return next.Add(-time.Nanosecond).UTC(), nil
		}
		return start.UTC(), nil
	}
	t := now.UTC()
	if to != "" {
		var err error
		if t, err = parse("to", to, true); err != nil {
			return time.Time{}, time.Time{}, err
		}
	}
	f := t.Add(-DefaultWindow)
	if from != "" {
		var err error
		if f, err = parse("from", from, false); err != nil {
			return time.Time{}, time.Time{}, err
		}
	}
	if t.Before(f) {
		return time.Time{}, time.Time{}, errors.New("to: must not be before from")
	}
	return f, t, nil
}

// ParseDateParams reads FHIR date search parameters (prefix ge, gt, le,
// lt or eq, then a date of year, month or day precision or a dateTime
// with a zone) into a window. Missing bounds default as in ParseWindow.
func ParseDateParams(values []string, now time.Time) (time.Time, time.Time, error) {
	var from, to time.Time
	for _, v := range values {
		prefix := "eq"
		if len(v) > 2 && v[0] >= 'a' && v[0] <= 'z' {
			prefix, v = v[:2], v[2:]
		}
		start, end, err := dateRange(v)
		if err != nil {
			return time.Time{}, time.Time{}, err
		}
		switch prefix {
		case "ge":
			from = start
		case "gt":
			from = end
		case "le":
			to = end.Add(-time.Nanosecond)
		case "lt":
			to = start.Add(-time.Nanosecond)
		case "eq":
			from, to = start, end.Add(-time.Nanosecond)
		default:
			return time.Time{}, time.Time{}, errors.New("use the prefixes ge, gt, le, lt or eq")
		}
	}
	if to.IsZero() {
		to = now.UTC()
	}
	if from.IsZero() {
		from = to.Add(-DefaultWindow)
	}
	if to.Before(from) {
		return time.Time{}, time.Time{}, errors.New("the window ends before it starts")
	}
	return from, to, nil
}

// dateRange is the span a FHIR date or dateTime stands for, in UTC; a
// date is an English calendar day (fhir.DateSpan).
func dateRange(s string) (time.Time, time.Time, error) {
	from, until, err := fhir.DateSpan(s, false)
	if err != nil {
		return time.Time{}, time.Time{}, errors.New("use a date (YYYY, YYYY-MM, YYYY-MM-DD) or a dateTime with a zone")
	}
	return from.UTC(), until.UTC(), nil
}
