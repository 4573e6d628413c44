package hl7v2

import (
	"fmt"
	"math/rand/v2"
	"strings"
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

// TestManyRepetitions: a field with many repetitions, which is indexed,
// reads as one with few: every repetition, component and subcomponent,
// escapes decoded, and nothing past the last repetition; and a second
// field read between them does not mix the two up.
func TestManyRepetitions(t *testing.T) {
	var reps, few []string
	for i := range 40 {
		switch i {
		case 7:
			reps = append(reps, "") // an empty repetition
		case 9:
			reps = append(reps, `A\T\B^^^RX1&x&ISO^MR`)
		default:
			reps = append(reps, fmt.Sprintf("K%04d^^^RX1^MR", i))
		}
	}
	for i := range 3 {
		few = append(few, fmt.Sprintf("F%d^^^RX2", i))
	}
	m := mustParse(t, []byte("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||"+strings.Join(reps, "~")+"||"+strings.Join(few, "~")+"\r"))
	pid := m.Segment("PID")
	if got := pid.Repetitions(3); got != len(reps) {
		t.Fatalf("Repetitions(3) = %d, want %d", got, len(reps))
	}
	for rep := 0; rep <= len(reps)+1; rep++ {
		want := ""
		if r := max(rep, 1); r <= len(reps) {
			want = reps[r-1]
		}
		if got := pid.Repetition(3, rep); got != want {
			t.Errorf("Repetition(3, %d) = %q, want %q", rep, got, want)
		}
		for _, c := range [][2]int{{1, 1}, {4, 1}, {4, 2}, {5, 1}} {
			wantC := part(want, m.Delimiters(), 1, c[0], c[1])
			wantC = Unescape(wantC, m.Delimiters())
			if got := pid.Component(3, rep, c[0], c[1]); got != wantC {
				t.Errorf("Component(3, %d, %d, %d) = %q, want %q", rep, c[0], c[1], got, wantC)
			}
		}
		// Reading another field between does not confuse the index.
		if got, want := pid.Component(5, 2, 1, 1), "F1"; got != want {
			t.Errorf("Component(5, 2, 1, 1) = %q, want %q", got, want)
		}
	}
	if got := pid.Component(3, 10, 1, 1); got != "A&B" {
		t.Errorf("escapes in an indexed repetition: %q", got)
	}
}

// BenchmarkManyRepetitions walks a PID-3 of 10,000 identifiers
// repetition by repetition, as the PAS translator does: linear in the
// repetitions since they are indexed (quadratic before).
func BenchmarkManyRepetitions(b *testing.B) {
	reps := make([]string, 10000)
	for i := range reps {
		reps[i] = fmt.Sprintf("K%06d^^^RX1^MR", i)
	}
	m, err := Parse([]byte("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||" + strings.Join(reps, "~") + "\r"))
	if err != nil {
		b.Fatal(err)
	}
	pid := m.Segment("PID")
	for b.Loop() {
		for rep := 1; rep <= pid.Repetitions(3); rep++ {
			_ = pid.Component(3, rep, 1, 1)
			_ = pid.Component(3, rep, 4, 1)
		}
	}
}
