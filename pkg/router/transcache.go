package router

import (
	"encoding/json"
	"sync"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
)

// sharedTranslator lets the routes of one source share each message's
// translation: their consumers take the same message at about the same
// time, so a small cache keyed by message id saves all but one of the
// translations. Translations are read-only once made. Errors are not
// cached (each route dead-letters on its own).
type sharedTranslator struct {
	inner adapter.Translator
	// made is called once per translation made (not per cache hit), for
	// per-feed counts such as data quality.
	made  func(env *envelope.Envelope, tr *adapter.Translation)
	mu    sync.Mutex
	byID  map[string]*adapter.Translation
	order []string
	next  int
}

// The cache holds at most sharedTranslations entries, none bigger than
// maxSharedBytes (raw plus FHIR), so it stays under about 64 MiB per source
// whatever the input sizes; bigger messages are translated per route.
const (
	sharedTranslations = 256
	maxSharedBytes     = 256 << 10
)

func newSharedTranslator(t adapter.Translator, made func(*envelope.Envelope, *adapter.Translation)) *sharedTranslator {
	return &sharedTranslator{inner: t, made: made, byID: make(map[string]*adapter.Translation, sharedTranslations), order: make([]string, sharedTranslations)}
}

// Fresh translates env without the cache (replays use the current mapping).
func (s *sharedTranslator) Fresh(env *envelope.Envelope) (*adapter.Translation, error) {
	tr, err := s.inner.Translate(env)
	if err != nil {
		return nil, err
	}
	// Decode the bundle once for every route that reads it. Routes only
	// read it (transforms build new maps), so sharing is safe. A bundle
	// that is not JSON is left for each route to report.
	var parsed map[string]any
	if json.Unmarshal(tr.Bundle, &parsed) == nil {
		tr.Parsed = parsed
	}
	if s.made != nil {
		s.made(env, tr)
	}
	return tr, nil
}

// Translate returns the cached translation of env, or makes it.
func (s *sharedTranslator) Translate(env *envelope.Envelope) (*adapter.Translation, error) {
	key := env.ID
	s.mu.Lock()
	tr, ok := s.byID[key]
	s.mu.Unlock()
	if ok {
		return tr, nil
	}
	tr, err := s.Fresh(env)
	if err != nil {
		return nil, err
	}
	if len(env.Raw)+len(tr.Bundle) > maxSharedBytes {
		return tr, nil
	}
	s.mu.Lock()
	if old := s.order[s.next]; old != "" {
		delete(s.byID, old)
	}
	s.order[s.next] = key
	s.next = (s.next + 1) % sharedTranslations
	s.byID[key] = tr
	s.mu.Unlock()
	return tr, nil
}
