package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fault"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/retryafter"
)

// DefaultMergeTypes returns the resource types a fhir destination merges
// into the server's copy unless its config says otherwise: the two an HL7
// v2 feed describes a little at a time. An A02 carries no PD1, an A03 may
// carry no attending doctor; replacing the server's Patient or Encounter
// with what such a message holds would delete the registered GP or the
// doctor there.
func DefaultMergeTypes() []string { return []string{"Patient", "Encounter"} }

// maxSearchReply bounds the search reply read before a merge: a searchset
// of one or two resources is far smaller.
const maxSearchReply = 4 << 20

// fhirID is the FHIR id type: the only ids merged into a request URL.
var fhirID = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// mergeTarget is a transaction entry whose resource is merged into the
// server's copy: its index, resource type and identifier query.
type mergeTarget struct {
	entry int
	typ   string
	query string
}

// mergeExisting reads, for each entry of tx that updates a resource of a
// merged type by identifier, the server's copy, and when exactly one
// matches turns the entry into an update of that resource by id, guarded
// by its version (If-Match), holding the server's copy with the entry's
// elements laid over it (see mergeResource). A resource with the REDACTED
// security label is not merged but replaces. With no match the entry stays
// a conditional update, which creates the resource; with several it stays
// one too, and the server refuses it as ambiguous. It reports how many
// entries it changed.
func (o *Outbound) mergeExisting(ctx context.Context, tx *models.Bundle, auth string) (int, error) {
	cleared := make([]clearing, len(tx.Entry))
	for i := range tx.Entry {
		e := &tx.Entry[i]
		if !bytes.Contains(e.Resource, clearedURL) {
			continue
		}
		res, c, err := takeCleared(e.Resource)
		if err != nil {
			return 0, fault.Wrap(fault.Permanent, fault.CodeTranslate, fmt.Sprintf("fhir: delivery Bundle entry %d", i), err)
		}
		e.Resource, cleared[i] = res, c
	}
	var targets []mergeTarget
	for i, e := range tx.Entry {
		r := e.Request
		if r == nil || r.Method != models.HTTPVerbPUT {
			continue
		}
		typ, query, ok := strings.Cut(r.Url, "?")
		if !ok || !o.merges[typ] || jfhir.IsRedacted(e.Resource) {
			// A resource labelled REDACTED left elements out on purpose
			// (a restricted patient's contact details): merging would
			// keep at the server what was withheld, so it replaces.
			continue
		}
		targets = append(targets, mergeTarget{i, typ, query})
	}
	if len(targets) == 0 {
		return 0, nil
	}
	found := make([][]json.RawMessage, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() { found[i], errs[i] = o.search(ctx, t.typ, t.query, auth) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		// One fault decides the class: transient if any search may
		// succeed on a retry.
		for _, e := range errs {
			if e != nil && fault.IsTransient(e) {
				return 0, e
			}
		}
		for _, e := range errs {
			if e != nil {
				return 0, e
			}
		}
	}
	n := 0
	for i, t := range targets {
		if len(found[i]) != 1 {
			continue
		}
		e := &tx.Entry[t.entry]
		merged, id, version, err := mergeResource(e.Resource, found[i][0], cleared[t.entry])
		if err != nil {
			return 0, fault.Wrap(fault.Permanent, fault.CodeDestRejected, fmt.Sprintf("fhir: merging entry %d with the server's %s", t.entry, t.typ), err)
		}
		if !fhirID.MatchString(id) {
			continue
		}
		req := models.BundleEntryRequest{Method: models.HTTPVerbPUT, Url: t.typ + "/" + id}
		if version != "" {
			v := `W/"` + version + `"`
			req.IfMatch = &v
		}
		e.Request = &req
		e.Resource = merged
		n++
	}
	return n, nil
}

// search returns the resources of type typ the server's search
// [base]/typ?query matches (not those it includes or its outcomes). Its
// faults never quote the query, which holds an identifier.
func (o *Outbound) search(ctx context.Context, typ, query, auth string) ([]json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.base+"/"+typ+"?"+query, nil)
	if err != nil {
		return nil, fault.Newf(fault.CodeConfig, "fhir: build search of %s before a merge", typ)
	}
	req.Header.Set("Accept", jfhir.MediaTypeJSON)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		msg := fmt.Sprintf("fhir: search of %s before a merge failed", typ)
		if why := fault.NetworkReason(err); why != "" {
			msg += ": " + why
		}
		// url.Error quotes the URL, and so the identifier: keep its cause.
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
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500:
		return nil, (&fault.Error{Code: fault.CodeDestUnavailable, Class: fault.Transient,
			Msg:        fmt.Sprintf("fhir: server answered %d to a search of %s before a merge", status, typ),
			RetryAfter: retryafter.Parse(resp.Header.Get("Retry-After"), time.Now())}).WithDetail(outcomeOrText(reply, replyText(reply)))
	case status < 200 || status >= 300:
		return nil, fault.Newf(fault.CodeDestRejected, "fhir: server answered %d to a search of %s before a merge (set merge: [] on the destination to replace resources whole)", status, typ).
			WithDetail(outcomeOrText(reply, replyText(reply)))
	case err != nil:
		return nil, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, fmt.Sprintf("fhir: reading the search of %s before a merge", typ), err)
	case len(reply) > maxSearchReply:
		return nil, fault.Newf(fault.CodeDestRejected, "fhir: the search of %s before a merge answered more than %d bytes", typ, maxSearchReply)
	case isHTML(resp.Header.Get("Content-Type")):
		return nil, fault.Newf(fault.CodeDestRejected, "fhir: server answered a search of %s with an HTML page, not FHIR: is url the FHIR server's base?", typ)
	}
	var set struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			Resource json.RawMessage `json:"resource"`
			Search   *struct {
				Mode string `json:"mode"`
			} `json:"search"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(stripBOM(reply), &set); err != nil || set.ResourceType != "Bundle" {
		return nil, fault.Newf(fault.CodeDestRejected, "fhir: the search of %s before a merge did not answer a Bundle", typ)
	}
	var out []json.RawMessage
	for _, e := range set.Entry {
		if e.Search != nil && e.Search.Mode != "" && e.Search.Mode != "match" {
			continue
		}
		if rt, err := jfhir.ResourceType(e.Resource); err != nil || rt != typ {
			continue
		}
		out = append(out, e.Resource)
	}
	return out, nil
}

// member is one member of a JSON object, in order.
type member struct {
	key   string
	value json.RawMessage
}

// members returns the members of the JSON object raw, in order.
func members(raw []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, errors.New(jsonError(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("resource is not a JSON object")
	}
	var out []member
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, errors.New(jsonError(err))
		}
		k, _ := kt.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, errors.New(jsonError(err))
		}
		out = append(out, member{k, v})
	}
	return out, nil
}

// mergeResource lays the elements of incoming over the server's copy
// have and returns the result with have's id, and have's id and
// meta.versionId. The rules, at the top level of the resource:
//
//   - an element incoming carries replaces the server's (a v2 field sent
//     is the new value);
//   - an element only the server has is kept (a v2 field not sent means
//     no change, and other systems' elements are not Junction's to
//     delete);
//   - identifiers are the union of both, incoming's first, so a
//     hospital number another system added stays;
//   - extensions are joined by url: incoming's replace the server's of
//     the same url, the server's others stay;
//   - elements and extensions cl names (the sender deleted them) are
//     dropped from the server's copy;
//   - the server's narrative (text) is dropped unless incoming has one,
//     since it may no longer describe the resource; the server's meta is
//     kept only where incoming has none.
func mergeResource(incoming, have []byte, cl clearing) (merged []byte, id, version string, err error) {
	in, err := members(incoming)
	if err != nil {
		return nil, "", "", fmt.Errorf("the entry: %w", err)
	}
	old, err := members(have)
	if err != nil {
		return nil, "", "", fmt.Errorf("the server's copy: %w", err)
	}
	carried := make(map[string]json.RawMessage, len(in))
	for _, m := range in {
		carried[m.key] = m.value
	}
	var head struct {
		ID   string `json:"id"`
		Meta struct {
			VersionID string `json:"versionId"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(have, &head); err != nil {
		return nil, "", "", errors.New("the server's copy: id or meta.versionId is not a string")
	}
	out := make([]member, 0, len(in)+len(old))
	add := func(k string, v json.RawMessage) { out = append(out, member{k, v}) }
	rtype, ok := carried["resourceType"]
	if !ok {
		return nil, "", "", errors.New("the entry has no resourceType")
	}
	add("resourceType", rtype)
	quoted, _ := json.Marshal(head.ID)
	add("id", quoted)
	for _, m := range in {
		switch m.key {
		case "resourceType", "id":
		case "identifier":
			u, err := identifierUnion(m.value, valueOf(old, "identifier"))
			if err != nil {
				return nil, "", "", err
			}
			add(m.key, u)
		case "extension":
			u, err := extensionUnion(m.value, valueOf(old, "extension"), cl.extensions)
			if err != nil {
				return nil, "", "", err
			}
			add(m.key, u)
		default:
			add(m.key, m.value)
		}
	}
	for _, m := range old {
		if _, ok := carried[m.key]; ok || cl.clears(m.key) {
			continue
		}
		switch m.key {
		case "resourceType", "id", "text":
		case "extension":
			u, err := extensionUnion(nil, m.value, cl.extensions)
			if err != nil {
				return nil, "", "", err
			}
			if u != nil {
				add(m.key, u)
			}
		default:
			add(m.key, m.value)
		}
	}
	return writeObject(out), head.ID, head.Meta.VersionID, nil
}

