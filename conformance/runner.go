// Package conformance judges Junction's HL7 v2 to FHIR translations
// against external rules, using the third-party corpora in
// ../shared/corpora (read in place, never copied):
//
//   - a. every Bundle produced from the adapters' golden inputs and the
//     corpus messages validates against the FHIR R4 JSON schema, and
//     every reference in it resolves to an entry of the Bundle;
//   - b. UK Core rules from the profiles (required elements, fixed
//     values, required bindings to value sets in the corpus, and the
//     Patient's NHS number and profile);
//   - c. the v2-to-FHIR mapping inventory's single-rule cases, compared
//     on the elements each case maps;
//   - d. robustness: every corpus message converts or is rejected with a
//     coded reason by every HL7 v2 translator, without a panic.
//
// Translators are found through the adapter registry, so a newly
// registered adapter (such as "pathology") is judged as soon as it is
// compiled in. Run it with go test ./conformance/... or junction
// conformance.
package conformance

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/fhirschema"
)

// ErrNoCorpora is returned by Run when the corpus folder is absent.
var ErrNoCorpora = errors.New("conformance: the shared corpora are absent")

// Options configure a run.
type Options struct {
	// RepoRoot is the repository root; golden inputs are found under
	// RepoRoot/adapters/*/testdata.
	RepoRoot string
	// Corpora is the corpus folder, normally RepoRoot/../shared/corpora.
	Corpora string
	// Factories are the registered adapters (adapters/all.Factories()).
	Factories []adapter.Factory
}

// DefaultCorpora returns the corpus folder beside a repository root.
func DefaultCorpora(repoRoot string) string {
	return filepath.Join(repoRoot, "..", "shared", "corpora")
}

// corpusMessageDirs are the corpus folders whose HL7 v2 messages are
// translated in checks a, b and d.
var corpusMessageDirs = []string{
	filepath.Join("ms-fhir-converter", "messages"),
	"hapi-hl7v2",
}

// input is one HL7 v2 message to judge.
type input struct {
	name   string // file name relative to the corpora or the repository
	index  int    // 1-based index in the file
	line   int
	raw    []byte
	corpus bool // from the corpora (judged for robustness) or a golden input
}

func (in input) label() string { return fmt.Sprintf("%s#%d (line %d)", in.name, in.index, in.line) }

// Run runs every check. It returns ErrNoCorpora when opts.Corpora does
// not exist.
func Run(opts Options) (*Report, error) {
	if st, err := os.Stat(opts.Corpora); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: %s", ErrNoCorpora, opts.Corpora)
	}
	schema, err := fhirschema.Load(filepath.Join(opts.Corpora, "fhir-r4-schema", "fhir.schema.json"))
	if err != nil {
		return nil, fmt.Errorf("conformance: %w", err)
	}
	uk, err := loadUKCore(filepath.Join(opts.Corpora, "uk-core"))
	if err != nil {
		return nil, fmt.Errorf("conformance: UK Core: %w", err)
	}
	trs, trErr := NewTranslators(opts.Factories)
	rep := &Report{Corpora: opts.Corpora, Adapters: trs.Types()}

	inputs, err := gatherInputs(opts, rep)
	if err != nil {
		return nil, err
	}
	r := &runner{schema: schema, uk: uk, trs: trs, report: rep}
	if trErr != nil {
		r.buildNote = trErr.Error()
	}
	r.translateAll(inputs)
	rep.Checks = append(rep.Checks, r.schemaCheck(), r.referenceCheck(), r.ukCoreCheck())
	cdc, err := r.cdcCheck(filepath.Join(opts.Corpora, "cdc-reportstream", "mappinginventory", "catchall"))
	if err != nil {
		return nil, err
	}
	rep.Checks = append(rep.Checks, cdc, r.robustnessCheck())
	return rep, nil
}

