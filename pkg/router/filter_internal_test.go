package router

import (
	"testing"
	"time"
)

// TestFilterSelects: a replay or listing takes only the dead letters its
// filter names, by id, route, destination and time window (both ends
// included); a dead letter outside any one of them is left alone.
func TestFilterSelects(t *testing.T) {
	at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	d := DeadLetter{MessageID: "01AAAAAAAAAAAAAAAAAAAAAAAA", Stage: "delivery", Route: "adt", Destination: "ehr", Time: at}
	tests := []struct {
		name string
		f    Filter
		want bool
	}{
		{"no filter", Filter{}, true},
		{"its id", Filter{IDs: []string{"01BBBBBBBBBBBBBBBBBBBBBBBB", d.MessageID}}, true},
		{"other ids", Filter{IDs: []string{"01BBBBBBBBBBBBBBBBBBBBBBBB"}}, false},
		{"its route", Filter{Route: "adt"}, true},
		{"another route", Filter{Route: "oru"}, false},
		{"its destination", Filter{Destination: "ehr"}, true},
		{"another destination", Filter{Destination: "gp"}, false},
		{"since its time", Filter{Since: at}, true},
		{"since after it", Filter{Since: at.Add(time.Second)}, false},
		{"until its time", Filter{Until: at}, true},
		{"until before it", Filter{Until: at.Add(-time.Second)}, false},
		{"window around it", Filter{Since: at.Add(-time.Hour), Until: at.Add(time.Hour)}, true},
		{"route matches, destination not", Filter{Route: "adt", Destination: "gp"}, false},
		{"id matches, route not", Filter{IDs: []string{d.MessageID}, Route: "oru"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.match(d); got != tt.want {
				t.Errorf("%+v selects the dead letter: %v, want %v", tt.f, got, tt.want)
			}
		})
	}
}
