package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/engine"
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
		// it consumes: tell the two apart by what it was given.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
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

// loadConfig reads path, or the defaults when path is empty.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

// plan loads the config and plans the engine, printing every problem.
func plan(path string, routes []string, stderr io.Writer) (*engine.Plan, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if cfg != nil {
			// Report the route files' own errors too, all at once.
			if len(routes) > 0 {
				cfg.Routes = routes
			}
			if len(cfg.Routes) > 0 {
				if err := engine.CheckRoutesAlone(cfg); err != nil {
					fmt.Fprintln(stderr, err)
				}
			}
		}
		return nil, exitError{code: 1}
	}
	if len(routes) > 0 {
		cfg.Routes = routes
	}
	p, err := engine.NewPlan(cfg, engine.NewRegistry(all.Factories()...))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, exitError{code: 1}
	}
	return p, nil
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// adminToken resolves a token reference for the admin API client.
func adminToken(ref string) (string, error) {
	if ref == "" {
		return os.Getenv("JUNCTION_ADMIN_TOKEN"), nil
	}
	return config.Secrets{}.Resolve(ref)
}
