package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/disclosure"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/store"
)

// runAuditDisclosures prints a patient's disclosure report, read from the
// store's audit stream as the engine's admin API does. It scans every
// audit record in the window.
func runAuditDisclosures(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit disclosures", "", stderr)
	cfgPath := fs.String("c", "", "config file naming the NATS to read and the patient hash key (default: built-in defaults, embedded NATS under ./data; with embedded NATS, refused while the engine runs on the same data_dir: ask its admin API then)")
	number := fs.String("nhs-number", "", "the patient's NHS number (required)")
	from := fs.String("from", "", "start of the window: RFC 3339 time or YYYY-MM-DD (default: 90 days before --to)")
	to := fs.String("to", "", "end of the window: RFC 3339 time or YYYY-MM-DD (default: now)")
	format := fs.String("format", disclosure.FormatJSON, "json, csv or html")
	auditor := fs.Bool("auditor", false, "the auditor's view: show entries withheld from the patient, marked")
	proxy := fs.Bool("proxy", false, "a report for someone acting for the patient: leave out safeguarding entries")
	safeguarding := fs.Bool("include-safeguarding", false, "with --proxy, keep safeguarding entries")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *number == "" {
		fmt.Fprintln(stderr, "junction audit disclosures: --nhs-number is required")
		return errUsage
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	fail := func(err error) error {
		fmt.Fprintf(stderr, "junction audit disclosures: %v\n", err)
		return exitError{code: 1}
	}
	n := nhs.Normalize(*number)
	if !nhs.ValidNumber(n) {
		return fail(fmt.Errorf("--nhs-number: not a valid NHS number (10 digits with a valid check digit)"))
	}
	switch *format {
	case disclosure.FormatJSON, disclosure.FormatCSV, disclosure.FormatHTML:
	default:
		return fail(fmt.Errorf("--format: must be json, csv or html"))
	}
	f, t, err := disclosure.ParseWindow(*from, *to, time.Now())
	if err != nil {
		return fail(err)
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return fail(err)
	}
	st, err := store.Open(ctx, cfg.NATS, cfg.DataDir, config.Secrets{}, slog.New(slog.DiscardHandler))
	if err != nil {
		var inUse *store.InUseError
		if errors.As(err, &inUse) {
			// The hint names the endpoint, not the patient's number.
			err = fmt.Errorf("%w; while the engine runs, ask it instead: GET /api/patients/{nhs}/disclosures on its admin API (role auditor or patient_service)", err)
		}
		return fail(err)
	}
	defer st.Close()
	key, _, err := engine.PatientHashKey(ctx, st.JS, config.Secrets{}, cfg.Consent, cfg.NATS.Buckets())
	if err != nil {
		return fail(err)
	}
	patient := engine.PatientHash(key, n)
	withheld, err := disclosure.ReadWithheld(ctx, st.JS, patient)
	if err != nil {
		return fail(err)
	}
	rep, err := disclosure.Build(ctx, st.JS, patient, withheld, disclosure.Options{
		From: f, To: t, Directory: disclosure.DirectoryFrom(cfg.Consent),
		View: disclosure.View{Auditor: *auditor, Proxy: *proxy, IncludeSafeguarding: *safeguarding},
	})
	if err != nil {
		return fail(err)
	}
	if err := disclosure.Write(stdout, rep, *format); err != nil {
		return err
	}
	if len(rep.Unreadable) > 0 {
		// The CSV form has no note to carry it.
		fmt.Fprintf(stderr, "junction audit disclosures: %s\n", disclosure.IncompleteNote(rep.Unreadable))
		return exitError{code: 1}
	}
	return nil
}