// gatherInputs reads the golden inputs and the corpus messages.
func gatherInputs(opts Options, rep *Report) ([]input, error) {
	var inputs []input
	read := func(path, name string, corpus bool) error {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("conformance: %w", err)
		}
		msgs, _ := Split(data)
		rep.Files++
		if len(msgs) == 0 {
			rep.NoMessage = append(rep.NoMessage, name)
		}
		for i, m := range msgs {
			inputs = append(inputs, input{name: name, index: i + 1, line: m.Line, raw: m.Raw, corpus: corpus})
		}
		rep.Messages += len(msgs)
		return nil
	}
	if opts.RepoRoot != "" {
		var goldens []string
		adapters := filepath.Join(opts.RepoRoot, "adapters")
		err := filepath.WalkDir(adapters, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && strings.HasSuffix(path, ".hl7") && strings.Contains(filepath.ToSlash(path), "/testdata/") {
				goldens = append(goldens, path)
			}
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("conformance: golden inputs: %w", err)
		}
		sort.Strings(goldens)
		for _, g := range goldens {
			rel, _ := filepath.Rel(opts.RepoRoot, g)
			if err := read(g, filepath.ToSlash(rel), false); err != nil {
				return nil, err
			}
		}
	}
	for _, dir := range corpusMessageDirs {
		entries, err := os.ReadDir(filepath.Join(opts.Corpora, dir))
		if err != nil {
			return nil, fmt.Errorf("conformance: %w", err)
		}
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || !messageFile(name) {
				continue
			}
			if err := read(filepath.Join(opts.Corpora, dir, name), filepath.ToSlash(filepath.Join(dir, name)), true); err != nil {
				return nil, err
			}
		}
	}
	return inputs, nil
}

// messageFile reports whether a corpus file may hold messages (not a
// licence or a source list).
func messageFile(name string) bool {
	upper := strings.ToUpper(name)
	if strings.HasPrefix(upper, "LICENSE") || strings.HasPrefix(upper, "SOURCES") || strings.HasPrefix(upper, "README") {
		return false
	}
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".hl7" || ext == ".txt" || ext == ".er7" || ext == ""
}

// runner holds the state of one run.
type runner struct {
	schema    *fhirschema.Schema
	uk        *ukCore
	trs       *Translators
	report    *Report
	buildNote string

	// bundles are the translations judged by checks a and b.
	bundles []judged
	// untranslated counts messages no registered adapter takes, by
	// message type.
	untranslated map[string]int
	// rejected counts messages their adapter rejected, by reason.
	rejected map[string]int
	// robust are the outcomes of every (corpus message, translator).
	robust []robustOutcome
}

// judged is one bundle produced from an input.
type judged struct {
	in      input
	adapter string
	bundle  []byte
}

type robustOutcome struct {
	in      input
	adapter string
	res     Result
}

// translateAll runs the translators: each input through the adapter its
// MSH-9 names (checks a and b), and each corpus message through every
// HL7 v2 translator (check d).
func (r *runner) translateAll(inputs []input) {
	r.untranslated = map[string]int{}
	r.rejected = map[string]int{}
	for _, in := range inputs {
		chosen, _ := r.trs.For(in.raw)
		types := []string{chosen}
		if in.corpus {
			types = r.trs.Types()
		}
		for _, typ := range types {
			if typ == "" {
				continue
			}
			env := NewEnvelope(in.name, in.index, in.raw, typ, DefaultReceivedAt)
			res := Translate(r.trs.Get(typ), env)
			if in.corpus {
				r.robust = append(r.robust, robustOutcome{in, typ, res})
			}
			if typ != chosen {
				continue
			}
			if res.Err != nil {
				reason, _ := Reason(res.Err)
				r.rejected[typ+": "+reason]++
				continue
			}
			r.bundles = append(r.bundles, judged{in, typ, res.Translation.Bundle})
		}
		if chosen == "" {
			mt := MessageType(in.raw)
			if mt == "" {
				mt = "(unparsable)"
			}
			r.untranslated[mt]++
		}
	}
}

