package route

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/jsonmap"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/rules"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// TestResult is the outcome of one route test.
type TestResult struct {
	Route string
	Name  string
	// Failures lists what did not hold; empty means the test passed.
	Failures []string
	// Updated lists golden files rewritten.
	Updated []string
}

// Passed reports whether the test passed.
func (t TestResult) Passed() bool { return len(t.Failures) == 0 }

// testTime is the fixed receipt time route tests use, so outputs are
// reproducible.
var testTime = time.Date(2026, 1, 15, 10, 30, 0, 0, time.UTC)

// TestEnvelope builds the envelope a test input would have had at ingress.
func TestEnvelope(source, id string, raw []byte, contentType string) *envelope.Envelope {
	env := &envelope.Envelope{ID: id, Source: source, ContentType: contentType, ReceivedAt: testTime, Raw: raw}
	if contentType == envelope.ContentTypeHL7v2 {
		if m, err := hl7v2.Parse(raw); err == nil {
			env.MessageType, env.ControlID = m.MessageType(), m.ControlID()
			env.Sender = m.SendingApp() + "|" + m.SendingFacility()
			env.DedupeKey = env.Sender + "|" + env.ControlID
		}
	} else {
		var probe struct {
			ResourceType string          `json:"resourceType"`
			Identifier   json.RawMessage `json:"identifier"`
		}
		if json.Unmarshal(raw, &probe) == nil {
			env.MessageType = probe.ResourceType
		}
		// As the FHIR input does, a Bundle's identifier is its control id
		// (msg.control_id) and names it for resends.
		var id struct {
			System string `json:"system"`
			Value  string `json:"value"`
		}
		if probe.ResourceType == "Bundle" && json.Unmarshal(probe.Identifier, &id) == nil && id.Value != "" {
			env.ControlID = id.Value
			env.DedupeKey = "bundle|" + id.System + "|" + id.Value
		}
	}
	return env
}

// TestOption changes how RunTests runs a route's tests.
type TestOption func(*testOptions)

type testOptions struct {
	noPatientIndex bool
}

// WithoutPatientIndex runs the tests as an engine without a patient index
// (patient_index.enabled: false) routes messages: a test that gives no
// patient record reads an unknown patient.
func WithoutPatientIndex() TestOption {
	return func(o *testOptions) { o.noPatientIndex = true }
}

