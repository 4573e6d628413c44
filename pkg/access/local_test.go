package access_test

import (
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/junction-fhir/junction/pkg/access"
)

// TestLocal: without tokens, requests from this machine's own tools are
// the local principal, and requests a web page could make (another site's
// origin, or its own name resolved to 127.0.0.1) are refused.
func TestLocal(t *testing.T) {
	tests := []struct {
		name    string
		host    string
		headers map[string]string
		ok      bool
	}{
		{"curl to 127.0.0.1", "127.0.0.1:8080", nil, true},
		{"localhost", "localhost:8080", nil, true},
		{"localhost in capitals, no port", "LOCALHOST", nil, true},
		{"IPv6 loopback", "[::1]:8080", nil, true},
		{"another loopback address", "127.0.0.2:8080", nil, true},
		{"a page on a loopback origin", "127.0.0.1:8080", map[string]string{"Origin": "http://127.0.0.1:3000", "Sec-Fetch-Site": "same-site"}, true},
		{"a page on another loopback name", "127.0.0.1:8080", map[string]string{"Origin": "http://localhost:3000", "Sec-Fetch-Site": "cross-site"}, false},
		{"same-origin fetch", "127.0.0.1:8080", map[string]string{"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}, true},
		{"DNS rebinding: a site's own name", "rebind.example:8080", map[string]string{"Sec-Fetch-Site": "same-origin"}, false},
		{"a proxy passing its Host on", "junction.trust.example", nil, false},
		{"a LAN address", "10.0.0.5:8080", nil, false},
		{"no Host", "", nil, false},
		{"cross-site page", "127.0.0.1:8080", map[string]string{"Origin": "https://evil.example"}, false},
		{"sandboxed page", "127.0.0.1:8080", map[string]string{"Origin": "null"}, false},
		{"a file page", "127.0.0.1:8080", map[string]string{"Origin": "file://"}, false},
		{"cross-site without Origin", "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "cross-site"}, false},
		{"a name ending in localhost", "evil-localhost:8080", nil, false},
		{"a proxy on this machine keeping 127.0.0.1 as Host", "127.0.0.1:8080", map[string]string{"X-Forwarded-For": "10.9.8.7"}, false},
		{"a proxy saying Forwarded", "127.0.0.1:8080", map[string]string{"Forwarded": "for=10.9.8.7"}, false},
		{"a proxy saying X-Real-IP", "localhost:8080", map[string]string{"X-Real-IP": "10.9.8.7"}, false},
	}
	l := access.Local{Principal: access.Principal{Name: "local", Roles: access.Roles()}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/api/replay", nil)
			r.Host = tt.host
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			p, err := l.Authenticate(r)
			if tt.ok {
				if err != nil || p.Name != "local" || len(p.Roles) != len(access.Roles()) {
					t.Fatalf("Authenticate = %+v, %v; want the local principal", p, err)
				}
				return
			}
			if !errors.Is(err, access.ErrNotLocal) {
				t.Fatalf("Authenticate = %+v, %v; want ErrNotLocal", p, err)
			}
		})
	}
}