func (r *runner) coverageNotes() []string {
	var notes []string
	if r.buildNote != "" {
		notes = append(notes, r.buildNote)
	}
	if len(r.untranslated) > 0 {
		var parts []string
		n := 0
		for _, k := range sortedKeys(r.untranslated) {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.untranslated[k]))
			n += r.untranslated[k]
		}
		notes = append(notes, fmt.Sprintf("%d messages have no registered translator for their type (%s)", n, strings.Join(parts, ", ")))
	}
	if len(r.rejected) > 0 {
		n := 0
		var parts []string
		for _, k := range sortedKeys(r.rejected) {
			parts = append(parts, fmt.Sprintf("%s (%d)", k, r.rejected[k]))
			n += r.rejected[k]
		}
		notes = append(notes, fmt.Sprintf("%d messages were rejected by their translator, so give no bundle: %s", n, strings.Join(parts, "; ")))
	}
	return notes
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// schemaCheck is check a (schema): every bundle validates.
func (r *runner) schemaCheck() *Check {
	c := &Check{ID: "schema", Title: "Bundles valid against the FHIR R4 JSON schema", Unit: "bundles", Notes: r.coverageNotes()}
	rules := map[string]*Tally{}
	for _, j := range r.bundles {
		c.Total++
		issues := r.schema.Validate(j.bundle)
		if len(issues) == 0 {
			c.Passed++
			continue
		}
		for _, is := range issues {
			t := rules[is.Rule]
			if t == nil {
				t = &Tally{Name: is.Rule}
				rules[is.Rule] = t
			}
			t.Failed++
			c.Failures = append(c.Failures, Failure{Input: j.in.label(), Rule: "schema." + is.Rule, Element: is.Path, Reason: is.Msg, Category: j.adapter})
		}
	}
	c.Breakdown = tallies(rules)
	return c
}

// referenceCheck is check a (references): every reference resolves
// inside its bundle.
func (r *runner) referenceCheck() *Check {
	c := &Check{ID: "references", Title: "References resolving to an entry of the same Bundle", Unit: "bundles"}
	total, bad := 0, 0
	for _, j := range r.bundles {
		c.Total++
		var doc map[string]any
		if err := json.Unmarshal(j.bundle, &doc); err != nil {
			c.Failures = append(c.Failures, Failure{Input: j.in.label(), Rule: "json", Reason: "bundle is not a JSON object", Category: j.adapter})
			continue
		}
		unresolved, n := unresolvedReferences(doc)
		total += n
		bad += len(unresolved)
		if len(unresolved) == 0 {
			c.Passed++
		}
		for _, u := range unresolved {
			c.Failures = append(c.Failures, Failure{Input: j.in.label(), Rule: "reference.unresolved", Element: u.path, Reason: u.reason, Category: j.adapter})
		}
	}
	c.Breakdown = []Tally{{Name: "reference strings", Passed: total - bad, Failed: bad}}
	return c
}

type unresolved struct{ path, reason string }

// unresolvedReferences finds every Reference.reference string in a
// bundle and returns those that no entry answers: a reference resolves
// when it equals an entry's fullUrl, or is "Type/id" (or ends so) and an
// entry holds a resource of that type and id, or is "#id" naming a
// contained resource of the resource that holds it.
func unresolvedReferences(bundle map[string]any) ([]unresolved, int) {
	fullURLs := map[string]bool{}
	typeIDs := map[string]bool{}
	entries, _ := bundle["entry"].([]any)
	for _, e := range entries {
		em, _ := e.(map[string]any)
		if u, ok := em["fullUrl"].(string); ok {
			fullURLs[u] = true
		}
		if res, ok := em["resource"].(map[string]any); ok {
			rt, _ := res["resourceType"].(string)
			id, _ := res["id"].(string)
			if rt != "" && id != "" {
				typeIDs[rt+"/"+id] = true
			}
		}
	}
	var out []unresolved
	n := 0
	var walk func(v any, path string, contained map[string]bool)
	walk = func(v any, path string, contained map[string]bool) {
		switch x := v.(type) {
		case map[string]any:
			if _, isRes := x["resourceType"].(string); isRes {
				contained = map[string]bool{}
				cs, _ := x["contained"].([]any)
				for _, c := range cs {
					cm, _ := c.(map[string]any)
					if id, ok := cm["id"].(string); ok {
						contained[id] = true
					}
				}
			}
			if ref, ok := x["reference"].(string); ok {
				n++
				if !resolves(ref, fullURLs, typeIDs, contained) {
					out = append(out, unresolved{path + ".reference", "no entry of the Bundle has this fullUrl or type and id"})
				}
			}
			for _, k := range sortedKeys(x) {
				p := path + "." + k
				if k == "resource" {
					p = resourcePath(p, x[k])
				}
				walk(x[k], p, contained)
			}
		case []any:
			for i, a := range x {
				walk(a, fmt.Sprintf("%s[%d]", path, i), contained)
			}
		}
	}
	walk(bundle, "Bundle", nil)
	return out, n
}

