package jsonmap_test

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/jsonmap"
)

// decodeCases are inputs whose decoding must match encoding/json's,
// refusals included.
var decodeCases = []struct {
	name, in string
}{
	{"empty object", `{}`},
	{"nested", `{"a":{"b":[1,2,{"c":null}]},"d":true,"e":false}`},
	{"white space", " \t\r\n{ \"a\" : [ 1 , 2 ] } \n"},
	{"numbers", `{"n":[0,-0,1.5,-2.25e3,1E-7,6.02e23,123456789012345678901234567890]}`},
	{"escapes", `{"s":"a\"b\\c\/d\b\f\n\r\t\u00e9\u2028"}`},
	{"surrogate pair", `{"s":"\ud83d\ude00"}`},
	{"lone high surrogate", `{"s":"\ud83dx"}`},
	{"lone low surrogate", `{"s":"\ude00"}`},
	{"high then bad pair", `{"s":"\ud83d\u0041"}`},
	{"invalid utf-8", "{\"s\":\"a\xffb\"}"},
	{"invalid utf-8 before escape", "{\"s\":\"\xfe\\n\"}"},
	{"valid utf-8", `{"s":"Llanfair – ŵ 日本"}`},
	{"repeated key", `{"a":1,"a":2}`},
	{"empty array", `{"a":[]}`},
	{"null object", `null`},
	{"top-level array", `[1]`},
	{"top-level string", `"x"`},
	{"empty", ``},
	{"trailing comma", `{"a":1,}`},
	{"trailing garbage", `{"a":1} x`},
	{"two values", `{}{}`},
	{"bad literal", `{"a":tru}`},
	{"leading zero", `{"a":01}`},
	{"bare minus", `{"a":-}`},
	{"dot without digits", `{"a":1.}`},
	{"bad exponent", `{"a":1e}`},
	{"control char", "{\"a\":\"x\ny\"}"},
	{"bad escape", `{"a":"\x"}`},
	{"short unicode", `{"a":"\u12"}`},
	{"unterminated", `{"a":"x`},
	{"number overflow", `{"a":1e400}`},
	{"key not string", `{1:2}`},
	{"missing colon", `{"a" 1}`},
	{"single quotes", `{'a':1}`},
}

func TestDecodeMatchesEncodingJSON(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			checkDecode(t, []byte(tc.in))
			checkDecode(t, long(tc.in))
		})
	}
}

// long returns in followed by white space to make it a long document,
// which the decoder reads with allocations shared across its values.
func long(in string) []byte {
	return []byte(in + strings.Repeat(" ", 4096))
}

// TestDecodedArraysAreApart checks that the arrays of one document,
// which share the decoder's allocations, do not share elements: an
// append to one leaves the next as it was.
func TestDecodedArraysAreApart(t *testing.T) {
	m, err := jsonmap.Decode(long(`{"a":["x","y"],"b":["z"],"c":[["p"],["q"]]}`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := m["a"].([]any), m["b"].([]any)
	_ = append(a, "appended")
	_ = append(m["c"].([]any)[0].([]any), "appended")
	want := map[string]any{"a": []any{"x", "y"}, "b": []any{"z"}, "c": []any{[]any{"p"}, []any{"q"}}}
	if !reflect.DeepEqual(m, want) || len(b) != 1 {
		t.Fatalf("after appending: %v, want %v", m, want)
	}
}

func TestDeepNesting(t *testing.T) {
	for _, n := range []int{9999, 10000, 10001} {
		in := `{"a":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}`
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			checkDecode(t, []byte(in))
		})
	}
}

