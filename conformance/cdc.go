package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// Check c compares Junction with the single-rule cases of the
// ReportStream v2-to-FHIR mapping inventory (CC0). Each case is one
// input (X.hl7) and the bundle ReportStream expects (X.fhir). The
// expected bundles are one converter's reading of the HL7 v2-to-FHIR
// guide, with ReportStream's own extensions and generated ids, so the
// comparison is limited to what a case maps:
//
//   - the focus resources: those the case's segment maps to (from the
//     case's folder, such as pid -> Patient, or, for data type folders,
//     from the segments the input fills);
//   - in them, every leaf element, except ids, meta, narrative,
//     ReportStream extensions (https://reportstream.cdc.gov/...) and the
//     values of references (generated ids; a reference is compared by the
//     type of resource it points at).
//
// An expected element agrees when Junction's resources of the same type
// hold the same path (array positions ignored) with an equal value
// (date-times compared as instants). Each disagreement is classed:
//
//   - us-only: the element carries a US-only rule (US Core or CDC
//     extensions, US identifier systems);
//   - uk-override: Junction holds the element with another value where
//     UK Core or the trust's dialect governs it (identifier systems, the
//     Patient's profile);
//   - not-supported: Junction does not emit the element (or has no
//     translator for the message), or emits it from another field only;
//   - choice: Junction's value follows a documented mapping choice of
//     its own where the guide leaves room or is silent;
//   - inventory: the expected value departs from the guide or from FHIR
//     R4, and Junction follows the guide;
//   - gap: Junction departs from the guide, a candidate fix;
//   - differs: Junction emits the element with another value for no
//     reason listed above, a mapping difference to review.
//
// The rules behind uk-override (beyond the markers), not-supported
// (where Junction emits the element from another field), choice,
// inventory and gap are cdcRules, each with the reason the scorecard
// gives.
//
// A case whose message no registered translator takes, or whose
// translator rejects it for its structure (a segment its type needs),
// but whose focus is what the pas translator maps (Patient, Encounter,
// RelatedPerson, MessageHeader), is judged by a segment probe: the
// message is translated by pas as ADT^A08 (MSH-9 rewritten, a minimal EVN
// and PID added when missing), since the guide's MSH, PID, PD1, PV1 and
// NK1 maps do not depend on the message type. The probe's event elements
// are then not judged. The scorecard says how many cases were probed.

// cdcSegmentFolders maps a folder of segment cases to the resource types
// it maps to.
var cdcSegmentFolders = map[string][]string{
	"pid":    {"Patient"},
	"pd1":    {"Patient"},
	"pv1pv2": {"Encounter"},
	"nk1":    {"RelatedPerson"},
	"msh":    {"MessageHeader"},
	"msg":    {"MessageHeader"},
	"obx":    {"Observation"},
	"orcobr": {"ServiceRequest", "DiagnosticReport"},
	"spm":    {"Specimen"},
	"in1":    {"Coverage"},
}

// cdcSegmentResources maps a segment to the resources it maps to, for
// the data type folders.
var cdcSegmentResources = map[string][]string{
	"PID": {"Patient"}, "PD1": {"Patient"},
	"PV1": {"Encounter"}, "PV2": {"Encounter"},
	"NK1": {"RelatedPerson"},
	"OBX": {"Observation"},
	"OBR": {"ServiceRequest", "DiagnosticReport"},
	"ORC": {"ServiceRequest"},
	"SPM": {"Specimen"},
	"IN1": {"Coverage"},
	"MSH": {"MessageHeader"},
}

// Disagreement categories.
const (
	catUSOnly       = "us-only"
	catUKOverride   = "uk-override"
	catNotSupported = "not-supported"
	catDiffers      = "differs"
)

// leaf is one expected or produced element value.
type leaf struct{ path, value string }

