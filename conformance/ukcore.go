package conformance

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/junction-fhir/junction/pkg/nhs"
)

// ukCore holds the UK Core profiles, extensions, value sets and code
// systems read from the corpus (FHIR XML).
type ukCore struct {
	profiles  map[string]*profile // by canonical URL
	valueSets map[string]*valueSet
}

// profile is a StructureDefinition's differential, the rules UK Core adds
// to the base resource or extension.
type profile struct {
	url, name, typ string
	elems          []*elemDef
	byID           map[string]*elemDef
}

// elemDef is one differential element.
type elemDef struct {
	id    string
	steps []step
	min   int
	// fixed is a primitive fixed or pattern value; leaves those of a
	// complex one.
	fixed    string
	hasFixed bool
	leaves   map[string]string
	strength string
	valueSet string
	// typeProfiles are the profiles of the element's type (for an
	// extension slice, the extension's URL).
	typeProfiles []string
}

// step is one part of an element id: a name and an optional slice.
type step struct{ name, slice string }

func parseSteps(id string) []step {
	parts := strings.Split(id, ".")
	out := make([]step, 0, len(parts))
	for _, p := range parts[1:] {
		name, slice, _ := strings.Cut(p, ":")
		out = append(out, step{name: name, slice: slice})
	}
	return out
}

// valueSet is what the corpus says a value set holds.
type valueSet struct {
	url   string
	codes map[string]map[string]bool // system -> code
	// open lists systems included without an enumerable list (a filter,
	// or a code system not in the corpus): codes from them cannot be
	// judged. all means the whole set cannot be judged.
	open map[string]bool
	all  bool
}

// loadUKCore reads the corpus folder uk-core.
func loadUKCore(dir string) (*ukCore, error) {
	u := &ukCore{profiles: map[string]*profile{}, valueSets: map[string]*valueSet{}}
	sds, _ := filepath.Glob(filepath.Join(dir, "structuredefinitions", "*.xml"))
	if len(sds) == 0 {
		return nil, fmt.Errorf("no StructureDefinitions under %s", dir)
	}
	for _, f := range sds {
		root, err := readXML(f)
		if err != nil {
			return nil, err
		}
		p := &profile{url: root.val("url"), name: root.val("name"), typ: root.val("type"), byID: map[string]*elemDef{}}
		for _, e := range root.child("differential").all("element") {
			id := e.id
			if id == "" {
				continue
			}
			d := &elemDef{id: id, steps: parseSteps(id)}
			if m := e.val("min"); m != "" {
				d.min, _ = strconv.Atoi(m)
			}
			for _, c := range e.children {
				if strings.HasPrefix(c.name, "fixed") || strings.HasPrefix(c.name, "pattern") {
					d.hasFixed = true
					if c.hasValue {
						d.fixed = c.value
					} else {
						d.leaves = c.leaves()
					}
				}
			}
			if b := e.child("binding"); b != nil {
				d.strength, d.valueSet = b.val("strength"), canonical(b.val("valueSet"))
			}
			for _, t := range e.all("type") {
				for _, pr := range t.all("profile") {
					d.typeProfiles = append(d.typeProfiles, canonical(pr.value))
				}
			}
			p.elems = append(p.elems, d)
			p.byID[id] = d
		}
		u.profiles[p.url] = p
	}
	codeSystems := map[string]map[string]bool{}
	css, _ := filepath.Glob(filepath.Join(dir, "codesystems", "*.xml"))
	for _, f := range css {
		root, err := readXML(f)
		if err != nil {
			return nil, err
		}
		codes := map[string]bool{}
		var walk func(n *xnode)
		walk = func(n *xnode) {
			for _, c := range n.all("concept") {
				codes[c.val("code")] = true
				walk(c)
			}
		}
		walk(root)
		codeSystems[root.val("url")] = codes
	}
	vss, _ := filepath.Glob(filepath.Join(dir, "valuesets", "*.xml"))
	for _, f := range vss {
		root, err := readXML(f)
		if err != nil {
			return nil, err
		}
		vs := &valueSet{url: root.val("url"), codes: map[string]map[string]bool{}, open: map[string]bool{}}
		addCode := func(system, code string) {
			if vs.codes[system] == nil {
				vs.codes[system] = map[string]bool{}
			}
			vs.codes[system][code] = true
		}
		if exp := root.child("expansion"); exp != nil && len(exp.all("contains")) > 0 {
			var walk func(n *xnode)
			walk = func(n *xnode) {
				for _, c := range n.all("contains") {
					if code := c.val("code"); code != "" {
						addCode(c.val("system"), code)
					}
					walk(c)
				}
			}
			walk(exp)
		} else {
			for _, inc := range root.child("compose").all("include") {
				system := inc.val("system")
				switch {
				case system == "":
					vs.all = true
				case len(inc.all("concept")) > 0 && len(inc.all("filter")) == 0:
					for _, c := range inc.all("concept") {
						addCode(system, c.val("code"))
					}
				case len(inc.all("filter")) == 0 && codeSystems[system] != nil:
					for code := range codeSystems[system] {
						addCode(system, code)
					}
				default:
					vs.open[system] = true
				}
			}
		}
		u.valueSets[vs.url] = vs
	}
	return u, nil
}

