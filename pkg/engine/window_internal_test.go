package engine

import (
	"net/url"
	"testing"
	"time"
)

func TestWindowFromQuery(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		query        string
		since, until time.Time
		err          string
	}{
		{"", time.Time{}, time.Time{}, ""},
		{"since=2h", now.Add(-2 * time.Hour), time.Time{}, ""},
		{"since=2026-12-05T09:00:00Z&until=30m", time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC), now.Add(-30 * time.Minute), ""},
		{"since=yesterday", time.Time{}, time.Time{}, "since must be an RFC 3339 time or a duration before now, such as 2h"},
		{"since=1h&until=soon", time.Time{}, time.Time{}, "until must be an RFC 3339 time or a duration before now, such as 2h"},
		{"since=never&until=soon", time.Time{}, time.Time{}, "since must be an RFC 3339 time or a duration before now, such as 2h"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			since, until, err := windowFromQuery(q, now)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !since.Equal(tt.since) || !until.Equal(tt.until) {
				t.Errorf("window = %v .. %v, want %v .. %v", since, until, tt.since, tt.until)
			}
		})
	}
}
