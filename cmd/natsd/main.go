// Command natsd is the stock NATS server (github.com/nats-io/nats-server/v2)
// built from the version pinned in Junction's go.mod, so the Helm chart's
// NATS image can be built FROM scratch from this repository without
// fetching anything. It takes nats-server's own command-line flags and
// configuration file (natsd -c nats.conf, natsd -js, natsd --help) and
// adds nothing: Junction's durability settings live in the chart's
// configuration file, not here.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run starts the server with args and blocks until it shuts down (on
// SIGINT or SIGTERM the server's own signal handling ends the process).
// It returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("natsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	help := func() {
		fmt.Fprintf(stdout, "Usage: natsd [nats-server flags]\n\n"+
			"natsd is nats-server v%s, unchanged. Flags:\n\n", server.VERSION)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	version := func() { fmt.Fprintf(stdout, "nats-server: v%s\n", server.VERSION) }
	tlsHelp := func() {
		fmt.Fprintln(stdout, "TLS is configured in the configuration file's tls block, or with --tls, --tlscert, --tlskey, --tlsverify and --tlscacert.")
	}
	opts, err := server.ConfigureOptions(fs, args, version, help, tlsHelp)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "natsd: %v\n", err)
		return 2
	case opts == nil:
		// --version, --help or --help_tls was handled.
		return 0
	case opts.CheckConfig:
		fmt.Fprintf(stderr, "natsd: configuration file %s is valid\n", opts.ConfigFile)
		return 0
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintf(stderr, "natsd: %v\n", err)
		return 1
	}
	srv.ConfigureLogger()
	if err := server.Run(srv); err != nil {
		fmt.Fprintf(stderr, "natsd: %v\n", err)
		return 1
	}
	srv.WaitForShutdown()
	return 0
}
