package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/retryafter"
)

// HeaderRequestID carries the delivery's idempotency key to the server.
const HeaderRequestID = "X-Request-Id"

// maxReply is how much of a server's reply is kept in receipts and fault
// details (for the audit trail).
const maxReply = 4 << 10

// maxDrain is how much of the rest of a reply is read and discarded so the
// connection can be reused.
const maxDrain = 256 << 10

// Outbound delivers bundles to a FHIR server. It is safe for concurrent
// use.
//
// In transaction mode (the default) each delivery becomes a transaction
// Bundle POSTed to the base URL, built so that resending it changes
// nothing:
//
//   - MessageHeader entries are dropped, as are entries without a resource.
//   - A resource with an identifier becomes a conditional update,
//     PUT <Type>?identifier=<system>|<value>, using its NHS number
//     identifier if it has one, else its first identifier with both system
//     and value. Its id is removed, as FHIR requires for a conditional
//     update that may match a resource with another id.
//   - A resource without such an identifier becomes PUT <Type>/<id>, with
//     id = DeterministicUUID(idempotency key, fullUrl) written into the
//     resource, so retries and replays of the delivery update the same
//     resource. Different messages about an identifier-less resource
//     therefore create different resources: give resources identifiers.
//   - fullUrls are kept (urn:uuid: ones let references resolve inside the
//     transaction); an entry without one gets urn:uuid:DeterministicUUID(
//     idempotency key, "entry", index).
//   - In a delivery translated from HL7 v2 (a Bundle tagged
//     fhir.CodeSourceHL7v2 by the pas or pathology translator), a resource of a type in
//     OutboundConfig.Merge (Patient and Encounter by default) that would
//     be updated by identifier is first searched
//     for by that identifier (POST <Type>/_search, so the identifier stays
//     out of URLs and access logs). When exactly one resource carries it,
//     the entry becomes PUT <Type>/<server id>, with If-Match on the
//     server's meta.versionId when it gives one, holding the server's
//     copy with the delivery's elements laid over it (see
//     mergeResource): an HL7 v2 message that leaves a field out means no
//     change, so an A02 without PD1 must not delete the registered GP,
//     and elements other systems wrote stay. Elements the delivery marks
//     deleted (nhs.JunctionExtClearedElement: v2's explicit null, an
//     A13's withdrawn discharge, consent's withheld contact details) are
//     removed from the server's copy; in this mode the marks are never
//     sent. More than
//     one match, or two entries that are one resource, is a permanent
//     fault, except that an A34/A40's retired Patient carrying the
//     survivor's NHS number is folded into the survivor (its hospital
//     numbers kept with use "old"); a version conflict (409/412) after a
//     merge is transient: the next attempt reads again. A 409 is
//     transient in any case (see Send). A server that
//     gives no versionId is written without If-Match, so a change another
//     system makes between the read and the write is lost.
//   - In a delivery translated from HL7 v2, a DiagnosticReport written
//     with status cancelled or entered-in-error (a laboratory withdrawing
//     a report) also withdraws the results the stored report listed and
//     the delivery does not write: each becomes entered-in-error, its
//     value kept (see withdrawResults).
//
// In message mode the Bundle, which must be of type message, is POSTed
// unchanged to [base]/$process-message.
type Outbound struct {
	cfg     OutboundConfig
	base    string
	merges  map[string]bool
	secrets adapter.SecretResolver
	client  *http.Client
	log     *slog.Logger

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
}

var _ adapter.Outbound = (*Outbound)(nil)

