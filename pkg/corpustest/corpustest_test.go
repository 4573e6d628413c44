package corpustest

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records what Missing and Note ask of it
// instead of stopping a real test.
type recorder struct {
	testing.TB
	skipped, failed, logged string
}

func (r *recorder) Helper()                      {}
func (r *recorder) Skip(args ...any)             { r.skipped = args[0].(string) }
func (r *recorder) Log(args ...any)              { r.logged = args[0].(string) }
func (r *recorder) Fatalf(f string, args ...any) { r.failed = fmt.Sprintf(f, args...) }

func TestMissingAndNote(t *testing.T) {
	tests := []struct {
		name    string
		env     string
		note    bool
		skipped bool
		failed  bool
		logged  bool
	}{
		{name: "missing, not required", env: "", skipped: true},
		{name: "missing, required", env: "1", failed: true},
		{name: "missing, other value", env: "yes", skipped: true},
		{name: "note, not required", env: "", note: true, logged: true},
		{name: "note, required", env: "1", note: true, failed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(RequireEnv, tc.env)
			r := &recorder{TB: t}
			if tc.note {
				Note(r, "schema absent at %s", "x/y")
			} else {
				Missing(r, "schema absent at %s", "x/y")
			}
			if got := r.skipped != ""; got != tc.skipped {
				t.Errorf("skipped = %q, want skipped %v", r.skipped, tc.skipped)
			}
			if got := r.failed != ""; got != tc.failed {
				t.Errorf("failed = %q, want failed %v", r.failed, tc.failed)
			}
			if got := r.logged != ""; got != tc.logged {
				t.Errorf("logged = %q, want logged %v", r.logged, tc.logged)
			}
			for _, s := range []string{r.skipped, r.failed, r.logged} {
				if s != "" && !strings.Contains(s, "schema absent at x/y") {
					t.Errorf("reason lost: %q", s)
				}
			}
		})
	}
}
