package route

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/rules"
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
			ResourceType string `json:"resourceType"`
		}
		if json.Unmarshal(raw, &probe) == nil {
			env.MessageType = probe.ResourceType
		}
	}
	return env
}

// RunTests runs the route's tests with its source's translator and the
// consent engine with no stored Consents, no opt-out list and no
// destination allow-lists, as a zero-setup engine decides. No network is
// used. With update, golden FHIR
// files are rewritten from the actual output.
func (r *Route) RunTests(ctx context.Context, tr adapter.Translator, env *rules.Env, update bool) []TestResult {
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
		result, event, err := r.runOne(ctx, tr, e)
		if t.Expect.Error != "" {
			if err == nil {
				failf("expected routing to fail with %s, but it succeeded", t.Expect.Error)
			} else if got := string(fault.CodeOf(err)); got != t.Expect.Error {
				failf("expected error code %s, got %s (%v)", t.Expect.Error, got, err)
			}
			out = append(out, res)
			continue
		}
		if err != nil {
			failf("routing failed: %v (detail: %s)", err, fault.DetailOf(err))
			out = append(out, res)
			continue
		}
		filtered := !result.Taken || !result.Matched
		if filtered != t.Expect.Filtered {
			failf("expected filtered=%v, got filtered=%v", t.Expect.Filtered, filtered)
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
			failf("expected deliveries %v, got %v", want, got)
		}
		var wantDenied []string
		for _, d := range t.Expect.Denied {
			wantDenied = append(wantDenied, d.Value)
		}
		gotDenied := slices.Clone(result.Denied)
		slices.Sort(wantDenied)
		slices.Sort(gotDenied)
		if !slices.Equal(wantDenied, gotDenied) {
			failf("expected consent denials %v, got %v", wantDenied, gotDenied)
		}
		for _, d := range result.Deliveries {
			if d.ContentType != envelope.ContentTypeFHIR {
				continue
			}
			var bundle map[string]any
			if err := json.Unmarshal(d.Body, &bundle); err != nil {
				failf("%s: payload is not JSON: %v", d.Destination, err)
				continue
			}
			for j, a := range t.Expect.Assert {
				p, err := env.Compile(a.Value, rules.Bool)
				if err != nil {
					failf("%s: assert[%d]: %v", a.Pos, j, err)
					continue
				}
				ok, err := p.EvalBool(ctx, &rules.Vars{Bundle: bundle, Msg: MsgVars(e, event)})
				if err != nil {
					failf("%s: assert[%d] on %s: %v (%s)", a.Pos, j, d.Destination, err, fault.DetailOf(err))
				} else if !ok {
					failf("%s: assert[%d] on %s does not hold: %s", a.Pos, j, d.Destination, strings.TrimSpace(a.Value))
				}
			}
			if golden, ok := t.Expect.FHIR[d.Destination]; ok {
				path := filepath.Join(dir, golden)
				var pretty bytes.Buffer
				_ = json.Indent(&pretty, d.Body, "", "  ")
				pretty.WriteByte('\n')
				if update {
					if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, pretty.Bytes()) {
						continue // already so: not reported as updated
					}
					if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
						failf("writing golden %s: %v", path, err)
					} else {
						res.Updated = append(res.Updated, path)
					}
					continue
				}
				wantB, err := os.ReadFile(path)
				if err != nil {
					failf("reading golden %s: %v (run with --update to create it)", path, err)
					continue
				}
				if !jsonEqual(wantB, d.Body) {
					failf("%s: payload differs from golden %s (run with --update after reviewing)", d.Destination, golden)
					for _, l := range jsonDiff(wantB, d.Body) {
						failf("  %s", l)
					}
				}
			}
		}
		for dest := range t.Expect.FHIR {
			if !slices.Contains(got, dest) {
				failf("golden given for %s, which received nothing", dest)
			}
		}
		out = append(out, res)
	}
	return out
}

// runOne routes e as a zero-setup engine would and returns the result and
// the translation's event, which asserts see as msg.event.
func (r *Route) runOne(ctx context.Context, tr adapter.Translator, e *envelope.Envelope) (*Result, string, error) {
	return r.runOneWith(ctx, tr, e, &consent.Engine{})
}

// runOneWith is runOne with the given consent decider.
func (r *Route) runOneWith(ctx context.Context, tr adapter.Translator, e *envelope.Envelope, decider consent.Decider) (*Result, string, error) {
	if !r.Takes(e.MessageType, "") {
		return &Result{}, "", nil
	}
	t, err := tr.Translate(e)
	if err != nil {
		return nil, "", err
	}
	res, err := r.Process(ctx, Input{Env: e, Tr: t}, decider)
	return res, t.Event, err
}

// CheckTestInputs returns one `file:line:col: message` line per test
// whose input file cannot be read, for lint: serve does not need a
// route's test files, so loading does not check them.
func (r *Route) CheckTestInputs() []string {
	var out []string
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
			out = append(out, fmt.Sprintf("%s: tests[%d].input.file: cannot read %s: %v", t.Input.File.Pos, i, filepath.Join(dir, t.Input.File.Value), err))
		}
	}
	return out
}

func testInput(dir string, in InputSpec) ([]byte, string, error) {
	var raw []byte
	name := ""
	if in.File.Value != "" {
		name = in.File.Value
		b, err := os.ReadFile(filepath.Join(dir, in.File.Value))
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
