package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"

	"github.com/junction-fhir/junction/pkg/engine"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "", stderr)
	cfgPath := fs.String("c", "", "config file (default: built-in defaults, embedded NATS under ./data)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file until shutdown (for performance work)")
	memProfile := fs.String("memprofile", "", "write a heap profile to this file when shutdown begins (for performance work)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		f, err := os.Create(*memProfile)
		if err != nil {
			return fmt.Errorf("memprofile: %w", err)
		}
		defer f.Close()
		// Written when the engine is told to stop, or when serve returns
		// without it having been told (a start that failed).
		stopping, stop := context.WithCancel(ctx)
		written := make(chan struct{})
		defer func() { stop(); <-written }()
		go func() {
			defer close(written)
			<-stopping.Done()
			// What is live in the running engine, before the drain
			// releases it.
			runtime.GC()
			if err := pprof.WriteHeapProfile(f); err != nil {
				fmt.Fprintf(stderr, "memprofile: %v\n", err)
			}
		}()
	}
	p, err := plan(*cfgPath, nil, planChecks{secrets: true, listen: true}, stderr)
	if err != nil {
		return err
	}
	log := newLogger(os.Stderr, p.Config.Log.Level)
	if limit, from := memoryLimit(p.Config.MemoryLimitMiB, os.Getenv("GOMEMLIMIT")); limit > 0 {
		debug.SetMemoryLimit(limit)
		log.Info("memory limit set", "mib", limit>>20, "from", from)
	}
	// The path the logs' suggested commands give, wherever they are run.
	cfgFile := *cfgPath
	if abs, err := filepath.Abs(cfgFile); err == nil && cfgFile != "" {
		cfgFile = abs
	}
	e, err := engine.New(p, engine.Options{Logger: log, Version: version, ConfigFile: cfgFile})
	if err != nil {
		return err
	}
	if err := e.Run(ctx); err != nil {
		log.Error("junction failed", "err", err)
		return exitError{code: 1}
	}
	return nil
}

// memoryLimit returns the soft memory limit serve sets from the config's
// memory_limit_mib, and where it came from; 0 when GOMEMLIMIT is set (the
// runtime has applied it already) or the config sets none.
func memoryLimit(mib int, env string) (int64, string) {
	if env != "" || mib <= 0 {
		return 0, ""
	}
	return int64(mib) << 20, "memory_limit_mib"
}
