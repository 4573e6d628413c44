package rules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/cel-go/common/types"
	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/jsonmap"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// Synthetic NHS numbers from the 999 range.
const (
	validNHS   = "9990000018" // check digit 8
	invalidNHS = "9990000019" // wrong check digit
	otherNHS   = "9990000042"
)

// testV2 is a synthetic ADT^A01.
const testV2 = "MSH|^~\\&|PAS|RX1|JUNCTION|RX1|20261123093000||ADT^A01^ADT_A01|MSG00001|P|2.4|||AL|NE\r" +
	"EVN|A01|20261123093000\r" +
	"PID|1||" + validNHS + "^^^NHS^NH~K123456^^^RX1^MR||TESTPATIENT^ALEX^J^^MX||19800101|F\r" +
	"PV1|1|I|WARD1^BED2^1^RX1\r"

func newEnv(t testing.TB, lim Limits) *Env {
	t.Helper()
	e, err := NewEnv(lim)
	if err != nil {
		t.Fatalf("NewEnv: %v", err)
	}
	return e
}

func parseV2(t testing.TB) *hl7v2.Message {
	t.Helper()
	m, err := hl7v2.Parse([]byte(testV2))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return m
}

// testBundle returns a bundle as encoding/json would decode it.
func testBundle(t testing.TB) map[string]any {
	t.Helper()
	const src = `{
	  "resourceType": "Bundle", "type": "message",
	  "entry": [
	    {"resource": {"resourceType": "MessageHeader", "id": "h1"}},
	    {"resource": {"resourceType": "Patient", "id": "p1", "identifier": [
	      {"system": "https://fhir.example-trust.nhs.uk/Id/local-patient-identifier", "value": "K123456"},
	      {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "` + validNHS + `"}]}},
	    {"resource": {"resourceType": "Encounter", "id": "e1", "status": "in-progress"}},
	    {"resource": {"resourceType": "Patient", "id": "p2", "identifier": [
	      {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "` + otherNHS + `"}]}},
	    {"fullUrl": "urn:uuid:no-resource"},
	    "not a map"
	  ]}`
	var b map[string]any
	if err := json.Unmarshal([]byte(src), &b); err != nil {
		t.Fatal(err)
	}
	return b
}

func testVars(t testing.TB) *Vars {
	t.Helper()
	return &Vars{
		Msg: map[string]any{
			"id": "01TESTID", "source": "pas", "type": "ADT^A01", "event": "A01",
			"control_id": "MSG00001", "sender": "PAS|RX1",
			"received": time.Date(2026, 1, 15, 10, 30, 0, 0, time.UTC), "content_type": "application/hl7-v2",
		},
		Bundle:      testBundle(t),
		V2:          parseV2(t),
		Destination: map[string]any{"name": "fhir-store"},
		Patient:     map[string]any{"gpPractice": "B86001"},
		Resource:    map[string]any{"resourceType": "Encounter", "status": "finished"},
	}
}