func (r *runner) cdcCheck(dir string) (*Check, error) {
	c := &Check{ID: "cdc", Title: "v2-to-FHIR mapping inventory cases whose mapped elements agree", Unit: "cases"}
	if _, err := os.Stat(dir); err != nil {
		c.Notes = append(c.Notes, "mapping inventory not in the corpora: "+dir)
		return c, nil
	}
	var cases []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".hl7") {
			if _, err := os.Stat(strings.TrimSuffix(path, ".hl7") + ".fhir"); err == nil {
				cases = append(cases, path)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("conformance: mapping inventory: %w", err)
	}
	sort.Strings(cases)
	cats := map[string]*Tally{}
	rules := map[string]*Tally{} // by cdcRule id
	elemAgree, elemTotal, probed, noFocus, explained := 0, 0, 0, 0, 0
	for _, path := range cases {
		rel, _ := filepath.Rel(filepath.Dir(dir), path)
		rel = filepath.ToSlash(rel)
		out := r.cdcCase(dir, path)
		if out.skip != "" {
			noFocus++
			continue
		}
		c.Total++
		if out.probed {
			probed++
		}
		elemTotal += out.total
		elemAgree += out.total - len(out.disagree)
		if len(out.disagree) == 0 {
			c.Passed++
		}
		if explainedOnly(out.disagree) {
			explained++
		}
		seen := map[string]bool{}
		for _, d := range out.disagree {
			if d.rule != "" {
				t := rules[d.rule]
				if t == nil {
					t = &Tally{Name: "elements explained: " + d.cat + " " + d.rule}
					rules[d.rule] = t
				}
				t.Failed++
			}
			c.Failures = append(c.Failures, Failure{Input: rel, Rule: "mapped element", Element: d.path, Reason: d.reason, Category: d.cat})
			if !seen[d.cat] {
				seen[d.cat] = true
				t := cats[d.cat]
				if t == nil {
					t = &Tally{Name: "cases with a disagreement classed " + d.cat}
					cats[d.cat] = t
				}
				t.Failed++
			}
		}
	}
	c.Breakdown = append(append(tallies(cats), tallies(rules)...),
		Tally{Name: "cases agreeing but for us-only, uk-override, choice or inventory disagreements", Passed: explained, Failed: c.Total - explained},
		Tally{Name: "mapped elements (all cases)", Passed: elemAgree, Failed: elemTotal - elemAgree})
	c.Notes = append(c.Notes,
		fmt.Sprintf("%d cases compared; %d judged by the ADT^A08 segment probe (no translator takes their type, or it needs segments the case lacks); %d skipped because they map only ReportStream-specific elements", c.Total, probed, noFocus),
		"expected bundles are ReportStream's reading of the guide (US lab flavour); a disagreement is not by itself a Junction bug")
	return c, nil
}

// explainedOnly reports whether every disagreement of a case is US-only,
// UK-governed, a Junction mapping choice or an inventory departure from
// the guide: none is missing from Junction, a gap or unexplained.
func explainedOnly(ds []disagreement) bool {
	for _, d := range ds {
		switch d.cat {
		case catUSOnly, catUKOverride, catChoice, catInventory:
		default:
			return false
		}
	}
	return true
}

// disagreement is one expected element Junction does not match.
type disagreement struct {
	path, reason, cat string
	// rule is the id of the cdcRule explaining the disagreement, if any.
	rule string
}

type caseOutcome struct {
	skip     string
	probed   bool
	total    int
	disagree []disagreement
}

func (r *runner) cdcCase(root, path string) caseOutcome {
	raw, err := os.ReadFile(path)
	if err != nil {
		return caseOutcome{skip: "unreadable"}
	}
	wantRaw, err := os.ReadFile(strings.TrimSuffix(path, ".hl7") + ".fhir")
	if err != nil {
		return caseOutcome{skip: "unreadable"}
	}
	var want map[string]any
	if err := json.Unmarshal(wantRaw, &want); err != nil {
		return caseOutcome{skip: "expected bundle is not JSON"}
	}
	msgs, _ := Split(raw)
	if len(msgs) == 0 {
		return caseOutcome{skip: "no message"}
	}
	msg := msgs[0].Raw
	relDir, _ := filepath.Rel(root, filepath.Dir(path))
	folder := strings.Split(filepath.ToSlash(relDir), "/")[0]
	focus := cdcFocus(folder, msg)
	wantLeaves := bundleLeaves(want, focus)
	if len(wantLeaves) == 0 {
		return caseOutcome{skip: "no mapped elements"}
	}
	out := caseOutcome{total: len(wantLeaves)}

	typ, tr := r.trs.For(msg)
	var res Result
	if tr != nil {
		res = Translate(tr, NewEnvelope(filepath.ToSlash(path), 1, msg, typ, DefaultReceivedAt))
	}
	if pas := r.trs.Get("pas"); pas != nil && probeFocus(focus) && (tr == nil || probeable(res.Err)) {
		if input := retype(msg); input != nil {
			typ, tr = "pas", pas
			res = Translate(tr, NewEnvelope(filepath.ToSlash(path), 1, input, typ, DefaultReceivedAt))
			out.probed = true
			// The probe's event is A08 by construction: do not judge it.
			kept := wantLeaves[:0]
			for _, l := range wantLeaves {
				if !strings.HasPrefix(l.path, "MessageHeader.event") {
					kept = append(kept, l)
				}
			}
			wantLeaves = kept
			out.total = len(wantLeaves)
		}
	}
	if tr == nil {
		mt := MessageType(msg)
		for _, l := range wantLeaves {
			out.disagree = append(out.disagree, disagreement{path: l.path, reason: "no registered translator takes " + mt + " messages", cat: classify(l, nil, catNotSupported)})
		}
		return out
	}
	if res.Err != nil {
		reason, _ := Reason(res.Err)
		for _, l := range wantLeaves {
			out.disagree = append(out.disagree, disagreement{path: l.path, reason: typ + " rejected the message: " + reason, cat: classify(l, nil, catNotSupported)})
		}
		return out
	}
	var got map[string]any
	if err := json.Unmarshal(res.Translation.Bundle, &got); err != nil {
		for _, l := range wantLeaves {
			out.disagree = append(out.disagree, disagreement{path: l.path, reason: "Junction's bundle is not JSON", cat: catDiffers})
		}
		return out
	}
	ctx := &cdcContext{got: map[string][]string{}}
	ctx.msg, _ = hl7v2.Parse(msg)
	for _, l := range bundleLeaves(got, focus) {
		ctx.got[l.path] = append(ctx.got[l.path], l.value)
	}
	for _, l := range wantLeaves {
		have := ctx.got[l.path]
		if anyEqual(l.value, have) {
			continue
		}
		if len(have) == 0 {
			out.disagree = append(out.disagree, disagreement{path: l.path, reason: "Junction does not emit this element", cat: classify(l, nil, catNotSupported)})
			continue
		}
		out.disagree = append(out.disagree, judgeValue(ctx, l, have))
	}
	return out
}

