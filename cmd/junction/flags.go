package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/route"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

func newFlags(name, args string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: junction %s [flags] %s\n\nFlags:\n", name, args)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags; --help prints usage and returns exit code 0.
//
// Flags may come after positional arguments too (`audit trail ID --json`),
// as users type them; everything after "--" is positional.
func parse(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if len(args) > 0 && args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitError{code: 0}
			}
			return errUsage
		}
		rest := fs.Args()
		// Parse stops at the first positional argument, or after a "--"
		// it consumes as the end of flags (not as a flag's value): tell
		// them apart by what it was given.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" && (n < 2 || !takesValue(fs, args[n-2])) {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	// Leave the positional arguments where fs.Args finds them.
	_ = fs.Parse(append([]string{"--"}, pos...))
	return nil
}

// takesValue reports whether tok is a flag of fs written without "=" that
// takes the next argument as its value (any flag but a boolean one).
func takesValue(fs *flag.FlagSet, tok string) bool {
	name, ok := strings.CutPrefix(tok, "-")
	if !ok || strings.Contains(name, "=") {
		return false
	}
	name = strings.TrimPrefix(name, "-")
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	b, isBool := f.Value.(interface{ IsBoolFlag() bool })
	return !isBool || !b.IsBoolFlag()
}

// loadConfig reads path, or the defaults when path is empty.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

// planChecks are what plan checks beyond what serving needs.
type planChecks struct {
	// secrets tries every env: and file: reference in the config file
	// (see config.Config.CheckSecretRefs) and reports those that do not
	// resolve with the rest.
	secrets bool
	// strictRoutes adds lint's route checks (route.LoadOptions.Strict).
	strictRoutes bool
	// listen tries every address the engine would listen on (see
	// engine.Plan.CheckListeners), for serve: once the config is
	// otherwise sound, each one taken is reported at its setting.
	listen bool
}

// plan loads the config and plans the engine, printing every problem,
// in the order of the files and lines they are at.
func plan(path string, routes []string, checks planChecks, stderr io.Writer) (*engine.Plan, error) {
	var problems problemLines
	defer problems.print(stderr)
	return planInto(path, routes, checks, &problems)
}

// planInto is plan, gathering the problems into problems.
func planInto(path string, routes []string, checks planChecks, problems *problemLines) (*engine.Plan, error) {
	stderr := problems
	opts := route.LoadOptions{Strict: checks.strictRoutes}
	reg := engine.NewRegistry(all.Factories()...)
	cfg, err := loadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if cfg != nil {
			// Report everything else that can be checked too, all at
			// once: the settings (of the file as decoded so far), and
			// the route files' own errors, though the names they use
			// cannot be checked against a broken config.
			if len(routes) > 0 {
				cfg.Routes = routes
			}
			if err := engine.CheckSettings(cfg, reg); err != nil {
				fmt.Fprintln(stderr, err)
			}
			if checks.secrets {
				printErrs(stderr, cfg.CheckSecretRefs(config.Secrets{}))
			}
			if len(cfg.Routes) > 0 {
				if err := engine.CheckRoutesAlone(cfg, opts); err != nil {
					fmt.Fprintln(stderr, err)
				}
			}
		}
		return nil, exitError{code: 1}
	}
	if len(routes) > 0 {
		cfg.Routes = routes
	}
	var secretErrs []error
	if checks.secrets {
		secretErrs = cfg.CheckSecretRefs(config.Secrets{})
	}
	p, err := engine.NewPlanChecked(cfg, reg, opts)
	if err != nil {
		fmt.Fprintln(stderr, err)
	}
	printErrs(stderr, secretErrs)
	if err != nil || len(secretErrs) > 0 {
		return nil, exitError{code: 1}
	}
	if checks.listen {
		if errs := p.CheckListeners(); len(errs) > 0 {
			printErrs(stderr, errs)
			return nil, exitError{code: 1}
		}
	}
	return p, nil
}

// problemLines gathers the lines of what plan reports, to print them in
// the order of the files and lines they are at (the config's own
// decoding, its settings and its routes are checked apart, and each
// check reports in its own order). A line that starts with white space
// goes with the line before it.
type problemLines struct {
	groups [][]string
}

// Write takes text, one problem a line.
func (p *problemLines) Write(b []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if n := len(p.groups); n > 0 && line != "" && (line[0] == ' ' || line[0] == '\t') {
			p.groups[n-1] = append(p.groups[n-1], line)
			continue
		}
		p.groups = append(p.groups, []string{line})
	}
	return len(b), nil
}

// print writes the lines to w, those at a file:line[:col] in that order
// (files by name), after those at none, each kept in the order it came.
func (p *problemLines) print(w io.Writer) {
	slices.SortStableFunc(p.groups, func(a, b []string) int { return comparePos(a[0], b[0]) })
	for _, g := range p.groups {
		for _, line := range g {
			fmt.Fprintln(w, line)
		}
	}
}

// comparePos orders two problem lines by the file, line and column they
// start with (see linePos).
func comparePos(a, b string) int {
	fa, la, ca := linePos(a)
	fb, lb, cb := linePos(b)
	return cmp.Or(strings.Compare(fa, fb), cmp.Compare(la, lb), cmp.Compare(ca, cb))
}

// linePos reads the "file:line:col: " or "file:line: " a problem line
// starts with; a line without one gives "", 0, 0.
func linePos(line string) (file string, ln, col int) {
	m := linePosRE.FindStringSubmatch(line)
	if m == nil {
		return "", 0, 0
	}
	ln, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		col, _ = strconv.Atoi(m[3])
	}
	return m[1], ln, col
}

// linePosRE matches a problem line's position prefix.
var linePosRE = regexp.MustCompile(`^([^\s:][^:]*):(\d+)(?::(\d+))?: `)

// printErrs prints one error a line.
func printErrs(w io.Writer, errs []error) {
	for _, e := range errs {
		fmt.Fprintln(w, e)
	}
}

// newLogger is the engine's logger: JSON lines at level and above, each
// message rate limited (telemetry.RateLimited) so a flood of bad input
// cannot flood the log.
func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(telemetry.RateLimited(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})))
}

// adminToken resolves a token reference for the admin API client.
func adminToken(ref string) (string, error) {
	if ref == "" {
		return os.Getenv("JUNCTION_ADMIN_TOKEN"), nil
	}
	return config.Secrets{}.Resolve(ref)
}