func TestEvalVariablesAndFunctions(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	full := testVars(t)
	noV2 := testVars(t)
	noV2.V2 = nil
	summer := testVars(t)
	summer.Msg["received"] = time.Date(2026, 7, 15, 23, 30, 0, 0, time.UTC)
	tests := []struct {
		name string
		src  string
		vars *Vars
		want any
	}{
		{"msg id", `msg.id`, full, "01TESTID"},
		{"msg source", `msg.source`, full, "pas"},
		{"msg type", `msg.type`, full, "ADT^A01"},
		{"msg event", `msg.event`, full, "A01"},
		{"msg control id", `msg.control_id`, full, "MSG00001"},
		{"msg sender", `msg.sender`, full, "PAS|RX1"},
		{"msg content type", `msg.content_type`, full, "application/hl7-v2"},
		{"msg received is a timestamp", `msg.received == timestamp("2026-01-15T10:30:00Z")`, full, true},
		// msg.received is UTC; English clock hours and days need the zone.
		{"msg received hours are UTC's", `msg.received.getHours()`, summer, int64(23)},
		{"msg received hours in England", `msg.received.getHours("Europe/London")`, summer, int64(0)},
		{"msg received day of week in England", `msg.received.getDayOfWeek("Europe/London")`, summer, int64(4)},
		{"has of a msg key compared with a bool", `has(msg.sender) == true`, full, true},
		{"a msg key compared with null", `msg.sender != null`, full, true},
		{"bundle field", `bundle.type`, full, "message"},
		{"bundle entries", `size(bundle.entry)`, full, int64(6)},
		{"destination", `destination.name`, full, "fhir-store"},
		{"patient", `patient.gpPractice`, full, "B86001"},
		{"resource", `resource.status`, full, "finished"},
		{"nil maps are empty", `size(msg) + size(bundle) + size(destination) + size(patient) + size(resource)`, &Vars{}, int64(0)},
		{"nhsNumberValid valid", `nhsNumberValid("` + validNHS + `")`, full, true},
		{"nhsNumberValid spaced", `nhsNumberValid("999 000 0018")`, full, true},
		{"nhsNumberValid hyphens", `nhsNumberValid("999-000-0018")`, full, true},
		{"nhsNumberValid bad check digit", `nhsNumberValid("` + invalidNHS + `")`, full, false},
		{"nhsNumberValid empty", `nhsNumberValid("")`, full, false},
		{"nhsNumberValid letters", `nhsNumberValid("99900000AB")`, full, false},
		{"nhsNumber first patient", `nhsNumber(bundle)`, full, validNHS},
		{"nhsNumber empty bundle", `nhsNumber(bundle)`, &Vars{}, ""},
		{"nhsNumber no nhs identifier", `nhsNumber({"entry": [{"resource": {"resourceType": "Patient", "identifier": [{"system": "x", "value": "1"}]}}]})`, full, ""},
		{"nhsNumber no identifiers", `nhsNumber({"entry": [{"resource": {"resourceType": "Patient"}}]})`, full, ""},
		{"nhsNumber value not a string", `nhsNumber({"entry": [{"resource": {"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": 9990000018}]}}]})`, full, ""},
		{"nhsNumber first patient without one", `nhsNumber({"entry": [{"resource": {"resourceType": "Patient"}}, {"resource": {"resourceType": "Observation", "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}}}}]})`, full, ""},
		{"nhsNumber subject identifier", `nhsNumber({"entry": [{"resource": {"resourceType": "Observation", "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}}}}]})`, full, "9990000018"},
		{"nhsNumber patient identifier", `nhsNumber({"entry": [{"resource": {"resourceType": "Practitioner"}}, {"resource": {"resourceType": "AllergyIntolerance", "patient": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}}}}]})`, full, "9990000026"},
		{"nhsNumber conditional reference", `nhsNumber({"entry": [{"resource": {"resourceType": "Condition", "subject": {"reference": "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000034"}}}]})`, full, "9990000034"},
		{"nhsNumber reference by another system", `nhsNumber({"entry": [{"resource": {"resourceType": "Condition", "subject": {"identifier": {"system": "https://trust.example/mrn", "value": "9990000034"}, "reference": "Patient/1"}}}]})`, full, ""},
		{"nhsNumber Patient in a carried document", `nhsNumber({"entry": [{"resource": {"resourceType": "MessageHeader"}}, {"resource": {"resourceType": "Bundle", "type": "document", "entry": [{"resource": {"resourceType": "Composition"}}, {"resource": {"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000042"}]}}]}}]})`, full, "9990000042"},
		{"nhsNumber identifier not a list", `nhsNumber({"entry": [{"resource": {"resourceType": "Patient", "identifier": "x"}}]})`, full, ""},
		{"resource first of type", `resource(bundle, "Patient").id`, full, "p1"},
		{"resource missing is empty map", `size(resource(bundle, "Observation"))`, full, int64(0)},
		{"resource of bundle without entries", `size(resource(bundle, "Patient"))`, &Vars{}, int64(0)},
		{"resource entry not a list", `size(resource({"entry": "x"}, "Patient"))`, full, int64(0)},
		{"resource entry resource not a map", `size(resource({"entry": [{"resource": 1}]}, "Patient"))`, full, int64(0)},
		{"resources all of type", `resources(bundle, "Patient").map(r, r.id)`, full, []any{"p1", "p2"}},
		{"resources none", `resources(bundle, "Observation").size()`, full, int64(0)},
		{"resource status", `resource(bundle, "Encounter").status == "in-progress"`, full, true},
		{"v2 get field", `v2.get("PID-3[1].1")`, full, validNHS},
		{"v2 get second repetition", `v2.get("PID-3[2].1")`, full, "K123456"},
		{"v2 get name", `v2.get("PID-5.2")`, full, "ALEX"},
		{"v2 get message type", `v2.get("MSH-9.2")`, full, "A01"},
		{"v2 get missing segment", `v2.get("OBX-5")`, full, ""},
		{"v2 get bad path built at run time", `v2.get("non" + msg.id.substring(0, 0) + "sense")`, full, ""},
		{"v2 nil message", `v2.get("PID-3[1].1")`, noV2, ""},
		{"v2 nil message compares", `v2.get("MSH-9.1") == ""`, &Vars{}, true},
		{"strings extension", `"a,b,c".split(",").size() == 3 && "Abc".lowerAscii() == "abc"`, full, true},
		{"functions compose", `nhsNumberValid(nhsNumber(bundle)) && v2.get("PID-3[1].1") == nhsNumber(bundle)`, full, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Wrapping the expression in a map lets one table hold
			// results of every type, as JSON-shaped values.
			p, err := env.Compile(`{"v": (`+tt.src+`)}`, Map)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			m, err := p.EvalMap(context.Background(), tt.vars)
			if err != nil {
				t.Fatalf("EvalMap: %v (%s)", err, fault.DetailOf(err))
			}
			got := m["v"]
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tt.src, diff)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	tests := []struct {
		name string
		src  string
		kind Kind
		// want lists, per issue, the text at its offset (the offending
		// token) or "" for an issue without an offset, and a fragment of
		// its message.
		want [][2]string
	}{
		{"syntax error at end", `bundle.type ==`, Bool, [][2]string{{"", "Syntax error"}}},
		{"undeclared variable", `bundel.type == "x"`, Bool, [][2]string{{"bundel", "undeclared reference to 'bundel'"}}},
		// CEL places a call at its opening parenthesis.
		{"undeclared on second line", "msg.event == \"A01\" &&\n  nhsNumberValid(nhsnumber(bundle))", Bool, [][2]string{{"nhsnumber(bundle)", "undeclared reference to 'nhsnumber'"}}},
		{"after multibyte text", `msg.sender == "é" && zz`, Bool, [][2]string{{"zz", "undeclared reference to 'zz'"}}},
		{"unknown characters", `msg.id == "x" || éé`, Bool, [][2]string{{"éé", "token recognition error"}, {"é", "token recognition error"}, {"", "mismatched input '<EOF>'"}}},
		{"wrong argument type", `nhsNumberValid(1)`, Bool, [][2]string{{"(1)", "no matching overload"}}},
		{"v2 get wants a string", `v2.get(1) == ""`, Bool, [][2]string{{"(1)", "no matching overload"}}},
		{"int is not bool", `1 + 1`, Bool, [][2]string{{"", "must return bool, not int"}}},
		{"string is not bool", `msg.id + "x"`, Bool, [][2]string{{"", "must return bool, not string"}}},
		{"map is not bool", `bundle`, Bool, [][2]string{{"", "must return bool, not map(string, dyn)"}}},
		{"bool is not a map", `true`, Map, [][2]string{{"", "must return a map with string keys, not bool"}}},
		{"list is not a map", `bundle.entry.map(e, e)`, Map, [][2]string{{"", "must return a map with string keys, not list(dyn)"}}},
		{"int keys are not a map", `{1: "a"}`, Map, [][2]string{{"", "must return a map with string keys, not map(int, string)"}}},
		// msg and destination have fixed keys: a misspelt one would fail
		// every evaluation, so it fails the load.
		{"misspelt msg key", `msg.evnt == "A03"`, Bool, [][2]string{{".evnt", `msg has no key "evnt" (it has id, source, type, event, control_id, sender, received, content_type)`}}},
		// has() is placed at its parenthesis.
		{"misspelt key tested with has", `has(msg.evnt)`, Bool, [][2]string{{"(msg.evnt", `msg has no key "evnt"`}}},
		{"misspelt key by index", `msg.event == "A01" && msg["control"] != ""`, Bool, [][2]string{{`["control"]`, `msg has no key "control"`}}},
		{"misspelt destination key", `destination.type == "file"`, Bool, [][2]string{{".type", `destination has no key "type" (it has name)`}}},
		{"two misspelt keys", "msg.evnt == \"A03\" ||\n  msg.sorce == \"pas\"", Bool, [][2]string{{".evnt", `msg has no key "evnt"`}, {".sorce", `msg has no key "sorce"`}}},
		// So has patient, for a patient the index knows (an empty map for
		// one it does not): a key it never has reads as an error.
		{"misspelt patient key", `has(patient.nhsNumber) && patient.gpPractise == "B86001"`, Bool, [][2]string{{".gpPractise", `patient has no key "gpPractise" (it has nhsNumber, identifiers,`}}},
		{"patient key it has not", `has(patient.age)`, Bool, [][2]string{{"(patient.age", `patient has no key "age"`}}},
		{"patient bool compared with a string", `patient.restricted == "true"`, Bool, [][2]string{{`"true"`, "patient.restricted is a bool; it cannot be compared (==) with a string"}}},
		// Their values are strings, but msg.received's, a timestamp: a
		// comparison with another type is never true, or fails every time.
		{"msg key compared with an int", `msg.event == 1`, Bool, [][2]string{{"1", "msg.event is a string; it cannot be compared (==) with an int"}}},
		{"int compared with a msg key", `1 != msg["event"]`, Bool, [][2]string{{"1", "msg.event is a string; it cannot be compared (!=) with an int"}}},
		{"received compared with an int", `msg.received > 5`, Bool, [][2]string{{"5", `msg.received is a timestamp; it cannot be compared (>) with an int, such as timestamp(`}}},
		{"received compared with a string", `msg.received < "2026"`, Bool, [][2]string{{`"2026"`, "msg.received is a timestamp; it cannot be compared (<) with a string"}}},
		{"msg key in a list of ints", `msg.event in ["A01", 3]`, Bool, [][2]string{{"3", "msg.event is a string; it cannot be compared (in) with an int"}}},
		{"destination name compared with a bool", `destination.name == true`, Bool, [][2]string{{"true", "destination.name is a string"}}},
		{"received compared with a duration", `msg.received > duration("1h")`, Bool, [][2]string{{`("1h")`, "msg.received is a timestamp; it cannot be compared (>) with a duration"}}},
		// msg.event and msg.type mistaken for each other never match.
		{"event compared with a type", `msg.event == "ADT^A01"`, Bool, [][2]string{{`"ADT^A01"`, `msg.event is the trigger event alone, such as "A01", so it never holds "ADT^A01": compare msg.type with "ADT^A01", or msg.event with "A01"`}}},
		{"event in a list holding a type", `msg.event in ["A01", "ADT^A03"]`, Bool, [][2]string{{`"ADT^A03"`, `never holds "ADT^A03"`}}},
		{"type compared with an event", `msg["type"] != "A03"`, Bool, [][2]string{{`"A03"`, `msg.type is the message type and event, such as "ADT^A03" (a FHIR input's, the resource type), so it never holds "A03": compare msg.event with "A03"`}}},
		// An unknown function is placed at its name, not the bracket after
		// it, and the root container is not named.
		{"misspelt function", `nhsNumbrValid(nhsNumber(bundle))`, Bool, [][2]string{{"nhsNumbrValid(", `undeclared reference to 'nhsNumbrValid' (did you mean "nhsNumberValid"?)`}}},
		{"misspelt variable", `bundel.entry.size() > 0`, Bool, [][2]string{{"bundel", `undeclared reference to 'bundel' (did you mean "bundle"?)`}}},
		{"unknown name like none", `zzzqqq == 1`, Bool, [][2]string{{"zzzqqq", "undeclared reference to 'zzzqqq'"}}},
		// Names and operators as other languages write them get CEL's.
		{"function named as in Java", `msg.source.toUpperCase() == "PAS"`, Bool, [][2]string{{"toUpperCase(", `undeclared reference to 'toUpperCase' (CEL calls it "upperAscii")`}}},
		{"length for size", `msg.source.length() > 0`, Bool, [][2]string{{"length(", `undeclared reference to 'length' (CEL calls it "size")`}}},
		{"single equals", `msg.event = "A01"`, Bool, [][2]string{{"= ", "(CEL compares with ==)"}, {`"A01"`, "extraneous input"}}},
		{"and as a word", `msg.event == "A01" and true`, Bool, [][2]string{{"and", "(CEL's and is &&)"}}},
		{"not-equal as in SQL", `msg.event <> "A02"`, Bool, [][2]string{{`> "A02"`, "(CEL's not-equal is !=)"}}},
		{"misspelt function inside a call", `nhsNumberValid(nhsNumbr(bundle))`, Bool, [][2]string{{"nhsNumbr(", "undeclared reference to 'nhsNumbr'"}}},
		// A literal v2 path that is not one would read "" from every message.
		{"v2 path without a dash", `v2.get("PID3") == ""`, Bool, [][2]string{{`"PID3"`, `v2.get: "PID3" is not a v2 path`}}},
		{"v2 path field 0", `v2.get("PID-0") == ""`, Bool, [][2]string{{`"PID-0"`, `v2.get: "PID-0" is not a v2 path`}}},
		{"v2 path repetition 0", `v2.get("PID-3[0]") == ""`, Bool, [][2]string{{`"PID-3[0]"`, `v2.get: "PID-3[0]" is not a v2 path`}}},
		{"v2 path empty", `v2.get("") == ""`, Bool, [][2]string{{`""`, `v2.get: "" is not a v2 path`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := env.Compile(tt.src, tt.kind)
			if err == nil {
				t.Fatalf("Compile(%q) = %v, want an error", tt.src, p.Source())
			}
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("error is %T, want *CompileError", err)
			}
			var got [][2]string
			for i, is := range ce.Issues {
				at := ""
				if is.Offset >= 0 {
					if is.Offset > len(tt.src) {
						t.Fatalf("issue %d offset %d beyond source of %d bytes", i, is.Offset, len(tt.src))
					}
					at = tt.src[is.Offset:]
					if i < len(tt.want) && len(at) > len(tt.want[i][0]) {
						at = at[:len(tt.want[i][0])]
					}
				}
				frag := is.Msg
				if i < len(tt.want) && strings.Contains(is.Msg, tt.want[i][1]) {
					frag = tt.want[i][1]
				}
				got = append(got, [2]string{at, frag})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("issues of %q (-want +got):\n%s\nall: %v", tt.src, diff, err)
			}
		})
	}
}

// TestCompileKnownKeys: every key of msg and destination compiles, and
// a comprehension variable named like them is not checked against them.
func TestCompileKnownKeys(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	var srcs []string
	for _, k := range MsgKeys() {
		srcs = append(srcs, `has(msg.`+k+`) && msg["`+k+`"] == msg.`+k)
	}
	for _, k := range DestinationKeys() {
		srcs = append(srcs, `destination.`+k+` != ""`)
	}
	for _, k := range PatientKeys() {
		srcs = append(srcs, `has(patient.`+k+`) && patient["`+k+`"] == patient.`+k)
	}
	srcs = append(srcs,
		`msg.type in ["ADT^A01", "Bundle", "ORM^O01"] && msg.event in ["A01", "transaction", "Patient"]`,
		`msg.type.startsWith("ADT^") && msg.event > "A0" && msg.sender == "PAS|RX1"`,
		`has(patient.consent) && patient.consent.optedOut == false && "CPP" in patient.activeFlags`,
		`patient.flags.exists(f, f.code == "CPP" && f.active) && !patient.restricted`,
		`bundle.entry.exists(patient, patient.resource.visits > 2)`,
		`bundle.entry.exists(msg, msg.resource.resourceType == "Patient")`,
		`bundle.entry.exists(e, e.fullUrl != "") && msg.event == "A01"`,
		`[1].all(destination, destination > 0)`,
	)
	for _, src := range srcs {
		t.Run(src, func(t *testing.T) {
			if _, err := env.Compile(src, Bool); err != nil {
				t.Errorf("Compile(%q): %v", src, err)
			}
		})
	}
}

func TestCompileAcceptsKinds(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	tests := []struct {
		name string
		src  string
		kind Kind
	}{
		{"bool", `msg.event == "A01"`, Bool},
		{"dyn for bool is checked at run time", `bundle.active`, Bool},
		{"bundle as map", `bundle`, Map},
		{"map literal of strings", `{"resourceType": "Bundle", "type": "collection"}`, Map},
		{"map literal of lists", `{"entry": bundle.entry.filter(e, e.resource.resourceType == "Patient")}`, Map},
		{"empty map literal", `{}`, Map},
		{"dyn for map is checked at run time", `bundle.entry[0].resource`, Map},
		{"resource returns a map", `resource(bundle, "Patient")`, Map},
		// Lists inside a list's elements are sized at the square root of
		// MaxSize, so nesting through a resource's own lists is allowed.
		{"nested lists within resources", `resources(bundle, "Observation").exists(o, o.interpretation.exists(i, i.coding.exists(c, c.code == "H")))`, Bool},
		{"nested lists within entries", `bundle.entry.exists(e, has(e.resource.code) && e.resource.code.coding.exists(c, c.system == "http://loinc.org"))`, Bool},
		// Deeper still, a little smaller again: a route author's filter
		// on a result's code and any of its interpretation codes.
		{"lists two levels within resources", `resources(bundle, "Observation").exists(o, o.code.coding.exists(c, c.code == "K") && has(o.interpretation) && ` +
			`o.interpretation.exists(i, i.coding.exists(c, c.code in ["H", "HH", "L", "LL", "A", "AA"])))`, Bool},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := env.Compile(tt.src, tt.kind)
			if err != nil {
				t.Fatalf("Compile(%q): %v", tt.src, err)
			}
			if p.Source() != tt.src {
				t.Errorf("Source() = %q, want %q", p.Source(), tt.src)
			}
			if est := p.EstimatedCost(); est.Max < est.Min || est.Max > env.Limits().MaxEstimatedCost {
				t.Errorf("EstimatedCost() = %+v, want Min <= Max <= %d", est, env.Limits().MaxEstimatedCost)
			}
		})
	}
}