// writeObject encodes ms as a JSON object, in order.
func writeObject(ms []member) []byte {
	n := 2
	for _, m := range ms {
		n += len(m.key) + len(m.value) + 4
	}
	buf := make([]byte, 0, n)
	buf = append(buf, '{')
	for i, m := range ms {
		if i > 0 {
			buf = append(buf, ',')
		}
		k, _ := json.Marshal(m.key)
		buf = append(buf, k...)
		buf = append(buf, ':')
		buf = append(buf, m.value...)
	}
	return append(buf, '}')
}

// valueOf returns the value of key among ms, or nil.
func valueOf(ms []member, key string) json.RawMessage {
	for _, m := range ms {
		if m.key == key {
			return m.value
		}
	}
	return nil
}

// identifierUnion returns the identifiers of in followed by those of have
// whose system and value in does not already carry.
func identifierUnion(in, have json.RawMessage) (json.RawMessage, error) {
	var a, b []json.RawMessage
	if err := json.Unmarshal(in, &a); err != nil {
		return nil, errors.New("the entry: identifier is not an array")
	}
	if len(have) == 0 {
		return in, nil
	}
	if err := json.Unmarshal(have, &b); err != nil {
		return nil, errors.New("the server's copy: identifier is not an array")
	}
	key := func(raw json.RawMessage) (string, bool) {
		var id fhirIdentifier
		if json.Unmarshal(raw, &id) != nil || id.Value == "" {
			return "", false
		}
		return id.System + "|" + id.Value, true
	}
	seen := make(map[string]bool, len(a))
	for _, r := range a {
		if k, ok := key(r); ok {
			seen[k] = true
		}
	}
	out := a
	for _, r := range b {
		if k, ok := key(r); ok && seen[k] {
			continue
		}
		out = append(out, r)
	}
	return json.Marshal(out)
}

