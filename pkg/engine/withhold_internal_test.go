package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/audit"
)

// TestDisclosedIn: a release can be withheld when the message's trail
// shows it, also when the trail was read past damaged audit files (the
// disclosure report, read past the same damage, shows it); a trail that
// does not show it says there is nothing to withhold only when it is
// complete, and an error reading it is an error.
func TestDisclosedIn(t *testing.T) {
	const patient, dest = "p-hash", "gp"
	delivered := []audit.Record{{Time: time.Unix(1, 0).UTC(), MessageID: "m", Event: audit.Delivered, Destination: dest, Outcome: "delivered", Patient: patient}}
	incomplete := &audit.IncompleteError{Err: errors.New("audit stream messages 1-9 could not be read")}
	failed := errors.New("the store did not answer")
	tests := []struct {
		name    string
		trail   []audit.Record
		err     error
		shown   bool
		wantErr bool
	}{
		{"complete, shows it", delivered, nil, true, false},
		{"complete, does not show it", nil, nil, false, false},
		{"incomplete, shows it", delivered, incomplete, true, false},
		{"incomplete, does not show it", nil, incomplete, false, true},
		{"not read", nil, failed, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			shown, err := disclosedIn(tc.trail, tc.err, patient, dest)
			if shown != tc.shown || (err != nil) != tc.wantErr {
				t.Errorf("disclosedIn = %v, %v; want %v, an error %v", shown, err, tc.shown, tc.wantErr)
			}
		})
	}
}
