// Package corpustest decides what a test does when the third-party corpora
// (../shared/corpora beside the repository) are absent: it skips, unless
// the environment says they must be there.
//
// The corpora are never copied into the repository, so a fresh clone on
// its own runs without them and the tests that read them skip. A skip is
// also what a wrong path looks like, so CI, which has the corpora, sets
// JUNCTION_REQUIRE_CORPORA=1 and every such skip becomes a failure.
package corpustest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// RequireEnv names the environment variable that, set to 1, turns a
// missing corpus into a test failure.
const RequireEnv = "JUNCTION_REQUIRE_CORPORA"

// Required reports whether the environment requires the corpora.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// Missing is called by a test that found a corpus absent. It skips tb
// with the reason, or fails it when the corpora are required.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if reason, ok := allowed(tb, format, args); ok {
		tb.Skip(reason)
	}
}

// Note is called by a test that can run without a corpus, with less
// coverage (fuzzing without corpus seeds, say). It logs the reason, or
// fails tb when the corpora are required.
func Note(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if reason, ok := allowed(tb, format, args); ok {
		tb.Log(reason)
	}
}

// Files returns the files of the corpus folder dir whose names match any
// of patterns, sorted, or calls Missing when dir is absent.
func Files(tb testing.TB, dir string, patterns ...string) []string {
	tb.Helper()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		Missing(tb, "corpus %s not present; skipping", dir)
	}
	var files []string
	for _, p := range patterns {
		m, err := filepath.Glob(filepath.Join(dir, p))
		if err != nil {
			tb.Fatalf("glob: %v", err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	return files
}

// allowed formats the reason a corpus is missing and reports whether a
// test may go on without it; when it may not, tb has failed.
func allowed(tb testing.TB, format string, args []any) (string, bool) {
	tb.Helper()
	reason := fmt.Sprintf(format, args...)
	if Required() {
		tb.Fatalf("%s=1 but a corpus is missing: %s", RequireEnv, reason)
		return reason, false
	}
	return reason, true
}