func resourcePath(path string, v any) string {
	if obj, ok := v.(map[string]any); ok {
		if rt, ok := obj["resourceType"].(string); ok {
			return path + "(" + rt + ")"
		}
	}
	return path
}

func resolves(ref string, fullURLs, typeIDs, contained map[string]bool) bool {
	if id, ok := strings.CutPrefix(ref, "#"); ok {
		return contained[id]
	}
	if fullURLs[ref] {
		return true
	}
	parts := strings.Split(strings.TrimSuffix(ref, "/"), "/")
	if len(parts) >= 2 {
		tail := parts[len(parts)-2] + "/" + parts[len(parts)-1]
		if len(parts) >= 4 && parts[len(parts)-2] == "_history" {
			tail = parts[len(parts)-4] + "/" + parts[len(parts)-3]
		}
		return typeIDs[tail] && !strings.Contains(ref, "://")
	}
	return false
}

// ukCoreCheck is check b.
func (r *runner) ukCoreCheck() *Check {
	c := &Check{ID: "ukcore", Title: "UK Core profile rules met by every resource emitted", Unit: "bundles"}
	tally := map[string]*Tally{}
	unjudged := map[string]int{}
	for _, j := range r.bundles {
		c.Total++
		var doc map[string]any
		if err := json.Unmarshal(j.bundle, &doc); err != nil {
			continue
		}
		res := r.uk.checkBundle(doc)
		for k, t := range res.tally {
			tt := tally[k]
			if tt == nil {
				tt = &Tally{Name: k}
				tally[k] = tt
			}
			tt.Passed += t.Passed
			tt.Failed += t.Failed
		}
		for k, n := range res.unjudged {
			unjudged[k] += n
		}
		if len(res.findings) == 0 {
			c.Passed++
		}
		for _, f := range res.findings {
			c.Failures = append(c.Failures, Failure{Input: j.in.label(), Rule: f.rule, Element: f.element, Reason: f.reason, Category: j.adapter})
		}
	}
	c.Breakdown = tallies(tally)
	for _, vs := range sortedKeys(unjudged) {
		c.Notes = append(c.Notes, fmt.Sprintf("%d codes bound (required) to %s not judged: the value set or its code systems are not in the corpus", unjudged[vs], vs))
	}
	return c
}

// robustnessCheck is check d.
func (r *runner) robustnessCheck() *Check {
	c := &Check{ID: "robustness", Title: "Corpus messages converted or rejected with a coded reason, no panic", Unit: "translations"}
	cats := map[string]*Tally{}
	count := func(name string, ok bool) {
		t := cats[name]
		if t == nil {
			t = &Tally{Name: name}
			cats[name] = t
		}
		if ok {
			t.Passed++
		} else {
			t.Failed++
		}
	}
	for _, o := range r.robust {
		c.Total++
		switch {
		case o.res.Panicked:
			count(o.adapter+": panic", false)
			c.Failures = append(c.Failures, Failure{Input: o.in.label(), Rule: "panic", Reason: "the translator panicked", Category: o.adapter})
		case o.res.Err == nil:
			count(o.adapter+": converted", true)
			c.Passed++
		default:
			reason, ok := Reason(o.res.Err)
			if ok {
				count(o.adapter+": rejected with a coded reason", true)
				c.Passed++
			} else {
				count(o.adapter+": rejected without a reason", false)
				c.Failures = append(c.Failures, Failure{Input: o.in.label(), Rule: "rejection-without-reason", Reason: reason, Category: o.adapter})
			}
		}
	}
	c.Breakdown = tallies(cats)
	if len(r.robust) == 0 {
		c.Notes = append(c.Notes, "no HL7 v2 translator is registered")
	}
	return c
}
