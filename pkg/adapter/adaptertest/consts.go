// Package adaptertest holds checks and fakes that the adapters' tests share.
package adaptertest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// StringConsts returns the values of the package-level string constants
// whose names begin with prefix, declared with a literal value in the
// non-test Go files of dir, except the files named in skip. It lets a
// test check that a list kept by hand, such as a translator's
// data-quality codes, names every constant of its kind.
func StringConsts(t testing.TB, dir, prefix string, skip ...string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasSuffix(base, "_test.go") || slices.Contains(skip, base) {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatalf("parsing %s: %v", f, err)
		}
		for _, d := range file.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, prefix) || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatalf("%s: constant %s: %v", fset.Position(lit.Pos()), name.Name, err)
					}
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// ConstsListed fails t unless listed holds the value of every constant
// StringConsts finds (dir, prefix and skip as there), or if it finds
// none, when the check would prove nothing.
func ConstsListed(t testing.TB, listed []string, dir, prefix string, skip ...string) {
	t.Helper()
	consts := StringConsts(t, dir, prefix, skip...)
	if len(consts) == 0 {
		t.Fatalf("found no %s constants in %s: the check would prove nothing", prefix, dir)
	}
	for _, c := range consts {
		if !slices.Contains(listed, c) {
			t.Errorf("the list lacks %q, the value of a %s constant", c, prefix)
		}
	}
}