// judgeValue classes an expected element l that Junction emits with
// other values have: by the us-only and uk-override markers, else by the
// first of cdcRules explaining it, else as differs.
func judgeValue(ctx *cdcContext, l leaf, have []string) disagreement {
	d := disagreement{path: l.path, reason: "Junction emits another value", cat: classify(l, have, catDiffers)}
	if d.cat != catDiffers {
		return d
	}
	if r, ok := explain(ctx, l.path, l.value, have); ok {
		d.cat, d.rule, d.reason = r.cat, r.id, d.reason+" ("+r.id+"): "+r.reason
		return d
	}
	d.reason += " for no listed reason: a mapping difference to review"
	return d
}

// cdcFocus returns the resource types a case maps to.
func cdcFocus(folder string, msg []byte) map[string]bool {
	focus := map[string]bool{}
	if types, ok := cdcSegmentFolders[folder]; ok {
		for _, t := range types {
			focus[t] = true
		}
		return focus
	}
	m, err := hl7v2.Parse(msg)
	if err != nil {
		return focus
	}
	for _, seg := range m.Segments() {
		name := seg.Name()
		if name == "MSH" || !filled(seg) {
			continue
		}
		for _, t := range cdcSegmentResources[name] {
			focus[t] = true
		}
	}
	if len(focus) == 0 {
		focus["MessageHeader"] = true
	}
	return focus
}

// filled reports whether a segment holds anything beyond its set ID,
// ignoring the OBR the inventory adds to make an ORU whole.
func filled(seg *hl7v2.Segment) bool {
	if seg.Name() == "OBR" && seg.Component(4, 1, 1, 1) == "TEST" {
		return false
	}
	for i := 2; i <= seg.FieldCount(); i++ {
		if seg.Field(i) != "" {
			return true
		}
	}
	return false
}

// probeFocus reports whether a case maps only segments the pas
// translator maps whatever the message (PID, PD1, PV1, PV2, NK1, MSH).
func probeFocus(focus map[string]bool) bool {
	if len(focus) == 0 {
		return false
	}
	for t := range focus {
		switch t {
		case "Patient", "Encounter", "RelatedPerson", "MessageHeader":
		default:
			return false
		}
	}
	return true
}

// probeable reports whether a rejection is about the message's structure
// (a segment its type needs, or the type itself) rather than its content.
func probeable(err error) bool {
	switch fault.CodeOf(err) {
	case fault.CodeHL7Required, fault.CodeHL7Unsupported:
		return err != nil
	}
	return false
}

