package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// maxOptOutBytes bounds an opt-out list: about twenty million numbers.
const maxOptOutBytes = 256 << 20

// maxReportedLines bounds the invalid line numbers a report lists.
const maxReportedLines = 1000

// optOutPoll is how often the opt-out file's modification time is checked.
const optOutPoll = time.Minute

// optOutList is a parsed national data opt-out list.
type optOutList struct {
	// numbers are the valid NHS numbers, normalised.
	numbers []string
	// invalid are the line numbers (from 1) that hold no valid NHS
	// number.
	invalid []int
	// header reports a first line without digits, taken as a CSV header.
	header bool
}

// parseOptOuts reads an opt-out list: one NHS number per line, or CSV
// with the number in the first column (spaces and hyphens inside the
// number allowed, quotes around it removed). Blank lines are skipped; a
// first line without any digit is a header. It fails only when the input
// cannot be read.
func parseOptOuts(r io.Reader) (optOutList, error) {
	var l optOutList
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	line, seen := 0, false
	for sc.Scan() {
		line++
		s := sc.Text()
		if line == 1 {
			s = strings.TrimPrefix(s, "\uFEFF")
		}
		if i := strings.IndexByte(s, ','); i >= 0 {
			s = s[:i]
		}
		s = strings.Trim(strings.TrimSpace(s), `"'`)
		if s == "" {
			continue
		}
		first := !seen
		seen = true
		if first && !strings.ContainsAny(s, "0123456789") {
			l.header = true
			continue
		}
		n := nhs.Normalize(s)
		if !nhs.ValidNumber(n) {
			l.invalid = append(l.invalid, line)
			continue
		}
		l.numbers = append(l.numbers, n)
	}
	if err := sc.Err(); err != nil {
		return optOutList{}, fmt.Errorf("reading the opt-out list at line %d: %w", line+1, err)
	}
	return l, nil
}

// OptOutReport is the answer to POST /api/optouts. It holds counts and
// line numbers, never an NHS number.
type OptOutReport struct {
	// Accepted counts the lines with a valid NHS number.
	Accepted int `json:"accepted"`
	// Invalid counts the lines without one; InvalidLines lists the first
	// of them by line number (from 1).
	Invalid      int   `json:"invalid"`
	InvalidLines []int `json:"invalid_lines"`
	// HeaderSkipped reports a first line taken as a CSV header.
	HeaderSkipped bool `json:"header_skipped,omitempty"`
	// AsOf is the date of the list.
	AsOf time.Time `json:"as_of"`
	// Imported reports that the list replaced the stored one.
	Imported bool `json:"imported"`
	// Stale reports a list already older than consent.opt_out_max_age,
	// which denies research and planning as no list would.
	Stale bool   `json:"stale,omitempty"`
	Error string `json:"error,omitempty"`
}

// report describes l dated asOf.
func (l optOutList) report(asOf time.Time) OptOutReport {
	rep := OptOutReport{Accepted: len(l.numbers), Invalid: len(l.invalid), InvalidLines: l.invalid, HeaderSkipped: l.header, AsOf: asOf}
	if len(rep.InvalidLines) > maxReportedLines {
		rep.InvalidLines = rep.InvalidLines[:maxReportedLines]
	}
	if rep.InvalidLines == nil {
		rep.InvalidLines = []int{}
	}
	return rep
}

// errNoValidNumbers refuses a list without a valid NHS number: an empty
// list would lift every opt-out, and a file read in the wrong format looks
// like one.
var errNoValidNumbers = errors.New("the list holds no valid NHS number; nothing imported")

// parseAsOf reads the as_of parameter: an RFC 3339 date (the start of
// that English calendar day, fhir.DateSpan) or date and time.
func parseAsOf(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("as_of is required: the date the list was produced (RFC 3339, such as 2026-12-01)")
	}
	if len(s) == len(time.DateOnly) {
		if t, _, err := fhir.DateSpan(s, false); err == nil {
			return t.UTC(), nil
		}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errors.New("as_of must be an RFC 3339 date (2026-12-01) or date and time (2026-12-01T06:00:00Z)")
	}
	return t.UTC(), nil
}

// errAsOfFuture refuses a list dated more than a day ahead.
var errAsOfFuture = errors.New("as_of is in the future")

// checkAsOf refuses a list date more than a day ahead (clocks and time
// zones differ by less).
func checkAsOf(asOf time.Time) error {
	if asOf.After(time.Now().Add(24 * time.Hour)) {
		return errAsOfFuture
	}
	return nil
}

