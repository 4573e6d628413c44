// Command faultsink is the destination of Junction's fault-injection
// tests: it accepts HL7 v2 over MLLP (answering with ACKs) and FHIR over
// HTTP (POST /fhir), records every message it accepted, and answers as its
// control API says: normally, 503, dropping the connection without an
// answer, a late ACK, an ACK naming another message, or a permanent
// rejection of chosen messages. The tests read what it recorded from GET
// /deliveries and /rejections and set its behaviour with PUT /mode. It
// holds everything in memory; it is a test tool, not for production.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	fs := flag.NewFlagSet("faultsink", flag.ContinueOnError)
	mllpAddr := fs.String("mllp", "0.0.0.0:2576", "MLLP listen address")
	httpAddr := fs.String("http", "0.0.0.0:8081", "HTTP listen address (FHIR endpoint and control API)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := NewSink().listen(ctx, *mllpAddr, *httpAddr); err != nil {
		fmt.Fprintln(os.Stderr, "faultsink:", err)
		os.Exit(1)
	}
}