// RunTests runs the route's tests with its source's translator and the
// consent engine with no stored Consents, no opt-out list (unless the
// test gives one: TestSpec.OptOuts) and no destination allow-lists, as a
// zero-setup engine decides. A test that
// gives no patient record reads the one the patient index makes from its
// message alone (patient.FirstRecord), as a patient's first message does,
// since the index applies each message before it is routed; `patient: {}`
// gives a patient the index does not know. No network is used. With
// update, golden files (FHIR and raw) are rewritten from the actual
// output of the tests whose other expectations hold.
func (r *Route) RunTests(ctx context.Context, tr adapter.Translator, env *rules.Env, update bool, opts ...TestOption) []TestResult {
	var o testOptions
	for _, opt := range opts {
		opt(&o)
	}
	var out []TestResult
	dir := filepath.Dir(r.File)
	for i, t := range r.Tests {
		res := TestResult{Route: r.Name, Name: t.Name.Value}
		failf := func(format string, args ...any) {
			res.Failures = append(res.Failures, fmt.Sprintf(format, args...))
		}
		raw, ct, err := testInput(dir, t.Input)
		if err != nil {
			failf("%s: input: %v", t.Input.File.Pos, err)
			out = append(out, res)
			continue
		}
		e := TestEnvelope(r.Source, fmt.Sprintf("TEST%04d", i+1), raw, ct)
		// Expectations not met are reported at the test's name.
		at := t.Name.Pos
		var record map[string]any
		if t.Patient != nil {
			record = t.Patient.Record
		}
		patient, err := testPatient(record)
		derive := t.Patient == nil && !o.noPatientIndex
		if err != nil {
			failf("%s: patient: %v", at, err)
			out = append(out, res)
			continue
		}
		// An input that checks what it stores (the FHIR endpoint) would
		// never have stored a message it refuses: the test says so, or
		// expects that refusal's code.
		var result *Result
		var trans *adapter.Translation
		if ic, checks := tr.(adapter.InputChecker); checks {
			err = ic.CheckInput(raw)
		} else if _, v2 := tr.(adapter.EventLister); v2 || ct == envelope.ContentTypeHL7v2 {
			// An MLLP input (whose translator lists the v2 types it
			// takes) takes HL7 v2 alone.
			err = checkV2Input(raw, tr)
		}
		refused := err != nil
		if !refused {
			result, trans, patient, err = r.runOneWith(ctx, tr, e, testDecider(t), patient, derive)
		}
		if want := t.Expect.Error.Value; want != "" {
			if err == nil {
				failf("%s: expected routing to fail with %s, but it succeeded", at, want)
			} else if got := string(fault.CodeOf(err)); got != want {
				failf("%s: expected error code %s, got %s (%v)", at, want, got, err)
			}
			out = append(out, res)
			continue
		}
		if refused {
			failf("%s: input: %v%s", t.Input.Pos, err, withDetail(err))
			out = append(out, res)
			continue
		}
		if err != nil {
			if ee, ok := errors.AsType[*ExprError](err); ok {
				// At the expression that failed, naming the test.
				failf("%s: %s failed for test %q: %v%s", ee.Pos, ee.Where, t.Name.Value, err, withDetail(err))
				out = append(out, res)
				continue
			}
			failf("%s: routing failed: %v%s", at, err, withDetail(err))
			out = append(out, res)
			continue
		}
		var pending []goldenWrite
		filtered := !result.Taken || !result.Matched
		if filtered != t.Expect.Filtered {
			failf("%s: expected filtered=%v, got filtered=%v%s", at, t.Expect.Filtered, filtered, r.whyFiltered(e, result))
		}
		var want, got []string
		for _, d := range t.Expect.Deliver {
			want = append(want, d.Value)
		}
		for _, d := range result.Deliveries {
			got = append(got, d.Destination)
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(want, got) {
			failf("%s: expected deliveries %v, got %v", at, want, got)
		}
		var wantDenied []string
		for _, d := range t.Expect.Denied {
			wantDenied = append(wantDenied, d.Value)
		}
		gotDenied := slices.Clone(result.Denied)
		slices.Sort(wantDenied)
		slices.Sort(gotDenied)
		if !slices.Equal(wantDenied, gotDenied) {
			failf("%s: expected consent denials %v, got %v", at, wantDenied, gotDenied)
			// Say why each destination was refused; records hold no
			// patient data.
			for _, rec := range result.Records {
				if rec.Event == audit.Consent && rec.Outcome == string(consent.Deny) && slices.Contains(gotDenied, rec.Destination) && !slices.Contains(wantDenied, rec.Destination) {
					failf("  %s denied by %s: %s", rec.Destination, rec.Rule, rec.Reason)
					if rec.Rule == "gate:opt-out:stale" && t.OptOuts == nil {
						failf("  (a test decides with no opt-out list unless it gives one: opt_outs: [] for an empty list)")
					}
				}
			}
		}
		// Asserts see what the route's own expressions saw, with the
		// destination set, and bundle as the payload sent: for a raw
		// delivery, which is not FHIR, the translation routing used.
		base := rules.Vars{Msg: MsgVars(e, trans.Event), Patient: patient}
		base.V2, _ = trans.V2.(rules.V2Message)
		for _, d := range result.Deliveries {
			vars := base
			vars.Destination = map[string]any{"name": d.Destination}
			fhirBody := d.ContentType == envelope.ContentTypeFHIR
			body := d.Body
			if !fhirBody {
				body = trans.Bundle
			}
			bundle, err := jsonmap.Decode(body)
			if err != nil {
				what := "payload"
				if !fhirBody {
					what = "translation (what asserts on a raw delivery read as bundle)"
				}
				failf("%s: %s is not JSON: %v", d.Destination, what, err)
				continue
			}
			vars.Bundle = bundle
			for j, a := range t.Expect.Assert {
				p, err := env.Compile(a.Value, rules.Bool)
				if err != nil {
					failf("%s: assert[%d]: %v", a.Pos, j, err)
					continue
				}
				ok, err := p.EvalBool(ctx, &vars)
				if err != nil {
					failf("%s: assert[%d] on %s: %v%s", a.Pos, j, d.Destination, err, withDetail(err))
				} else if !ok {
					failf("%s: assert[%d] on %s does not hold: %s", a.Pos, j, d.Destination, strings.TrimSpace(a.Value))
				}
			}
			g, ok := t.Expect.FHIR[d.Destination]
			if !ok {
				continue
			}
			golden := g.Value
			path := testPath(dir, golden)
			// A FHIR payload's golden file is indented JSON; a raw one is
			// the bytes sent.
			want := d.Body
			if fhirBody {
				var pretty bytes.Buffer
				_ = json.Indent(&pretty, d.Body, "", "  ")
				pretty.WriteByte('\n')
				want = pretty.Bytes()
			}
			if update {
				if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, want) {
					continue // already so: not reported as updated
				}
				pending = append(pending, goldenWrite{path, want})
				continue
			}
			wantB, err := os.ReadFile(path)
			if err != nil {
				failf("reading golden %s: %v (run with --update to create it)", path, err)
				continue
			}
			switch {
			case fhirBody && !jsonEqual(wantB, d.Body):
				failf("%s: payload differs from golden %s (run with --update after reviewing)", d.Destination, golden)
				for _, l := range jsonDiff(wantB, d.Body) {
					failf("  %s", l)
				}
			case !fhirBody && !bytes.Equal(wantB, d.Body):
				failf("%s: raw payload differs from golden %s (run with --update after reviewing)", d.Destination, golden)
				failf("  %s", rawDiff(wantB, d.Body))
			}
		}
		for dest := range t.Expect.FHIR {
			if !slices.Contains(got, dest) {
				failf("golden given for %s, which received nothing", dest)
			}
		}
		// A golden records output the test otherwise accepts: one whose
		// other expectations fail keeps its goldens as they are, so
		// --update never makes wrong output the expected.
		for _, g := range pending {
			if len(res.Failures) > 0 {
				failf("golden %s not updated: the test's other expectations fail", g.path)
				continue
			}
			if err := os.WriteFile(g.path, g.data, 0o644); err != nil {
				failf("writing golden %s: %v", g.path, err)
			} else {
				res.Updated = append(res.Updated, g.path)
			}
		}
		out = append(out, res)
	}
	return out
}