func TestProgramUses(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	tests := []struct {
		name string
		src  string
		want bool
	}{
		{"field of the variable", `patient.gpPractice == "B86001"`, true},
		{"variable in a function argument", `has(patient.consent) && nhsNumberValid(nhsNumber(bundle))`, true},
		{"variable inside a comprehension", `bundle.entry.exists(e, e.resource.id == patient.nhsNumber)`, true},
		{"other variables only", `nhsNumberValid(nhsNumber(bundle)) && msg.event == "A01"`, false},
		{"the name in a string", `msg.event == "patient"`, false},
		{"a map key of that name", `{"patient": 1}.size() == 1`, false},
		// Counted as a use: the engine then reads what it need not,
		// never the reverse.
		{"a comprehension variable of that name", `bundle.entry.exists(patient, patient.resource.id == "x")`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := env.Compile(tt.src, Bool)
			if err != nil {
				t.Fatalf("Compile(%q): %v", tt.src, err)
			}
			if got := p.Uses(VarPatient); got != tt.want {
				t.Errorf("Uses(%q) = %v, want %v", VarPatient, got, tt.want)
			}
		})
	}
}

func TestCompileRejectsCostlyExpressions(t *testing.T) {
	tests := []struct {
		name   string
		limits Limits
		src    string
	}{
		{"nested comprehensions over entries", DefaultLimits(),
			`bundle.entry.all(a, bundle.entry.all(b, bundle.entry.exists(c, a == b && b == c)))`},
		// The same list within itself is sized in full each time.
		{"resources within resources", DefaultLimits(),
			`resources(bundle, "Observation").all(a, resources(bundle, "Observation").all(b, resources(bundle, "Observation").exists(c, a == b && b == c)))`},
		{"one comprehension under a small limit", Limits{MaxEstimatedCost: 100, MaxSize: 1000, CostLimit: 1000, Timeout: time.Second},
			`bundle.entry.exists(e, e.resource.resourceType == "Patient")`},
		{"resources is sized too", Limits{MaxEstimatedCost: 500, MaxSize: 1000, CostLimit: 1000, Timeout: time.Second},
			`resources(bundle, "Patient").exists(p, p.active == true)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, tt.limits)
			_, err := env.Compile(tt.src, Bool)
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile = %v, want a *CompileError", err)
			}
			want := fmt.Sprintf("exceeds the limit %d", tt.limits.MaxEstimatedCost)
			if len(ce.Issues) != 1 || !strings.Contains(ce.Issues[0].Msg, want) || !strings.Contains(ce.Error(), "narrow the expression") {
				t.Errorf("issues = %+v, want one saying %q", ce.Issues, want)
			}
		})
	}
}

func TestCompileErrorJoinsIssues(t *testing.T) {
	ce := &CompileError{Issues: []Issue{{Offset: 0, Msg: "first"}, {Offset: -1, Msg: "second"}}}
	if diff := cmp.Diff("first; second", ce.Error()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestOffsetOf(t *testing.T) {
	tests := []struct {
		src       string
		line, col int
		want      int
	}{
		{"abc", 1, 0, 0},
		{"abc", 1, 2, 2},
		{"ab\ncd", 2, 1, 4},
		{"ab\r\ncd", 2, 0, 4},
		{"é = x", 1, 4, 5},              // é is one code point of two bytes
		{"a\n\u00e9\u00e9z", 2, 2, 6},   // after two multibyte code points
		{"\u00e9\u00e9\u00e9", 1, 2, 4}, // at a multibyte code point
		{"abc", 0, 0, -1},
		{"abc", 9, 9, 3}, // clamped to the end
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q@%d:%d", tt.src, tt.line, tt.col), func(t *testing.T) {
			if got := offsetOf(tt.src, tt.line, tt.col); got != tt.want {
				t.Errorf("offsetOf = %d, want %d", got, tt.want)
			}
		})
	}
}

// bigBundle returns a bundle of n Observation entries.
func bigBundle(n int) map[string]any {
	entries := make([]any, n)
	for i := range entries {
		entries[i] = map[string]any{"resource": map[string]any{"resourceType": "Observation", "id": fmt.Sprint(i)}}
	}
	return map[string]any{"resourceType": "Bundle", "entry": entries}
}

func TestEvalFaults(t *testing.T) {
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Hour))
	defer cancel()
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	loose := Limits{MaxEstimatedCost: 1 << 62, MaxSize: 100_000, CostLimit: 1 << 40, Timeout: time.Minute}
	tests := []struct {
		name    string
		limits  Limits
		ctx     context.Context
		src     string
		vars    *Vars
		wantMsg string
		// detail is a fragment of the caller-only detail.
		detail string
	}{
		{"cost limit", Limits{MaxEstimatedCost: 1 << 62, MaxSize: 100_000, CostLimit: 50, Timeout: time.Minute}, context.Background(),
			`bundle.entry.all(e, e.resource.resourceType == "Observation")`, &Vars{Bundle: bigBundle(200)},
			"rule.eval: evaluation exceeded its cost limit", "cost limit"},
		{"deadline", loose, expired,
			`bundle.entry.all(e, e.resource.resourceType == "Observation")`, &Vars{Bundle: bigBundle(1000)},
			"rule.eval: evaluation exceeded its deadline", "interrupted"},
		// A 1ns limit has passed before the first interrupt check,
		// which comes every 64 iterations.
		{"deadline from the limits", Limits{MaxEstimatedCost: 1 << 62, MaxSize: 100_000, CostLimit: 1 << 40, Timeout: time.Nanosecond}, context.Background(),
			`bundle.entry.all(e, e.resource.resourceType == "Observation")`, &Vars{Bundle: bigBundle(20_000)},
			"rule.eval: evaluation exceeded its deadline", "interrupted"},
		{"cancelled", loose, cancelled,
			`bundle.entry.all(e, e.resource.resourceType == "Observation")`, &Vars{Bundle: bigBundle(1000)},
			"rule.eval: evaluation failed", "interrupted"},
		{"missing key", DefaultLimits(), context.Background(),
			`bundle.secretKey9990000018 == "x"`, &Vars{Bundle: bigBundle(1)},
			"rule.eval: evaluation failed", "no such key: secretKey9990000018"},
		{"not a bool at run time", DefaultLimits(), context.Background(),
			`bundle.resourceType`, &Vars{Bundle: bigBundle(1)},
			"rule.eval: expression returned string, not bool", ""},
		{"division by zero", DefaultLimits(), context.Background(),
			`size(bundle.entry) / 0 == 1`, &Vars{Bundle: bigBundle(1)},
			"rule.eval: evaluation failed", "division by zero"},
	}
	for _, tt := range tests {
		// Evaluations sharing a timer (WithTimer) fail as those
		// without one do.
		for _, timed := range []bool{false, true} {
			name := tt.name
			if timed {
				name += "/timed"
			}
			t.Run(name, func(t *testing.T) {
				checkEvalFault(t, tt.limits, tt.ctx, timed, tt.src, tt.vars, tt.wantMsg, tt.detail)
			})
		}
	}
}

// checkEvalFault checks that src fails for vars with the rule.eval fault
// wantMsg, whose detail holds detail and whose text holds no input, when
// evaluated with ctx, through a timer of ctx's when timed.
func checkEvalFault(t *testing.T, limits Limits, ctx context.Context, timed bool, src string, vars *Vars, wantMsg, detail string) {
	t.Helper()
	if timed {
		var stop func()
		ctx, stop = WithTimer(ctx)
		defer stop()
	}
	p, err := newEnv(t, limits).Compile(src, Bool)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	ok, err := p.EvalBool(ctx, vars)
	if err == nil {
		t.Fatalf("EvalBool = %v, want an error", ok)
	}
	f := fault.As(err)
	if f == nil {
		t.Fatalf("error %v is not a fault", err)
	}
	got := struct {
		Code      fault.Code
		Transient bool
		Msg       string
	}{f.Code, fault.IsTransient(err), err.Error()}
	want := got
	want.Code, want.Transient, want.Msg = fault.CodeRuleEval, false, wantMsg
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if !strings.Contains(f.Detail, detail) {
		t.Errorf("detail %q does not contain %q", f.Detail, detail)
	}
	if strings.Contains(err.Error(), "9990000018") {
		t.Errorf("error text %q holds input data", err.Error())
	}
}

func TestEvalWithinLimitsSucceeds(t *testing.T) {
	// The same expression and data as the cost-limit case, with room.
	env := newEnv(t, Limits{MaxEstimatedCost: 1 << 62, MaxSize: 100_000, CostLimit: 100_000, Timeout: time.Minute})
	p, err := env.Compile(`bundle.entry.all(e, e.resource.resourceType == "Observation")`, Bool)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := p.EvalBool(context.Background(), &Vars{Bundle: bigBundle(200)})
	if err != nil || !ok {
		t.Errorf("EvalBool = %v, %v; want true, nil", ok, err)
	}
}

func TestEvalMapJSONShape(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	tests := []struct {
		name string
		src  string
		// want is the JSON encoding of the result.
		want string
	}{
		{"bundle unchanged", `bundle`, `{"entry":[{"resource":{"id":"0","resourceType":"Observation"}}],"resourceType":"Bundle"}`},
		{"literal scalars", `{"s": "x", "i": 1, "neg": -2, "u": 3u, "d": 1.5, "t": true, "n": null}`,
			`{"d":1.5,"i":1,"n":null,"neg":-2,"s":"x","t":true,"u":3}`},
		{"nested maps and lists", `{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "active": true, "name": [{"given": ["ALEX", null]}]}}]}`,
			`{"entry":[{"resource":{"active":true,"name":[{"given":["ALEX",null]}],"resourceType":"Patient"}}],"resourceType":"Bundle"}`},
		{"filtered entries", `{"resourceType": "Bundle", "type": "collection", "entry": bundle.entry.filter(e, e.resource.id == "0")}`,
			`{"entry":[{"resource":{"id":"0","resourceType":"Observation"}}],"resourceType":"Bundle","type":"collection"}`},
		{"empty list and map", `{"entry": [], "meta": {}}`, `{"entry":[],"meta":{}}`},
		{"input numbers stay numbers", `{"total": double(size(bundle.entry)), "count": size(bundle.entry)}`, `{"count":1,"total":1}`},
		{"bytes timestamp duration", `{"b": b"hi", "ts": timestamp("2026-01-15T10:30:00Z"), "du": duration("90s")}`,
			`{"b":"aGk=","du":"1m30s","ts":"2026-01-15T10:30:00Z"}`},
		{"msg as map", `{"id": msg.id, "received": msg.received}`, `{"id":"01TESTID","received":"2026-01-15T10:30:00Z"}`},
	}
	vars := &Vars{Bundle: bigBundle(1), Msg: map[string]any{"id": "01TESTID", "received": time.Date(2026, 1, 15, 10, 30, 0, 0, time.UTC)}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := env.Compile(tt.src, Map)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			m, err := p.EvalMap(context.Background(), vars)
			if err != nil {
				t.Fatalf("EvalMap: %v (%s)", err, fault.DetailOf(err))
			}
			checkJSONShape(t, m)
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatalf("json.Marshal: %v", err)
			}
			if diff := cmp.Diff(tt.want, string(b)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// checkJSONShape fails unless v holds only what encoding/json produces
// or writes as plain JSON.
func checkJSONShape(t *testing.T, v any) {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			checkJSONShape(t, e)
		}
	case []any:
		for _, e := range x {
			checkJSONShape(t, e)
		}
	case nil, bool, string, int64, uint64, float64:
	default:
		t.Errorf("value %#v of type %T is not JSON-shaped", v, v)
	}
}

func TestEvalMapFaults(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	tests := []struct {
		name, src, want string
	}{
		{"dyn that is not a map", `bundle.resourceType`, "rule.eval: expression returned string, not a map"},
		{"not a finite number", `{"x": 1.0 / 0.0}`, "rule.eval: expression result has no JSON form"},
		{"non-string key inside", `{"x": {1: "a"}}`, "rule.eval: expression result has no JSON form"},
		{"v2 inside", `{"x": v2}`, "rule.eval: expression result has no JSON form"},
		{"runtime error", `{"x": bundle.nope}`, "rule.eval: evaluation failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := env.Compile(tt.src, Map)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			m, err := p.EvalMap(context.Background(), &Vars{Bundle: bigBundle(1)})
			if err == nil {
				t.Fatalf("EvalMap = %v, want an error", m)
			}
			if fault.CodeOf(err) != fault.CodeRuleEval {
				t.Errorf("code %s, want %s", fault.CodeOf(err), fault.CodeRuleEval)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestV2ValueConversions(t *testing.T) {
	v := v2Val{msg: parseV2(t)}
	if _, err := v.ConvertToNative(nil); err == nil {
		t.Error("ConvertToNative succeeded, want an error")
	}
	if got := v.Type(); got != v2Type {
		t.Errorf("Type() = %v, want %v", got, v2Type)
	}
	if got := v.Equal(v); got != types.False {
		t.Errorf("Equal = %v, want false", got)
	}
	if _, ok := v.Value().(*hl7v2.Message); !ok {
		t.Errorf("Value() is %T, want *hl7v2.Message", v.Value())
	}
}

func TestDefaultLimitsCompileShippedStyleRoutes(t *testing.T) {
	// Expressions like those in routes/ stay well inside the defaults.
	env := newEnv(t, DefaultLimits())
	for _, src := range []string{
		`nhsNumberValid(nhsNumber(bundle))`,
		`resource(bundle, "Patient").identifier.exists(i, i.system == "` + nhs.SystemNHSNumber + `" && i.value == "` + validNHS + `")`,
		`resource.resourceType != "MessageHeader"`,
		`bundle.type in ["transaction", "batch", "message", "collection"]`,
	} {
		if _, err := env.Compile(src, Bool); err != nil {
			t.Errorf("Compile(%q): %v", src, err)
		}
	}
}

func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		`nhsNumberValid(nhsNumber(bundle))`,
		`!nhsNumberValid(nhsNumber(bundle))`,
		`resource.resourceType != "MessageHeader"`,
		`bundle.type in ["transaction", "batch", "message", "collection"]`,
		`resources(bundle, "MessageHeader").size() == 0`,
		`v2.get("PID-3[1].1") == "9990000018"`,
		"msg.event == \"A01\" &&\n é",
		`{"entry": bundle.entry}`,
		`1 +`,
	} {
		f.Add(s)
	}
	env := newEnv(f, DefaultLimits())
	vars := testVars(f)
	f.Fuzz(func(t *testing.T, src string) {
		for _, kind := range []Kind{Bool, Map} {
			p, err := env.Compile(src, kind)
			if err != nil {
				var ce *CompileError
				if !errors.As(err, &ce) || len(ce.Issues) == 0 {
					t.Fatalf("Compile error %v is not a CompileError with issues", err)
				}
				for _, is := range ce.Issues {
					if is.Offset < -1 || is.Offset > len(src) {
						t.Fatalf("issue offset %d outside [-1, %d]", is.Offset, len(src))
					}
				}
				continue
			}
			// Evaluation may fail, but only with a rule.eval fault.
			var evalErr error
			if kind == Bool {
				_, evalErr = p.EvalBool(context.Background(), vars)
			} else {
				var m map[string]any
				m, evalErr = p.EvalMap(context.Background(), vars)
				if evalErr == nil {
					if _, err := json.Marshal(m); err != nil {
						t.Fatalf("EvalMap result does not encode: %v", err)
					}
				}
			}
			if evalErr != nil && fault.CodeOf(evalErr) != fault.CodeRuleEval {
				t.Fatalf("evaluation error %v has code %s", evalErr, fault.CodeOf(evalErr))
			}
		}
	})
}

func BenchmarkEvalMatch(b *testing.B) {
	env := newEnv(b, DefaultLimits())
	p, err := env.Compile(`nhsNumberValid(nhsNumber(bundle)) && msg.event in ["A01", "A03"]`, Bool)
	if err != nil {
		b.Fatal(err)
	}
	vars := testVars(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := p.EvalBool(ctx, vars); err != nil || !ok {
			b.Fatalf("EvalBool = %v, %v", ok, err)
		}
	}
}

// BenchmarkEvalKeep is a keep step's evaluation of one entry, as a
// route's transform runs it for every entry of a message: under the
// message's shared timer, within the step's budget.
func BenchmarkEvalKeep(b *testing.B) {
	env := newEnv(b, DefaultLimits())
	p, err := env.Compile(`resource.resourceType != "MessageHeader"`, Bool)
	if err != nil {
		b.Fatal(err)
	}
	vars := testVars(b)
	ctx, stop := WithTimer(context.Background())
	defer stop()
	// A budget that lasts the benchmark; each evaluation keeps its own
	// limits.
	budget := &Budget{left: math.MaxUint64, deadline: time.Now().Add(time.Hour)}
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := p.EvalBoolWithin(ctx, vars, budget); err != nil || !ok {
			b.Fatalf("EvalBoolWithin = %v, %v", ok, err)
		}
	}
}

func BenchmarkEvalMap(b *testing.B) {
	env := newEnv(b, DefaultLimits())
	p, err := env.Compile(`{"resourceType": "Bundle", "type": "collection", "entry": bundle.entry.filter(e, e.resource.resourceType == "Observation")}`, Map)
	if err != nil {
		b.Fatal(err)
	}
	vars := &Vars{Bundle: bigBundle(50)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.EvalMap(ctx, vars); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNumbersWhoseTextIsKept evaluates expressions over a bundle decoded
// by jsonmap, whose numbers written with trailing zeros or more digits
// than a double holds are json.Numbers: CEL sees every number as a
// double, wherever it sits.
func TestNumbersWhoseTextIsKept(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	b, err := jsonmap.Decode([]byte(`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation",
		"valueQuantity":{"value":72.50},"referenceRange":[{"low":{"value":1.000},"high":{"value":12345678901234567890}}],"component":[5.20,6]}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)["valueQuantity"].(map[string]any)["value"].(json.Number); !ok {
		t.Fatal("72.50 was not decoded as a json.Number: the test would not test it")
	}
	vars := &Vars{Bundle: b, Resource: b["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)}
	for _, src := range []string{
		`bundle.entry[0].resource.valueQuantity.value == 72.5`,
		`bundle.entry[0].resource.valueQuantity.value > 72.0`,
		`type(bundle.entry[0].resource.valueQuantity.value) == double`,
		`resource(bundle, "Observation").referenceRange[0].low.value == 1.0`,
		`resource.referenceRange[0].high.value > 1e19`,
		`resource.component.all(c, type(c) == double) && resource.component[0] == 5.2`,
		`resources(bundle, "Observation").exists(o, o.valueQuantity.value < 100.0)`,
	} {
		t.Run(src, func(t *testing.T) {
			p, err := env.Compile(src, Bool)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			ok, err := p.EvalBool(context.Background(), vars)
			if err != nil || !ok {
				t.Errorf("= %v, %v (%s); want true", ok, err, fault.DetailOf(err))
			}
		})
	}
}

// TestBudgetSaturates: limits so large that ten times them overflow give
// a budget without bound, not one already spent.
func TestBudgetSaturates(t *testing.T) {
	env, err := NewEnv(Limits{MaxEstimatedCost: math.MaxUint64, MaxSize: 1000, CostLimit: math.MaxUint64 / 2, Timeout: time.Duration(math.MaxInt64 / 2)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := env.Compile("true", Bool)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := p.EvalBoolWithin(context.Background(), &Vars{}, p.NewBudget()); err != nil || !ok {
		t.Errorf("EvalBoolWithin = %v, %v; want true", ok, err)
	}
}

// TestKeyLiterals checks the literals msg.event and msg.type are compared
// with for equality, and where each is written, which a route checks
// against its events.
func TestKeyLiterals(t *testing.T) {
	env := newEnv(t, DefaultLimits())
	tests := []struct {
		src  string
		want []KeyLiteral
	}{
		{`msg.event == "A01"`, []KeyLiteral{{"event", "A01", 13}}},
		{`"ADT^A02" == msg["type"] || msg.event in ["A03", "A08"]`, []KeyLiteral{{"type", "ADT^A02", 0}, {"event", "A03", 42}, {"event", "A08", 49}}},
		// Not equality, not msg's, or not a literal: nothing to check.
		{`msg.event != "A02" && msg.event > "A0" && msg.sender == "PAS|RX1" && msg.event == msg.type`, nil},
		{`bundle.entry.exists(msg, msg.event == "A01")`, nil},
		// destination.name with any comparison, but with "".
		{`destination.name != "gp" && destination.name != ""`, []KeyLiteral{{"destination.name", "gp", 20}}},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := env.Compile(tt.src, Bool)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, p.KeyLiterals()); diff != "" {
				t.Errorf("KeyLiterals (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBudgetBoundsEvaluationsTogether: evaluations each within the cost
// limit, charged to one budget, fail with rule.eval once together they
// have spent StepBudgetFactor times it, however many are asked for.
func TestBudgetBoundsEvaluationsTogether(t *testing.T) {
	const src = "[1, 2, 3, 4, 5, 6, 7, 8].all(x, x > 0)"
	probe := newEnv(t, Limits{MaxEstimatedCost: 1 << 62, MaxSize: 1000, CostLimit: 1 << 40, Timeout: time.Minute})
	pp, err := probe.Compile(src, Bool)
	if err != nil {
		t.Fatal(err)
	}
	_, cost, err := pp.eval(context.Background(), &Vars{}, nil)
	if err != nil || cost == 0 {
		t.Fatalf("probe: cost %d, %v", cost, err)
	}
	// One evaluation fits the limit; the budget holds ten limits' worth.
	env := newEnv(t, Limits{MaxEstimatedCost: 1 << 62, MaxSize: 1000, CostLimit: cost, Timeout: time.Minute})
	p, err := env.Compile(src, Bool)
	if err != nil {
		t.Fatal(err)
	}
	b := p.NewBudget()
	ran := 0
	for range 10 * StepBudgetFactor {
		ok, err := p.EvalBoolWithin(context.Background(), &Vars{}, b)
		if err != nil {
			if fault.CodeOf(err) != fault.CodeRuleEval {
				t.Fatalf("error %v, want %s", err, fault.CodeRuleEval)
			}
			break
		}
		if !ok {
			t.Fatal("evaluated false")
		}
		ran++
	}
	if ran == 0 || ran > StepBudgetFactor {
		t.Errorf("%d evaluations of cost %d ran on a budget of %d", ran, cost, StepBudgetFactor*cost)
	}
}

// TestBudgetDeadlineStopsAnEvaluation: an evaluation within a budget
// stops at the budget's deadline when that comes before its own timeout,
// with the error its own timeout gives.
func TestBudgetDeadlineStopsAnEvaluation(t *testing.T) {
	p, err := newEnv(t, Limits{MaxEstimatedCost: 1 << 62, MaxSize: 100_000, CostLimit: 1 << 40, Timeout: time.Minute}).
		Compile(`bundle.entry.all(e, e.resource.resourceType == "Observation")`, Bool)
	if err != nil {
		t.Fatal(err)
	}
	vars := &Vars{Bundle: bigBundle(200_000)}
	for _, timed := range []bool{false, true} {
		ctx, stop := context.Background(), func() {}
		if timed {
			ctx, stop = WithTimer(ctx)
		}
		b := p.NewBudget()
		b.deadline = time.Now().Add(time.Millisecond)
		start := time.Now()
		_, err = p.EvalBoolWithin(ctx, vars, b)
		stop()
		if f := fault.As(err); f == nil || err.Error() != "rule.eval: evaluation exceeded its deadline" || !strings.Contains(f.Detail, "interrupted") {
			t.Fatalf("EvalBoolWithin (timed %v) = %v, want the deadline exceeded", timed, err)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("stopped after %v (timed %v), want about the budget's millisecond", d, timed)
		}
	}
}
