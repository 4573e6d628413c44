package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// memSample is one reading of the engine's resident memory.
type memSample struct {
	at  time.Time
	rss float64
}

// memWatch samples the engine's resident memory
// (process_resident_memory_bytes on its /metrics) while a bench runs, so
// that the run reports memory under load beside its rates.
type memWatch struct {
	mu      sync.Mutex
	samples []memSample
	stop    context.CancelFunc
	done    chan struct{}
}

// watchMemory scrapes url every interval until stopped. A scrape that
// fails or has no resident memory is passed over.
func watchMemory(ctx context.Context, url string, interval time.Duration) *memWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &memWatch{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if text, err := scrape(ctx, url); err == nil {
				if v, ok := residentBytes(text); ok {
					w.mu.Lock()
					w.samples = append(w.samples, memSample{at: time.Now(), rss: v})
					w.mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// Stop ends the sampling and returns the samples taken, oldest first.
func (w *memWatch) Stop() []memSample {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.samples)
}

// residentBytes reads process_resident_memory_bytes from an exposition.
func residentBytes(text string) (float64, bool) {
	var v float64
	found := false
	unlabelled(text, func(name string, x float64) {
		if name == "process_resident_memory_bytes" {
			v, found = x, true
		}
	})
	return v, found
}

// reportMemory prints the engine's resident memory over a run: the
// highest sample, and the median of the samples taken in the second half
// of the sending (steadyFrom to steadyTo), once the engine has warmed
// up: the steady state under load. It prints nothing without samples.
func reportMemory(w io.Writer, samples []memSample, steadyFrom, steadyTo time.Time) {
	if len(samples) == 0 {
		return
	}
	var peak float64
	var steady []float64
	for _, s := range samples {
		peak = max(peak, s.rss)
		if !s.at.Before(steadyFrom) && !s.at.After(steadyTo) {
			steady = append(steady, s.rss)
		}
	}
	const mib = 1 << 20
	fmt.Fprintf(w, "engine resident memory (%d samples): peak %.0f MiB", len(samples), peak/mib)
	if len(steady) > 0 {
		slices.Sort(steady)
		fmt.Fprintf(w, ", steady under load %.0f MiB (median of %d samples in the second half of sending)", steady[len(steady)/2]/mib, len(steady))
	}
	fmt.Fprintln(w)
}