// handleOptOuts replaces the national data opt-out list with the request
// body (see parseOptOuts), dated by the as_of query parameter. Lines
// without a valid NHS number are left out and reported by line number; a
// list with no valid number is refused.
func (e *Engine) handleOptOuts(w http.ResponseWriter, r *http.Request) {
	if e.consents == nil {
		writeJSON(w, http.StatusConflict, map[string]string{"error": "the opt-out list is used only by the consent engine (consent.engine: consent)"})
		return
	}
	asOf, err := parseAsOf(r.URL.Query().Get("as_of"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if err := checkAsOf(asOf); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	list, err := parseOptOuts(http.MaxBytesReader(w, r.Body, maxOptOutBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("the list is larger than %d bytes", int64(maxOptOutBytes))})
			return
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	rep := list.report(asOf)
	if len(list.numbers) == 0 {
		rep.Error = errNoValidNumbers.Error()
		writeJSON(w, http.StatusUnprocessableEntity, rep)
		return
	}
	// An older list than the stored one would make the engine's view
	// staler; it replaces it only when asked to (rolling back a bad list).
	if r.URL.Query().Get("replace_newer") != "true" {
		stored, ok, err := e.consents.OptOutsAsOf(r.Context())
		if err != nil {
			rep.Error = "reading the stored list's date: " + err.Error()
			writeJSON(w, http.StatusServiceUnavailable, rep)
			return
		}
		if ok && asOf.Before(stored) {
			rep.Error = fmt.Sprintf("a newer list (as_of %s) is stored; nothing imported (add replace_newer=true to replace it with this older one)", stored.Format(time.RFC3339))
			writeJSON(w, http.StatusConflict, rep)
			return
		}
	}
	if err := e.consents.ImportOptOuts(r.Context(), list.numbers, asOf); err != nil {
		e.log.Warn("opt-out list import failed", "from", "api", "accepted", rep.Accepted, "invalid", rep.Invalid, "err", err)
		rep.Error = err.Error()
		writeJSON(w, http.StatusServiceUnavailable, rep)
		return
	}
	rep.Imported = true
	rep.Stale = time.Since(asOf) > e.plan.Config.Consent.OptOutMaxAge
	e.log.Info("opt-out list imported", "from", "api", "accepted", rep.Accepted, "invalid", rep.Invalid, "as_of", asOf.Format(time.RFC3339), "stale", rep.Stale)
	writeJSON(w, http.StatusOK, rep)
}

// optOutFile loads the opt-out list from a file whenever its modification
// time changes; the modification time dates the list.
type optOutFile struct {
	path string
	log  *slog.Logger
	// load replaces the stored list.
	load func(ctx context.Context, numbers []string, asOf time.Time) error
	// stored, when set, returns the date of the list already stored: a
	// file whose modification time is that date is the list imported
	// before (by an earlier start), and is not read again.
	stored func(ctx context.Context) (asOf time.Time, ok bool, err error)

	mu sync.Mutex
	// loaded is the modification time of the file last dealt with (loaded,
	// or refused for its content); zero for none.
	loaded time.Time
	// missing reports that the last check found no readable file, so the
	// warning is logged once.
	missing bool
}

// check loads the file if its modification time differs from the one
// last dealt with. A file that changes while it is read is left for the
// next check; a failed import is tried again at the next check.
func (f *optOutFile) check(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	before, err := os.Stat(f.path)
	if err != nil {
		if !f.missing {
			f.log.Warn("opt-out file not readable; research and planning are denied once the stored list is stale", "path", f.path, "err", err)
		}
		f.missing = true
		return
	}
	f.missing = false
	mtime := before.ModTime()
	if mtime.Equal(f.loaded) {
		return
	}
	if f.loaded.IsZero() && f.stored != nil {
		if asOf, ok, err := f.stored(ctx); err == nil && ok && asOf.Equal(mtime.UTC()) {
			f.loaded = mtime
			f.log.Info("opt-out file unchanged since it was imported; not read again", "path", f.path, "as_of", asOf.Format(time.RFC3339))
			return
		}
	}
	fh, err := os.Open(f.path)
	if err != nil {
		f.log.Warn("opt-out file not readable", "path", f.path, "err", err)
		return
	}
	list, err := parseOptOuts(io.LimitReader(fh, maxOptOutBytes))
	_ = fh.Close()
	if err != nil {
		f.log.Warn("opt-out file not readable", "path", f.path, "err", err)
		return
	}
	after, err := os.Stat(f.path)
	if err != nil || !after.ModTime().Equal(mtime) || after.Size() != before.Size() {
		f.log.Info("opt-out file changed while being read; trying again at the next check", "path", f.path)
		return
	}
	if len(list.numbers) == 0 {
		f.log.Warn("opt-out file refused: "+errNoValidNumbers.Error(), "path", f.path, "invalid", len(list.invalid))
		f.loaded = mtime
		return
	}
	asOf := mtime.UTC()
	if err := f.load(ctx, list.numbers, asOf); err != nil {
		f.log.Warn("opt-out list import failed", "from", "file", "path", f.path, "accepted", len(list.numbers), "invalid", len(list.invalid), "err", err)
		return
	}
	f.loaded = mtime
	f.log.Info("opt-out list imported", "from", "file", "path", f.path, "accepted", len(list.numbers), "invalid", len(list.invalid), "as_of", asOf.Format(time.RFC3339))
}

// watchOptOutFile loads the opt-out file now and then checks it every
// optOutPoll until shutdown.
func (e *Engine) watchOptOutFile(ctx context.Context, path string) {
	f := &optOutFile{path: path, log: e.log, load: e.consents.ImportOptOuts, stored: e.consents.OptOutsAsOf}
	f.check(ctx)
	wctx, cancel := context.WithCancel(context.Background())
	e.stopWatch = cancel
	e.watching.Add(1)
	go func() {
		defer e.watching.Done()
		t := time.NewTicker(optOutPoll)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				f.check(wctx)
			}
		}
	}()
}