// clearedURL is nhs.JunctionExtClearedElement, for a quick look before
// decoding.
var clearedURL = []byte(nhs.JunctionExtClearedElement)

// clearing is what a resource's nhs.JunctionExtClearedElement extensions
// name as deleted: top-level elements and extension urls.
type clearing struct {
	elements   []string
	extensions []string
}

// clears reports whether key is an element c names, a choice element's
// typed name included ("deceasedBoolean" for "deceased").
func (c clearing) clears(key string) bool {
	for _, e := range c.elements {
		if key == e || strings.HasPrefix(key, e) && len(key) > len(e) && key[len(e)] >= 'A' && key[len(e)] <= 'Z' {
			return true
		}
	}
	return false
}

// takeCleared returns res without its nhs.JunctionExtClearedElement
// extensions (and without "extension" when none is left), and what they
// named. The marker is Junction's, for this destination: the server gets
// the merge it asks for, never the marker.
func takeCleared(res []byte) ([]byte, clearing, error) {
	ms, err := members(res)
	if err != nil {
		return nil, clearing{}, err
	}
	var c clearing
	out := ms[:0:0]
	for _, m := range ms {
		if m.key != "extension" {
			out = append(out, m)
			continue
		}
		var exts []json.RawMessage
		if err := json.Unmarshal(m.value, &exts); err != nil {
			return nil, clearing{}, errors.New("extension is not an array")
		}
		kept := exts[:0:0]
		for _, x := range exts {
			var ext struct {
				URL       string `json:"url"`
				ValueCode string `json:"valueCode"`
				ValueURI  string `json:"valueUri"`
			}
			if json.Unmarshal(x, &ext) != nil || ext.URL != nhs.JunctionExtClearedElement {
				kept = append(kept, x)
				continue
			}
			if ext.ValueCode != "" {
				c.elements = append(c.elements, ext.ValueCode)
			}
			if ext.ValueURI != "" {
				c.extensions = append(c.extensions, ext.ValueURI)
			}
		}
		if len(kept) > 0 {
			v, _ := json.Marshal(kept)
			out = append(out, member{m.key, v})
		}
	}
	return writeObject(out), c, nil
}

// extensionUnion returns the extensions of in followed by those of have
// whose url in does not carry and drop does not name; nil when there are
// none.
func extensionUnion(in, have json.RawMessage, drop []string) (json.RawMessage, error) {
	var a, b []json.RawMessage
	if len(in) > 0 {
		if err := json.Unmarshal(in, &a); err != nil {
			return nil, errors.New("the entry: extension is not an array")
		}
	}
	if len(have) > 0 {
		if err := json.Unmarshal(have, &b); err != nil {
			return nil, errors.New("the server's copy: extension is not an array")
		}
	}
	url := func(raw json.RawMessage) string {
		var ext struct {
			URL string `json:"url"`
		}
		_ = json.Unmarshal(raw, &ext)
		return ext.URL
	}
	carried := make(map[string]bool, len(a)+len(drop))
	for _, r := range a {
		carried[url(r)] = true
	}
	for _, u := range drop {
		carried[u] = true
	}
	out := a
	for _, r := range b {
		if !carried[url(r)] {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return json.Marshal(out)
}