// canonical strips a |version suffix from a canonical URL.
func canonical(s string) string {
	s, _, _ = strings.Cut(s, "|")
	return s
}

// contains reports whether (system, code) is in the value set: known is
// false when the corpus does not let it be judged.
func (vs *valueSet) contains(system, code string) (in, known bool) {
	if vs.codes[system][code] {
		return true, true
	}
	if vs.all || vs.open[system] {
		return false, false
	}
	if system == "" {
		for _, codes := range vs.codes {
			if codes[code] {
				return true, true
			}
		}
		if len(vs.open) > 0 {
			return false, false
		}
	}
	return false, true
}

// inst is an element instance and its path in the resource.
type inst struct {
	v    any
	path string
}

// children returns the values of name (or, for "x[x]", of any xType key)
// in each object of from, with arrays flattened.
func children(from []inst, name string) []inst {
	var out []inst
	for _, f := range from {
		obj, ok := f.v.(map[string]any)
		if !ok {
			continue
		}
		keys := []string{name}
		if base, ok := strings.CutSuffix(name, "[x]"); ok {
			keys = keys[:0]
			for k := range obj {
				if rest, ok := strings.CutPrefix(k, base); ok && rest != "" && rest[0] >= 'A' && rest[0] <= 'Z' {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
		}
		for _, k := range keys {
			v, ok := obj[k]
			if !ok {
				continue
			}
			if arr, ok := v.([]any); ok {
				for i, a := range arr {
					out = append(out, inst{a, fmt.Sprintf("%s.%s[%d]", f.path, k, i)})
				}
				continue
			}
			out = append(out, inst{v, f.path + "." + k})
		}
	}
	return out
}

// resolve follows steps from roots, keeping only members of each named
// slice. known is false when a slice's members cannot be told apart from
// what the profile says.
func (p *profile) resolve(roots []inst, steps []step) (out []inst, known bool) {
	cur := roots
	idPrefix := p.typ
	if p.typ == "Extension" {
		idPrefix = "Extension"
	}
	for _, s := range steps {
		cur = children(cur, s.name)
		idPrefix += "." + s.name
		if s.slice != "" {
			idPrefix += ":" + s.slice
			var ok bool
			cur, ok = p.sliceMembers(cur, idPrefix)
			if !ok {
				return nil, false
			}
		}
	}
	return cur, true
}

// sliceMembers keeps the items of the slice whose element id is sliceID.
func (p *profile) sliceMembers(items []inst, sliceID string) ([]inst, bool) {
	if d := p.byID[sliceID]; d != nil && len(d.typeProfiles) > 0 && strings.Contains(sliceID, "xtension:") {
		url := d.typeProfiles[0]
		var out []inst
		for _, it := range items {
			if obj, ok := it.v.(map[string]any); ok && obj["url"] == url {
				out = append(out, it)
			}
		}
		return out, true
	}
	// Otherwise a member matches every fixed value set inside the slice.
	type want struct {
		steps []step
		value string
	}
	var wants []want
	for _, d := range p.elems {
		rest, ok := strings.CutPrefix(d.id, sliceID+".")
		if !ok || !d.hasFixed || strings.Contains(rest, ":") {
			continue
		}
		rel := parseSteps("x." + rest)
		if d.leaves == nil {
			wants = append(wants, want{rel, d.fixed})
			continue
		}
		for lp, lv := range d.leaves {
			wants = append(wants, want{append(append([]step(nil), rel...), parseSteps("x."+lp)...), lv})
		}
	}
	if len(wants) == 0 {
		return nil, false
	}
	var out []inst
	for _, it := range items {
		member := true
		for _, w := range wants {
			if !hasValue(p.resolveRel(it, w.steps), w.value) {
				member = false
				break
			}
		}
		if member {
			out = append(out, it)
		}
	}
	return out, true
}

func (p *profile) resolveRel(root inst, steps []step) []inst {
	cur := []inst{root}
	for _, s := range steps {
		cur = children(cur, s.name)
	}
	return cur
}

func hasValue(insts []inst, want string) bool {
	for _, i := range insts {
		if primitiveString(i.v) == want {
			return true
		}
	}
	return false
}

func primitiveString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

// ruleTally counts how often one rule held.
type ruleTally struct {
	Rule           string
	Passed, Failed int
}

// ukFinding is one broken UK Core rule.
type ukFinding struct {
	rule, element, reason string
}

// ukResult collects the outcome of checking one bundle.
type ukResult struct {
	findings []ukFinding
	tally    map[string]*ruleTally
	// unjudged counts required bindings whose value set is not in the
	// corpus, by value set.
	unjudged map[string]int
}

func (r *ukResult) count(rule string, ok bool, element, reason string) {
	t := r.tally[rule]
	if t == nil {
		t = &ruleTally{Rule: rule}
		r.tally[rule] = t
	}
	if ok {
		t.Passed++
		return
	}
	t.Failed++
	r.findings = append(r.findings, ukFinding{rule, element, reason})
}

// checkBundle applies UK Core rules to every resource in a bundle.
func (u *ukCore) checkBundle(bundle map[string]any) *ukResult {
	r := &ukResult{tally: map[string]*ruleTally{}, unjudged: map[string]int{}}
	u.checkResource(bundle, "Bundle", r)
	entries, _ := bundle["entry"].([]any)
	for i, e := range entries {
		em, _ := e.(map[string]any)
		res, _ := em["resource"].(map[string]any)
		if res == nil {
			continue
		}
		rt, _ := res["resourceType"].(string)
		u.checkResource(res, fmt.Sprintf("Bundle.entry[%d].resource(%s)", i, rt), r)
	}
	return r
}

func (u *ukCore) profileFor(res map[string]any) *profile {
	if meta, ok := res["meta"].(map[string]any); ok {
		if ps, ok := meta["profile"].([]any); ok {
			for _, p := range ps {
				if s, ok := p.(string); ok {
					if pr := u.profiles[canonical(s)]; pr != nil {
						return pr
					}
				}
			}
		}
	}
	rt, _ := res["resourceType"].(string)
	return u.profiles["https://fhir.hl7.org.uk/StructureDefinition/UKCore-"+rt]
}

func (u *ukCore) checkResource(res map[string]any, path string, r *ukResult) {
	rt, _ := res["resourceType"].(string)
	if rt == "Patient" {
		u.checkPatient(res, path, r)
	}
	if p := u.profileFor(res); p != nil {
		u.applyProfile(p, inst{res, path}, r)
	}
	for _, el := range baseRequired[rt] {
		n := len(children([]inst{{res, path}}, el))
		r.count("base R4 min 1 "+rt+"."+el, n > 0, path+"."+el, "is required (1..) by the FHIR R4 base resource")
	}
	// Extensions anywhere in the resource, against their UK Core
	// definitions.
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if k == "resource" || k == "contained" {
					continue
				}
				cp := path + "." + k
				if (k == "extension" || k == "modifierExtension") && path != "" {
					if arr, ok := x[k].([]any); ok {
						for i, e := range arr {
							em, _ := e.(map[string]any)
							url, _ := em["url"].(string)
							if p := u.profiles[url]; p != nil && p.typ == "Extension" {
								u.applyProfile(p, inst{em, fmt.Sprintf("%s[%d]", cp, i)}, r)
							}
						}
					}
				}
				walk(x[k], cp)
			}
		case []any:
			for i, a := range x {
				walk(a, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(res, path)
}

// baseRequired lists, per resource type, elements the FHIR R4 base
// resource requires (minimum cardinality 1) that the JSON schema cannot
// require (primitives, which may come as _element instead) and that UK
// Core profiles inherit without restating in their differentials. The
// corpus has no base StructureDefinitions, so they are listed here from
// the R4 specification.
var baseRequired = map[string][]string{
	"Bundle":             {"type"},
	"MessageHeader":      {"event[x]", "source"},
	"Encounter":          {"status", "class"},
	"Observation":        {"status", "code"},
	"DiagnosticReport":   {"status", "code"},
	"ServiceRequest":     {"status", "intent", "subject"},
	"RelatedPerson":      {"patient"},
	"AllergyIntolerance": {"patient"},
	"Condition":          {"subject"},
	"Procedure":          {"status", "subject"},
	"Coverage":           {"status", "beneficiary", "payor"},
	"Provenance":         {"target", "recorded", "agent"},
	"Task":               {"status", "intent"},
}

// checkPatient applies the Patient rules Junction must always meet: the
// UK Core profile is claimed, and every NHS number is ten digits with a
// valid check digit.
func (u *ukCore) checkPatient(res map[string]any, path string, r *ukResult) {
	claimed := false
	if meta, ok := res["meta"].(map[string]any); ok {
		ps, _ := meta["profile"].([]any)
		for _, p := range ps {
			if s, _ := p.(string); canonical(s) == nhs.ProfilePatient {
				claimed = true
			}
		}
	}
	r.count("Patient.meta.profile names UKCore-Patient", claimed, path+".meta.profile", "UKCore-Patient is not among the profiles claimed")
	for _, id := range children([]inst{{res, path}}, "identifier") {
		obj, _ := id.v.(map[string]any)
		if obj["system"] != nhs.SystemNHSNumber {
			continue
		}
		v, _ := obj["value"].(string)
		ok := len(v) == 10 && nhs.ValidNumber(v)
		r.count("Patient.identifier:nhsNumber.value is 10 digits with a valid check digit", ok, id.path+".value", "not a valid NHS number")
	}
}

// applyProfile applies a profile's differential rules to one instance of
// its type.
func (u *ukCore) applyProfile(p *profile, root inst, r *ukResult) {
	for _, d := range p.elems {
		if len(d.steps) == 0 {
			continue
		}
		rule := func(kind string) string { return fmt.Sprintf("%s %s (%s)", kind, d.id, p.name) }
		if d.min >= 1 {
			parents, known := p.resolve([]inst{root}, d.steps[:len(d.steps)-1])
			if known {
				last := d.steps[len(d.steps)-1]
				for _, par := range parents {
					got := children([]inst{par}, last.name)
					if last.slice != "" {
						var ok bool
						if got, ok = p.sliceMembers(got, d.id); !ok {
							continue
						}
					}
					r.count(rule("min"), len(got) >= d.min, par.path+"."+last.name,
						fmt.Sprintf("has %d, the profile requires at least %d", len(got), d.min))
				}
			}
		}
		if !d.hasFixed && d.strength != "required" {
			continue
		}
		insts, known := p.resolve([]inst{root}, d.steps)
		if !known {
			continue
		}
		for _, in := range insts {
			if d.hasFixed {
				ok := true
				if d.leaves == nil {
					ok = primitiveString(in.v) == d.fixed
				} else {
					for lp, lv := range d.leaves {
						if !hasValue(p.resolveRel(in, parseSteps("x."+lp)), lv) {
							ok = false
						}
					}
				}
				r.count(rule("fixed"), ok, in.path, "differs from the value the profile fixes")
			}
			if d.strength == "required" {
				vs := u.valueSets[d.valueSet]
				if vs == nil {
					r.unjudged[d.valueSet]++
					continue
				}
				in2, judged := codeInValueSet(in.v, vs)
				if !judged {
					r.unjudged[d.valueSet]++
					continue
				}
				r.count(rule("binding"), in2, in.path, "code is not in the required value set "+d.valueSet)
			}
		}
	}
}

// codeInValueSet judges a code, Coding or CodeableConcept against vs.
func codeInValueSet(v any, vs *valueSet) (in, judged bool) {
	switch x := v.(type) {
	case string:
		return vs.contains("", x)
	case map[string]any:
		if codings, ok := x["coding"].([]any); ok {
			anyJudged := false
			for _, c := range codings {
				cm, _ := c.(map[string]any)
				system, _ := cm["system"].(string)
				code, _ := cm["code"].(string)
				in, known := vs.contains(system, code)
				if in {
					return true, true
				}
				anyJudged = anyJudged || known
			}
			return false, anyJudged
		}
		if code, ok := x["code"].(string); ok {
			system, _ := x["system"].(string)
			return vs.contains(system, code)
		}
	}
	return false, false
}
