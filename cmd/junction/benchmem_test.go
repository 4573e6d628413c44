package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestResidentBytes(t *testing.T) {
	tests := []struct {
		name, text string
		want       float64
		ok         bool
	}{
		{"present", "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 2.4e+08\n", 2.4e8, true},
		{"a longer name is another metric", "process_resident_memory_bytes_max 7\n", 0, false},
		{"absent", "go_goroutines 12\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := residentBytes(tt.text)
			if got != tt.want || ok != tt.ok {
				t.Errorf("residentBytes = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestReportMemory(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(s int, mib float64) memSample {
		return memSample{at: t0.Add(time.Duration(s) * time.Second), rss: mib * (1 << 20)}
	}
	tests := []struct {
		name    string
		samples []memSample
		want    string
	}{
		{"none", nil, ""},
		{
			"peak in the drain, steady from the second half of sending",
			[]memSample{at(0, 40), at(2, 150), at(5, 200), at(6, 210), at(8, 190), at(10, 300)},
			"engine resident memory (6 samples): peak 300 MiB, steady under load 200 MiB (median of 3 samples in the second half of sending)\n",
		},
		{
			"no sample in the second half",
			[]memSample{at(0, 40), at(1, 60)},
			"engine resident memory (2 samples): peak 60 MiB\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			reportMemory(&out, tt.samples, t0.Add(5*time.Second), t0.Add(9*time.Second))
			if out.String() != tt.want {
				t.Errorf("reportMemory wrote %q, want %q", out.String(), tt.want)
			}
		})
	}
}

// TestWatchMemory samples an exposition whose resident memory changes at
// each scrape, and passes over the scrapes that fail or lack it.
func TestWatchMemory(t *testing.T) {
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		switch i % 3 {
		case 0:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case 1:
			fmt.Fprintf(w, "process_resident_memory_bytes %d\n", i<<20)
		default:
			fmt.Fprintln(w, "go_goroutines 3")
		}
	}))
	defer ts.Close()
	w := watchMemory(context.Background(), ts.URL, time.Millisecond)
	for n.Load() < 10 {
		time.Sleep(time.Millisecond)
	}
	samples := w.Stop()
	if len(samples) < 3 {
		t.Fatalf("%d samples after %d scrapes, want at least 3", len(samples), n.Load())
	}
	for i, s := range samples {
		if mib := int64(s.rss) >> 20; mib%3 != 1 {
			t.Errorf("sample %d is %d MiB: not from a scrape that carried it", i, mib)
		}
		if i > 0 && !s.at.After(samples[i-1].at) {
			t.Errorf("sample %d not after the one before", i)
		}
	}
	if again := w.Stop(); len(again) != len(samples) {
		t.Errorf("a second Stop returned %d samples, want the same %d", len(again), len(samples))
	}
}