// whyFiltered says why the route sent res nowhere, for a test that did
// not expect it: its events do not take the message's type, or its match
// expression, named with where it is written, was false. It is "" for a
// message that was not filtered.
func (r *Route) whyFiltered(env *envelope.Envelope, res *Result) string {
	switch {
	case !res.Taken:
		return fmt.Sprintf(" (source.events does not take %s)", env.MessageType)
	case !res.Matched:
		for _, c := range r.Programs {
			if c.Program == r.match {
				return fmt.Sprintf(" (%s at %s was false)", c.Where, c.Pos)
			}
		}
		return " (match was false)"
	}
	return ""
}

// goldenWrite is a golden file --update rewrites once its test passes.
type goldenWrite struct {
	path string
	data []byte
}

// checkV2Input refuses a test's input that an MLLP input refuses before
// storing it: one that does not parse as HL7 v2 (a FHIR resource, say),
// holds more than one message, lacks MSH-9 or MSH-10, or is of a type
// that tr, the input's translator, neither translates nor relays (when
// it lists them). A route that takes some events only would otherwise
// count such an input as filtered, and a test expecting that would pass
// for nothing.
func checkV2Input(raw []byte, tr adapter.Translator) error {
	m, err := hl7v2.Parse(raw)
	switch {
	case err != nil:
		return fault.Wrap(fault.Permanent, fault.CodeHL7Parse, "an MLLP input refuses it before storing: it is not an HL7 v2 message", err)
	case m.CountSegments("MSH") > 1:
		return fault.Newf(fault.CodeHL7Parse, "an MLLP input refuses it before storing: it holds %d messages (MSH segments); give a test one message", m.CountSegments("MSH"))
	case m.MessageType() == "":
		return fault.New(fault.CodeHL7Required, "an MLLP input refuses it before storing: MSH-9 is required")
	case m.ControlID() == "":
		return fault.New(fault.CodeHL7Required, "an MLLP input refuses it before storing: MSH-10 is required")
	}
	el, ok := tr.(adapter.EventLister)
	if !ok {
		return nil
	}
	types := el.Events()
	if rl, ok := tr.(adapter.RelayLister); ok {
		types = append(slices.Clip(types), rl.RelayTypes()...)
	}
	// As the listener matches them: TYPE^EVENT, or TYPE^* for any event.
	typ, ev := m.Segment("MSH").Component(9, 1, 1, 1), m.Event()
	if slices.Contains(types, typ+"^"+ev) || ev != "" && slices.Contains(types, typ+"^*") {
		return nil
	}
	return fault.Newf(fault.CodeHL7Unsupported, "an MLLP input refuses it before storing: it takes %s (a type it does not translate can be listed in its relay setting)", strings.Join(types, ", "))
}