// NewOutbound returns a destination for cfg. The authorization reference,
// if any, is resolved once here to fail early, and again for each request
// so rotated credentials are picked up.
func NewOutbound(set adapter.Settings, cfg OutboundConfig) (*Outbound, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, configError("outbound", errs)
	}
	set = withDefaults(set)
	o := &Outbound{
		cfg:     cfg,
		base:    strings.TrimRight(cfg.URL, "/"),
		secrets: set.Secrets,
		log:     set.Logger,
		merges:  make(map[string]bool, len(cfg.Merge)),
	}
	for _, t := range cfg.Merge {
		o.merges[t] = true
	}
	if jfhir.PlainBeyondLoopback(cfg.URL) {
		// Allowed (a trust's own network may carry plain HTTP), but said
		// at start: patient data and the authorization cross in clear.
		o.log.Warn("fhir destination sends patient data over plain HTTP to a host beyond this machine; use an https url", "destination", set.Name, "authorization", cfg.Authorization != "")
	}
	if cfg.Authorization != "" {
		if set.Secrets == nil {
			return nil, fault.New(fault.CodeConfig, "fhir: authorization: no secret resolver")
		}
		if _, err := o.authorization(); err != nil {
			return nil, err
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	o.client = &http.Client{
		Transport: tr,
		// A redirect of a POST would be followed as a GET: never follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return o, nil
}

// authorization resolves the Authorization header value.
func (o *Outbound) authorization() (string, error) {
	if o.cfg.Authorization == "" {
		return "", nil
	}
	// A secret that cannot be read, or reads empty, is taken for one
	// being replaced (a file rotated, a volume remounted): the attempt is
	// retried, and retries running out dead-letter the message.
	v, err := o.secrets.Resolve(o.cfg.Authorization)
	if err != nil {
		return "", fault.Wrap(fault.Transient, fault.CodeConfig, "fhir: authorization: cannot resolve secret reference", err)
	}
	v = strings.TrimRight(v, "\r\n")
	if v == "" {
		return "", &fault.Error{Code: fault.CodeConfig, Class: fault.Transient, Msg: "fhir: authorization: secret is empty"}
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return "", fault.New(fault.CodeConfig, "fhir: authorization: secret holds control characters")
		}
	}
	return v, nil
}

// Start does nothing; connections are made on demand.
func (o *Outbound) Start(context.Context) error { return nil }

// Shutdown refuses new deliveries, waits for those in progress (or for ctx
// to end) and closes idle connections. It is safe without Start and
// idempotent.
func (o *Outbound) Shutdown(ctx context.Context) error {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	done := make(chan struct{})
	go func() { o.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("fhir: outbound shutdown: %w", ctx.Err())
	}
	o.client.CloseIdleConnections()
	return nil
}

// Send delivers d. 2xx is success; 429, 5xx, timeouts and network errors
// are transient faults; other answers are permanent faults whose Detail is
// the server's OperationOutcome (or the start of its reply).
func (o *Outbound) Send(ctx context.Context, d *adapter.Delivery) (adapter.Receipt, error) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "fhir: destination shut down", nil)
	}
	o.inflight.Add(1)
	o.mu.Unlock()
	defer o.inflight.Done()

	switch d.ContentType {
	case "", envelope.ContentTypeFHIR, "application/json":
	default:
		return adapter.Receipt{}, fault.Newf(fault.CodeDestRejected, "fhir: cannot send content type %q to a FHIR server", d.ContentType)
	}
	auth, err := o.authorization()
	if err != nil {
		return adapter.Receipt{}, err
	}
	body, target, merged, err := o.request(ctx, d, auth)
	if err != nil {
		return adapter.Receipt{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return adapter.Receipt{}, fault.Wrap(fault.Permanent, fault.CodeConfig, "fhir: build request", err)
	}
	h := req.Header
	h.Set("Content-Type", jfhir.MediaTypeJSON)
	h.Set("Accept", jfhir.MediaTypeJSON)
	h.Set("Prefer", "return=OperationOutcome")
	if d.IdempotencyKey != "" {
		h.Set(HeaderRequestID, d.IdempotencyKey)
	}
	if auth != "" {
		h.Set("Authorization", auth)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		msg := "fhir: request failed"
		if why := fault.NetworkReason(err); why != "" {
			msg += ": " + why
		}
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, msg, err)
	}
	defer resp.Body.Close()
	reply, readErr := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	text := replyText(reply)
	status := resp.StatusCode
	switch {
	case status >= 200 && status < 300 && isHTML(resp.Header.Get("Content-Type")):
		// No FHIR server answers a POST with a web page; a proxy's or a
		// web server's default page does. Not taken for a delivery.
		return adapter.Receipt{}, fault.Newf(fault.CodeDestRejected, "fhir: server answered %d with an HTML page, not FHIR: is url the FHIR server's base?", status)
	case status >= 200 && status < 300:
		if readErr != nil {
			// The server said yes; a broken reply body does not change that.
			o.log.Debug("reply body unreadable", "destination", d.Destination, "error", readErr.Error())
		}
		loc := resp.Header.Get("Location")
		if loc == "" {
			loc = resp.Header.Get("Content-Location")
		}
		return adapter.Receipt{Status: strconv.Itoa(status), Reply: text, Location: loc}, nil
	case merged > 0 && (status == http.StatusConflict || status == http.StatusPreconditionFailed):
		// A merged resource changed at the server between its read and
		// this write (If-Match failed): the next attempt reads it again.
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable,
			fmt.Sprintf("fhir: server answered %d: a merged resource changed at the server meanwhile; it is read again on the next attempt", status), nil).
			WithDetail(outcomeOrText(reply, text))
	case status == http.StatusConflict:
		// A version conflict: servers answer 409 to the loser of two
		// writes of one resource at the same time (HAPI's "version
		// constraint failure"), as when deliveries for two patients
		// registered at one GP practice update its Organization at once.
		// The next attempt usually succeeds; one that never does is
		// dead-lettered when its retries run out.
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable,
			"fhir: server answered 409: a conflict, such as another write of the same resource at the same time; tried again", nil).
			WithDetail(outcomeOrText(reply, text))
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500:
		return adapter.Receipt{}, (&fault.Error{Code: fault.CodeDestUnavailable, Class: fault.Transient,
			Msg:        fmt.Sprintf("fhir: server answered %d", status),
			RetryAfter: retryafter.Parse(resp.Header.Get("Retry-After"), time.Now())}).WithDetail(outcomeOrText(reply, text))
	case status >= 300 && status < 400:
		// Redirects are not followed (a POST of patient data is not
		// resent to wherever a server points): the url is wrong.
		detail := "no Location given"
		if loc := resp.Header.Get("Location"); loc != "" {
			detail = "Location: " + loc
		}
		return adapter.Receipt{}, fault.Newf(fault.CodeDestRejected, "fhir: server answered %d, a redirect, which is not followed: set the destination's url to where it points", status).WithDetail(detail)
	default:
		return adapter.Receipt{}, fault.Newf(fault.CodeDestRejected, "fhir: server answered %d", status).WithDetail(outcomeOrText(reply, text))
	}
}

