package engine

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestLiftDeadlinesThroughAdminWrapper checks that a long admin request
// (a replay) answers after the listener's timeouts, through the writer
// the admin wrapper gives handlers.
func TestLiftDeadlinesThroughAdminWrapper(t *testing.T) {
	for _, lift := range []bool{true, false} {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sw := &statusWriter{ResponseWriter: w, code: 200}
			if lift {
				if err := liftDeadlines(sw); err != nil {
					t.Errorf("liftDeadlines: %v", err)
				}
			}
			time.Sleep(600 * time.Millisecond)
			_, _ = io.WriteString(sw, "done")
		}))
		srv.Config.ReadTimeout, srv.Config.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
		srv.Start()
		resp, err := http.Post(srv.URL, "application/json", nil)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		srv.Close()
		if got := err == nil && string(body) == "done"; got != lift {
			t.Errorf("lifted %v: answered %v (%q, %v)", lift, got, body, err)
		}
	}
}