// testDecider is the consent engine a test's decisions are made by: no
// stored Consents and no destination allow-lists, as a zero-setup engine
// has, and the test's opt-out list when it gives one (else none, so
// purposes the national data opt-out applies to are denied).
func testDecider(t TestSpec) consent.Decider {
	if t.OptOuts == nil {
		return &consent.Engine{}
	}
	list := optOutList{}
	for _, n := range *t.OptOuts {
		list[nhs.Normalize(n.Value)] = true
	}
	return &consent.Engine{Source: list}
}

// optOutList is a consent.Source of a test's opt-out list: the NHS
// numbers on it, up to date, and no stored Consents.
type optOutList map[string]bool

// Policies implements consent.Source: a test has no stored Consents.
func (optOutList) Policies(context.Context, string) ([]consent.Policy, error) { return nil, nil }

// OptOut implements consent.Source.
func (l optOutList) OptOut(_ context.Context, patientKey string, _ time.Time) (consent.OptOutStatus, error) {
	return consent.OptOutStatus{OptedOut: l[nhs.Normalize(patientKey)]}, nil
}

// runOneWith routes one test message with the given consent decider.
func (r *Route) runOneWith(ctx context.Context, tr adapter.Translator, e *envelope.Envelope, decider consent.Decider, patient map[string]any, derive bool) (*Result, *adapter.Translation, map[string]any, error) {
	if !r.Takes(e.MessageType, "") {
		return &Result{}, &adapter.Translation{}, patient, nil
	}
	t, err := tr.Translate(e)
	if err != nil {
		return nil, nil, patient, err
	}
	// As the router marks it: a ten-digit hospital number is not the NHS
	// number of whoever has that number.
	if b, err := jsonmap.Decode(t.Bundle); err == nil {
		t.PatientKey = LocalKey(t.PatientKey, b)
	}
	if derive {
		patient = nil
		if !t.Relayed { // the index never applies a relayed message
			patient = firstPatient(e, t)
		}
	}
	res, err := r.Process(ctx, Input{Env: e, Tr: t, Patient: patient}, decider)
	return res, t, patient, err
}

