package engine

import "net/http"

// Admin exposes the admin wrapper to the external tests, which register
// stand-in handlers under endpoint names served elsewhere.
func (e *Engine) Admin(name string, h http.HandlerFunc) http.Handler { return e.admin(name, h) }
