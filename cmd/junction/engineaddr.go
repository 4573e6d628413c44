package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/junction-fhir/junction/adapters/fhir"
	"github.com/junction-fhir/junction/adapters/mllp"
	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/adapters/pathology"
	"github.com/junction-fhir/junction/pkg/config"
)

// engineAddrs are where the engine a config file describes listens, so
// that the commands talking to a running engine reach the one started
// with `junction serve -c FILE` rather than the defaults.
type engineAddrs struct {
	// api is the base URL of its HTTP listener.
	api string
	// inputs maps each input with a listen address (the MLLP ones) to
	// the address to dial.
	inputs map[string]string
	// fhirToken is the bearer_token reference (env:NAME, file:PATH) of
	// the first FHIR input, by name, that has one: what send --fhir posts
	// with when given no --token.
	fhirToken string
	// apiCert is the reference to the certificate the HTTP listener
	// serves (http.tls.cert), empty without TLS.
	apiCert string
	// inputTLS names the MLLP inputs that take TLS only (their tls is
	// set), which a plain connection cannot reach.
	inputTLS map[string]bool
}

// readEngineAddrs reads the listen addresses of the config file path. A
// wildcard host (0.0.0.0, ::, none) is dialled on loopback.
func readEngineAddrs(path string) (engineAddrs, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return engineAddrs{}, fmt.Errorf("--config %s: %w", path, err)
	}
	scheme, cert := "http://", ""
	if cfg.HTTP.TLS != nil {
		scheme, cert = "https://", cfg.HTTP.TLS.Cert
	}
	out := engineAddrs{api: scheme + dialable(cfg.HTTP.Listen), inputs: map[string]string{}, apiCert: cert, inputTLS: map[string]bool{}}
	names := make([]string, 0, len(cfg.Inputs))
	for name := range cfg.Inputs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		in := cfg.Inputs[name]
		listen := defaultListen(in.Type)
		if n := in.Settings.Node; n != nil {
			for i := 0; i+1 < len(n.Content); i += 2 {
				switch key, v := n.Content[i].Value, n.Content[i+1].Value; {
				case key == "listen" && v != "":
					listen = v
				case key == "bearer_token" && v != "" && in.Type == fhir.Type && out.fhirToken == "":
					out.fhirToken = v
				case key == "tls" && n.Content[i+1].ShortTag() != "!!null":
					out.inputTLS[name] = true
				}
			}
		}
		if listen != "" {
			out.inputs[name] = dialable(listen)
		}
	}
	return out, nil
}

// defaultListen is where an MLLP input of type typ listens without a
// listen setting ("" for other types).
func defaultListen(typ string) string {
	switch typ {
	case pas.Type:
		return mllp.DefaultListen
	case pathology.Type:
		return pathology.DefaultListen
	}
	return ""
}

// dialable turns a listen address into one to dial: a wildcard or empty
// host becomes loopback.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// input returns the address to dial for the MLLP input name.
func (a engineAddrs) input(name string) (string, error) {
	if addr, ok := a.inputs[name]; ok {
		return addr, nil
	}
	names := make([]string, 0, len(a.inputs))
	for n := range a.inputs {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "", errors.New("the config has no input with a listen address; give --addr")
	}
	return "", fmt.Errorf("the config has no MLLP input %q; its inputs with a listen address: %s (choose one with --input)", name, strings.Join(names, ", "))
}

// set reports whether flag name was given on the command line.
func set(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
