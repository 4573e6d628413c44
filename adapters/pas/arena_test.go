package pas

import (
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fhir"
)

func TestArenaJoin(t *testing.T) {
	tests := []struct {
		sep   string
		parts []string
		want  string
	}{
		{" ", nil, ""},
		{" ", []string{"", ""}, ""},
		{" ", []string{"", "SAM", ""}, "SAM"},
		{" ", []string{"DR", "SAM", "TESTDOCTOR"}, "DR SAM TESTDOCTOR"},
		{", ", []string{"WARD7", "", "BED4"}, "WARD7, BED4"},
	}
	var a arena
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := a.join(tt.sep, tt.parts...); got != tt.want {
				t.Errorf("join(%q, %q) = %q, want %q", tt.sep, tt.parts, got, tt.want)
			}
		})
	}
}

// TestArenaValuesSurviveNewChunks checks that strings handed out earlier
// keep their value when later ones fill the chunks and new ones start.
func TestArenaValuesSurviveNewChunks(t *testing.T) {
	for _, small := range []bool{false, true} {
		a := arena{small: small}
		checkArenaValues(t, &a)
	}
}

func checkArenaValues(t *testing.T, a *arena) {
	t.Helper()
	var urns, joins, texts []string
	var ptrs []*string
	var lists [][]string
	var ids [][]models.Identifier
	for i := range 3 * arenaStrings {
		n := strconv.Itoa(i)
		urns = append(urns, a.urn("msg", n))
		texts = append(texts, a.bytes([]byte("T"+n)))
		ids = append(ids, append(a.identifier("S"+n, n), models.Identifier{})) // must not overwrite the next
		joins = append(joins, a.join("/", "WARD"+n, "BED"+n))
		ptrs = append(ptrs, a.str(n))
		list := a.nonEmpty("", n, n+"x")
		lists = append(lists, append(list, "appended")) // must not overwrite the next value
	}
	for i := range urns {
		n := strconv.Itoa(i)
		if want := fhir.DeterministicURN("msg", n); urns[i] != want {
			t.Fatalf("urn %d = %q, want %q", i, urns[i], want)
		}
		if want := "WARD" + n + "/BED" + n; joins[i] != want {
			t.Fatalf("join %d = %q, want %q", i, joins[i], want)
		}
		if texts[i] != "T"+n {
			t.Fatalf("bytes %d = %q, want %q", i, texts[i], "T"+n)
		}
		if len(ids[i]) != 2 || *ids[i][0].System != "S"+n || *ids[i][0].Value != n || ids[i][1].System != nil {
			t.Fatalf("identifier %d = %+v", i, ids[i])
		}
		if *ptrs[i] != n {
			t.Fatalf("str %d = %q, want %q", i, *ptrs[i], n)
		}
		if diff := cmp.Diff([]string{n, n + "x", "appended"}, lists[i]); diff != "" {
			t.Fatalf("nonEmpty %d (-want +got):\n%s", i, diff)
		}
	}
}

func TestArenaMetaSharedByProfile(t *testing.T) {
	var a arena
	p1, e, p2 := a.meta("https://example.org/P"), a.meta("https://example.org/E"), a.meta("https://example.org/P")
	if p1 != p2 || p1 == e {
		t.Errorf("metas of one profile not shared, or of two profiles shared: %p %p %p", p1, e, p2)
	}
	for i := range 2 * arenaMetas {
		profile := "https://example.org/" + strconv.Itoa(i)
		if m := a.meta(profile); len(m.Profile) != 1 || m.Profile[0] != profile {
			t.Fatalf("meta(%q) = %v", profile, m.Profile)
		}
	}
	if len(p1.Profile) != 1 || p1.Profile[0] != "https://example.org/P" {
		t.Errorf("first meta changed to %v", p1.Profile)
	}
}

func TestArenaConcept(t *testing.T) {
	var a arena
	for i := range 2 * arenaCodes {
		code := strconv.Itoa(i)
		display := ""
		if i%2 == 0 {
			display = "D" + code
		}
		cc := a.concept("https://example.org/cs", code, display)
		want := fhir.Concept("https://example.org/cs", code, display)
		if diff := cmp.Diff(want, cc); diff != "" {
			t.Errorf("concept %d (-fhir.Concept +arena):\n%s", i, diff)
		}
		if got := a.concepts("https://example.org/cs", code, display); len(got) != 1 || cap(got) != 1 || cmp.Diff(*want, got[0]) != "" {
			t.Errorf("concepts %d = %+v (cap %d)", i, got, cap(got))
		}
	}
}
