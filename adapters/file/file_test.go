package file

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
)

// listFiles returns every regular file under dir, relative, with slashes.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestSend(t *testing.T) {
	tests := []struct {
		name      string
		cfgDir    string // relative dirs resolve against DataDir
		del       adapter.Delivery
		wantLoc   string
		wantFiles []string
	}{
		{
			name:      "fhir json",
			cfgDir:    "out",
			del:       adapter.Delivery{MessageID: "01JABC", Route: "adt", Destination: "ehr", ContentType: envelope.ContentTypeFHIR, Body: []byte(`{"resourceType":"Bundle"}`)},
			wantLoc:   "adt/01JABC.ehr.json",
			wantFiles: []string{"adt/01JABC.ehr.json"},
		},
		{
			name:      "hl7 v2",
			cfgDir:    "v2out",
			del:       adapter.Delivery{MessageID: "01JABD", Route: "adt-forward", Destination: "ris_1", ContentType: envelope.ContentTypeHL7v2, Body: []byte("MSH|^~\\&|A\r")},
			wantLoc:   "adt-forward/01JABD.ris_1.hl7",
			wantFiles: []string{"adt-forward/01JABD.ris_1.hl7"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := t.TempDir()
			o, err := New(adapter.Settings{DataDir: data}, Config{Dir: tt.cfgDir})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := o.Start(ctx); err != nil {
				t.Fatal(err)
			}
			// Send twice: a retry must leave one file.
			for i := 0; i < 2; i++ {
				d := tt.del
				d.Attempt = i + 1
				rcpt, err := o.Send(ctx, &d)
				if err != nil {
					t.Fatalf("Send #%d: %v", i+1, err)
				}
				if diff := cmp.Diff(adapter.Receipt{Status: StatusWritten, Location: tt.wantLoc}, rcpt); diff != "" {
					t.Errorf("receipt (-want +got):\n%s", diff)
				}
			}
			out := filepath.Join(data, tt.cfgDir)
			if diff := cmp.Diff(tt.wantFiles, listFiles(t, out)); diff != "" {
				t.Errorf("files (-want +got):\n%s", diff)
			}
			got, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(tt.wantLoc)))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(tt.del.Body), string(got)); diff != "" {
				t.Errorf("content (-want +got):\n%s", diff)
			}
			if err := o.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if err := o.Shutdown(ctx); err != nil {
				t.Fatalf("second Shutdown: %v", err)
			}
		})
	}
}

