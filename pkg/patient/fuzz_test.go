package patient

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// FuzzApplyJSON feeds arbitrary bytes to ApplyJSON: it must never panic,
// must return either a result or an error, and must leave only keys of
// the documented shape.
func FuzzApplyJSON(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "..", "adapters", "pas", "testdata", "*.fhir.json"))
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(`{"resourceType":"Bundle","entry":[{"fullUrl":"a","resource":{"resourceType":"Patient","link":[{"type":"replaced-by","other":{"reference":"a"}}]}}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","entry":[null,1,{"resource":[]},{"resource":{"resourceType":"Patient","identifier":"x","name":[null]}}]}`))
	f.Add([]byte(`[]`))
	js := startJetStream(f)
	ix := openIndex(f, js, "PATIENTS_FUZZ")
	st, err := js.Stream(f.Context(), "KV_PATIENTS_FUZZ")
	if err != nil {
		f.Fatal(err)
	}
	shape := regexp.MustCompile(`^[px]\.[0-9a-f]{64}$`)
	i := 0
	f.Fuzz(func(t *testing.T, data []byte) {
		i++
		// Only the keys this input wrote are checked: listing the whole
		// bucket after every input made the run quadratic in its length.
		before, err := st.Info(t.Context())
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		_, err = ix.ApplyJSON(t.Context(), data, src(i))
		var pe *ParseError
		if err != nil && !errors.As(err, &pe) && !errors.Is(err, ErrMergeLoop) && !errors.Is(err, ErrInvalidNHSNumber) {
			t.Fatalf("unexpected error: %v", err)
		}
		after, err := st.Info(t.Context())
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		for seq := before.State.LastSeq + 1; seq <= after.State.LastSeq; seq++ {
			m, err := st.GetMsg(t.Context(), seq)
			if err != nil {
				continue // replaced by a later write of the same key (history 1)
			}
			k := strings.TrimPrefix(m.Subject, "$KV.PATIENTS_FUZZ.")
			if !shape.MatchString(k) {
				t.Fatalf("key %q has the wrong shape", k)
			}
		}
	})
}

// FuzzParseBundle runs the pure part of an update (decode, read the
// Patients and merges, apply them to a record) on arbitrary bytes, far
// faster than FuzzApplyJSON: it must never panic.
func FuzzParseBundle(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "..", "adapters", "pas", "testdata", "*.fhir.json"))
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := decodeBundle(data)
		if err != nil {
			return
		}
		p, err := parseBundle(b)
		if err != nil {
			return
		}
		var r Record
		for i := range p.patients {
			p.patients[i].applyTo(&r, src(1))
		}
		for _, m := range p.merges {
			if m.survivor.replacedBy != "" {
				t.Fatal("a merge's survivor is itself merged")
			}
		}
		_ = r.CELAt(base)
	})
}
