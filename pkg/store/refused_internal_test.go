package store

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestRefusedForGood(t *testing.T) {
	api := func(code jetstream.ErrorCode) error {
		return fmt.Errorf("storing: %w", &jetstream.APIError{Code: 503, ErrorCode: code, Description: "refused"})
	}
	for _, tc := range []struct {
		name     string
		err      error
		replicas int
		want     bool
	}{
		{"server full, one replica", api(10023), 1, true},
		// The leader over its own server's limit steps down; another
		// server may take the write.
		{"server full, three replicas", api(10023), 3, false},
		{"account limit, three replicas", api(10002), 3, true},
		{"account limit, one replica", api(10002), 1, true},
		{"no responders", jetstream.ErrNoStreamResponse, 1, false},
		{"another API error", api(10071), 1, false},
		{"not an API error", errors.New("timeout"), 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Store{cfg: Config{Replicas: tc.replicas}}
			if got := s.RefusedForGood(tc.err); got != tc.want {
				t.Errorf("RefusedForGood = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRefusingLapses checks that a refusal keeps the store unready for
// refusedHold only, when nothing is stored after it.
func TestRefusingLapses(t *testing.T) {
	var logged strings.Builder
	s := &Store{log: slog.New(slog.NewTextHandler(&logged, nil)), epoch: time.Now()}
	s.NoteIngest(&jetstream.APIError{Code: 503, ErrorCode: 10023})
	if !s.Refusing() {
		t.Fatal("not Refusing after a refusal")
	}
	s.epoch = s.epoch.Add(-refusedHold + time.Second) // refusedHold less a second later
	if !s.Refusing() {
		t.Error("not Refusing a second before refusedHold ran out")
	}
	s.epoch = s.epoch.Add(-time.Second)
	if s.Refusing() {
		t.Error("still Refusing once refusedHold ran out")
	}
	// Another refusal starts it again, and says so again.
	s.NoteIngest(&jetstream.APIError{Code: 503, ErrorCode: 10023})
	if !s.Refusing() {
		t.Error("not Refusing after a second refusal")
	}
	if n := strings.Count(logged.String(), "store refusing inbound messages"); n != 2 {
		t.Errorf("logged the refusal %d times, want once each time it started:\n%s", n, logged.String())
	}
}