// firstPatient is the patient variable of a patient's first message, t
// the translation of e: nil (an unknown patient) when the index would not
// index it.
func firstPatient(e *envelope.Envelope, t *adapter.Translation) map[string]any {
	b := t.Parsed
	if b == nil {
		var err error
		if b, err = jsonmap.Decode(t.Bundle); err != nil {
			return nil
		}
	}
	rec := patient.FirstRecord(b, patient.Source{MessageID: e.ID, Received: e.ReceivedAt})
	if rec == nil {
		return nil
	}
	return rec.CELAt(e.ReceivedAt)
}

// testPatient returns a test's patient record as the index would give it
// to routes: JSON-shaped, and with every key a record has, those the test
// leaves out as an empty record has them ("", false, empty lists), so
// that an expression reading one does not fail only in the test.
func testPatient(p map[string]any) (map[string]any, error) {
	if len(p) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("not JSON-shaped: %w", err)
	}
	given, err := jsonmap.Decode(b)
	if err != nil {
		return nil, err
	}
	rec := (&patient.Record{}).CELAt(time.Time{})
	for k, v := range given {
		// consent's keys too: {consent: {optedOut: true}} keeps
		// hasActiveConsent.
		if inner, ok := rec[k].(map[string]any); ok {
			if gv, ok := v.(map[string]any); ok {
				maps.Copy(inner, gv)
				continue
			}
		}
		rec[k] = v
	}
	return rec, nil
}

// rawDiff says where two raw (HL7 v2) payloads first differ, by segment
// and field number, without quoting either: their values are patient
// data.
func rawDiff(want, got []byte) string {
	split := func(b []byte) []string {
		return strings.FieldsFunc(string(b), func(r rune) bool { return r == '\r' || r == '\n' })
	}
	w, g := split(want), split(got)
	for i := 0; i < max(len(w), len(g)); i++ {
		switch {
		case i >= len(w):
			return fmt.Sprintf("segment %d: golden (absent), got %s", i+1, segName(g[i]))
		case i >= len(g):
			return fmt.Sprintf("segment %d: golden %s, got (absent)", i+1, segName(w[i]))
		case w[i] == g[i]:
			continue
		case segName(w[i]) != segName(g[i]):
			return fmt.Sprintf("segment %d: golden %s, got %s", i+1, segName(w[i]), segName(g[i]))
		}
		wf, gf := strings.Split(w[i], "|"), strings.Split(g[i], "|")
		for j := 1; j < max(len(wf), len(gf)); j++ {
			if j >= len(wf) || j >= len(gf) || wf[j] != gf[j] {
				n := j
				if segName(w[i]) == "MSH" {
					n++ // MSH-1 is the field separator itself
				}
				return fmt.Sprintf("segment %d: %s-%d differs", i+1, segName(w[i]), n)
			}
		}
	}
	return "segment separators differ"
}

// segName is a segment's name, its first three characters.
func segName(seg string) string {
	if len(seg) > 3 {
		return seg[:3]
	}
	return seg
}

// checkTestInputs reports each test whose input file cannot be read.
func (r *Route) checkTestInputs() yamlx.Errors {
	var errs yamlx.Errors
	dir := filepath.Dir(r.File)
	for i, t := range r.Tests {
		if t.Input.File.Value == "" {
			continue
		}
		if _, _, err := testInput(dir, t.Input); err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			errs.Add(t.Input.File.Pos, "tests[%d].input.file: cannot read %s: %v", i, testPath(dir, t.Input.File.Value), err)
		}
	}
	return errs
}

