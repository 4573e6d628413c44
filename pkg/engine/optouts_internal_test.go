package engine

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestParseOptOuts checks the list formats: a number per line, CSV with
// the number first, a header, blank lines, and invalid lines reported by
// line number.
func TestParseOptOuts(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		numbers []string
		invalid []int
		header  bool
	}{
		{"one per line", "9990000018\n9990000026\n", []string{"9990000018", "9990000026"}, nil, false},
		{"crlf, spaces and blank lines", "999 000 0018\r\n\r\n  999-000-0026  \r\n", []string{"9990000018", "9990000026"}, nil, false},
		{"csv with header", "NHS_NUMBER,DATE\n\"9990000018\",2026-11-30\n9990000026,2026-11-30\n", []string{"9990000018", "9990000026"}, nil, true},
		{"byte order mark", "\uFEFF9990000018\n", []string{"9990000018"}, nil, false},
		{"invalid lines", "9990000018\n9990000019\nnot a number\n\n123\n9990000034\n", []string{"9990000018", "9990000034"}, []int{2, 3, 5}, false},
		{"digits in the first line are no header", "999000001X\n9990000018\n", []string{"9990000018"}, []int{1}, false},
		{"empty", "", nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := parseOptOuts(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.numbers, l.numbers); diff != "" {
				t.Errorf("numbers (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.invalid, l.invalid); diff != "" {
				t.Errorf("invalid lines (-want +got):\n%s", diff)
			}
			if l.header != tt.header {
				t.Errorf("header = %v, want %v", l.header, tt.header)
			}
		})
	}
}

// TestParseAsOf checks the as_of forms accepted.
func TestParseAsOf(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-12-01", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), true},
		// A date is the start of that English day: midnight BST in summer.
		{"2026-07-01", time.Date(2026, 6, 30, 23, 0, 0, 0, time.UTC), true},
		{"2026-07", time.Time{}, false},
		{"2026-12-01T06:30:00+01:00", time.Date(2026, 12, 1, 5, 30, 0, 0, time.UTC), true},
		{"", time.Time{}, false},
		{"01/12/2026", time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseAsOf(tt.in)
			if (err == nil) != tt.ok || !got.Equal(tt.want) {
				t.Errorf("parseAsOf(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}

// TestOptOutFileReloads checks that the opt-out file is loaded when it
// appears, not again while its modification time stays, again when it
// changes (dated by it), again after a failed import, and that a file
// without a valid number is not loaded.
func TestOptOutFileReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "optouts.csv")
	type load struct {
		numbers []string
		asOf    time.Time
	}
	var loads []load
	var failNext bool
	f := &optOutFile{path: path, log: slog.New(slog.DiscardHandler), load: func(_ context.Context, n []string, asOf time.Time) error {
		if failNext {
			failNext = false
			return errors.New("store unavailable")
		}
		loads = append(loads, load{slices.Clone(n), asOf})
		return nil
	}}
	ctx := context.Background()
	write := func(body string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	f.check(ctx) // no file yet
	if len(loads) != 0 {
		t.Fatalf("loaded a missing file: %v", loads)
	}
	day1 := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	write("9990000018\n", day1)
	f.check(ctx)
	f.check(ctx) // unchanged
	day2 := day1.Add(24 * time.Hour)
	write("9990000018\n9990000026\n", day2)
	failNext = true
	f.check(ctx) // the import fails: tried again next time
	f.check(ctx)
	write("not a number\n", day2.Add(24*time.Hour))
	f.check(ctx) // nothing valid: refused
	want := []load{{[]string{"9990000018"}, day1}, {[]string{"9990000018", "9990000026"}, day2}}
	if diff := cmp.Diff(want, loads, cmp.AllowUnexported(load{})); diff != "" {
		t.Errorf("loads (-want +got):\n%s", diff)
	}
}

// TestOptOutFileNotReadAgainAtStart: at start, a file whose modification
// time is the stored list's date is the list imported before and is not
// loaded again; a file with another time is.
func TestOptOutFileNotReadAgainAtStart(t *testing.T) {
	day1 := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		stored    time.Time
		storedOK  bool
		wantLoads int
	}{
		{"imported before", day1, true, 0},
		{"an older list stored", day1.Add(-24 * time.Hour), true, 1},
		{"none stored", time.Time{}, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "optouts.csv")
			if err := os.WriteFile(path, []byte("9990000018\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(path, day1, day1); err != nil {
				t.Fatal(err)
			}
			loads := 0
			f := &optOutFile{path: path, log: slog.New(slog.DiscardHandler),
				load:   func(context.Context, []string, time.Time) error { loads++; return nil },
				stored: func(context.Context) (time.Time, bool, error) { return tt.stored, tt.storedOK, nil }}
			f.check(context.Background())
			f.check(context.Background())
			if loads != tt.wantLoads {
				t.Errorf("loaded %d times, want %d", loads, tt.wantLoads)
			}
		})
	}
}
