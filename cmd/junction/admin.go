package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/router"
)

// apiClient talks to a running engine's admin API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func (c *apiClient) do(ctx context.Context, method, path string, body any, out any) error {
	_, err := c.doHeader(ctx, method, path, body, out)
	return err
}

// doHeader is do, returning the answer's header too.
func (c *apiClient) doHeader(ctx context.Context, method, path string, body any, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.base, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("calling the admin API (is junction serve running?): %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		if resp.StatusCode == http.StatusUnauthorized {
			return nil, fmt.Errorf("%s: %s (give the token with --token env:NAME or file:PATH, or set JUNCTION_ADMIN_TOKEN)", resp.Status, e.Error)
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	return resp.Header, json.Unmarshal(data, out)
}

// apiOptions are the flags every admin API command takes.
type apiOptions struct {
	api, token, tlsCA, config *string
	fs                        *flag.FlagSet
}

func apiFlags(name, args string, stderr io.Writer) (*flag.FlagSet, apiOptions) {
	fs := newFlags(name, args, stderr)
	return fs, apiOptions{
		api:    fs.String("api", "http://127.0.0.1:8080", "base URL of the running engine's HTTP listener (https://... when http.tls is set)"),
		token:  fs.String("token", "", "reference to the admin bearer token (env:NAME or file:PATH; default env JUNCTION_ADMIN_TOKEN)"),
		tlsCA:  fs.String("tls-ca", "", "with an https --api: trust this CA certificate file (default: the system's roots)"),
		config: fs.String("c", "", "the running engine's config file: --api defaults to its http.listen"),
		fs:     fs,
	}
}

func newAPI(o apiOptions) (*apiClient, error) {
	engineCert := ""
	if *o.config != "" && !set(o.fs, "api") {
		a, err := readEngineAddrs(*o.config)
		if err != nil {
			return nil, err
		}
		*o.api, engineCert = a.api, a.apiCert
	}
	t, err := adminToken(*o.token)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	if *o.tlsCA != "" && !strings.HasPrefix(strings.ToLower(*o.api), "https://") {
		return nil, errors.New("--tls-ca is for an https --api URL; this one is not https")
	}
	var tr http.RoundTripper
	if engineCert != "" {
		tr, err = engineTransport(*o.api, engineCert, *o.tlsCA)
	} else {
		tr, err = httpsTransport(*o.tlsCA, "", "")
	}
	if err != nil {
		return nil, err
	}
	return &apiClient{base: *o.api, token: t, http: &http.Client{Timeout: 2 * time.Minute, Transport: tr}}, nil
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, opts := apiFlags("replay", "", stderr)
	var ids, to string
	fs.StringVar(&ids, "id", "", "message ids, comma-separated (dead letters, or stored messages to route again)")
	route := fs.String("route", "", "replay dead letters of this route")
	dest := fs.String("destination", "", "replay dead letters of this destination")
	since := fs.String("since", "", "only dead letters at or after this time: RFC 3339, or a duration before now such as 2h")
	until := fs.String("until", "", "only dead letters at or before this time: RFC 3339, or a duration before now such as 30m")
	fs.StringVar(&to, "to", "", "limit to these destinations, comma-separated (default: all)")
	asStored := fs.Bool("as-stored", false, "resend delivery dead letters whose input is past the ingress retention as stored, without deciding consent again (recorded)")
	again := fs.Bool("again", false, "with --id, route again a message that was delivered and has no dead letter, sending it to its receivers again")
	if err := parse(fs, args); err != nil {
		return err
	}
	if ids == "" && *route == "" && *dest == "" && *since == "" && *until == "" {
		fmt.Fprintln(stderr, "junction replay: say what to replay: --id, --route, --destination, or a window with --since (and --until)")
		return errUsage
	}
	req := engine.ReplayRequest{Filter: router.Filter{Route: *route, Destination: *dest}, AsStored: *asStored, Again: *again}
	if ids != "" {
		req.Filter.IDs = strings.Split(ids, ",")
	}
	if to != "" {
		req.Destinations = strings.Split(to, ",")
	}
	var err error
	now := time.Now()
	if req.Filter.Since, err = parseTime(*since, now); err != nil {
		return err
	}
	if req.Filter.Until, err = parseTime(*until, now); err != nil {
		return err
	}
	c, err := newAPI(opts)
	if err != nil {
		return err
	}
	// A replay of many dead letters takes as long as it takes (about 70
	// a second here); interrupting the command stops it.
	c.http.Timeout = 0
	var res router.ReplayResult
	if err := c.do(ctx, http.MethodPost, "/api/replay", req, &res); err != nil {
		return err
	}
	for _, d := range res.Replayed {
		fmt.Fprintf(stdout, "replayed %s (%s stage, %s: %s)\n", d.MessageID, d.Stage, deadLetterWhere(d), d.Code)
	}
	for _, d := range res.AlreadyReplayed {
		fmt.Fprintf(stdout, "already replayed %s by another replay at the same time (%s stage, %s)\n", d.MessageID, d.Stage, deadLetterWhere(d))
	}
	for _, id := range res.Rerouted {
		fmt.Fprintf(stdout, "rerouted %s\n", id)
	}
	for _, sk := range res.Skipped {
		fmt.Fprintf(stdout, "left %s (%s): %s\n", sk.MessageID, sk.Stage, sk.Why)
	}
	fmt.Fprintf(stdout, "%d replayed, %d rerouted, %d left in place\n", len(res.Replayed), len(res.Rerouted), len(res.Skipped))
	if len(res.Replayed) == 0 && len(res.AlreadyReplayed) == 0 && len(res.Rerouted) == 0 && len(res.Skipped) > 0 {
		// Nothing the request named could be sent again: say so to a
		// script as well as to the reader.
		return exitError{code: 1}
	}
	return nil
}

// deadLetterWhere names where d failed: its route, and its destination
// for a delivery.
func deadLetterWhere(d router.DeadLetter) string {
	var parts []string
	if d.Route != "" {
		parts = append(parts, "route="+d.Route)
	}
	if d.Destination != "" {
		parts = append(parts, "destination="+d.Destination)
	}
	return strings.Join(parts, " ")
}

// parseTime reads a replay window's end (router.ParseWindowTime).
func parseTime(s string, now time.Time) (time.Time, error) { return router.ParseWindowTime(s, now) }

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stderr, "Usage: junction audit trail [flags] MESSAGE-ID\n       junction audit find --control-id X [flags]\n       junction audit find --since T [--until T] [flags]\n       junction audit deadletters [flags]\n       junction audit quarantine [flags]\n       junction audit reconcile [flags]\n       junction audit verify [flags]\n       junction audit disclosures --nhs-number N [flags]\n       junction audit keygen --out PATH")
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	switch args[0] {
	case "trail":
		fs, opts := apiFlags("audit trail", "MESSAGE-ID", stderr)
		asJSON := fs.Bool("json", false, "print the whole record as JSON, including payloads where the caller may see them (recorded as payload access)")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			fs.Usage()
			return errUsage
		}
		c, err := newAPI(opts)
		if err != nil {
			return err
		}
		// Only --json shows payloads, so only --json asks for them: a
		// look at a message's path is not recorded as access to its
		// payloads (messages.payload).
		path := "/api/messages/" + url.PathEscape(fs.Arg(0))
		if !*asJSON {
			path += "?payloads=false"
		}
		var v engine.MessageView
		if err := c.do(ctx, http.MethodGet, path, nil, &v); err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(v); err != nil {
				return err
			}
			if v.Incomplete != "" {
				return exitError{code: 1}
			}
			return nil
		}
		fmt.Fprintf(stdout, "message %s\n", v.ID)
		// Columns aligned over the whole trail, times at a fixed width.
		var table bytes.Buffer
		tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
		for _, r := range v.Trail {
			where := strings.Trim(strings.Join([]string{r.Source, r.Route, r.Destination}, " "), " ")
			var more []string
			for _, x := range []string{r.Status, r.Code, r.Reason, r.Rule, r.Principal} {
				if x != "" {
					more = append(more, x)
				}
			}
			if r.Attempt > 0 {
				more = append(more, fmt.Sprintf("attempt %d", r.Attempt))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Time.UTC().Format(trailTime), r.Event, where, r.Outcome, strings.Join(more, "  "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		// A row with nothing in the last column would end in the padding
		// of the column before it.
		for _, line := range strings.SplitAfter(table.String(), "\n") {
			if line != "" {
				fmt.Fprintln(stdout, strings.TrimRight(line, " \n"))
			}
		}
		fmt.Fprintln(stdout, "(payloads not fetched; with the integration_engineer role, --json shows them and the access is recorded)")
		if v.Incomplete != "" {
			fmt.Fprintf(stdout, "INCOMPLETE: %s\n", v.Incomplete)
			return exitError{code: 1}
		}
		return nil
	case "find":
		return runFind(ctx, args[1:], stdout, stderr)
	case "reconcile":
		return runReconcile(ctx, args[1:], stdout, stderr)
	case "verify":
		return runAuditVerify(ctx, args[1:], stdout, stderr)
	case "disclosures":
		return runAuditDisclosures(ctx, args[1:], stdout, stderr)
	case "keygen":
		return runAuditKeygen(ctx, args[1:], stdout, stderr)
	case "deadletters":
		fs, opts := apiFlags("audit deadletters", "", stderr)
		route := fs.String("route", "", "only this route")
		dest := fs.String("destination", "", "only this destination")
		detail := fs.Bool("detail", false, "print each dead letter's detail too, such as the receiver's answer (it may quote patient data)")
		since := fs.String("since", "", "only dead letters at or after this time: RFC 3339, or a duration before now such as 2h")
		until := fs.String("until", "", "only dead letters at or before this time: RFC 3339, or a duration before now such as 30m")
		limit := fs.Int("limit", 0, "at most this many, the oldest (0: no limit)")
		newest := fs.Bool("newest", false, "with --limit, the newest that many rather than the oldest (still listed oldest first)")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		c, err := newAPI(opts)
		if err != nil {
			return err
		}
		q := url.Values{}
		if err := setWindow(q, *since, *until, time.Now()); err != nil {
			return err
		}
		if *limit > 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		if *route != "" {
			q.Set("route", *route)
		}
		if *dest != "" {
			q.Set("destination", *dest)
		}
		if *detail {
			q.Set("detail", "true")
		}
		if *newest {
			q.Set("newest", "true")
		}
		var dls []router.DeadLetter
		if err := c.do(ctx, http.MethodGet, "/api/deadletters?"+q.Encode(), nil, &dls); err != nil {
			return err
		}
		for _, d := range dls {
			fmt.Fprintf(stdout, "%s  %s  %-8s %s  %s: %s\n", d.Time.Format(time.RFC3339), d.MessageID, d.Stage, deadLetterWhere(d), d.Code, d.Reason)
			if d.Detail != "" {
				fmt.Fprintf(stdout, "    detail: %s\n", d.Detail)
			}
		}
		fmt.Fprintf(stdout, "%d dead letters\n", len(dls))
		return nil
	case "quarantine":
		fs, opts := apiFlags("audit quarantine", "", stderr)
		limit := fs.Int("limit", 100, "show at most this many, newest last")
		body := fs.Bool("body", false, "print the quarantined bytes too (they may hold patient data)")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		c, err := newAPI(opts)
		if err != nil {
			return err
		}
		var qs []engine.QuarantineEntry
		h, err := c.doHeader(ctx, http.MethodGet, fmt.Sprintf("/api/quarantine?limit=%d&body=%t", *limit, *body), nil, &qs)
		if err != nil {
			return err
		}
		var lost []router.LostRun
		if v := h.Get(engine.HeaderQuarantineUnreadable); v != "" {
			if err := json.Unmarshal([]byte(v), &lost); err != nil {
				return fmt.Errorf("reading the unreadable quarantine entries the engine named: %w", err)
			}
		}
		// Older runs than the header names (it names 16 at most).
		var older engine.UnreadableOmitted
		if v := h.Get(engine.HeaderQuarantineUnreadableOmitted); v != "" {
			if err := json.Unmarshal([]byte(v), &older); err != nil {
				return fmt.Errorf("reading the count of unreadable quarantine entries the engine did not name: %w", err)
			}
		}
		for _, q := range qs {
			size := fmt.Sprintf("%6d bytes", q.Size)
			if q.Received > q.Size {
				size = fmt.Sprintf("%6d bytes kept of %d", q.Size, q.Received)
			}
			from := ""
			if q.ControlID != "" {
				from = fmt.Sprintf("  control id %s from %s", q.ControlID, q.Sender)
			}
			fmt.Fprintf(stdout, "%s  %s  %-6s %s  %s%s\n", q.Time.Format(time.RFC3339), q.ID, q.Source, size, q.Reason, from)
			if *body {
				b := []byte(q.Body)
				if q.Encoding == "base64" {
					if raw, err := base64.StdEncoding.DecodeString(q.Body); err == nil {
						b = raw
					}
				}
				fmt.Fprintf(stdout, "%q\n", b)
			}
		}
		if older.Runs > 0 {
			runs := "runs"
			if older.Runs == 1 {
				runs = "run"
			}
			fmt.Fprintf(stdout, "(%d more quarantine entries, in %d older %s between entries %d and %d, cannot be read, the store's files damaged: input refused then cannot be listed)\n",
				older.Entries, older.Runs, runs, older.First, older.Last)
		}
		for _, r := range lost {
			fmt.Fprintf(stdout, "(quarantine entries %d-%d, kept between %s and %s, cannot be read, the store's files damaged: input refused then cannot be listed)\n",
				r.First, r.Last, orUnknown(r.After), orUnknown(r.Before))
		}
		fmt.Fprintf(stdout, "%d quarantined\n", len(qs))
		if len(lost) > 0 || older.Runs > 0 {
			// Refused input of the window may be missing from the list.
			return exitError{code: 1}
		}
		return nil
	}
	fmt.Fprintf(stderr, "junction audit: unknown subcommand %q (trail, find, deadletters, quarantine, reconcile, verify, disclosures, keygen)\n", args[0])
	return errUsage
}

// setWindow sets a request's since and until query parameters from the
// flags' times (RFC 3339, or durations before now), leaving out those not
// given. They keep their fractions of a second: a window ending now, cut
// to the second, would leave out what arrived in the second it was asked.
func setWindow(q url.Values, since, until string, now time.Time) error {
	for name, v := range map[string]string{"since": since, "until": until} {
		t, err := parseTime(v, now)
		if err != nil {
			return err
		}
		if !t.IsZero() {
			q.Set(name, t.UTC().Format(time.RFC3339Nano))
		}
	}
	return nil
}

// runFind lists the messages received with a sender's control id, or
// every message of a window. It exits 1 when there are none, so a script
// can tell, and when ingest log batches of the window were lost, or
// quarantine entries could not be read (damaged files), whose messages or
// refused input cannot be listed.
func runFind(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, opts := apiFlags("audit find", "", stderr)
	ctrl := fs.String("control-id", "", "the sender's message id: MSH-10, or a FHIR Bundle's identifier value (without it, every message received between --since and --until, now when not given)")
	sender := fs.String("sender", "", "only from this sender: APP|FACILITY (MSH-3|MSH-4), or APP for any facility")
	source := fs.String("source", "", "only from this input")
	since := fs.String("since", "24h", "received at or after this time: RFC 3339, or a duration before now such as 2h")
	until := fs.String("until", "", "received at or before this time: RFC 3339, or a duration before now such as 30m")
	if err := parse(fs, args); err != nil {
		return err
	}
	window := set(fs, "until") || set(fs, "since")
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	if *ctrl == "" && !window {
		fmt.Fprintln(stderr, "junction audit find: give --control-id, or --since (and --until, else now) to list every message received in a window")
		return errUsage
	}
	if *ctrl == "" && !set(fs, "until") {
		// "What came in the last ten minutes?": the window ends now.
		*until = time.Now().UTC().Format(time.RFC3339Nano)
	}
	c, err := newAPI(opts)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *ctrl != "" {
		q.Set("control_id", *ctrl)
	}
	now := time.Now()
	if err := setWindow(q, *since, *until, now); err != nil {
		return err
	}
	if *sender != "" {
		q.Set("sender", *sender)
	}
	if *source != "" {
		q.Set("source", *source)
	}
	var res router.FindResult
	if err := c.do(ctx, http.MethodGet, "/api/messages?"+q.Encode(), nil, &res); err != nil {
		return err
	}
	var table bytes.Buffer
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	// Accepted and refused together, in the order they came.
	all := append(slices.Clone(res.Messages), res.Quarantined...)
	slices.SortStableFunc(all, func(a, b router.Found) int { return a.ReceivedAt.Compare(b.ReceivedAt) })
	unknown := 0
	for _, f := range all {
		state := f.State
		if state == "unknown" {
			unknown++
		}
		switch {
		case f.State == "quarantined":
			state = "refused and quarantined: " + strings.Join(f.Outcomes, ", ")
		case f.Original != "":
			state += " of " + f.Original
		case len(f.Waiting) > 0:
			state += ", waiting for " + strings.Join(f.Waiting, ", ")
		case len(f.Outcomes) > 0:
			state += ", " + strings.Join(f.Outcomes, ", ")
		}
		if f.Incomplete != "" {
			state += " (trail incomplete: the store's files damaged)"
		}
		ctrlID := f.ControlID
		if ctrlID == "" {
			ctrlID = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.ReceivedAt.UTC().Format(trailTime), f.ID, f.Source, cell(f.Sender), cell(f.MessageType), cell(ctrlID), state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprint(stdout, table.String())
	if res.Truncated {
		fmt.Fprintln(stdout, "(more matched than are listed: narrow the window or name the sender)")
	}
	if unknown > 0 {
		fmt.Fprintf(stdout, "(%d shown as unknown: only the first 200 messages' trails are read; narrow the window, or give --control-id, to see theirs)\n", unknown)
	}
	for _, r := range res.Lost {
		fmt.Fprintf(stdout, "(ingest log batches %d-%d, acknowledged between %s and %s, were lost, the store's files damaged: messages in them cannot be found)\n",
			r.First, r.Last, orUnknown(r.After), orUnknown(r.Before))
	}
	for _, r := range res.QuarantineLost {
		fmt.Fprintf(stdout, "(quarantine entries %d-%d, kept between %s and %s, cannot be read, the store's files damaged: input refused then cannot be found)\n",
			r.First, r.Last, orUnknown(r.After), orUnknown(r.Before))
	}
	refused := ""
	if n := len(res.Quarantined); n > 0 {
		refused = fmt.Sprintf("; %d refused (listed above; junction audit quarantine shows the quarantine)", n)
	}
	if len(res.Messages) == 0 {
		// Say which window was searched, and when it reaches back past
		// the oldest input kept, that the store holds nothing older.
		from, _ := parseTime(*since, now)
		to, _ := parseTime(*until, now)
		what := "no message"
		if *ctrl != "" {
			what += fmt.Sprintf(" with control id %q", *ctrl)
		}
		window := "since " + from.UTC().Format(time.RFC3339)
		if !to.IsZero() {
			window = "between " + from.UTC().Format(time.RFC3339) + " and " + to.UTC().Format(time.RFC3339)
		}
		if !res.Retained.IsZero() && from.Before(res.Retained) {
			return fmt.Errorf("%s accepted %s (input is kept from %s, the oldest stored)%s", what, window, res.Retained.UTC().Format(time.RFC3339), refused)
		}
		return fmt.Errorf("%s accepted %s%s", what, window, refused)
	}
	fmt.Fprintf(stdout, "%d received; junction audit trail ID shows where each went%s\n", len(res.Messages), refused)
	if len(res.Lost) > 0 || len(res.QuarantineLost) > 0 {
		// Messages, or refused input, of the window may be missing from
		// the list.
		return exitError{code: 1}
	}
	return nil
}

// runReconcile lists accepted messages without a terminal state. It exits
// 1 when any is older than --older-than, so scripts can alert on orphans,
// and when audit records, ingress stream messages or ingest log batches
// could not be read (damaged files).
func runReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, opts := apiFlags("audit reconcile", "", stderr)
	olderThan := fs.Duration("older-than", 15*time.Minute, "report as orphans messages pending longer than this (0: every pending message)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	dest := fs.String("destination", "", "list only the pending messages waiting for delivery to this destination")
	since := fs.String("since", "", "only messages received at or after this time: RFC 3339, or a duration before now such as 24h (default: every retained message; a window bounds the time and memory a reconcile takes)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 || *olderThan < 0 {
		fs.Usage()
		return errUsage
	}
	c, err := newAPI(opts)
	if err != nil {
		return err
	}
	now := time.Now()
	q := url.Values{}
	if err := setWindow(q, *since, "", now); err != nil {
		return err
	}
	if *dest != "" {
		// For the engine to refuse a name it does not know (a typo would
		// read as "nothing waits for it"); the filtering is done here.
		q.Set("destination", *dest)
	}
	path := "/api/reconcile"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var rep audit.Reconciliation
	if err := c.do(ctx, http.MethodGet, path, nil, &rep); err != nil {
		return err
	}
	// What the pending messages wait for, counted: a destination that is
	// down shows as one line with its backlog.
	waits := map[string]int{}
	var orphans []audit.Pending
	forDest := 0
	for _, p := range rep.Pending {
		for _, w := range p.Waiting {
			waits[w]++
		}
		if *dest != "" && !p.WaitsFor(*dest) {
			continue
		}
		forDest++
		// 0 lists every pending message, those received while the
		// reconcile ran (after now, by the engine's clock) included.
		if *olderThan == 0 || now.Sub(p.Received) >= *olderThan {
			orphans = append(orphans, p)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		// A finished message counts under every outcome it reached, so
		// the outcomes break the finished messages down without adding
		// up to them.
		if rep.Since.IsZero() {
			fmt.Fprintf(stdout, "accepted %d\n", rep.Accepted)
		} else {
			fmt.Fprintf(stdout, "accepted %d (received since %s)\n", rep.Accepted, rep.Since.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(stdout, "  %-15s %d\n", "finished", rep.Accepted-len(rep.Pending))
		for _, o := range []string{audit.OutcomeDelivered, audit.OutcomeFiltered, audit.OutcomeConsentDenied, audit.OutcomeDeadLettered, audit.OutcomeDuplicate} {
			fmt.Fprintf(stdout, "    %-15s %d\n", o, rep.Terminal[o])
		}
		if *dest == "" {
			fmt.Fprintf(stdout, "  %-15s %d (%d older than %s)\n", "pending", len(rep.Pending), len(orphans), *olderThan)
		} else {
			fmt.Fprintf(stdout, "  %-15s %d, of which %d wait for %s (%d of those older than %s)\n", "pending", len(rep.Pending), forDest, *dest, len(orphans), *olderThan)
		}
		for _, w := range slices.Sorted(maps.Keys(waits)) {
			if *dest == "" || audit.WaitsForDestination(w, *dest) {
				fmt.Fprintf(stdout, "    waiting for %s: %d\n", w, waits[w])
			}
		}
		for _, p := range orphans {
			fmt.Fprintf(stdout, "%s  %-8s received %s (%s ago)  waiting for %s\n", p.ID, p.Source, p.Received.Format(time.RFC3339), now.Sub(p.Received).Round(time.Second), strings.Join(p.Waiting, ", "))
		}
		for _, r := range rep.Unreadable {
			fmt.Fprintf(stdout, "unreadable audit stream messages %d-%d: the store's files are damaged there, and messages whose records they held show as pending; restore the audit stream from a backup (the engine's log, component nats, names the failing block)\n", r.First, r.Last)
		}
		for _, r := range rep.IngestLogLost {
			fmt.Fprintf(stdout, "lost ingest log batches %d-%d, acknowledged between %s and %s: the store's files were damaged there, and the acknowledged messages in them, never routed, are not counted here; ask their senders to resend what they sent then\n",
				r.First, r.Last, orUnknown(r.After), orUnknown(r.Before))
		}
		for _, r := range rep.IngressUnreadable {
			fmt.Fprintf(stdout, "unreadable ingress stream messages %d-%d, stored between %s and %s: the store's files are damaged there; messages stored for routing then are counted by their audit records while the ingest log still holds them, and are missing here once it does not; restore the ingress stream from a backup (the engine's log, component nats, names the failing block)\n",
				r.First, r.Last, orUnknown(r.After), orUnknown(r.Before))
		}
	}
	if len(orphans) > 0 || len(rep.Unreadable) > 0 || len(rep.IngestLogLost) > 0 || len(rep.IngressUnreadable) > 0 {
		return exitError{code: 1}
	}
	return nil
}

// trailTime is the trail's time format: RFC 3339 in UTC to the
// microsecond, always the same width so the columns line up.
const trailTime = "2006-01-02T15:04:05.000000Z07:00"

// cell returns s, as a sender gave it (a control id, an application
// name), for one cell of a table: quoted, with escapes, when it holds
// control characters, tabs, line breaks or anything beyond ASCII, so it
// cannot break the table's lines or forge one (a right-to-left override
// included).
func cell(s string) string {
	for _, r := range s {
		if r < 0x20 || r >= 0x7f {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}

// orUnknown is t in RFC 3339, or "unknown" when zero.
func orUnknown(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format(time.RFC3339)
}