func TestSendReplacesContent(t *testing.T) {
	dir := t.TempDir()
	o, err := New(adapter.Settings{}, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, body := range []string{"first version, longer", "second"} {
		if _, err := o.Send(ctx, &adapter.Delivery{MessageID: "m1", Route: "r", Destination: "d", Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, "r", "m1.d.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "second" {
		t.Errorf("content = %q, want %q", got, "second")
	}
	if diff := cmp.Diff([]string{"r/m1.d.json"}, listFiles(t, dir)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func TestSendRejectsUnsafeNames(t *testing.T) {
	tests := []struct {
		name string
		del  adapter.Delivery
	}{
		{"route traversal", adapter.Delivery{MessageID: "m", Route: "..", Destination: "d"}},
		{"route slash", adapter.Delivery{MessageID: "m", Route: "a/b", Destination: "d"}},
		{"destination backslash", adapter.Delivery{MessageID: "m", Route: "r", Destination: `a\b`}},
		{"hidden id", adapter.Delivery{MessageID: ".m", Route: "r", Destination: "d"}},
		{"empty id", adapter.Delivery{MessageID: "", Route: "r", Destination: "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			o, err := New(adapter.Settings{}, Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			_, err = o.Send(context.Background(), &tt.del)
			if err == nil {
				t.Fatal("Send succeeded, want a permanent fault")
			}
			if fault.IsTransient(err) {
				t.Errorf("fault is transient, want permanent: %v", err)
			}
			if files := listFiles(t, dir); len(files) != 0 {
				t.Errorf("files written: %v", files)
			}
		})
	}
}

func TestSendWriteFailureIsTransient(t *testing.T) {
	dir := t.TempDir()
	// A regular file where the route directory should be makes the write fail.
	if err := os.WriteFile(filepath.Join(dir, "r"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := New(adapter.Settings{}, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = o.Send(context.Background(), &adapter.Delivery{MessageID: "m", Route: "r", Destination: "d"})
	if err == nil || !fault.IsTransient(err) || fault.CodeOf(err) != fault.CodeDestUnavailable {
		t.Errorf("err = %v, want transient %s", err, fault.CodeDestUnavailable)
	}
}

func TestSendAfterShutdown(t *testing.T) {
	o, err := New(adapter.Settings{}, Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = o.Send(context.Background(), &adapter.Delivery{MessageID: "m", Route: "r", Destination: "d"})
	if err == nil || !fault.IsTransient(err) {
		t.Errorf("err = %v, want a transient fault", err)
	}
}

// TestShutdownIdleOutOfTime checks that an idle destination's shutdown
// succeeds even when the drain's time has run out: nothing was cut short,
// so it is not reported as a failure.
func TestShutdownIdleOutOfTime(t *testing.T) {
	o, err := New(adapter.Settings{}, Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Send(context.Background(), &adapter.Delivery{MessageID: "m", Route: "r", Destination: "d", Body: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 50 { // the race this guards against was a coin toss
		if err := o.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown of an idle destination out of time: %v", err)
		}
	}
}

func TestConcurrentSends(t *testing.T) {
	dir := t.TempDir()
	o, err := New(adapter.Settings{}, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Four distinct deliveries, each sent ten times at once.
			id := string(rune('a' + i%4))
			_, err := o.Send(context.Background(), &adapter.Delivery{MessageID: id, Route: "r", Destination: "d", Body: []byte(id)})
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	want := []string{"r/a.d.json", "r/b.d.json", "r/c.d.json", "r/d.d.json"}
	if diff := cmp.Diff(want, listFiles(t, dir)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func TestFactoryAndConfig(t *testing.T) {
	f := Factory{}
	if f.Type() != "file" {
		t.Errorf("Type = %q", f.Type())
	}
	c, ok := f.NewConfig().(*Config)
	if !ok {
		t.Fatalf("NewConfig returned %T", f.NewConfig())
	}
	if c.Dir != "out" {
		t.Errorf("default dir = %q, want out", c.Dir)
	}
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"ok", Config{Dir: "x"}, nil},
		{"empty dir", Config{}, []string{"dir: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range tt.cfg.Validate() {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
		})
	}
	data := t.TempDir()
	ob, err := f.NewOutbound(context.Background(), adapter.Settings{DataDir: data}, c)
	if err != nil {
		t.Fatal(err)
	}
	if got := ob.(*Outbound).Dir(); got != filepath.Join(data, "out") {
		t.Errorf("dir = %q, want %q", got, filepath.Join(data, "out"))
	}
	if _, err := f.NewOutbound(context.Background(), adapter.Settings{}, &Config{}); err == nil {
		t.Error("NewOutbound accepted an invalid config")
	}
	if _, err := f.NewOutbound(context.Background(), adapter.Settings{}, 42); err == nil {
		t.Error("NewOutbound accepted a config of the wrong type")
	}
}

func BenchmarkSend(b *testing.B) {
	o, err := New(adapter.Settings{}, Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	d := &adapter.Delivery{MessageID: "m", Route: "r", Destination: "d", Body: make([]byte, 4096)}
	for b.Loop() {
		if _, err := o.Send(context.Background(), d); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSendBatch(t *testing.T) {
	dir := t.TempDir()
	// A regular file where route "blocked" should have its directory.
	if err := os.WriteFile(filepath.Join(dir, "blocked"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := New(adapter.Settings{}, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ds := []*adapter.Delivery{
		{MessageID: "m1", Route: "r", Destination: "d", ContentType: envelope.ContentTypeFHIR, Body: []byte(`{"a":1}`)},
		{MessageID: "../x", Route: "r", Destination: "d", Body: []byte("bad name")},
		{MessageID: "m2", Route: "blocked", Destination: "d", Body: []byte("no directory")},
		{MessageID: "m3", Route: "r2", Destination: "d", ContentType: envelope.ContentTypeHL7v2, Body: []byte("MSH|")},
	}
	rcs, errs := o.SendBatch(context.Background(), ds)
	if len(rcs) != len(ds) || len(errs) != len(ds) {
		t.Fatalf("got %d receipts and %d errors for %d deliveries", len(rcs), len(errs), len(ds))
	}
	wantOK := []bool{true, false, false, true}
	for i, ok := range wantOK {
		if (errs[i] == nil) != ok {
			t.Errorf("delivery %d: err = %v, want success %v", i, errs[i], ok)
		}
	}
	if fault.IsTransient(errs[1]) {
		t.Errorf("unusable name: %v, want a permanent fault", errs[1])
	}
	if !fault.IsTransient(errs[2]) {
		t.Errorf("write failure: %v, want a transient fault", errs[2])
	}
	if rcs[0].Location != "r/m1.d.json" || rcs[3].Location != "r2/m3.d.hl7" || rcs[2].Location != "" {
		t.Errorf("receipts %+v", rcs)
	}
	if diff := cmp.Diff([]string{"blocked", "r/m1.d.json", "r2/m3.d.hl7"}, listFiles(t, dir)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "r", "m1.d.json")); string(got) != `{"a":1}` {
		t.Errorf("content %q", got)
	}
	if err := o.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, errs = o.SendBatch(context.Background(), ds[:1])
	if errs[0] == nil || !fault.IsTransient(errs[0]) {
		t.Errorf("after shutdown: %v, want a transient fault", errs[0])
	}
}

// TestStartRemovesStaleTemps: temporary files a crash left (older than
// any write takes) are removed at start; a recent one, which may be
// another process's write in progress, and delivered files stay.
func TestStartRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	route := filepath.Join(dir, "adt")
	if err := os.MkdirAll(route, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".tmp-old", ".tmp-new", "01MSG.json"} {
		if err := os.WriteFile(filepath.Join(route, name), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTempAge)
	for _, name := range []string{".tmp-old", "01MSG.json"} {
		if err := os.Chtimes(filepath.Join(route, name), old, old); err != nil {
			t.Fatal(err)
		}
	}
	// Configured through a link, as a mounted volume often is.
	link := filepath.Join(t.TempDir(), "out")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	o, err := New(adapter.Settings{}, Config{Dir: link})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = o.Shutdown(context.Background()) }()
	<-o.swept
	if got, want := listFiles(t, dir), []string{"adt/.tmp-new", "adt/01MSG.json"}; !cmp.Equal(got, want) {
		t.Errorf("files after start %v, want %v", got, want)
	}
}

// TestStartDoesNotWaitForTheSweep: Start returns before the stale
// temporary sweep reads the output directory, which holds one file per
// delivery ever made unless something picks them up (274,161 names at
// a restart in BENCHMARKS.md, session 45), so an engine's readiness does not
// grow with what it has delivered. The sweep still runs.
func TestStartDoesNotWaitForTheSweep(t *testing.T) {
	o, err := New(adapter.Settings{}, Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	returned := make(chan struct{})
	afterStart := make(chan bool, 1)
	o.sweep = func(string, time.Time) {
		// A sweep that Start waited for would never see it return: the
		// bound only keeps such a build's test from hanging.
		select {
		case <-returned:
			afterStart <- true
		case <-time.After(10 * time.Second):
			afterStart <- false
		}
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(returned)
	defer func() { _ = o.Shutdown(context.Background()) }()
	if !<-afterStart {
		t.Error("Start waited for the sweep of the output directory")
	}
	<-o.swept
}

// TestRunningDestinationRemovesStaleTemps: a crash's temporary file
// still young at a prompt restart is removed once it is stale, while the
// destination runs, not only at a later start.
func TestRunningDestinationRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	o, err := New(adapter.Settings{}, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	o.sweepEvery = 20 * time.Millisecond
	tmp := filepath.Join(dir, ".tmp-crashed")
	if err := os.WriteFile(tmp, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = o.Shutdown(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("a young temporary file was removed: %v", err)
	}
	// Time passes: the file is now as old as no write takes.
	old := time.Now().Add(-2 * staleTempAge)
	if err := os.Chtimes(tmp, old, old); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(tmp); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stale temporary file still there while the destination runs")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMkdirSynced: missing parents are made, and an existing directory
// is left as it is.
func TestMkdirSynced(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "c")
	for range 2 {
		if err := mkdirSynced(dir); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Fatalf("%s not made: %v", dir, err)
		}
	}
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := mkdirSynced(filepath.Join(file, "sub")); err == nil {
		t.Error("made a directory under a file")
	}
}

// countingFS records, for each ReadDir of a directory it opens, how many
// entries were asked for and how many came back.
type countingFS struct {
	fs.FS
	asked, got []int
}

func (c *countingFS) Open(name string) (fs.File, error) {
	f, err := c.FS.Open(name)
	if err != nil {
		return nil, err
	}
	if d, ok := f.(fs.ReadDirFile); ok {
		return &countingDir{ReadDirFile: d, c: c}, nil
	}
	return f, nil
}

type countingDir struct {
	fs.ReadDirFile
	c *countingFS
}

func (d *countingDir) ReadDir(n int) ([]fs.DirEntry, error) {
	es, err := d.ReadDirFile.ReadDir(n)
	d.c.asked, d.c.got = append(d.c.asked, n), append(d.c.got, len(es))
	return es, err
}

// TestSweepHoldsABatchOfEntries: the stale-temporary sweep reads a
// directory of many delivered files sweepBatch entries at a time, never
// all at once (a directory nobody empties holds one file per delivery,
// and reading it whole made each sweep's memory grow with them), and
// still finds the stale temporary files in nested directories.
func TestSweepHoldsABatchOfEntries(t *testing.T) {
	dir := t.TempDir()
	route := filepath.Join(dir, "adt")
	if err := os.MkdirAll(route, 0o750); err != nil {
		t.Fatal(err)
	}
	files := 3*sweepBatch + 5
	for i := range files {
		if err := os.WriteFile(filepath.Join(route, fmt.Sprintf("%05d.json", i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{".tmp-old", ".tmp-new"} {
		if err := os.WriteFile(filepath.Join(route, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTempAge)
	if err := os.Chtimes(filepath.Join(route, ".tmp-old"), old, old); err != nil {
		t.Fatal(err)
	}
	c := &countingFS{FS: os.DirFS(dir)}
	var removed []string
	sweepTemps(c, ".", time.Now().Add(-staleTempAge), func(name string) { removed = append(removed, name) })
	if want := []string{"adt/.tmp-old"}; !cmp.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	total := 0
	for i, n := range c.asked {
		if n <= 0 || n > sweepBatch {
			t.Errorf("ReadDir(%d): asked for every entry or more than %d at once", n, sweepBatch)
		}
		if c.got[i] > sweepBatch {
			t.Errorf("ReadDir returned %d entries at once, want at most %d", c.got[i], sweepBatch)
		}
		total += c.got[i]
	}
	if want := 1 + files + 2; total != want {
		t.Errorf("read %d entries in all, want %d", total, want)
	}
}