// maxFaultLines bounds the invalid line numbers a refused extract's
// dead-letter reason lists.
const maxFaultLines = 10

// optOutLoader loads the opt-out list delivered through a route (the
// optout-list destination) with the parser and checks of POST
// /api/optouts; see adapter.OptOutLoader.
type optOutLoader struct {
	e *Engine
}

// optOutLoader returns the loader of optout-list destinations, or nil
// when the consent engine is off.
func (e *Engine) optOutLoader() adapter.OptOutLoader {
	if e.consents == nil {
		return nil
	}
	return optOutLoader{e: e}
}

// LoadOptOuts implements adapter.OptOutLoader.
func (l optOutLoader) LoadOptOuts(ctx context.Context, extract []byte, asOf time.Time) (adapter.OptOutSummary, error) {
	e := l.e
	if len(extract) > maxOptOutBytes {
		return adapter.OptOutSummary{}, fault.Newf(fault.CodeDestRejected, "optout-list: the list is larger than %d bytes", int64(maxOptOutBytes))
	}
	if err := checkAsOf(asOf); err != nil {
		return adapter.OptOutSummary{}, fault.New(fault.CodeDestRejected, "optout-list: the list is dated in the future")
	}
	list, err := parseOptOuts(bytes.NewReader(extract))
	if err != nil {
		return adapter.OptOutSummary{}, fault.Wrap(fault.Permanent, fault.CodeDestRejected, "optout-list: the list is not readable", err)
	}
	rep := list.report(asOf)
	sum := adapter.OptOutSummary{Accepted: rep.Accepted, Invalid: rep.Invalid, InvalidLines: rep.InvalidLines}
	if len(list.numbers) == 0 {
		msg := "optout-list: " + errNoValidNumbers.Error()
		if n := len(list.invalid); n > 0 {
			msg += fmt.Sprintf(" (%d lines without one: lines %s)", n, adapter.OptOutSummary{InvalidLines: list.invalid}.InvalidLinesText(maxFaultLines))
		}
		return sum, fault.New(fault.CodeDestRejected, msg)
	}
	stored, ok, err := e.consents.OptOutsAsOf(ctx)
	if err != nil {
		return sum, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "optout-list: reading the stored list's date", err)
	}
	if ok && asOf.Before(stored) {
		sum.Superseded = true
		e.log.Info("opt-out list not imported: older than the stored one", "from", "route", "as_of", asOf.Format(time.RFC3339), "stored_as_of", stored.Format(time.RFC3339))
		return sum, nil
	}
	if err := e.consents.ImportOptOuts(ctx, list.numbers, asOf); err != nil {
		return sum, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "optout-list: storing the list", err)
	}
	sum.Stale = time.Since(asOf) > e.plan.Config.Consent.OptOutMaxAge
	e.log.Info("opt-out list imported", "from", "route", "accepted", sum.Accepted, "invalid", sum.Invalid, "as_of", asOf.Format(time.RFC3339), "stale", sum.Stale)
	return sum, nil
}

// optedOut is how routes read a patient's place on the opt-out list for
// patient.consent.optedOut: the consent store, or nil when the consent
// engine is off.
func (e *Engine) optedOut() func(ctx context.Context, nhsNumber string) (bool, error) {
	if e.consents == nil {
		return nil
	}
	return e.consents.OptedOut
}