// isHTML reports whether a reply's Content-Type is an HTML page.
func isHTML(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "text/html" || mt == "application/xhtml+xml")
}

// request returns the body and URL to POST for d, and how many of its
// entries were merged into the server's copies.
func (o *Outbound) request(ctx context.Context, d *adapter.Delivery, auth string) ([]byte, string, int, error) {
	doc := stripBOM(d.Body)
	if o.cfg.Mode == ModeMessage {
		var head struct {
			ResourceType string `json:"resourceType"`
			Type         string `json:"type"`
		}
		if err := json.Unmarshal(doc, &head); err != nil {
			return nil, "", 0, fault.Wrap(fault.Permanent, fault.CodeTranslate, "fhir: delivery is not JSON", err).WithDetail(jsonError(err))
		}
		if head.ResourceType != "Bundle" || head.Type != "message" {
			return nil, "", 0, fault.New(fault.CodeTranslate, "fhir: message mode needs a Bundle of type message")
		}
		return doc, o.base + "/$process-message", 0, nil
	}
	tx, fromV2, err := transaction(doc, d.IdempotencyKey)
	if err != nil {
		return nil, "", 0, err
	}
	// A destination that reads before it writes (one that merges) keeps
	// a newer report's results from an older delivery's.
	older := false
	var keyed []keyedReports
	if fromV2 && len(o.merges) > 0 {
		if older, keyed, err = o.olderReport(ctx, &tx, auth); err != nil {
			return nil, "", 0, err
		}
	}
	// Before the merge, which rewrites the updates by identifier it
	// merges into updates by server id: the withdrawal finds reports and
	// the results the delivery writes by those identifiers.
	withdrawn, finalized := 0, 0
	if !older {
		if withdrawn, err = o.withdrawResults(ctx, &tx, auth, fromV2); err != nil {
			return nil, "", 0, err
		}
		if fromV2 {
			if finalized, err = o.finalizeStatusOnly(ctx, &tx, auth); err != nil {
				return nil, "", 0, err
			}
		}
	}
	merged, stale, err := o.mergeExisting(ctx, &tx, auth, fromV2, d.ReceivedAt)
	if err != nil {
		return nil, "", 0, err
	}
	// After the merge, which finds the delivery's Patient at the server.
	if err := o.otherPatientReport(ctx, &tx, keyed, auth); err != nil {
		return nil, "", 0, err
	}
	if older {
		createOnly(&tx)
		o.log.Info("delivery older than a report the server holds: its results were written only where missing", "message_id", d.MessageID, "destination", d.Destination)
	}
	if withdrawn > 0 {
		o.log.Info("results of a withdrawn report set to entered-in-error", "message_id", d.MessageID, "destination", d.Destination, "results", withdrawn)
		// Written with If-Match: a conflict means read again.
		merged += withdrawn
	}
	// Written with If-Match too.
	merged += finalized
	if stale > 0 {
		o.log.Info("delivery older than what wrote some of the server's elements; those were left as they are", "message_id", d.MessageID, "destination", d.Destination, "resources", stale)
	}
	body, err := marshalTransaction(tx)
	if err != nil {
		return nil, "", 0, err
	}
	return body, o.base, merged, nil
}

