package router

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
)

// slowTranslator counts its calls, and its first call waits for release
// to be closed (when set), so concurrent callers can be made to overlap
// it.
type slowTranslator struct {
	calls   atomic.Int32
	fail    error
	release chan struct{}
}

func (s *slowTranslator) Translate(*envelope.Envelope) (*adapter.Translation, error) {
	if s.calls.Add(1) == 1 && s.release != nil {
		select {
		case <-s.release:
		case <-time.After(10 * time.Second):
			// The others never joined it: the count of calls will say so.
		}
	}
	if s.fail != nil {
		return nil, s.fail
	}
	return &adapter.Translation{Bundle: []byte(`{"resourceType":"Bundle"}`)}, nil
}

// TestSharedTranslatorMakesEachTranslationOnce checks that routes asking
// for the same message at the same moment share one translation, so the
// per-message counts hung on it are made once.
func TestSharedTranslatorMakesEachTranslationOnce(t *testing.T) {
	tests := []struct {
		name      string
		fail      error
		wantCalls int32 // after the concurrent callers and one later caller
	}{
		{name: "success is shared and kept", wantCalls: 1},
		{name: "error is shared but not kept", fail: errors.New("store unavailable"), wantCalls: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inner := &slowTranslator{fail: tc.fail, release: make(chan struct{})}
			var made atomic.Int32
			s := newSharedTranslator(inner, func(*envelope.Envelope, *adapter.Translation) { made.Add(1) })
			// The first caller's translation is released once the seven
			// others wait for it.
			var joined atomic.Int32
			s.joined = func() {
				if joined.Add(1) == 7 {
					close(inner.release)
				}
			}
			env := &envelope.Envelope{ID: "01JTESTID", Source: "pas", Raw: []byte("MSH|")}
			var wg sync.WaitGroup
			errs := make([]error, 8)
			for i := range errs {
				wg.Go(func() { _, _, errs[i] = s.Translate(context.Background(), env) })
			}
			wg.Wait()
			s.joined = nil
			for i, err := range errs {
				if (err != nil) != (tc.fail != nil) {
					t.Fatalf("caller %d: err = %v, want failure %v", i, err, tc.fail != nil)
				}
			}
			tr, _, err := s.Translate(context.Background(), env)
			if (err != nil) != (tc.fail != nil) {
				t.Fatalf("later caller: err = %v", err)
			}
			// The shared translation carries its bundle's audit hash, so
			// each route's translated record need not compute it.
			if tr != nil && tr.BundleHash != audit.Hash(tr.Bundle) {
				t.Errorf("BundleHash = %q, want the audit hash of the bundle", tr.BundleHash)
			}
			if got := inner.calls.Load(); got != tc.wantCalls {
				t.Errorf("translations made = %d, want %d", got, tc.wantCalls)
			}
			wantMade := int32(0)
			if tc.fail == nil {
				wantMade = 1
			}
			if got := made.Load(); got != wantMade {
				t.Errorf("made callback ran %d times, want %d", got, wantMade)
			}
		})
	}
}
