package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fault"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/retryafter"
)

// withdrawnReport reports whether a DiagnosticReport's status says the
// laboratory withdrew it (OBR-25 X, or a report entered in error).
func withdrawnReport(res []byte) bool {
	var r struct {
		ResourceType string `json:"resourceType"`
		Status       string `json:"status"`
	}
	return json.Unmarshal(res, &r) == nil && r.ResourceType == "DiagnosticReport" &&
		(r.Status == "cancelled" || r.Status == "entered-in-error")
}

// withdrawResults withdraws the results of withdrawn reports. A
// laboratory withdrawing a report (OBR-25 X: "sample from the wrong
// patient") sends the report alone; written whole, it lists no results,
// and the Observations it listed before would stay at the server as
// final, looking current, detached from any report. So for each
// DiagnosticReport of an HL7 v2 delivery that tx writes by identifier
// with status cancelled or entered-in-error, the report stored at the
// server is read with its results (POST DiagnosticReport/_search with
// _include=DiagnosticReport:result; a result the server does not include
// is read by its reference, and one referred to by identifier only, as a
// status-only final's is, is found by a search), and each result tx does
// not write itself
// becomes, in tx, an update of the stored Observation to status
// entered-in-error (R4: "withdrawn following previous final release"),
// its value kept, with If-Match on its version. It returns how many
// Observations it withdrew. A corrected report with fewer results is
// left alone: some laboratories resend only the lines they corrected.
func (o *Outbound) withdrawResults(ctx context.Context, tx *models.Bundle, auth string, fromV2 bool) (int, error) {
	if !fromV2 {
		return 0, nil
	}
	// Most deliveries hold no withdrawn report: find them before building
	// anything, so the others pay for one look at each entry's URL.
	var reports []int
	for i, e := range tx.Entry {
		if r := e.Request; r != nil && r.Method == models.HTTPVerbPUT && strings.HasPrefix(r.Url, "DiagnosticReport?") && withdrawnReport(e.Resource) {
			reports = append(reports, i)
		}
	}
	if len(reports) == 0 {
		return 0, nil
	}
	// The result keys tx writes itself, by "system|value".
	writes := map[string]bool{}
	for _, e := range tx.Entry {
		if r := e.Request; r != nil && r.Method == models.HTTPVerbPUT && strings.HasPrefix(r.Url, "Observation?") {
			if id, ok := searchedIdentifier(strings.TrimPrefix(r.Url, "Observation?")); ok {
				writes[id.System+"|"+id.Value] = true
			}
		}
	}
	n := 0
	for _, i := range reports {
		id, ok := searchedIdentifier(strings.TrimPrefix(tx.Entry[i].Request.Url, "DiagnosticReport?"))
		if !ok {
			continue
		}
		stored, results, err := o.storedResults(ctx, id, auth)
		if err != nil {
			return 0, err
		}
		var head struct {
			Status string `json:"status"`
		}
		if reportStages[stored] >= reportStages["preliminary"] && reportStages[stored] < reportStages["cancelled"] &&
			json.Unmarshal(tx.Entry[i].Resource, &head) == nil && head.Status == "cancelled" {
			// OBR-25 X maps to cancelled ("not started or not
			// completed"); after results were released R4 calls it
			// entered-in-error ("withdrawn following a previous final
			// release").
			if tx.Entry[i].Resource, err = withStatus(tx.Entry[i].Resource, "entered-in-error"); err != nil {
				return 0, err
			}
		}
		for _, res := range results {
			var head struct {
				ID         string          `json:"id"`
				Status     string          `json:"status"`
				Identifier json.RawMessage `json:"identifier"`
			}
			if json.Unmarshal(res, &head) != nil || !fhirID.MatchString(head.ID) || head.Status == "entered-in-error" || head.Status == "cancelled" {
				continue
			}
			if slices.ContainsFunc(identifiers(head.Identifier), func(id fhirIdentifier) bool { return writes[id.System+"|"+id.Value] }) {
				continue
			}
			if slices.ContainsFunc(tx.Entry, func(e models.BundleEntry) bool {
				return e.Request != nil && e.Request.Url == "Observation/"+head.ID
			}) {
				continue // listed by two withdrawn reports
			}
			entry, err := o.statusUpdate(res, "Observation/"+head.ID, "entered-in-error")
			if err != nil {
				return 0, err
			}
			tx.Entry = append(tx.Entry, entry)
			n++
		}
	}
	return n, nil
}

// maxWithdrawnResults bounds the results of one withdrawn report read
// from the server.
const maxWithdrawnResults = 1000

