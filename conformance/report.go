package conformance

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Report is the outcome of a conformance run.
type Report struct {
	// Corpora is the corpus folder read.
	Corpora string
	// Adapters are the adapter types whose translators were judged.
	Adapters []string
	// Files and Messages count the HL7 v2 inputs read.
	Files, Messages int
	// NoMessage lists input files holding no HL7 v2 message.
	NoMessage []string
	// Checks are the checks, in order a to d.
	Checks []*Check
}

// Check is one conformance check.
type Check struct {
	// ID is a short stable name: schema, references, ukcore, cdc,
	// robustness.
	ID string
	// Title says what is judged.
	Title string
	// Unit names what Total counts (bundles, cases, translations).
	Unit string
	// Total items judged; Passed of them met every rule.
	Total, Passed int
	// Breakdown counts by rule or category.
	Breakdown []Tally
	// Failures lists every failure.
	Failures []Failure
	// Notes explain what was not judged and why.
	Notes []string
}

// Tally counts one rule or category.
type Tally struct {
	Name           string
	Passed, Failed int
}

// Failure is one item that broke a rule.
type Failure struct {
	// Input names the input: a path relative to the corpora or the
	// repository, with #N for the message's index and its line.
	Input string
	// Rule names the rule broken.
	Rule string
	// Element locates the offending element (a FHIR path), if any.
	Element string
	// Reason explains the failure (never message content).
	Reason string
	// Category classes a disagreement (check c) or an outcome.
	Category string
}

// Check returns the check with the given ID, or nil.
func (r *Report) Check(id string) *Check {
	for _, c := range r.Checks {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// Percent returns Passed as a percentage of Total (100 when Total is 0).
func (c *Check) Percent() float64 {
	if c.Total == 0 {
		return 100
	}
	return 100 * float64(c.Passed) / float64(c.Total)
}

// FailuresByRule returns how many failures each rule has.
func (c *Check) FailuresByRule() map[string]int {
	out := map[string]int{}
	for _, f := range c.Failures {
		out[f.Rule]++
	}
	return out
}

// tallies turns a map of tallies into a sorted slice.
func tallies(m map[string]*Tally) []Tally {
	out := make([]Tally, 0, len(m))
	for _, t := range m {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func pct(n, total int) string {
	if total == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(total))
}

// WriteScorecard prints the report: per check, counts and percentages,
// the breakdown and the failures (at most maxFailures per check; 0 for
// all).
func (r *Report) WriteScorecard(w io.Writer, maxFailures int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Junction conformance scorecard\n")
	fmt.Fprintf(&b, "corpora: %s\n", r.Corpora)
	fmt.Fprintf(&b, "translators: %s\n", strings.Join(r.Adapters, ", "))
	fmt.Fprintf(&b, "inputs: %d files, %d HL7 v2 messages", r.Files, r.Messages)
	if len(r.NoMessage) > 0 {
		fmt.Fprintf(&b, " (%d files hold no message: %s)", len(r.NoMessage), strings.Join(r.NoMessage, ", "))
	}
	b.WriteString("\n\n")
	fmt.Fprintf(&b, "%-12s %9s %9s %8s  %s\n", "check", "passed", "total", "rate", "what")
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%-12s %9d %9d %8s  %s (%s)\n", c.ID, c.Passed, c.Total, pct(c.Passed, c.Total), c.Title, c.Unit)
	}
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "\n== %s: %s\n", c.ID, c.Title)
		fmt.Fprintf(&b, "%d of %d %s passed (%s)\n", c.Passed, c.Total, c.Unit, pct(c.Passed, c.Total))
		for _, n := range c.Notes {
			fmt.Fprintf(&b, "note: %s\n", n)
		}
		if len(c.Breakdown) > 0 {
			fmt.Fprintf(&b, "%9s %9s %8s  %s\n", "passed", "failed", "rate", "rule or category")
			for _, t := range c.Breakdown {
				fmt.Fprintf(&b, "%9d %9d %8s  %s\n", t.Passed, t.Failed, pct(t.Passed, t.Passed+t.Failed), t.Name)
			}
		}
		if len(c.Failures) > 0 {
			fmt.Fprintf(&b, "failures (%d):\n", len(c.Failures))
			for i, f := range c.Failures {
				if maxFailures > 0 && i == maxFailures {
					fmt.Fprintf(&b, "  ... %d more (use --max-failures 0 to list all)\n", len(c.Failures)-maxFailures)
					break
				}
				b.WriteString("  " + f.String() + "\n")
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (f Failure) String() string {
	var b strings.Builder
	b.WriteString(f.Input)
	if f.Category != "" {
		b.WriteString(" [" + f.Category + "]")
	}
	b.WriteString(" " + f.Rule)
	if f.Element != "" {
		b.WriteString(" at " + f.Element)
	}
	if f.Reason != "" {
		b.WriteString(": " + f.Reason)
	}
	return b.String()
}