// replyText returns b as valid UTF-8 text.
func replyText(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

func outcomeOrText(reply []byte, text string) string {
	if s := jfhir.OutcomeText(reply); s != "" {
		return s
	}
	return text
}

// TransactionBundle converts a Bundle (or a single resource) into the
// idempotent transaction Bundle described on Outbound. key is the
// delivery's idempotency key.
func TransactionBundle(body []byte, key string) ([]byte, error) {
	tx, _, err := transaction(body, key)
	if err != nil {
		return nil, err
	}
	return marshalTransaction(tx)
}

// marshalTransaction encodes tx.
func marshalTransaction(tx models.Bundle) ([]byte, error) {
	out, err := json.Marshal(tx)
	if err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeTranslate, "fhir: marshal transaction Bundle", err)
	}
	return out, nil
}

// transaction builds the transaction Bundle TransactionBundle encodes,
// and reports whether the delivery is a Bundle translated from HL7 v2
// (jfhir.FromHL7v2).
func transaction(body []byte, key string) (tx models.Bundle, fromV2 bool, err error) {
	doc := stripBOM(body)
	rt, err := jfhir.ResourceType(doc)
	if err != nil {
		return models.Bundle{}, false, fault.Wrap(fault.Permanent, fault.CodeTranslate, "fhir: delivery is not a FHIR resource", err)
	}
	var entries []models.BundleEntry
	if rt == "Bundle" {
		var b models.Bundle
		if err := json.Unmarshal(doc, &b); err != nil {
			return models.Bundle{}, false, fault.Wrap(fault.Permanent, fault.CodeTranslate, "fhir: delivery Bundle does not decode", err).WithDetail(modelError(err))
		}
		entries = b.Entry
		fromV2 = jfhir.FromHL7v2(&b)
	} else {
		entries = []models.BundleEntry{{Resource: json.RawMessage(doc)}}
	}
	tx = models.Bundle{Type: models.BundleTypeTransaction}
	for i, e := range entries {
		if len(bytes.TrimSpace(e.Resource)) == 0 || string(e.Resource) == "null" {
			continue
		}
		ert, err := jfhir.ResourceType(e.Resource)
		if err != nil {
			return models.Bundle{}, false, fault.Wrap(fault.Permanent, fault.CodeTranslate, fmt.Sprintf("fhir: delivery Bundle entry %d is not a resource", i), err)
		}
		if ert == "MessageHeader" {
			continue
		}
		full := ""
		if e.FullUrl != nil {
			full = *e.FullUrl
		}
		if full == "" {
			full = "urn:uuid:" + jfhir.DeterministicUUID(key, "entry", strconv.Itoa(i))
		}
		var head struct {
			Identifier json.RawMessage `json:"identifier"`
		}
		if err := json.Unmarshal(e.Resource, &head); err != nil {
			return models.Bundle{}, false, fault.Wrap(fault.Permanent, fault.CodeTranslate, fmt.Sprintf("fhir: delivery Bundle entry %d does not decode", i), err)
		}
		var req models.BundleEntryRequest
		var res []byte
		if r := e.Request; r != nil && r.Method == models.HTTPVerbPOST && r.IfNoneExist != nil && *r.IfNoneExist != "" {
			// A conditional create: the sender wants the resource made
			// only when none matches, never an existing one replaced.
			q := *r.IfNoneExist
			req = models.BundleEntryRequest{Method: models.HTTPVerbPOST, Url: ert, IfNoneExist: &q}
			res, err = setID(e.Resource, "")
		} else if id, ok := pickIdentifier(identifiers(head.Identifier)); ok {
			req = models.BundleEntryRequest{Method: models.HTTPVerbPUT, Url: ert + "?" + identifierQuery(id)}
			res, err = setID(e.Resource, "")
		} else {
			rid := jfhir.DeterministicUUID(key, full)
			req = models.BundleEntryRequest{Method: models.HTTPVerbPUT, Url: ert + "/" + rid}
			res, err = setID(e.Resource, rid)
		}
		if err != nil {
			return models.Bundle{}, false, fault.Wrap(fault.Permanent, fault.CodeTranslate, fmt.Sprintf("fhir: delivery Bundle entry %d", i), err)
		}
		f := full
		tx.Entry = append(tx.Entry, models.BundleEntry{FullUrl: &f, Resource: res, Request: &req})
	}
	return tx, fromV2, nil
}