// statusUpdate returns the transaction entry that sets the server's copy
// res, at target ("Observation/id"), to status, its other elements kept,
// guarded by If-Match on the version the server gave.
func (o *Outbound) statusUpdate(res []byte, target, status string) (models.BundleEntry, error) {
	_, version, err := serverHead(res)
	if err != nil {
		return models.BundleEntry{}, fault.Wrap(fault.Permanent, fault.CodeDestRejected, "fhir: a stored result", err)
	}
	body, err := withStatus(res, status)
	if err != nil {
		return models.BundleEntry{}, err
	}
	req := models.BundleEntryRequest{Method: models.HTTPVerbPUT, Url: target}
	if version != "" {
		tag := `W/"` + version + `"`
		req.IfMatch = &tag
	}
	full := o.base + "/" + target
	return models.BundleEntry{FullUrl: &full, Resource: body, Request: &req}, nil
}

// withStatus returns resource res with status status.
func withStatus(res []byte, status string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(res, &m); err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeTranslate, "fhir: setting a status", err)
	}
	m["status"], _ = json.Marshal(status)
	out, err := json.Marshal(m)
	if err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeTranslate, "fhir: setting a status", err)
	}
	return out, nil
}

// storedResults returns the status of the DiagnosticReport stored at the
// server under id and the Observations it lists as its results (none when
// no report carries it yet).
func (o *Outbound) storedResults(ctx context.Context, id fhirIdentifier, auth string) (string, []json.RawMessage, error) {
	form := identifierQuery(id) + "&_include=DiagnosticReport:result&_count=2"
	reply, err := o.get(ctx, http.MethodPost, o.base+"/DiagnosticReport/_search", form, auth, "the search of a withdrawn report", "")
	if err != nil {
		return "", nil, err
	}
	set, err := readSearchSet(reply, "the search of a withdrawn report")
	if err != nil {
		return "", nil, err
	}
	var reports []json.RawMessage
	included := map[string]json.RawMessage{}
	for _, e := range set.Entry {
		rt, err := jfhir.ResourceType(e.Resource)
		if err != nil {
			continue
		}
		var head struct {
			ID         string          `json:"id"`
			Identifier json.RawMessage `json:"identifier"`
		}
		if json.Unmarshal(e.Resource, &head) != nil {
			continue
		}
		switch {
		case rt == "DiagnosticReport" && e.match():
			if slices.Contains(identifiers(head.Identifier), id) {
				reports = append(reports, e.Resource)
			}
		case rt == "Observation" && head.ID != "":
			included["Observation/"+head.ID] = e.Resource
		}
	}
	switch len(reports) {
	case 0:
		return "", nil, nil
	case 1:
	default:
		return "", nil, fault.New(fault.CodeDestRejected, "fhir: more than one DiagnosticReport at the server carries the withdrawn report's identifier")
	}
	var report struct {
		Status string `json:"status"`
		Result []struct {
			Reference  string          `json:"reference"`
			Identifier *fhirIdentifier `json:"identifier"`
		} `json:"result"`
	}
	if err := json.Unmarshal(reports[0], &report); err != nil {
		return "", nil, fault.Wrap(fault.Permanent, fault.CodeDestRejected, "fhir: the stored withdrawn report does not decode", err)
	}
	if len(report.Result) > maxWithdrawnResults {
		return "", nil, fault.Newf(fault.CodeDestRejected, "fhir: the stored withdrawn report lists more than %d results", maxWithdrawnResults)
	}
	var out []json.RawMessage
	for _, r := range report.Result {
		if r.Reference == "" && r.Identifier != nil && r.Identifier.System != "" && r.Identifier.Value != "" {
			// A result referred to by its identifier (a status-only
			// final's): found by a search.
			res, err := o.observationBy(ctx, *r.Identifier, auth)
			if err != nil {
				return "", nil, err
			}
			if res != nil {
				out = append(out, res)
			}
			continue
		}
		ref := strings.TrimPrefix(r.Reference, o.base+"/")
		typ, rid, ok := strings.Cut(ref, "/")
		if !ok || typ != "Observation" || !fhirID.MatchString(rid) {
			continue // a contained or external result is not this server's to change
		}
		res, ok := included[ref]
		if !ok {
			b, err := o.get(ctx, http.MethodGet, o.base+"/Observation/"+url.PathEscape(rid), "", auth, "reading a result of a withdrawn report", "")
			if errors.Is(err, errNotFound) {
				continue // gone already
			}
			if err != nil {
				return "", nil, err
			}
			res = b
		}
		out = append(out, res)
	}
	return report.Status, out, nil
}