// retype returns msg as an ADT^A08: MSH-9 replaced, and a minimal EVN
// and PID added when missing. It returns nil when msg does not parse.
func retype(msg []byte) []byte {
	m, err := hl7v2.Parse(msg)
	if err != nil {
		return nil
	}
	fs := m.Delimiters().Field
	line := msg
	rest := []byte(nil)
	if i := bytes.IndexAny(msg, "\r\n"); i >= 0 {
		line, rest = msg[:i], msg[i:]
	}
	fields := bytes.Split(line, []byte{fs})
	// fields[0] is "MSH", fields[1] MSH-2, so MSH-n is fields[n-1].
	for len(fields) < 12 {
		fields = append(fields, nil)
	}
	fields[8] = []byte("ADT" + string(m.Delimiters().Component) + "A08")
	out := bytes.Join(fields, []byte{fs})
	if m.Segment("EVN") == nil {
		out = append(out, "\rEVN"+string(fs)+"A08"...)
	}
	if m.Segment("PID") == nil {
		out = append(out, "\rPID"+string(fs)+"1"...)
	}
	return append(out, rest...)
}

// bundleLeaves flattens the focus resources of a bundle into leaves.
func bundleLeaves(bundle map[string]any, focus map[string]bool) []leaf {
	types := map[string]string{} // fullUrl and Type/id -> type
	entries, _ := bundle["entry"].([]any)
	for _, e := range entries {
		em, _ := e.(map[string]any)
		res, _ := em["resource"].(map[string]any)
		rt, _ := res["resourceType"].(string)
		if u, ok := em["fullUrl"].(string); ok {
			types[u] = rt
		}
		if id, ok := res["id"].(string); ok {
			types[rt+"/"+id] = rt
		}
	}
	var out []leaf
	for _, e := range entries {
		em, _ := e.(map[string]any)
		res, _ := em["resource"].(map[string]any)
		rt, _ := res["resourceType"].(string)
		if !focus[rt] {
			continue
		}
		flatten(res, rt, types, &out)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].path != out[j].path {
			return out[i].path < out[j].path
		}
		return out[i].value < out[j].value
	})
	// Drop duplicates (the same element and value in repeats).
	dedup := out[:0]
	for i, l := range out {
		if i == 0 || l != out[i-1] {
			dedup = append(dedup, l)
		}
	}
	return dedup
}

// skippedKeys are elements never compared: ids, metadata, narrative.
var skippedKeys = map[string]bool{"id": true, "meta": true, "text": true, "resourceType": true, "contained": true}

func flatten(v any, path string, types map[string]string, out *[]leaf) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if skippedKeys[k] {
				continue
			}
			if k == "reference" {
				if s, ok := val.(string); ok {
					t := types[s]
					if t == "" {
						t = "(unresolved)"
					}
					*out = append(*out, leaf{path + ".reference", "-> " + t})
				}
				continue
			}
			if k == "extension" || k == "modifierExtension" {
				arr, _ := val.([]any)
				for _, e := range arr {
					em, _ := e.(map[string]any)
					url, _ := em["url"].(string)
					if strings.Contains(url, "reportstream.cdc.gov") {
						continue
					}
					flatten(em, path+"."+k+"("+url+")", types, out)
				}
				continue
			}
			if k == "url" && strings.Contains(path, ".extension(") {
				continue // carried in the path
			}
			flatten(val, path+"."+k, types, out)
		}
	case []any:
		for _, a := range x {
			flatten(a, path, types, out)
		}
	case string:
		*out = append(*out, leaf{path, x})
	case bool, float64, json.Number:
		*out = append(*out, leaf{path, primitiveString(x)})
	}
}

// anyEqual reports whether want equals one of have, date-times compared
// as instants.
func anyEqual(want string, have []string) bool {
	for _, h := range have {
		if h == want || sameInstant(want, h) {
			return true
		}
	}
	return false
}

func sameInstant(a, b string) bool {
	const layout = "2006-01-02T15:04:05.999999999Z07:00"
	ta, err1 := time.Parse(layout, a)
	tb, err2 := time.Parse(layout, b)
	return err1 == nil && err2 == nil && ta.Equal(tb)
}

// usMarkers mark US-only rules in an element's path or value.
var usMarkers = []string{"/fhir/us/", "us-core", "cdc.gov", "phinvads", "2.16.840.1.114222", "CLIA", "race"}

// ukGoverned are paths where UK Core or the feed's dialect decides the
// value: identifier systems and types, profiles.
var ukGoverned = []string{".identifier.system", ".identifier.type.", ".meta.profile", "MessageHeader.source.endpoint"}

// classify puts a disagreement in a category.
func classify(l leaf, have []string, fallback string) string {
	for _, m := range usMarkers {
		if strings.Contains(l.path, m) || strings.Contains(l.value, m) {
			return catUSOnly
		}
	}
	if len(have) > 0 {
		for _, g := range ukGoverned {
			if strings.Contains(l.path, g) || strings.HasSuffix(l.path, strings.TrimSuffix(g, ".")) {
				return catUKOverride
			}
		}
	}
	return fallback
}
