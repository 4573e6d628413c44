package engine_test

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/logtest"
	"github.com/junction-fhir/junction/pkg/store"
)

// TestLostBucketsLogged: a data directory restored without the patient
// hash key's bucket or the patient index's (deleted, or lost with their
// directories) starts with each made again empty, and says at ERROR
// which was lost; a start on a whole store says nothing of the kind.
func TestLostBucketsLogged(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	routes, err := filepath.Abs("../../routes")
	if err != nil {
		t.Fatal(err)
	}
	body := engineConfig(data, routes)
	start := func() string {
		t.Helper()
		var logs logtest.Buffer
		if err := startAndStopLogging(t, dir, body, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError}))); err != nil {
			t.Fatal(err)
		}
		return logs.String()
	}
	start()
	// The store holds something (input kept in the quarantine, which no
	// stage reads), so it is one that has been used.
	st, err := store.Open(t.Context(), store.DefaultConfig(), data, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.JS.Publish(t.Context(), store.SubjQuarantine+".test", []byte("x")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if logged := start(); strings.Contains(logged, "bucket missing") {
		t.Fatalf("a start on a whole store logged a lost bucket: %s", logged)
	}

	st, err = store.Open(t.Context(), store.DefaultConfig(), data, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"KV_consent_key", "KV_JUNCTION_PATIENTS"} {
		if err := st.JS.DeleteStream(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	logged := start()
	for _, b := range []string{"consent_key", "JUNCTION_PATIENTS"} {
		if !strings.Contains(logged, `"msg":"bucket missing beside a store that has held messages`) || !strings.Contains(logged, `"bucket":"`+b+`"`) {
			t.Errorf("a start without bucket %s logged %q, want an error naming it as lost", b, logged)
		}
	}
}
