package main

import (
	"context"
	"fmt"
	"io"

	"github.com/junction-fhir/junction/pkg/route"
)

func runLint(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("lint", "[route file or dir...]", stderr)
	cfgPath := fs.String("c", "", "config file (default: built-in defaults)")
	secrets := fs.Bool("secrets", true, "try every env: and file: secret reference in the config (false on a machine without the deployment's secrets)")
	if err := parse(fs, args); err != nil {
		return err
	}
	p, err := plan(*cfgPath, fs.Args(), planChecks{secrets: *secrets, strictRoutes: true}, stderr)
	if err != nil {
		return err
	}
	lim := p.Rules.Limits()
	for _, r := range p.Routes {
		fmt.Fprintf(stdout, "route %s (%s): source %s, %d destinations\n", r.Name, r.File, r.Source, len(r.Destinations))
		for _, c := range r.Programs {
			est := c.Program.EstimatedCost()
			fmt.Fprintf(stdout, "  %s %s: estimated cost %d..%d (limit %d)\n", c.Pos, c.Where, est.Min, est.Max, lim.MaxEstimatedCost)
			if est.Max > lim.CostLimit {
				// Loaded, since most messages are far smaller than the
				// estimate's worst case; but one large enough is stopped.
				fmt.Fprintf(stderr, "%s: warning: %s: estimated worst-case cost %d is above rules.cost_limit %d: a message large enough stops it at run time, and is dead-lettered (rule.eval); narrow it (select resources by type before iterating) or raise the limit\n",
					c.Pos, c.Where, est.Max, lim.CostLimit)
			}
		}
	}
	if len(fs.Args()) == 0 {
		// The config's own routes: those the engine would run.
		for _, w := range append(p.UnroutedRelays(), p.PlaceholderWarnings()...) {
			fmt.Fprintln(stderr, w)
		}
	}
	fmt.Fprintf(stdout, "ok: %d inputs, %d destinations, %d routes\n", len(p.Inputs), len(p.Destinations), len(p.Routes))
	return nil
}

func runTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("test", "[route file or dir...]", stderr)
	cfgPath := fs.String("c", "", "config file (default: built-in defaults)")
	update := fs.Bool("update", false, "rewrite golden FHIR files from the actual output (review the diff)")
	verbose := fs.Bool("v", false, "print every test, not only failures")
	if err := parse(fs, args); err != nil {
		return err
	}
	p, err := plan(*cfgPath, fs.Args(), planChecks{strictRoutes: true}, stderr)
	if err != nil {
		return err
	}
	var opts []route.TestOption
	if !p.Config.PatientIndex.Enabled {
		opts = append(opts, route.WithoutPatientIndex())
	}
	pass, fail := 0, 0
	for _, r := range p.Routes {
		// A plan is returned only when every input was built, so each
		// route's source is in p.Inputs.
		tr := p.Inputs[r.Source].Translator
		for _, res := range r.RunTests(ctx, tr, p.Rules, *update, opts...) {
			if res.Passed() {
				pass++
				if *verbose {
					fmt.Fprintf(stdout, "PASS %s / %s\n", res.Route, res.Name)
				}
			} else {
				fail++
				fmt.Fprintf(stdout, "FAIL %s / %s\n", res.Route, res.Name)
				for _, f := range res.Failures {
					fmt.Fprintf(stdout, "    %s\n", f)
				}
			}
			for _, u := range res.Updated {
				fmt.Fprintf(stdout, "updated %s\n", u)
			}
		}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", pass, fail)
	if fail > 0 {
		return exitError{code: 1}
	}
	return nil
}
