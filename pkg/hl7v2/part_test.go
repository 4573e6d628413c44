package hl7v2

import (
	"math/rand/v2"
	"testing"
)

// nestedPart is the definition part must follow: the nth part at the
// repetition separator, then at the component separator, then at the
// subcomponent separator when there is one.
func nestedPart(f string, d Delimiters, rep, comp, sub int) string {
	v := nth(f, d.Repetition, rep)
	v = nth(v, d.Component, comp)
	if d.Subcomponent != 0 {
		return nth(v, d.Subcomponent, sub)
	}
	return v
}

func checkPart(t *testing.T, f string) {
	t.Helper()
	for _, d := range []Delimiters{DefaultDelimiters(), {Field: '|', Component: '^', Repetition: '~', Escape: '\\'}} {
		for rep := 0; rep <= 4; rep++ {
			for comp := 0; comp <= 4; comp++ {
				for sub := 0; sub <= 3; sub++ {
					if d.Subcomponent == 0 && sub > 1 {
						continue // Component returns "" before looking
					}
					if got, want := part(f, d, rep, comp, sub), nestedPart(f, d, rep, comp, sub); got != want {
						t.Fatalf("part(%q, sub %q, %d, %d, %d) = %q, want %q", f, d.Subcomponent, rep, comp, sub, got, want)
					}
				}
			}
		}
	}
}

func TestPartMatchesNestedSplit(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const alphabet = "ab~^&\x00\\"
	for range 3000 {
		b := make([]byte, r.IntN(14))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		checkPart(t, string(b))
	}
	for _, f := range []string{"", "~", "^", "&", "a^b~c^d&e", "^^^", "~~~", "&&&", "a&b&c^d~e"} {
		checkPart(t, f)
	}
}

func FuzzPart(f *testing.F) {
	for _, s := range []string{"", "a^b~c^d&e", "TESTPATIENT^JORDAN^LEE^^MX^^L", "x&y^^z~~w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 64 {
			return
		}
		checkPart(t, s)
	})
}
