// Command junction is the Junction integration engine: it serves, checks
// and tests routes, sends sample messages, replays dead letters and reads
// audit trails.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the engine (embedded NATS and defaults when no config is given)", runServe},
		{"lint", "check the config and routes: strict decoding, CEL types and costs", runLint},
		{"test", "run the route files' tests offline", runTest},
		{"send", "send HL7 v2 files over MLLP (or FHIR JSON over HTTP) and print the acknowledgements", runSend},
		{"replay", "resend dead letters or stored messages through the admin API", runReplay},
		{"audit", "a message's trail, finding messages, dead letters, quarantine, reconcile, verify the chain, disclosure reports, signing keys", runAudit},
		{"bench", "closed-loop MLLP load: throughput and ACK latency percentiles", runBench},
		{"convert", "convert HL7 v2 files to FHIR Bundles offline (JSON lines)", runConvert},
		{"conformance", "judge translations against the FHIR schema, UK Core and the mapping guide", runConformance},
		{"version", "print the version", runVersion},
	}
}

// errUsage marks an error already explained by a usage message.
var errUsage = errors.New("usage")

// exitError carries an exit code.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func usage(w io.Writer) {
	fmt.Fprintf(w, "Junction %s: a FHIR integration engine for health and social care.\n\nUsage: junction <command> [flags]\n\nCommands:\n", version)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'junction <command> --help' for a command's flags.\n")
}

func main() {
	// The first SIGINT or SIGTERM asks for a graceful stop (serve drains);
	// a second stops at once. That is as safe as SIGKILL, which the
	// durability tests exercise: nothing is answered before it is stored,
	// and what was not delivered is delivered after a restart.
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "junction: second signal: stopping at once, without draining (undelivered messages are delivered after a restart)")
		os.Exit(1)
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	signal.Stop(sigs)
	cancel()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		var ee exitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			return ee.code
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "junction %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "junction: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "junction %s\n", version)
	return nil
}