// observationBy returns the one Observation at the server carrying id,
// or nil when none or more than one does (a result the withdrawal cannot
// tell apart is left as it is).
func (o *Outbound) observationBy(ctx context.Context, id fhirIdentifier, auth string) (json.RawMessage, error) {
	reply, err := o.get(ctx, http.MethodPost, o.base+"/Observation/_search", identifierQuery(id)+"&_count=2", auth,
		"the search of a withdrawn report's result", "")
	if err != nil {
		return nil, err
	}
	set, err := readSearchSet(reply, "the search of a withdrawn report's result")
	if err != nil {
		return nil, err
	}
	var found []json.RawMessage
	for _, e := range set.Entry {
		var head struct {
			ResourceType string          `json:"resourceType"`
			Identifier   json.RawMessage `json:"identifier"`
		}
		if e.match() && json.Unmarshal(e.Resource, &head) == nil && head.ResourceType == "Observation" && slices.Contains(identifiers(head.Identifier), id) {
			found = append(found, e.Resource)
		}
	}
	if len(found) != 1 {
		return nil, nil
	}
	return found[0], nil
}

// searchSet is a search's answer as the destination reads it.
type searchSet struct {
	ResourceType string `json:"resourceType"`
	Total        *int   `json:"total"`
	Link         []struct {
		Relation string `json:"relation"`
	} `json:"link"`
	Entry []searchEntry `json:"entry"`
}

// searchEntry is one resource of a searchSet.
type searchEntry struct {
	Resource json.RawMessage `json:"resource"`
	Search   *struct {
		Mode string `json:"mode"`
	} `json:"search"`
}

// match reports whether the entry matched the search (rather than being
// included with a match, or an OperationOutcome).
func (e searchEntry) match() bool {
	return e.Search == nil || e.Search.Mode == "" || e.Search.Mode == "match"
}

// readSearchSet decodes the answer to what, a search.
func readSearchSet(reply []byte, what string) (searchSet, error) {
	var set searchSet
	if err := json.Unmarshal(stripBOM(reply), &set); err != nil || set.ResourceType != "Bundle" {
		return searchSet{}, fault.New(fault.CodeDestRejected, "fhir: "+what+" did not answer a Bundle")
	}
	return set, nil
}

// errNotFound marks a read the server answered 404.
var errNotFound = errors.New("not found")

// errGone marks a read the server answered 410: a deleted resource.
var errGone = errors.New("gone")

// get makes a read of the server (a search by POST form, or a GET) and
// returns its reply: 429, 408 and 5xx (but 501) are transient faults,
// other failures permanent ones naming what (a 404 to a GET wraps
// errNotFound, a 410 errGone), with hint after the status a refusal gives.
func (o *Outbound) get(ctx context.Context, method, target, form, auth, what, hint string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
	defer cancel()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(form)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fault.Newf(fault.CodeConfig, "fhir: build %s", what)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", jfhir.MediaTypeJSON)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		msg := "fhir: " + what + " failed"
		if why := fault.NetworkReason(err); why != "" {
			msg += ": " + why
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, msg, err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, maxSearchReply+1))
	status := resp.StatusCode
	switch {
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500 && status != http.StatusNotImplemented:
		return nil, (&fault.Error{Code: fault.CodeDestUnavailable, Class: fault.Transient,
			Msg:        fmt.Sprintf("fhir: server answered %d to %s", status, what),
			RetryAfter: retryafter.Parse(resp.Header.Get("Retry-After"), time.Now())}).WithDetail(searchDetail(reply))
	case status == http.StatusNotFound && method == http.MethodGet:
		return nil, fault.Wrap(fault.Permanent, fault.CodeDestRejected, "fhir: server answered 404 to "+what, errNotFound)
	case status == http.StatusGone && method == http.MethodGet:
		return nil, fault.Wrap(fault.Permanent, fault.CodeDestRejected, fmt.Sprintf("fhir: server answered %d to %s%s", status, what, hint), errGone).WithDetail(searchDetail(reply))
	case status < 200 || status >= 300:
		return nil, fault.Newf(fault.CodeDestRejected, "fhir: server answered %d to %s%s", status, what, hint).WithDetail(searchDetail(reply))
	case err != nil:
		return nil, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "fhir: reading the answer to "+what, err)
	case len(reply) > maxSearchReply:
		return nil, fault.Newf(fault.CodeDestRejected, "fhir: %s answered more than %d bytes", what, maxSearchReply)
	case isHTML(resp.Header.Get("Content-Type")):
		return nil, fault.Newf(fault.CodeDestRejected, "fhir: server answered %s with an HTML page, not FHIR: is url the FHIR server's base?", what)
	}
	return reply, nil
}
