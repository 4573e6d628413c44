package engine

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// Listener is a TCP address the engine listens on, with the setting that
// gives it.
type Listener struct {
	// Setting is the setting's path, such as http.listen or
	// inputs.pas.listen.
	Setting string
	// Addr is the address as configured (host:port).
	Addr string
	// Pos is where the setting is written, or where the nearest
	// setting above it is when it is left at its default; zero for a
	// config not read from a file.
	Pos yamlx.Pos
	// Default says an input's address is its type's default, not
	// written in the config.
	Default bool
}

// listeners returns the addresses cfg listens on: http.listen, the
// embedded server's nats.listen when set, and each planned input's own
// listen address, in that order (inputs by name).
func listeners(cfg *config.Config, inputs map[string]*PlannedInput) []Listener {
	ls := []Listener{{Setting: "http.listen", Addr: cfg.HTTP.Listen, Pos: cfg.PosOf("http.listen")}}
	if cfg.NATS.URL == "" && cfg.NATS.Listen != "" {
		ls = append(ls, Listener{Setting: "nats.listen", Addr: cfg.NATS.Listen, Pos: cfg.PosOf("nats.listen")})
	}
	for _, name := range sortedKeys(inputs) {
		l, ok := inputs[name].Config.(adapter.Listener)
		if !ok || l.ListenAddress() == "" {
			continue
		}
		pos, dflt := cfg.PosOf("inputs."+name), true
		if c := cfg.Inputs[name]; c != nil && !c.Settings.IsZero() {
			pos = c.Settings.PosOf("listen")
			k, _ := yamlx.MapEntry(c.Settings.Node, "listen")
			dflt = k == nil
		}
		ls = append(ls, Listener{Setting: "inputs." + name + ".listen", Addr: l.ListenAddress(), Pos: pos, Default: dflt})
	}
	return ls
}

// Listeners returns the TCP addresses the planned engine listens on.
func (p *Plan) Listeners() []Listener { return listeners(p.Config, p.Inputs) }

// wildcardHost reports whether host listens on every address.
func wildcardHost(host string) bool {
	return host == "" || host == "0.0.0.0" || host == "::"
}

// sharedListenErrors returns an error for each listener given an address
// an earlier one already takes (the same port, on the same host or where
// either host is a wildcard), placed at the later one (at the earlier
// one when the later is an input's default address): only one of them
// could listen.
func sharedListenErrors(ls []Listener) []error {
	var errs []error
	for i, l := range ls {
		host, port, err := net.SplitHostPort(l.Addr)
		if err != nil || port == "0" {
			continue // reported by its own validation; or any free port
		}
		for _, earlier := range ls[:i] {
			h, p, err := net.SplitHostPort(earlier.Addr)
			if err != nil || p != port {
				continue
			}
			if h == host || wildcardHost(h) || wildcardHost(host) {
				at, what := l.Pos, ""
				if l.Default {
					at, what = earlier.Pos, " (its default)"
				}
				errs = append(errs, fmt.Errorf("%s%s: %s%s is also %s's address (%s); each listener needs a port of its own", posPrefix(at), l.Setting, l.Addr, what, earlier.Setting, earlier.Addr))
				break
			}
		}
	}
	return errs
}

// CheckListeners tries to listen on every address the plan listens on,
// closing each at once, and returns an error for each it cannot listen
// on (already in use, or not an address of this machine), placed at its
// setting: so that serve reports all of them, where they are written,
// before it starts anything, rather than only the first, part way
// through starting (or, for the embedded server's nats.listen, as a
// server that never became ready).
func (p *Plan) CheckListeners() []error {
	var errs []error
	// Each is held until all are tried, so two settings naming one
	// address in different words (localhost and 127.0.0.1) are found
	// too.
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			_ = ln.Close()
		}
	}()
	for _, l := range p.Listeners() {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			why := err.Error()
			var se *net.OpError
			switch {
			case errors.Is(err, syscall.EADDRINUSE):
				why = "address already in use (by another process, another Junction, or another of these settings)"
			case errors.Is(err, syscall.EADDRNOTAVAIL):
				why = "not an address of this machine"
			case errors.As(err, &se) && se.Err != nil:
				why = se.Err.Error()
			}
			errs = append(errs, fmt.Errorf("%s%s: cannot listen on %s: %s", posPrefix(l.Pos), l.Setting, l.Addr, why))
			continue
		}
		held = append(held, ln)
	}
	return errs
}