// pickIdentifier returns the NHS number identifier if there is one, else
// the first identifier with both system and value.
func pickIdentifier(ids []fhirIdentifier) (fhirIdentifier, bool) {
	for _, id := range ids {
		if id.System == nhs.SystemNHSNumber && id.Value != "" {
			return id, true
		}
	}
	for _, id := range ids {
		if id.System != "" && id.Value != "" {
			return id, true
		}
	}
	return fhirIdentifier{}, false
}

// identifierQuery returns "identifier=<system>|<value>" with FHIR search
// escaping (\ | , $) and URL query escaping.
func identifierQuery(id fhirIdentifier) string {
	esc := strings.NewReplacer(`\`, `\\`, `|`, `\|`, `,`, `\,`, `$`, `\$`)
	return "identifier=" + url.QueryEscape(esc.Replace(id.System)) + "|" + url.QueryEscape(esc.Replace(id.Value))
}

// setID rewrites the top-level "id" of a JSON object, keeping the order of
// the other members: id "" removes it; otherwise it is set (placed after
// resourceType when absent).
func setID(raw []byte, id string) ([]byte, error) {
	ms, err := members(raw)
	if err != nil {
		return nil, err
	}
	quotedID, _ := json.Marshal(id)
	out := make([]member, 0, len(ms)+1)
	wrote := id == ""
	for _, m := range ms {
		if m.key == "id" {
			if !wrote {
				out = append(out, member{"id", quotedID})
				wrote = true
			}
			continue
		}
		out = append(out, m)
		if m.key == "resourceType" && !wrote {
			out = append(out, member{"id", quotedID})
			wrote = true
		}
	}
	if !wrote {
		out = append(out, member{"id", quotedID})
	}
	return writeObject(out), nil
}
