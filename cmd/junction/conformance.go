package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/conformance"
)

const conformanceHelp = `Judge Junction's HL7 v2 to FHIR translations against external rules and
print a scorecard: FHIR R4 schema validity and reference resolution of every
Bundle produced from the adapters' golden inputs and the corpus messages,
UK Core profile rules, agreement with the v2-to-FHIR mapping inventory's
single-rule cases, and robustness (every corpus message converts or is
rejected with a coded reason, no panic). The corpora are read in place from
--corpora (default ../shared/corpora beside --repo).

The exit code is 1 when a bundle is schema-invalid, a reference does not
resolve, a translator panics or rejects a message without a reason; UK Core
and mapping-inventory findings are reported only.
`

// runConformance is "junction conformance".
func runConformance(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("conformance", "", stderr)
	usage := fs.Usage
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), conformanceHelp+"\n")
		usage()
	}
	repo := fs.String("repo", ".", "repository `DIR` whose adapters/*/testdata hold golden inputs")
	corpora := fs.String("corpora", "", "corpus `DIR` (default: ../shared/corpora beside --repo)")
	maxFailures := fs.Int("max-failures", 50, "failures listed per check (0 for all)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	root, err := filepath.Abs(*repo)
	if err != nil {
		return fmt.Errorf("--repo: %w", err)
	}
	dir := *corpora
	if dir == "" {
		dir = conformance.DefaultCorpora(root)
	}
	rep, err := conformance.Run(conformance.Options{RepoRoot: root, Corpora: dir, Factories: all.Factories()})
	if errors.Is(err, conformance.ErrNoCorpora) {
		fmt.Fprintf(stderr, "junction conformance: corpora not found at %s (set --corpora)\n", dir)
		return exitError{code: 1}
	}
	if err != nil {
		return err
	}
	if err := rep.WriteScorecard(stdout, *maxFailures); err != nil {
		return err
	}
	for _, id := range []string{"schema", "references", "robustness"} {
		if c := rep.Check(id); c != nil && len(c.Failures) > 0 {
			return exitError{code: 1}
		}
	}
	return nil
}
