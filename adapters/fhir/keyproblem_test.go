package fhir

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// keyProblemReference is keyProblem written plainly on encoding/json's
// tokens: slow, but its reading of the JSON is the decoder's own. The
// fuzz target holds the two to the same answers.
func keyProblemReference(doc []byte) (int, string) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	type frame struct {
		keys      map[string]bool
		expectKey bool
	}
	var stack []frame
	at := func(off int) int {
		for off < len(doc) && strings.IndexByte(",: \t\n\r", doc[off]) >= 0 {
			off++
		}
		return off
	}
	for {
		off := int(dec.InputOffset())
		tok, err := dec.Token()
		if err != nil {
			return -1, ""
		}
		var top *frame
		if len(stack) > 0 {
			top = &stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if top != nil && top.keys != nil {
					top.expectKey = true
				}
				f := frame{}
				if t == '{' {
					f = frame{keys: map[string]bool{}, expectKey: true}
				}
				stack = append(stack, f)
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if top != nil && top.keys != nil && top.expectKey {
				top.expectKey = false
				if !isASCII(t) {
					return at(off), "a key that is not ASCII: FHIR element names are"
				}
				fold := strings.ToLower(t)
				if top.keys[fold] {
					return at(off), "an object holds the key " + elementName(t) + " twice (or twice in different cases)"
				}
				top.keys[fold] = true
				if fold == "resourcetype" && t != "resourceType" {
					return at(off), "key " + elementName(t) + " is not resourceType: FHIR element names are case-sensitive"
				}
				continue
			}
		case json.Number:
			if _, err := strconv.ParseFloat(string(t), 64); err != nil {
				return at(off), "a number too large to read"
			}
		}
		if top != nil && top.keys != nil {
			top.expectKey = true
		}
	}
}

func FuzzKeyProblem(f *testing.F) {
	for _, seed := range []string{
		`{"resourceType":"Patient","id":"x"}`,
		`{"ResourceType":"Patient"}`,
		`{"resourceType":"Observation","RESOURCETYPE":"Patient"}`,
		`{"a":[{"b":1,"B":2}],"c":{"d":[1,2,{"e":null}]}}`,
		`{"a":"x","b":[1e999,2]}`,
		`{"k\u0041":1,"KA":2}`,
		`{"reſourceType":"Patient"}`,
		`{"a":{},"a":[]}`,
		`[{"x":1},{"x":2}]`,
		`{"n":-0.5e-400,"m":123456789012345678901234567890}`,
		`{"s":"a\"b\\","t":"\"","s":1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if !json.Valid(doc) {
			return // keyProblem is given only documents already checked
		}
		off, reason := keyProblem(doc)
		wantOff, wantReason := keyProblemReference(doc)
		if off != wantOff || reason != wantReason {
			t.Errorf("keyProblem(%q) = %d %q, want %d %q", doc, off, reason, wantOff, wantReason)
		}
	})
}

func TestFHIRJSONProblem(t *testing.T) {
	tests := []struct {
		doc  string
		off  int
		what string // a fragment of the reason; "" when allowed
	}{
		{`{"a":[1,"x",true,{"b":"c"}],"d":{"e":[null,"f"]}}`, -1, ""},
		{`{"a":"tab\tnewline\n return\r","b":"\u00e9"}`, -1, ""},
		{`{"":1}`, -1, ""}, // an empty key is the key checks' business
		{`{"a":null}`, 5, "null"},
		{`{"a":[[]]}`, 7, "empty array"},
		{`{"a":[{"b":{}}]}`, 12, "empty object"},
		{`{"a" : ""}`, 7, "empty string"},
		{`{"a":"\u001b"}`, 5, "control character"},
		{`{"a":[null],"b":{"c":null}}`, 21, "null"},
	}
	for _, tt := range tests {
		t.Run(tt.doc, func(t *testing.T) {
			off, why := fhirJSONProblem([]byte(tt.doc))
			if off != tt.off || !strings.Contains(why, tt.what) || (tt.what == "") != (why == "") {
				t.Errorf("fhirJSONProblem(%s) = %d %q, want %d %q", tt.doc, off, why, tt.off, tt.what)
			}
		})
	}
}
