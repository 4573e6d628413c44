// Package file is the file destination: it writes each delivery to a file
// under a directory, atomically and idempotently, for systems that pick up
// files and for inspecting what a route produces.
//
// Layout: <dir>/<route>/<message id>.<destination>.json, or .hl7 for HL7 v2
// content. The name depends only on the delivery's route, message id and
// destination, so a retry or a replay of the same delivery replaces the
// same file instead of adding another. There is deliberately no date
// directory: a retry after midnight would otherwise write a second copy.
// Message ids are time-sortable, so a directory listing is in arrival
// order anyway.
//
// Each file is written to a temporary file in the same directory, synced,
// renamed into place and the directory synced, so a reader never sees a
// partial file and a written file survives a crash.
package file

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
)

// Type is the adapter type name used in config files.
const Type = "file"

// StatusWritten is the receipt status of a written delivery.
const StatusWritten = "written"

// Config configures a file destination.
type Config struct {
	// Dir is the output directory. A relative path is relative to the
	// engine's data directory. Default "out".
	Dir string `yaml:"dir"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{Dir: "out"} }

// Validate returns every problem with c.
func (c *Config) Validate() []error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("dir: required"))
	}
	return errs
}

// Factory builds file destinations.
type Factory struct{}

var _ adapter.OutboundFactory = Factory{}

// Type returns "file".
func (Factory) Type() string { return Type }

// NewConfig returns a *Config holding the defaults.
func (Factory) NewConfig() any {
	c := DefaultConfig()
	return &c
}

// NewOutbound returns a file destination for cfg, a *Config.
func (Factory) NewOutbound(_ context.Context, set adapter.Settings, cfg any) (adapter.Outbound, error) {
	c, err := configOf(cfg)
	if err != nil {
		return nil, err
	}
	return New(set, c)
}

func configOf(cfg any) (Config, error) {
	switch c := cfg.(type) {
	case *Config:
		if c == nil {
			return DefaultConfig(), nil
		}
		return *c, nil
	case Config:
		return c, nil
	case nil:
		return DefaultConfig(), nil
	default:
		return Config{}, fault.Newf(fault.CodeConfig, "file: config is %T, want *file.Config", cfg)
	}
}

// Outbound writes deliveries to files. It is safe for concurrent use.
type Outbound struct {
	dir string

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
	// active counts the sends inflight holds, so a shutdown out of time
	// can tell an idle destination from a busy one.
	active atomic.Int64
	// dirs holds, by path, the *dirOnce of each directory written into:
	// a send into a directory another send is making waits until it is
	// made and synced into its parent, rather than report its file
	// written while the directory's own entry could still be lost.
	dirs sync.Map
	// sweepEvery is how often removeStaleTemps runs while the
	// destination does (defaultSweepEvery; tests shorten it); stop ends
	// those runs.
	sweepEvery time.Duration
	stop       chan struct{}
	stopOnce   sync.Once
	// sweep removes stale temporary files under a directory
	// (removeStaleTemps; tests replace it); swept is closed once the
	// sweep Start begins has finished.
	sweep func(dir string, cutoff time.Time)
	swept chan struct{}
}

// dirOnce makes one directory once (see Outbound.dirs).
type dirOnce struct {
	once sync.Once
	err  error
}

// ensureDir makes dir (see mkdirSynced) once for this destination; a
// failure is tried again by the next send.
func (o *Outbound) ensureDir(dir string) error {
	v, _ := o.dirs.LoadOrStore(dir, &dirOnce{})
	d := v.(*dirOnce)
	d.once.Do(func() { d.err = mkdirSynced(dir) })
	if d.err != nil {
		o.dirs.CompareAndDelete(dir, d)
	}
	return d.err
}

// New returns a file destination writing under cfg.Dir (relative to
// set.DataDir when relative).
func New(set adapter.Settings, cfg Config) (*Outbound, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "file: invalid config", errors.Join(errs...))
	}
	dir := cfg.Dir
	if !filepath.IsAbs(dir) && set.DataDir != "" {
		dir = filepath.Join(set.DataDir, dir)
	}
	return &Outbound{dir: filepath.Clean(dir), sweepEvery: defaultSweepEvery, stop: make(chan struct{}),
		sweep: removeStaleTemps, swept: make(chan struct{})}, nil
}

// Dir returns the resolved output directory.
func (o *Outbound) Dir() string { return o.dir }

// Start creates the output directory and, in the background, removes
// temporary files a crash left in it (see removeStaleTemps), then again
// every sweepEvery until Shutdown: a crash's files are at most
// staleTempAge old at a prompt restart, and would otherwise stay until a
// later one. The sweep reads every name in the directory, one a delivery
// ever made unless something picks them up, so the engine's start (and
// its readiness) does not wait for it: the files it removes are named so
// that pickups skip them, and sends write names of their own.
func (o *Outbound) Start(context.Context) error {
	if err := mkdirSynced(o.dir); err != nil {
		return fmt.Errorf("file: create output directory: %w", err)
	}
	go func() {
		o.sweep(o.dir, time.Now().Add(-staleTempAge))
		close(o.swept)
		t := time.NewTicker(o.sweepEvery)
		defer t.Stop()
		for {
			select {
			case <-o.stop:
				return
			case now := <-t.C:
				o.sweep(o.dir, now.Add(-staleTempAge))
			}
		}
	}()
	return nil
}

// defaultSweepEvery is how often a running destination removes stale
// temporary files.
const defaultSweepEvery = 10 * time.Minute

// staleTempAge is how old a temporary file must be for Start to remove
// it: no write takes that long, so it is a crash's, not another
// process's write in progress.
const staleTempAge = time.Hour

// removeStaleTemps removes, under dir, the temporary files (".tmp-*")
// last modified before cutoff: a crash between creating one and renaming
// it into place leaves it, holding a payload nobody will pick up. Errors
// are ignored: the files are named so that pickups skip them.
func removeStaleTemps(dir string, cutoff time.Time) {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real // a root that is a link is entered; links below it are not
	}
	sweepTemps(os.DirFS(dir), ".", cutoff, func(name string) {
		_ = os.Remove(filepath.Join(dir, filepath.FromSlash(name)))
	})
}

// sweepBatch is how many entries sweepTemps reads from a directory at
// once. Delivered files stay until something picks them up, so a
// directory can hold one per delivery ever made: reading it whole (as
// filepath.WalkDir does, sorted) held every name at once, about 200
// bytes each, at every sweep.
const sweepBatch = 256

// sweepTemps calls remove with the name (in fsys) of each temporary file
// under name last modified before cutoff, reading each directory
// sweepBatch entries at a time; directories are entered as they are
// met, links to them are not.
func sweepTemps(fsys fs.FS, name string, cutoff time.Time, remove func(string)) {
	f, err := fsys.Open(name)
	if err != nil {
		return
	}
	defer f.Close()
	d, ok := f.(fs.ReadDirFile)
	if !ok {
		return
	}
	for {
		entries, err := d.ReadDir(sweepBatch)
		for _, e := range entries {
			full := path.Join(name, e.Name())
			switch {
			case e.IsDir():
				sweepTemps(fsys, full, cutoff, remove)
			case strings.HasPrefix(e.Name(), ".tmp-"):
				if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
					remove(full)
				}
			}
		}
		if err != nil || len(entries) == 0 {
			return
		}
	}
}

// mkdirSynced creates dir and any parents missing, and syncs the parent
// of each directory it creates, so a file written into a new directory
// survives a crash with its path.
func mkdirSynced(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || filepath.Dir(d) == d {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	for _, d := range missing {
		// A parent this process may write into but not read (a drop box,
		// mode 0333) cannot be opened to sync: best effort there.
		if err := syncDir(filepath.Dir(d)); err != nil && !errors.Is(err, fs.ErrPermission) {
			return err
		}
	}
	return nil
}

// Shutdown stops accepting deliveries and waits for writes in progress, or
// for ctx to end. It is safe without Start and idempotent.
func (o *Outbound) Shutdown(ctx context.Context) error {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.stopOnce.Do(func() { close(o.stop) })
	done := make(chan struct{})
	go func() { o.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		if o.active.Load() == 0 {
			return nil // idle: nothing was cut short
		}
		return fmt.Errorf("file: shutdown: %w", ctx.Err())
	}
}

// done ends a send begun under mu.
func (o *Outbound) done() {
	o.active.Add(-1)
	o.inflight.Done()
}

// Send writes d to <dir>/<route>/<message id>.<destination>.<ext> and
// returns a receipt whose Location is that path relative to dir, with
// forward slashes. Writing the same delivery again replaces the file.
func (o *Outbound) Send(ctx context.Context, d *adapter.Delivery) (adapter.Receipt, error) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "file: destination shut down", nil)
	}
	o.inflight.Add(1)
	o.active.Add(1)
	o.mu.Unlock()
	defer o.done()

	if err := ctx.Err(); err != nil {
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "file: send cancelled", err)
	}
	rel, err := RelPath(d)
	if err != nil {
		return adapter.Receipt{}, err
	}
	full := filepath.Join(o.dir, filepath.FromSlash(rel))
	if err := o.ensureDir(filepath.Dir(full)); err != nil {
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "file: write failed", fmt.Errorf("create directory: %w", err))
	}
	if err := writeAtomic(full, d.Body); err != nil {
		return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "file: write failed", err)
	}
	return adapter.Receipt{Status: StatusWritten, Location: rel}, nil
}

// SendBatch writes every delivery through a temporary file renamed into
// place, in phases: the temporary files are created and written one
// after another, synced concurrently (so the file system commits them
// together), renamed into place one after another, and each directory is
// synced once. Creating or renaming files in one directory from many
// goroutines at once only makes them queue for the directory's lock, and
// the kernel spins while they wait. A delivery that could not be written
// gets its own error; if a directory sync fails, every delivery in it
// fails.
func (o *Outbound) SendBatch(ctx context.Context, ds []*adapter.Delivery) ([]adapter.Receipt, []error) {
	rcs := make([]adapter.Receipt, len(ds))
	errs := make([]error, len(ds))
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		for i := range errs {
			errs[i] = fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "file: destination shut down", nil)
		}
		return rcs, errs
	}
	o.inflight.Add(1)
	o.active.Add(1)
	o.mu.Unlock()
	defer o.done()
	if err := ctx.Err(); err != nil {
		for i := range errs {
			errs[i] = fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "file: send cancelled", err)
		}
		return rcs, errs
	}
	failed := func(i int, what string, err error) {
		if errs[i] == nil {
			errs[i] = fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "file: "+what+" failed", err)
		}
	}
	// Create and write the temporary files.
	tmps := make([]*os.File, len(ds))
	fulls := make([]string, len(ds))
	made := map[string]error{}
	for i, d := range ds {
		rel, err := RelPath(d)
		if err != nil {
			errs[i] = err
			continue
		}
		rcs[i] = adapter.Receipt{Status: StatusWritten, Location: rel}
		fulls[i] = filepath.Join(o.dir, filepath.FromSlash(rel))
		dir := filepath.Dir(fulls[i])
		mkErr, ok := made[dir]
		if !ok {
			mkErr = o.ensureDir(dir)
			made[dir] = mkErr
		}
		if mkErr != nil {
			failed(i, "write", fmt.Errorf("create directory: %w", mkErr))
			continue
		}
		if tmps[i], err = writeTemp(dir, d.Body); err != nil {
			failed(i, "write", err)
		}
	}
	// Sync them concurrently.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i, f := range tmps {
		if f == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f.Sync(); err != nil {
				failed(i, "write", fmt.Errorf("sync temporary file: %w", err))
			}
		}()
	}
	wg.Wait()
	// Close and rename them into place; remove those that failed.
	dirs := map[string][]int{}
	for i, f := range tmps {
		if f == nil {
			continue
		}
		if err := f.Close(); err != nil {
			failed(i, "write", fmt.Errorf("close temporary file: %w", err))
		}
		if errs[i] == nil {
			if err := os.Rename(f.Name(), fulls[i]); err != nil {
				failed(i, "write", fmt.Errorf("rename into place: %w", err))
			}
		}
		if errs[i] != nil {
			_ = os.Remove(f.Name())
			continue
		}
		dir := filepath.Dir(fulls[i])
		dirs[dir] = append(dirs[dir], i)
	}
	for dir, idx := range dirs {
		if err := syncDir(dir); err != nil {
			for _, i := range idx {
				failed(i, "sync", err)
			}
		}
	}
	for i := range rcs {
		if errs[i] != nil {
			rcs[i] = adapter.Receipt{}
		}
	}
	return rcs, errs
}

// RelPath returns where d is written, relative to the output directory,
// with forward slashes. Route, destination and message id must be plain
// names (letters, digits, '.', '_', '-', not starting with '.'), since
// they become path elements; anything else is a permanent fault.
func RelPath(d *adapter.Delivery) (string, error) {
	for _, f := range []struct{ name, v string }{
		{"route", d.Route}, {"destination", d.Destination}, {"message id", d.MessageID},
	} {
		if !safeName(f.v) {
			return "", fault.Newf(fault.CodeConfig, "file: %s is not usable as a file name", f.name)
		}
	}
	ext := ".json"
	if d.ContentType == envelope.ContentTypeHL7v2 {
		ext = ".hl7"
	}
	return path.Join(d.Route, d.MessageID+"."+d.Destination+ext), nil
}

func safeName(s string) bool {
	if s == "" || len(s) > 200 || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// writeAtomic writes data to name through a synced temporary file in the
// same directory, renames it into place and syncs the directory.
func writeAtomic(name string, data []byte) error {
	if err := writeSynced(name, data); err != nil {
		return err
	}
	return syncDir(filepath.Dir(name))
}

// writeSynced writes data to name, in a directory that exists, through a
// synced temporary file renamed into place; the caller syncs the
// directory.
func writeSynced(name string, data []byte) error {
	dir := filepath.Dir(name)
	tmp, err := writeTemp(dir, data)
	if err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("sync temporary file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("close temporary file: %w", err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("rename into place: %w", err)
	}
	return nil
}

// writeTemp creates a temporary file in dir holding data, open and not
// yet synced; on error nothing is left behind.
func writeTemp(dir string, data []byte) (*os.File, error) {
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return nil, fmt.Errorf("write temporary file: %w", err)
	}
	return tmp, nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}
