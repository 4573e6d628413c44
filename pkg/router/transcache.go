package router

import (
	"context"
	"sync"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jsonmap"
	"github.com/junction-fhir/junction/pkg/route"
)

// sharedTranslator lets the routes of one source share each message's
// translation: their consumers take the same message at about the same
// time, so a small cache keyed by message id saves all but one of the
// translations. A route that asks while another is translating the same
// message waits for that translation instead of making its own, so
// per-message counts (data quality) are made once however the routes
// interleave. Translations are read-only once made. Errors are handed to
// the routes waiting at the time but not kept (each route dead-letters or
// retries on its own).
//
// Each translation made is applied to the patient index (index) before it
// is handed out, so the routes of a source apply a message once between
// them, and share the patient's record as it stood just after.
type sharedTranslator struct {
	inner adapter.Translator
	// index, when set, applies a translation to the patient index and,
	// with view, returns what the routes see of the patient; an error
	// fails the translation.
	index func(ctx context.Context, env *envelope.Envelope, tr *adapter.Translation, view bool) (patientView, error)
	// made is called once per translation made (not per cache hit), for
	// per-feed counts such as data quality.
	made func(env *envelope.Envelope, tr *adapter.Translation)
	// joined, when set (by tests), is called when a caller finds the
	// translation in flight and waits for it.
	joined func()
	mu     sync.Mutex
	byID   map[string]*sharedEntry
	order  []string
	next   int
}

// sharedEntry is one translation, made or in flight; done is closed when
// tr or err is set.
type sharedEntry struct {
	done chan struct{}
	tr   *adapter.Translation
	pv   patientView
	err  error
}

// The cache holds at most sharedTranslations entries, none bigger than
// maxSharedBytes (raw plus FHIR), so it stays under about 64 MiB per source
// whatever the input sizes; bigger messages are translated per route.
const (
	sharedTranslations = 256
	maxSharedBytes     = 256 << 10
)

func newSharedTranslator(t adapter.Translator, made func(*envelope.Envelope, *adapter.Translation)) *sharedTranslator {
	return &sharedTranslator{inner: t, made: made, byID: make(map[string]*sharedEntry, sharedTranslations), order: make([]string, sharedTranslations)}
}

// Fresh translates env without the cache (replays use the current
// mapping, and the patient index as it stands).
func (s *sharedTranslator) Fresh(ctx context.Context, env *envelope.Envelope) (*adapter.Translation, patientView, error) {
	return s.fresh(ctx, env, true)
}

// Index translates env and applies it to the patient index as Fresh
// does, for a source no route reads: what only routes read (the patient
// as they see it, the translation's audit hash and its local key) is not
// made.
func (s *sharedTranslator) Index(ctx context.Context, env *envelope.Envelope) error {
	_, _, err := s.fresh(ctx, env, false)
	return err
}

// fresh is Fresh, making what only routes read when routed.
func (s *sharedTranslator) fresh(ctx context.Context, env *envelope.Envelope, routed bool) (*adapter.Translation, patientView, error) {
	tr, err := s.inner.Translate(env)
	if err != nil {
		return nil, patientView{}, err
	}
	// Decode the bundle once for every route that reads it. Routes only
	// read it (transforms build new maps), so sharing is safe. A bundle
	// that is not JSON is left for each route to report.
	if parsed, err := jsonmap.Decode(tr.Bundle); err == nil {
		tr.Parsed = parsed
		if routed {
			tr.PatientKey = route.LocalKey(tr.PatientKey, parsed)
		}
	}
	if routed {
		tr.BundleHash = audit.Hash(tr.Bundle)
	}
	var pv patientView
	if s.index != nil {
		if pv, err = s.index(ctx, env, tr, routed); err != nil {
			return nil, patientView{}, err
		}
	}
	if s.made != nil {
		s.made(env, tr)
	}
	return tr, pv, nil
}

// Translate returns the cached translation of env, waits for one in
// flight, or makes it.
func (s *sharedTranslator) Translate(ctx context.Context, env *envelope.Envelope) (*adapter.Translation, patientView, error) {
	key := env.ID
	s.mu.Lock()
	if e, ok := s.byID[key]; ok {
		s.mu.Unlock()
		if s.joined != nil {
			select {
			case <-e.done:
			default:
				s.joined()
			}
		}
		<-e.done
		return e.tr, e.pv, e.err
	}
	e := &sharedEntry{done: make(chan struct{})}
	if old := s.order[s.next]; old != "" {
		delete(s.byID, old)
	}
	s.order[s.next] = key
	s.next = (s.next + 1) % sharedTranslations
	s.byID[key] = e
	s.mu.Unlock()

	e.tr, e.pv, e.err = s.Fresh(ctx, env)
	close(e.done)
	if e.err != nil || len(env.Raw)+len(e.tr.Bundle) > maxSharedBytes {
		// Not kept: later routes translate again (an error may be
		// transient; a big translation would hold too much memory).
		s.mu.Lock()
		if s.byID[key] == e {
			delete(s.byID, key)
		}
		s.mu.Unlock()
	}
	return e.tr, e.pv, e.err
}
