// Package retryafter reads the HTTP Retry-After header.
package retryafter

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Max bounds what Parse returns: a server asking for longer is taken to
// mean a day.
const Max = 24 * time.Hour

// Parse reads a Retry-After header value, seconds or an HTTP date, as a
// wait from now, at most Max. It returns 0 for an empty, negative, past
// or unreadable value.
func Parse(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(min(s, int(Max/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), Max)
	}
	return 0
}