// checkDecode fails unless jsonmap.Decode and json.Unmarshal agree on
// in: both refuse it, or both give equal maps.
func checkDecode(t *testing.T, in []byte) {
	t.Helper()
	var want map[string]any
	wantErr := json.Unmarshal(in, &want)
	got, err := jsonmap.Decode(in)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("Decode(%q) error %v, encoding/json error %v", in, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(floats(t, got), want) {
		t.Fatalf("Decode(%q) = %#v, encoding/json %#v", in, got, want)
	}
	// DecodeMembers passes the members of any object Decode accepts, the
	// last of a repeated key winning as it does in a map, and refuses
	// what encoding/json refuses ("null" is no object, so not compared).
	gotM := map[string]any{}
	err = jsonmap.DecodeMembers(in, func(k string, v any) error { gotM[k] = v; return nil })
	switch {
	case wantErr != nil && err == nil:
		t.Fatalf("DecodeMembers(%q) accepted what encoding/json refused: %v", in, wantErr)
	case wantErr == nil && want != nil && err != nil:
		t.Fatalf("DecodeMembers(%q) error %v", in, err)
	case wantErr == nil && want != nil && !reflect.DeepEqual(floats(t, gotM), want):
		t.Fatalf("DecodeMembers(%q) = %#v, encoding/json %#v", in, gotM, want)
	}
	var wantV any
	wantErr = json.Unmarshal(in, &wantV)
	gotV, err := jsonmap.DecodeValue(in)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("DecodeValue(%q) error %v, encoding/json error %v", in, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(floats(t, gotV), wantV) {
		t.Fatalf("DecodeValue(%q) = %#v, encoding/json %#v", in, gotV, wantV)
	}
}

// floats returns v with each json.Number, which Decode makes of a number
// whose text is not its float64's, replaced by its float64, as
// encoding/json decodes it. Such a number must need its text kept.
func floats(t *testing.T, v any) any {
	t.Helper()
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			t.Fatalf("json.Number %q: %v", x, err)
		}
		if b, _ := json.Marshal(f); string(b) == string(x) {
			t.Fatalf("number %s decoded as json.Number, but its float64 writes the same text", x)
		}
		return f
	case map[string]any:
		if x == nil {
			return x
		}
		out := make(map[string]any, len(x))
		for k, el := range x {
			out[k] = floats(t, el)
		}
		return out
	case []any:
		if x == nil {
			return x
		}
		out := make([]any, len(x))
		for i, el := range x {
			out[i] = floats(t, el)
		}
		return out
	}
	return v
}

// TestNumbersKeepTheirText decodes and encodes again documents in
// encoding/json's form (keys sorted, no space): every number comes back
// as it was written, so a FHIR decimal keeps its precision.
func TestNumbersKeepTheirText(t *testing.T) {
	for _, in := range []string{
		`{"value":72.50}`,
		`{"high":12345678901234567890,"low":1.000}`,
		`{"n":[0,-0,1.5,-2.25e3,1E-7,6.02e23,1e21,100,0.1,0.10,-0.0]}`,
		`{"valueQuantity":{"code":"mmol/L","value":5.20}}`,
	} {
		t.Run(in, func(t *testing.T) {
			m, err := jsonmap.Decode([]byte(in))
			if err != nil {
				t.Fatal(err)
			}
			out, err := jsonmap.Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != in {
				t.Errorf("encoded again as %s", out)
			}
			c, err := jsonmap.Clone(m)
			if err != nil {
				t.Fatal(err)
			}
			if out, _ := jsonmap.Encode(c); string(out) != in {
				t.Errorf("clone encoded as %s", out)
			}
		})
	}
	for _, tc := range []struct {
		v    any
		want float64
		ok   bool
	}{{1.5, 1.5, true}, {json.Number("72.50"), 72.5, true}, {"72.50", 0, false}, {nil, 0, false}} {
		if f, ok := jsonmap.Float64(tc.v); f != tc.want || ok != tc.ok {
			t.Errorf("Float64(%#v) = %v, %v; want %v, %v", tc.v, f, ok, tc.want, tc.ok)
		}
	}
}

// custom has a JSON encoding of its own, to check values that are not
// JSON-shaped go through encoding/json.
type custom struct{ N int }

func (c custom) MarshalJSON() ([]byte, error) {
	return []byte(`{"custom":` + string(rune('0'+c.N)) + `}`), nil
}

