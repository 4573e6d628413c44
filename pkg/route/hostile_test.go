package route

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/yamlx"
)

// hostileRoute returns a route file whose match expression is expr,
// written as a block scalar starting on line 5 at column 3. Errors about
// the whole expression are reported where the scalar starts, at 4:8.
func hostileRoute(expr string) string {
	return "name: hostile\nsource:\n  adapter: pas\nmatch: |-\n  " + expr + "\nconsent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\ndestinations:\n  - name: fhir-store\n"
}

// TestHostileRouteFiles loads route files built to make loading or
// evaluation expensive. Each must be refused at load, quickly and with
// bounded memory, with every error at file:line:col.
func TestHostileRouteFiles(t *testing.T) {
	ten := "[1,2,3,4,5,6,7,8,9,10]"
	manyExprs := func(n int, expr string) string {
		var b strings.Builder
		b.WriteString("name: hostile\nsource:\n  adapter: pas\nmatch: 'true'\nconsent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\ntransform:\n")
		for range n {
			fmt.Fprintf(&b, "  - keep: %s\n", expr)
		}
		b.WriteString("destinations:\n  - name: fhir-store\n")
		return b.String()
	}
	bigList := "size([" + strings.Repeat("1,", 8000) + "1]) > 0" // just under 16 KiB
	// Nine levels of ten aliases each: 10^9 nodes if expanded.
	aliasBomb := "name: hostile\nsource:\n  adapter: pas\n  events:\n    - &x0 [" + strings.Repeat("A01, ", 9) + "A01]\n"
	for i := 1; i < 9; i++ {
		aliasBomb += fmt.Sprintf("    - &x%d [%s*x%d]\n", i, strings.Repeat(fmt.Sprintf("*x%d, ", i-1), 9), i-1)
	}
	aliasBomb += "match: *x8\nconsent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\ndestinations:\n  - name: fhir-store\n"
	tests := []struct {
		name    string
		file    string
		wantPos string // line:col of the first error wanted
		wantMsg string
	}{
		{"nested comprehensions", hostileRoute(strings.Repeat(ten+".map(x, ", 6) + "x" + strings.Repeat(")", 6) + ".size() > 0"), "4:8", "estimated worst-case cost"},
		{"string blowup", hostileRoute(`msg.id.replace("", msg.id).replace("", msg.id).size() > 0`), "4:8", "estimated worst-case cost"},
		{"deep literals", hostileRoute(strings.Repeat("[", 100) + strings.Repeat("]", 100) + " == []"), fmt.Sprintf("5:%d", 3+32), "nested more than 32 deep"},
		{"deep macros", hostileRoute(strings.Repeat("[1].all(x, ", 40) + "true" + strings.Repeat(")", 40)), fmt.Sprintf("5:%d", 3+32*len("[1].all(x, ")), "nested more than 32 deep"},
		{"huge list literal", hostileRoute(strings.Repeat("[1,", 1) + strings.Repeat("1,", 10_000) + "1] == []"), "4:8", "the limit is 16384"},
		{"many large list literals", manyExprs(40, bigList), fmt.Sprintf("%d:11", 10+4), "65536 bytes in all"},
		{"too many expressions", manyExprs(600, "'true'"), fmt.Sprintf("%d:11", 10+499), "more than 500 expressions"},
		{"YAML alias bomb", aliasBomb, "14:8", "aliases expand to more than"},
		{"YAML alias bomb in a list of strings", strings.Replace(aliasBomb, "match: *x8", "match: 'true'", 1), "5:7", "expected a string, got a sequence"},
		{"file over 1 MiB", hostileRoute("'true'") + "# " + strings.Repeat("x", 1<<20) + "\n", "", "route file larger than 1048576 bytes"},
	}
	env := testEnv(t)
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "hostile.yaml")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := Load(path, env, testCatalog)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d-byte file refused after %v, %d bytes allocated", len(tt.file), time.Since(start), alloc)
			var ye yamlx.Errors
			if !errors.As(err, &ye) {
				t.Fatalf("Load = %v, want yamlx.Errors", err)
			}
			var found *yamlx.Error
			for _, e := range ye {
				if e.Pos.File != path || (e.Pos.Line == 0 && tt.wantPos != "") {
					t.Errorf("error without file:line:col: %v", e)
				}
				if strings.Contains(e.Msg, tt.wantMsg) {
					found = e
					break
				}
			}
			if found == nil {
				t.Fatalf("no error says %q; got:\n%v", tt.wantMsg, err)
			}
			if found.Pos.File != path {
				t.Errorf("error names file %q, want %q", found.Pos.File, path)
			}
			if tt.wantPos != "" {
				if got := fmt.Sprintf("%d:%d", found.Pos.Line, found.Pos.Col); got != tt.wantPos {
					t.Errorf("error at %s, want %s: %v", got, tt.wantPos, found)
				}
			}
			// Loading a hostile file must not cost much more than a
			// handful of the largest expressions allowed.
			if alloc > 256<<20 {
				t.Errorf("loading allocated %d bytes", alloc)
			}
		})
	}
}
