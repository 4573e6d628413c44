package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fault"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
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

// maxSearches bounds the searches one delivery runs at once.
const maxSearches = 4

// mergeTarget is a transaction entry whose resource is merged into the
// server's copy: its index, resource type and the identifier searched.
type mergeTarget struct {
	entry int
	typ   string
	id    fhirIdentifier
}

// searchResult is what a search before a merge found: the resources that
// carry the identifier searched for, and whether the server said there
// are more matches than those (a total above one, or a next page).
type searchResult struct {
	found []json.RawMessage
	more  bool
}

// mergeExisting reads, when tx was translated from HL7 v2 (fromV2), for
// each entry that updates a resource of a merged type by identifier, the
// server's copy, and when exactly one
// carries that identifier turns the entry into an update of that resource
// by id, guarded by its version (If-Match) when the server gave one,
// holding the server's copy with the entry's elements laid over it (see
// mergeResource). With no match the entry stays a conditional update,
// which creates the resource. Several matches, or two entries that are
// one resource at the server, are permanent faults: the destination
// cannot tell which record the message is about, except that a retired
// Patient that is its survivor here is folded in (foldRetired). Every
// entry loses its nhs.JunctionExtClearedElement marks, which steer the
// merge and are not sent. It reports how many entries it merged.
//
// When received (the message's receipt) is known, every entry it merges
// or creates records it for the elements it writes (withStamps), and an
// entry's elements that a message received later wrote are left as the
// server has them (withoutNewer): a replayed dead letter, or a message
// late on another route, does not undo what a newer message wrote, and
// still writes what it changed that nothing newer touched. stale counts
// the entries that left something out.
func (o *Outbound) mergeExisting(ctx context.Context, tx *models.Bundle, auth string, fromV2 bool, received time.Time) (n, stale int, err error) {
	if err := foldRetired(tx); err != nil {
		return 0, 0, err
	}
	if err := checkDistinct(tx); err != nil {
		return 0, 0, err
	}
	cleared := make([]clearing, len(tx.Entry))
	for i := range tx.Entry {
		e := &tx.Entry[i]
		if !bytes.Contains(e.Resource, clearedURL) && !bytes.Contains(e.Resource, derivedURL) {
			continue
		}
		res, c, err := takeCleared(e.Resource)
		if err != nil {
			return 0, 0, fault.Wrap(fault.Permanent, fault.CodeTranslate, fmt.Sprintf("fhir: delivery Bundle entry %d", i), err)
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
		if !ok || !o.merges[typ] || !fromV2 {
			continue
		}
		id, ok := searchedIdentifier(query)
		if !ok {
			continue
		}
		targets = append(targets, mergeTarget{i, typ, id})
	}
	if len(targets) == 0 {
		return 0, 0, nil
	}
	results, err := o.searchAll(ctx, targets, auth)
	if err != nil {
		return 0, 0, err
	}
	// What each entry said before the merge: a retired Patient merged
	// into the server's copy may no longer link to its survivor (its
	// link left out as older than the server's), and the fold after the
	// merge must still see that it does.
	orig := make([]json.RawMessage, len(tx.Entry))
	for i := range tx.Entry {
		orig[i] = tx.Entry[i].Resource
	}
	for i, t := range targets {
		found := results[i].found
		if len(found) > 1 || results[i].more {
			return 0, 0, fault.Newf(fault.CodeDestRejected, "fhir: entry %d: more than one %s at the server carries its identifier; a merge needs exactly one (resolve the duplicate at the server)", t.entry, t.typ)
		}
		e := &tx.Entry[t.entry]
		choice := choiceElements(t.typ)
		if len(found) == 0 {
			if !received.IsZero() {
				keys, err := written(e.Resource, cleared[t.entry], choice)
				if err == nil {
					s := elementStamps{}
					s.mark(keys, received)
					e.Resource, err = withStamps(e.Resource, s)
				}
				if err != nil {
					return 0, 0, fault.Wrap(fault.Permanent, fault.CodeTranslate, fmt.Sprintf("fhir: delivery Bundle entry %d", t.entry), err)
				}
			}
			continue
		}
		stamps := stampsOf(found[0])
		res, cl, dropped, err := withoutNewer(e.Resource, cleared[t.entry], choice, stamps, received)
		if err != nil {
			return 0, 0, fault.Wrap(fault.Permanent, fault.CodeTranslate, fmt.Sprintf("fhir: delivery Bundle entry %d", t.entry), err)
		}
		if dropped > 0 {
			stale++
		}
		merged, id, version, err := mergeResource(res, found[0], cl, choice)
		if err == nil && !received.IsZero() {
			var keys []string
			if keys, err = written(res, cl, choice); err == nil {
				stamps.mark(keys, received)
				merged, err = withStamps(merged, stamps)
			}
		}
		if err != nil {
			return 0, 0, fault.Wrap(fault.Permanent, fault.CodeDestRejected, fmt.Sprintf("fhir: merging entry %d with the server's %s", t.entry, t.typ), err)
		}
		if !fhirID.MatchString(id) {
			return 0, 0, fault.Newf(fault.CodeDestRejected, "fhir: entry %d: the server's %s has no id, or one that is not a FHIR id", t.entry, t.typ)
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
	// Two identifiers may lead to one resource at the server: an A40's
	// retired hospital number that an earlier message put on the
	// survivor's record.
	if err := foldRetiredAs(tx, orig); err != nil {
		return 0, 0, err
	}
	if stale > 0 {
		createOnly(tx)
	}
	return n, stale, checkDistinct(tx)
}

// createOnly turns the entries of tx that update a resource by
// identifier (PUT Type?identifier=..., the types not merged: a
// Practitioner, a Location) into conditional creates: a message older
// than what the server holds (a replayed dead letter) makes the resource
// when it is missing, and leaves the newer one that is there, which
// whole replacement would undo (a doctor's corrected name).
func createOnly(tx *models.Bundle) {
	for i := range tx.Entry {
		r := tx.Entry[i].Request
		if r == nil || r.Method != models.HTTPVerbPUT {
			continue
		}
		typ, query, ok := strings.Cut(r.Url, "?")
		if !ok {
			continue
		}
		q := query
		tx.Entry[i].Request = &models.BundleEntryRequest{Method: models.HTTPVerbPOST, Url: typ, IfNoneExist: &q}
	}
}

// checkDistinct refuses a transaction with two entries updating one
// resource (one URL): FHIR requires the server to fail it, and with a
// merge each would overwrite the other. An A40 whose retired record
// carries the survivor's NHS number is such a message at a server that
// keys Patients by NHS number.
func checkDistinct(tx *models.Bundle) error {
	seen := make(map[string]int, len(tx.Entry))
	for i, e := range tx.Entry {
		if e.Request == nil || e.Request.Method != models.HTTPVerbPUT {
			continue
		}
		if j, ok := seen[e.Request.Url]; ok {
			typ, _, _ := strings.Cut(e.Request.Url, "?")
			typ, _, _ = strings.Cut(typ, "/")
			return fault.Newf(fault.CodeDestRejected, "fhir: entries %d and %d update one %s at the server (the same identifier); a transaction cannot", j, i, typ)
		}
		seen[e.Request.Url] = i
	}
	return nil
}

// foldRetired folds into its survivor each retired Patient (an A34 or
// A40's record merged away: a link "replaced-by" the survivor's entry)
// that this destination would update as the survivor itself, because
// both carry the NHS number it keys Patients by: the usual merge of two
// hospital numbers of one patient. Here they are one resource, so the
// retired entry is dropped, the survivor's link to it removed, and the
// retired record's other identifiers added to the survivor with use
// "old", so a later message naming only the retired hospital number
// finds the survivor. Other entries updating one resource twice are left
// for checkDistinct to refuse.
func foldRetired(tx *models.Bundle) error { return foldRetiredAs(tx, nil) }

// foldRetiredAs is foldRetired deciding which entry is retired from orig
// (the entries' resources before the merge) when given.
func foldRetiredAs(tx *models.Bundle, orig []json.RawMessage) error {
	as := func(i int) models.BundleEntry {
		e := tx.Entry[i]
		if orig != nil {
			e.Resource = orig[i]
		}
		return e
	}
	for {
		seen := make(map[string]int, len(tx.Entry))
		retired, survivor := -1, -1
		for i, e := range tx.Entry {
			if e.Request == nil || e.Request.Method != models.HTTPVerbPUT {
				continue
			}
			j, ok := seen[e.Request.Url]
			if !ok {
				seen[e.Request.Url] = i
				continue
			}
			switch {
			case replacedBy(as(i), tx.Entry[j]):
				retired, survivor = i, j
			case replacedBy(as(j), e):
				retired, survivor = j, i
			}
			if retired >= 0 {
				break
			}
		}
		if retired < 0 {
			return nil
		}
		res, err := absorbRetired(tx.Entry[survivor].Resource, as(retired).Resource, *tx.Entry[retired].FullUrl)
		if err != nil {
			return fault.Wrap(fault.Permanent, fault.CodeTranslate, fmt.Sprintf("fhir: folding entry %d into entry %d", retired, survivor), err)
		}
		tx.Entry[survivor].Resource = res
		tx.Entry = slices.Delete(tx.Entry, retired, retired+1)
		if orig != nil {
			orig = slices.Delete(orig, retired, retired+1)
		}
	}
}

// replacedBy reports whether a's resource is a Patient linked
// "replaced-by" b's.
func replacedBy(a, b models.BundleEntry) bool {
	if b.FullUrl == nil || *b.FullUrl == "" {
		return false
	}
	var p struct {
		ResourceType string `json:"resourceType"`
		Link         []struct {
			Type  string `json:"type"`
			Other struct {
				Reference string `json:"reference"`
			} `json:"other"`
		} `json:"link"`
	}
	if json.Unmarshal(a.Resource, &p) != nil || p.ResourceType != "Patient" {
		return false
	}
	for _, l := range p.Link {
		if l.Type == "replaced-by" && l.Other.Reference == *b.FullUrl {
			return true
		}
	}
	return false
}

// absorbRetired returns survivor without its links to the retired entry
// retiredURL and with the identifiers of retired it lacks (not NHS
// numbers) added with use "old".
func absorbRetired(survivor, retired []byte, retiredURL string) ([]byte, error) {
	ms, err := members(survivor)
	if err != nil {
		return nil, err
	}
	var old struct {
		Identifier []map[string]json.RawMessage `json:"identifier"`
	}
	if err := json.Unmarshal(retired, &old); err != nil {
		return nil, errors.New("the retired Patient's identifiers do not decode")
	}
	out := ms[:0:0]
	hadIDs := false
	for _, m := range ms {
		switch m.key {
		case "link":
			var links []json.RawMessage
			if err := json.Unmarshal(m.value, &links); err != nil {
				return nil, errors.New("link is not an array")
			}
			kept := links[:0:0]
			for _, l := range links {
				var x struct {
					Other struct {
						Reference string `json:"reference"`
					} `json:"other"`
				}
				if json.Unmarshal(l, &x) == nil && x.Other.Reference == retiredURL {
					continue
				}
				kept = append(kept, l)
			}
			if len(kept) > 0 {
				v, _ := json.Marshal(kept)
				out = append(out, member{m.key, v})
			}
			continue
		case "identifier":
			hadIDs = true
			v, err := addOldIdentifiers(m.value, old.Identifier)
			if err != nil {
				return nil, err
			}
			m.value = v
		}
		out = append(out, m)
	}
	if !hadIDs {
		v, err := addOldIdentifiers(nil, old.Identifier)
		if err != nil {
			return nil, err
		}
		if v != nil {
			out = append(out, member{"identifier", v})
		}
	}
	return writeObject(out), nil
}

// addOldIdentifiers returns the identifiers ids, those that add holds
// (not NHS numbers) made use "old", followed by add's others with use
// "old"; nil when there are none.
func addOldIdentifiers(ids json.RawMessage, add []map[string]json.RawMessage) (json.RawMessage, error) {
	var list []json.RawMessage
	if len(ids) > 0 {
		if err := json.Unmarshal(ids, &list); err != nil {
			return nil, errors.New("identifier is not an array")
		}
	}
	have := identifiers(ids)
	for _, id := range add {
		var system, value string
		_ = json.Unmarshal(id["system"], &system)
		_ = json.Unmarshal(id["value"], &value)
		if value == "" || system == nhs.SystemNHSNumber {
			continue
		}
		if i := slices.Index(have, fhirIdentifier{System: system, Value: value}); i >= 0 {
			// The survivor carries it already (a message about the retired
			// number was merged into it): it is old now.
			var cur map[string]json.RawMessage
			if i < len(list) && json.Unmarshal(list[i], &cur) == nil {
				cur["use"] = json.RawMessage(`"old"`)
				list[i], _ = json.Marshal(cur)
			}
			continue
		}
		id["use"] = json.RawMessage(`"old"`)
		v, err := json.Marshal(id)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
		have = append(have, fhirIdentifier{System: system, Value: value})
	}
	if len(list) == 0 {
		return nil, nil
	}
	return json.Marshal(list)
}

// searchedIdentifier returns the identifier of a conditional update's
// query "identifier=<system>|<value>", undoing identifierQuery.
func searchedIdentifier(query string) (fhirIdentifier, bool) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return fhirIdentifier{}, false
	}
	token := q.Get("identifier")
	for i := 0; i < len(token); i++ {
		switch token[i] {
		case '\\':
			i++
		case '|':
			unesc := strings.NewReplacer(`\\`, `\`, `\|`, `|`, `\,`, `,`, `\$`, `$`)
			return fhirIdentifier{System: unesc.Replace(token[:i]), Value: unesc.Replace(token[i+1:])}, true
		}
	}
	return fhirIdentifier{}, false
}

// search finds the resources of type typ that carry id, by POST
// [base]/typ/_search with the identifier in the form body, so it stays out
// of URLs and the access logs that keep them. Matches that do not carry
// id (a server ignoring the parameter answers everything) are not taken.
// Its faults never quote the identifier.
func (o *Outbound) search(ctx context.Context, typ string, id fhirIdentifier, auth string) (searchResult, error) {
	form := identifierQuery(id) + "&_count=2"
	reply, err := o.get(ctx, http.MethodPost, o.base+"/"+typ+"/_search", form, auth, "a search of "+typ+" before a merge",
		" (the destination needs search by identifier; set merge: [] on it to replace resources whole)")
	if err != nil {
		return searchResult{}, err
	}
	set, err := readSearchSet(reply, "the search of "+typ+" before a merge")
	if err != nil {
		return searchResult{}, err
	}
	var out searchResult
	matches := 0
	for _, e := range set.Entry {
		if e.match() {
			matches++
		}
	}
	out.more = set.Total != nil && *set.Total > matches
	for _, l := range set.Link {
		out.more = out.more || l.Relation == "next"
	}
	var retired []json.RawMessage
	for _, e := range set.Entry {
		if !e.match() {
			continue
		}
		if rt, err := jfhir.ResourceType(e.Resource); err != nil || rt != typ {
			continue
		}
		var head struct {
			Identifier json.RawMessage `json:"identifier"`
		}
		if json.Unmarshal(e.Resource, &head) != nil || !slices.Contains(identifiers(head.Identifier), id) {
			continue
		}
		if isRetired(e.Resource) {
			retired = append(retired, e.Resource)
			continue
		}
		out.found = append(out.found, e.Resource)
	}
	if len(out.found) == 0 {
		// Only retired records carry it: the message is about the record
		// one was merged into, as FHIR's replaced-by link says ("must be
		// used in lieu"), else about the retired one, as before any merge.
		out.found = retired
		if len(retired) == 1 && typ == "Patient" {
			survivor, err := o.survivorOf(ctx, retired[0], auth)
			if err != nil {
				return searchResult{}, err
			}
			if survivor != nil {
				out.found = []json.RawMessage{survivor}
			}
		}
	}
	return out, nil
}

// maxReplacedBy bounds the replaced-by links followed from one retired
// Patient (a chain of merges).
const maxReplacedBy = 4

// survivorOf follows the replaced-by links of the retired Patient res at
// the server to the active record it was merged into, and returns that
// record, or nil when there is none to follow: no link, a link to another
// server, a record gone (404) or deleted (410), or a chain longer than
// maxReplacedBy or going round.
func (o *Outbound) survivorOf(ctx context.Context, res json.RawMessage, auth string) (json.RawMessage, error) {
	seen := map[string]bool{}
	for range maxReplacedBy {
		var r struct {
			Link []struct {
				Other struct {
					Reference string `json:"reference"`
				} `json:"other"`
				Type string `json:"type"`
			} `json:"link"`
		}
		if json.Unmarshal(res, &r) != nil {
			return nil, nil
		}
		id := ""
		for _, l := range r.Link {
			if typ, ref, ok := strings.Cut(serverPath(l.Other.Reference, o.base), "/"); l.Type == "replaced-by" && ok && typ == "Patient" && fhirID.MatchString(ref) {
				id = ref
				break
			}
		}
		if id == "" || seen[id] {
			return nil, nil
		}
		seen[id] = true
		b, err := o.get(ctx, http.MethodGet, o.base+"/Patient/"+url.PathEscape(id), "", auth, "reading the Patient a retired record was merged into", "")
		if errors.Is(err, errNotFound) || errors.Is(err, errGone) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if rt, err := jfhir.ResourceType(b); err != nil || rt != "Patient" {
			return nil, nil
		}
		if !isRetired(b) {
			return b, nil
		}
		res = b
	}
	return nil, nil
}

// searchAll runs the searches of targets, at most maxSearches at once,
// and returns their results in order. Of their faults, one that may pass
// on a retry is returned before a permanent one.
func (o *Outbound) searchAll(ctx context.Context, targets []mergeTarget, auth string) ([]searchResult, error) {
	results := make([]searchResult, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxSearches)
	for i, t := range targets {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			results[i], errs[i] = o.search(ctx, t.typ, t.id, auth)
		})
	}
	wg.Wait()
	var first error
	for _, e := range errs {
		if e != nil && fault.IsTransient(e) {
			return nil, e
		}
		if first == nil {
			first = e
		}
	}
	return results, first
}

// isRetired reports whether res is a record merged away: active false,
// or linked "replaced-by" another.
func isRetired(res []byte) bool {
	var r struct {
		Active *bool `json:"active"`
		Link   []struct {
			Type string `json:"type"`
		} `json:"link"`
	}
	if json.Unmarshal(res, &r) != nil {
		return false
	}
	if r.Active != nil && !*r.Active {
		return true
	}
	for _, l := range r.Link {
		if l.Type == "replaced-by" {
			return true
		}
	}
	return false
}

// searchDetail returns the detail of a refused search: the server's
// OperationOutcome, or the start of its reply, within maxReply.
func searchDetail(reply []byte) string {
	if len(reply) > maxReply {
		reply = reply[:maxReply]
	}
	return outcomeOrText(reply, replyText(reply))
}

// choiceElements returns, for a resource type the adapter has a model
// of, its top-level choice elements (value[x]) as choiceGroups gives
// them.
func choiceElements(typ string) map[string]string {
	c, ok := checkers[typ]
	if !ok {
		return nil
	}
	return choiceGroups(c.typ)
}

// choiceGroups returns the choice elements (value[x]) of a model struct
// type: each typed name ("deceasedBoolean") to its element name
// ("deceased"). A model field is one when it is single, its name is a
// base and a FHIR type name its Go type matches, and another field has
// the same base. Read once for each type.
func choiceGroups(t reflect.Type) map[string]string {
	if t.Kind() != reflect.Struct {
		return nil
	}
	if m, ok := choiceCache.Load(t); ok {
		return m.(map[string]string)
	}
	byBase := map[string][]string{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if name == "" || ft.Kind() == reflect.Slice {
			continue
		}
		best := ""
		for suffix, kind := range choiceSuffixes {
			if len(suffix) <= len(best) || !strings.HasSuffix(name, suffix) || len(name) == len(suffix) {
				continue
			}
			if kind == reflect.Struct && ft.Name() != suffix || kind != reflect.Struct && ft.Kind() != kind {
				continue
			}
			best = suffix
		}
		if best != "" {
			base := name[:len(name)-len(best)]
			byBase[base] = append(byBase[base], name)
		}
	}
	out := map[string]string{}
	for base, names := range byBase {
		if len(names) > 1 && !notChoices[t.Name()+"."+base] {
			for _, n := range names {
				out[n] = base
			}
		}
	}
	choiceCache.Store(t, out)
	return out
}

// notChoices are the elements of the checked models that look like a
// choice by their Go fields' names and types but are separate elements
// in R4 (model type name, then the shared base): Task's
// instantiatesCanonical and instantiatesUri, ClinicalImpression.finding's
// itemCodeableConcept and itemReference.
var notChoices = map[string]bool{
	"Task.instantiates":              true,
	"ClinicalImpressionFinding.item": true,
}

// choiceCache holds choiceGroups' answers by type.
var choiceCache sync.Map

// choiceSuffixes are the FHIR R4 type names a choice element's name ends
// with, and the kind of Go value the models hold them in (Struct: a Go
// type of that name).
var choiceSuffixes = map[string]reflect.Kind{
	"Boolean": reflect.Bool, "Integer": reflect.Int, "UnsignedInt": reflect.Int, "PositiveInt": reflect.Int,
	"Decimal": reflect.String, "String": reflect.String, "Uri": reflect.String, "Url": reflect.String,
	"Canonical": reflect.String, "Code": reflect.String, "Oid": reflect.String, "Id": reflect.String,
	"Uuid": reflect.String, "Markdown": reflect.String, "Base64Binary": reflect.String, "Instant": reflect.String,
	"Date": reflect.String, "DateTime": reflect.String, "Time": reflect.String,
	"Address": reflect.Struct, "Age": reflect.Struct, "Annotation": reflect.Struct, "Attachment": reflect.Struct,
	"CodeableConcept": reflect.Struct, "Coding": reflect.Struct, "ContactPoint": reflect.Struct, "Count": reflect.Struct,
	"Distance": reflect.Struct, "Duration": reflect.Struct, "HumanName": reflect.Struct, "Identifier": reflect.Struct,
	"Money": reflect.Struct, "Period": reflect.Struct, "Quantity": reflect.Struct, "Range": reflect.Struct,
	"Ratio": reflect.Struct, "Reference": reflect.Struct, "SampledData": reflect.Struct, "Signature": reflect.Struct,
	"Timing": reflect.Struct, "Dosage": reflect.Struct, "Expression": reflect.Struct,
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
// meta.versionId. choice maps the type's choice elements' typed names to
// their element names (choiceElements). The rules, at the top level of
// the resource:
//
//   - an element incoming carries replaces the server's whole element (a
//     v2 field sent is the new value: a home phone replaces the telecom
//     list), and every other form of a choice element it carries goes
//     (deceasedDateTime replaces deceasedBoolean);
//   - an element only the server has is kept (a v2 field not sent means
//     no change, and other systems' elements are not Junction's to
//     delete), unless cl names it (the sender deleted it, or a member of
//     it: "period.end"); a primitive's extensions (_birthDate) go with
//     its value;
//   - identifiers are the union of both, incoming's first, so a hospital
//     number another system added stays, except that incoming's NHS
//     number is the only one;
//   - extensions are joined by url: incoming's replace the server's of
//     the same url, the server's others stay unless cl names them;
//   - an element cl names as derived (inferred by Junction, not sent:
//     an A08's Encounter.status) keeps the server's value when it has
//     one;
//   - period and hospitalization are merged member by member (memberMerged);
//   - an Encounter's participants are replaced type by type
//     (participantUnion), and its locations keep the stay's history
//     (locationHistory);
//   - meta is incoming's with the server's security labels and tags
//     joined (not REDACTED, which describes a delivery), or the server's
//     when incoming has none;
//   - the server's narrative (text) is dropped unless incoming has one,
//     since it may no longer describe the resource.
//
// A server copy tagged SUBSETTED (not all of it) is refused: writing it
// back would delete what the server left out.
func mergeResource(incoming, have []byte, cl clearing, choice map[string]string) (merged []byte, id, version string, err error) {
	in, err := members(incoming)
	if err != nil {
		return nil, "", "", fmt.Errorf("the entry: %w", err)
	}
	old, err := members(have)
	if err != nil {
		return nil, "", "", fmt.Errorf("the server's copy: %w", err)
	}
	id, version, err = serverHead(have)
	if err != nil {
		return nil, "", "", err
	}
	carried := make(map[string]bool, len(in))
	for _, m := range in {
		carried[m.key] = true
		if base, ok := choice[m.key]; ok {
			carried[base+"[x]"] = true
		}
	}
	out := make([]member, 0, len(in)+len(old))
	add := func(k string, v json.RawMessage) { out = append(out, member{k, v}) }
	if !carried["resourceType"] {
		return nil, "", "", errors.New("the entry has no resourceType")
	}
	add("resourceType", valueOf(in, "resourceType"))
	encounter := string(valueOf(in, "resourceType")) == `"Encounter"`
	quoted, _ := json.Marshal(id)
	add("id", quoted)
	for _, m := range in {
		var v json.RawMessage
		var err error
		switch m.key {
		case "resourceType", "id":
			continue
		case "identifier":
			v, err = identifierUnion(m.value, valueOf(old, "identifier"))
		case "extension":
			v, err = extensionUnion(m.value, valueOf(old, "extension"), cl.extensions)
		case "meta":
			v, err = metaUnion(m.value, valueOf(old, "meta"))
		default:
			v = m.value
			have := valueOf(old, m.key)
			switch {
			case have == nil:
			case slices.Contains(cl.derived, m.key):
				// Inferred, not asserted: the server's value stands.
				v = have
			case slices.Contains(memberMerged, m.key):
				v, err = memberUnion(m.value, have, cl.within(m.key))
			case encounter && m.key == "participant":
				v, err = participantUnion(m.value, have, cl.clearedParticipants())
			case encounter && m.key == "location":
				v, err = locationHistory(m.value, have)
			}
		}
		if err != nil {
			return nil, "", "", err
		}
		if v != nil {
			add(m.key, v)
		}
	}
	for _, m := range old {
		// A primitive's extensions (_birthDate) go with its value.
		k := strings.TrimPrefix(m.key, "_")
		base, isChoice := choice[k]
		if carried[m.key] || carried[k] || isChoice && carried[base+"[x]"] {
			continue
		}
		if encounter && m.key == "participant" {
			// Deleted by type, not whole (participantUnion).
			v, err := participantUnion(nil, m.value, cl.clearedParticipants())
			if err != nil {
				return nil, "", "", err
			}
			if v != nil {
				add(m.key, v)
			}
			continue
		}
		if cl.clears(k, base) {
			continue
		}
		if subs := cl.within(k); len(subs) > 0 && k == m.key {
			v, keep, err := withoutMembers(m.value, subs)
			if err != nil {
				return nil, "", "", fmt.Errorf("the server's copy: %s: %w", k, err)
			}
			if keep {
				add(m.key, v)
			}
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
	return writeObject(out), id, version, nil
}

// serverHead returns the id and meta.versionId of the server's copy have,
// refusing one tagged SUBSETTED (not all of it): writing it back would
// delete what the server left out.
func serverHead(have []byte) (id, version string, err error) {
	var head struct {
		ID   string `json:"id"`
		Meta struct {
			VersionID string `json:"versionId"`
			Tag       []struct {
				System string `json:"system"`
				Code   string `json:"code"`
			} `json:"tag"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(have, &head); err != nil {
		return "", "", errors.New("the server's copy: id or meta is malformed")
	}
	for _, t := range head.Meta.Tag {
		if t.System == jfhir.SystemObservationValue && t.Code == "SUBSETTED" {
			return "", "", errors.New("the server's copy is tagged SUBSETTED: it is not the whole resource")
		}
	}
	return head.ID, head.Meta.VersionID, nil
}

// memberMerged are the elements merged member by member, because HL7 v2
// fills their members from separate fields, each of which left empty
// means no change: Encounter.period (PV1-44 start, PV1-45 end) and
// Encounter.hospitalization (PV1-4 admission method, PV1-14 admit
// source, PV1-36/37 discharge).
var memberMerged = []string{"period", "hospitalization"}

// memberUnion returns the object in with the members of have it does not
// carry, except those drop names (cleared).
func memberUnion(in, have json.RawMessage, drop []string) (json.RawMessage, error) {
	a, err := members(in)
	if err != nil {
		return nil, fmt.Errorf("the entry: %w", err)
	}
	b, err := members(have)
	if err != nil {
		return nil, fmt.Errorf("the server's copy: %w", err)
	}
	for _, m := range b {
		if valueOf(a, m.key) == nil && !slices.Contains(drop, strings.TrimPrefix(m.key, "_")) {
			a = append(a, m)
		}
	}
	return writeObject(a), nil
}

// metaUnion returns incoming's meta with the security labels and tags of
// have's that it does not carry added, so a label another system set (an
// R confidentiality code) stays, and have's extensions whose url it does
// not carry.
func metaUnion(in, have json.RawMessage) (json.RawMessage, error) {
	if len(have) == 0 {
		return in, nil
	}
	var a, b map[string]json.RawMessage
	if err := json.Unmarshal(in, &a); err != nil {
		return nil, errors.New("the entry: meta is not an object")
	}
	if err := json.Unmarshal(have, &b); err != nil {
		return nil, errors.New("the server's copy: meta is not an object")
	}
	for _, k := range []string{"security", "tag"} {
		var mine, theirs []json.RawMessage
		if len(a[k]) > 0 && json.Unmarshal(a[k], &mine) != nil || len(b[k]) > 0 && json.Unmarshal(b[k], &theirs) != nil {
			return nil, fmt.Errorf("meta.%s is not an array", k)
		}
		key := func(raw json.RawMessage) string {
			var c struct{ System, Code string }
			_ = json.Unmarshal(raw, &c)
			return c.System + "|" + c.Code
		}
		seen := map[string]bool{}
		for _, c := range mine {
			seen[key(c)] = true
		}
		n := len(mine)
		for _, c := range theirs {
			// REDACTED describes the delivery that set it, not the
			// record: a later one that withholds nothing carries none.
			if k := key(c); !seen[k] && k != jfhir.SystemObservationValue+"|"+jfhir.CodeRedacted {
				mine = append(mine, c)
			}
		}
		if len(mine) > n {
			a[k], _ = json.Marshal(mine)
		}
	}
	if len(b["extension"]) > 0 {
		// Joined by url, as a resource's are: the server's receipt stamp
		// (nhs.JunctionExtReceived) stays when the entry carries none.
		x, err := extensionUnion(a["extension"], b["extension"], nil)
		if err != nil {
			return nil, fmt.Errorf("meta: %w", err)
		}
		a["extension"] = x
	}
	return json.Marshal(a)
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
// that in does not already carry (the same system and value, or for one
// without a value the same JSON), leaving out have's NHS numbers when in
// carries one: a patient has one.
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
	key := func(raw json.RawMessage) (fhirIdentifier, string) {
		var id fhirIdentifier
		_ = json.Unmarshal(raw, &id)
		if id.Value == "" {
			var buf bytes.Buffer
			if json.Compact(&buf, raw) == nil {
				return id, "json:" + buf.String()
			}
		}
		return id, id.System + "|" + id.Value
	}
	seen := make(map[string]bool, len(a))
	hasNHS := false
	for _, r := range a {
		id, k := key(r)
		seen[k] = true
		hasNHS = hasNHS || id.System == nhs.SystemNHSNumber && id.Value != ""
	}
	out := a
	for _, r := range b {
		id, k := key(r)
		if seen[k] || hasNHS && id.System == nhs.SystemNHSNumber && id.Value != "" {
			continue
		}
		seen[k] = true
		out = append(out, r)
	}
	return json.Marshal(out)
}

// clearedURL is nhs.JunctionExtClearedElement, for a quick look before
// decoding.
var clearedURL = []byte(nhs.JunctionExtClearedElement)

// derivedURL is nhs.JunctionExtDerivedElement, for a quick look.
var derivedURL = []byte(nhs.JunctionExtDerivedElement)

// clearing is what a resource's Junction marks say: the top-level
// elements (or their members, "period.end") and extension urls its
// nhs.JunctionExtClearedElement marks delete, and the elements its
// nhs.JunctionExtDerivedElement marks name as inferred, not asserted.
type clearing struct {
	elements   []string
	extensions []string
	derived    []string
}

// within returns the members of the element key that c names
// ("end" for "period.end").
func (c clearing) within(key string) []string {
	var out []string
	for _, e := range c.elements {
		if parent, sub, ok := strings.Cut(e, "."); ok && parent == key && sub != "" {
			out = append(out, sub)
		}
	}
	return out
}

// withoutMembers returns the JSON object v without the members subs (and
// their _ companions), and whether anything is left.
func withoutMembers(v json.RawMessage, subs []string) (json.RawMessage, bool, error) {
	ms, err := members(v)
	if err != nil {
		return nil, false, err
	}
	kept := ms[:0:0]
	for _, m := range ms {
		if !slices.Contains(subs, strings.TrimPrefix(m.key, "_")) {
			kept = append(kept, m)
		}
	}
	return writeObject(kept), len(kept) > 0, nil
}

// clears reports whether c names the element key, whose choice element
// name is base ("deceased" for "deceasedBoolean"; "" when it is none).
func (c clearing) clears(key, base string) bool {
	for _, e := range c.elements {
		if key == e || base != "" && base == e {
			return true
		}
	}
	return false
}

// takeCleared returns res without its nhs.JunctionExtClearedElement and
// nhs.JunctionExtDerivedElement extensions (and without "extension" when
// none is left), and what they named. The marker is Junction's, for this destination: the server gets
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
			if json.Unmarshal(x, &ext) == nil && ext.URL == nhs.JunctionExtDerivedElement {
				if ext.ValueCode != "" {
					c.derived = append(c.derived, ext.ValueCode)
				}
				continue
			}
			if ext.URL != nhs.JunctionExtClearedElement {
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