func TestEncodeMatchesEncodingJSON(t *testing.T) {
	cases := []struct {
		name string
		v    any
	}{
		{"nil", nil},
		{"nil map", map[string]any(nil)},
		{"nil slice", []any(nil)},
		{"sorted keys", map[string]any{"b": 1.0, "a": 2.0, "B": 3.0, "aa": 4.0, "": 5.0}},
		{"html and controls", map[string]any{"s": "<a href=\"x\">&</a>\\\x00\x01\x1f\b\f\n\r\t\x7f"}},
		{"line separators", "a\u2028b\u2029c"},
		{"invalid utf-8", "a\xffb\xc3"},
		{"unicode", "ŵ 日本 😀"},
		{"floats", []any{0.0, math.Copysign(0, -1), 1.0, -1.5, 1e20, 1e21, 123456789e15, 1e-6, 1e-7, 5e-324, math.MaxFloat64, 0.1, 100.0}},
		{"bools", []any{true, false}},
		{"empty", map[string]any{"a": []any{}, "b": map[string]any{}}},
		{"other types", map[string]any{"i": 3, "ss": []string{"x", "<"}, "m": map[string]string{"k": "v"}, "c": custom{N: 7}, "n": json.Number("12")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkEncode(t, tc.v)
		})
	}
}

func TestEncodeRefusesWhatEncodingJSONRefuses(t *testing.T) {
	cases := []struct {
		name string
		v    any
	}{
		{"NaN", map[string]any{"a": math.NaN()}},
		{"+Inf", []any{math.Inf(1)}},
		{"-Inf", math.Inf(-1)},
		{"channel", map[string]any{"c": make(chan int)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := json.Marshal(tc.v); err == nil {
				t.Fatal("encoding/json accepted the value; the case is wrong")
			}
			if b, err := jsonmap.Encode(tc.v); err == nil {
				t.Fatalf("Encode = %s, want an error", b)
			}
		})
	}
}

func checkEncode(t *testing.T, v any) {
	t.Helper()
	want, wantErr := json.Marshal(v)
	got, err := jsonmap.Encode(v)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("Encode error %v, encoding/json error %v", err, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode = %s\nencoding/json = %s", got, want)
	}
}

func TestClone(t *testing.T) {
	orig := map[string]any{"a": []any{1.0, map[string]any{"b": "c"}}, "n": nil, "i": 3}
	c, err := jsonmap.Clone(orig)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(orig)
	var want any
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Clone = %#v, want %#v", c, want)
	}
	// The copy is deep: changing it leaves the original alone.
	c.(map[string]any)["a"].([]any)[1].(map[string]any)["b"] = "changed"
	if orig["a"].([]any)[1].(map[string]any)["b"] != "c" {
		t.Fatal("Clone shares nested maps with the original")
	}
}

// bundles returns the translated bundles the PAS adapter's golden tests
// keep, as realistic input.
func bundles(tb testing.TB) [][]byte {
	tb.Helper()
	files, err := filepath.Glob("../../adapters/pas/testdata/*.fhir.json")
	if err != nil || len(files) == 0 {
		tb.Fatalf("no PAS golden bundles found: %v", err)
	}
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestRealBundlesRoundTrip(t *testing.T) {
	for _, b := range bundles(t) {
		checkDecode(t, b)
		m, err := jsonmap.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		checkEncode(t, m)
	}
}

func FuzzDecode(f *testing.F) {
	for _, tc := range decodeCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkDecode(t, in)
		checkDecode(t, long(string(in)))
	})
}

func FuzzEncode(f *testing.F) {
	for _, tc := range decodeCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var v any
		if json.Unmarshal(in, &v) != nil {
			return
		}
		checkEncode(t, v)
	})
}

func BenchmarkDecode(b *testing.B) {
	bs := bundles(b)
	b.Run("jsonmap", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := jsonmap.Decode(bs[i%len(bs)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The bundles as the translator writes them, without white space.
	compact := make([][]byte, len(bs))
	for i, raw := range bs {
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			b.Fatal(err)
		}
		compact[i] = buf.Bytes()
	}
	b.Run("jsonmap_compact", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := jsonmap.Decode(compact[i%len(compact)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var m map[string]any
			if err := json.Unmarshal(bs[i%len(bs)], &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	var ms []map[string]any
	for _, raw := range bundles(b) {
		m, err := jsonmap.Decode(raw)
		if err != nil {
			b.Fatal(err)
		}
		ms = append(ms, m)
	}
	b.Run("jsonmap", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := jsonmap.Encode(ms[i%len(ms)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := json.Marshal(ms[i%len(ms)]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