// testPath returns the path of a test's file p, named in the route file
// in dir: p itself when absolute, else p under dir.
func testPath(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

func testInput(dir string, in InputSpec) ([]byte, string, error) {
	var raw []byte
	name := ""
	if in.File.Value != "" {
		name = in.File.Value
		b, err := os.ReadFile(testPath(dir, in.File.Value))
		if err != nil {
			return nil, "", err
		}
		raw = b
	} else {
		raw = []byte(in.Inline.Value)
	}
	ct := in.ContentType
	if ct == "" {
		trimmed := bytes.TrimLeft(bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")), " \t\r\n")
		switch {
		case strings.HasSuffix(name, ".json") || bytes.HasPrefix(trimmed, []byte("{")):
			ct = envelope.ContentTypeFHIR
		default:
			ct = envelope.ContentTypeHL7v2
		}
	}
	if ct == envelope.ContentTypeHL7v2 && in.Inline.Value != "" {
		// YAML block text ends lines with LF; HL7 segments end with CR.
		raw = bytes.ReplaceAll(bytes.TrimRight(raw, "\n"), []byte("\n"), []byte("\r"))
	}
	return raw, ct, nil
}

// maxJSONDiffs bounds the differences jsonDiff lists.
const maxJSONDiffs = 10

// jsonDiff lists where the JSON documents want and got differ, one line
// each as "path: golden X, got Y" (the path "(root)" for the documents
// themselves), at most maxJSONDiffs and then a count of the rest; nil
// when they are equal, and one line saying so when either does not
// parse.
func jsonDiff(want, got []byte) []string {
	var w, g any
	if json.Unmarshal(want, &w) != nil {
		return []string{"golden is not valid JSON"}
	}
	if json.Unmarshal(got, &g) != nil {
		return []string{"payload is not valid JSON"}
	}
	var out []string
	n := 0
	add := func(path string, a, b any) {
		if path == "" {
			path = "(root)"
		}
		n++
		if len(out) < maxJSONDiffs {
			out = append(out, fmt.Sprintf("%s: golden %s, got %s", path, short(a), short(b)))
		}
	}
	var walk func(path string, a, b any)
	walk = func(path string, a, b any) {
		switch av := a.(type) {
		case map[string]any:
			bv, ok := b.(map[string]any)
			if !ok {
				add(path, a, b)
				return
			}
			keys := make([]string, 0, len(av)+len(bv))
			for k := range av {
				keys = append(keys, k)
			}
			for k := range bv {
				if _, ok := av[k]; !ok {
					keys = append(keys, k)
				}
			}
			slices.Sort(keys)
			for _, k := range keys {
				p := k
				if path != "" {
					p = path + "." + k
				}
				x, inA := av[k]
				y, inB := bv[k]
				switch {
				case !inA:
					add(p, missing{}, y)
				case !inB:
					add(p, x, missing{})
				default:
					walk(p, x, y)
				}
			}
		case []any:
			bv, ok := b.([]any)
			if !ok {
				add(path, a, b)
				return
			}
			for i := range max(len(av), len(bv)) {
				p := fmt.Sprintf("%s[%d]", path, i)
				switch {
				case i >= len(av):
					add(p, missing{}, bv[i])
				case i >= len(bv):
					add(p, av[i], missing{})
				default:
					walk(p, av[i], bv[i])
				}
			}
		default:
			if !reflect.DeepEqual(a, b) {
				add(path, a, b)
			}
		}
	}
	walk("", w, g)
	if n > len(out) {
		out = append(out, fmt.Sprintf("and %d more differences", n-len(out)))
	}
	return out
}

// missing stands for an absent value in jsonDiff.
type missing struct{}

// short renders v for a jsonDiff line, cut to 80 bytes.
func short(v any) string {
	if _, ok := v.(missing); ok {
		return "(absent)"
	}
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// withDetail returns err's caller-only detail as " (detail: ...)" for a
// test's report, or "" when it has none or says only what the error does.
func withDetail(err error) string {
	d := fault.DetailOf(err)
	if d == "" || strings.Contains(err.Error(), d) {
		return ""
	}
	return " (detail: " + d + ")"
}
