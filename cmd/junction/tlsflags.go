package main

import (
	"crypto/tls"
	"net/http"

	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/tlsconf"
)

// clientTLS builds the TLS configuration of a command that connects to
// Junction, as the engine builds its own clients' (tlsconf.Client): TLS
// 1.2 or later, trusting the CA in caFile (the system's roots when
// empty), presenting the certificate in certFile with the key in keyFile
// (both or neither) for mutual TLS.
func clientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	ref := func(path string) string {
		if path == "" {
			return ""
		}
		return "file:" + path
	}
	return tlsconf.Client(config.Secrets{}, "--tls-", tlsconf.ClientFiles{CA: ref(caFile), Cert: ref(certFile), Key: ref(keyFile)})
}

// httpsTransport returns the transport of a command's HTTP client: Go's
// default when no TLS file is named, else one using clientTLS's
// configuration for https URLs.
func httpsTransport(caFile, certFile, keyFile string) (http.RoundTripper, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return http.DefaultTransport, nil
	}
	cfg, err := clientTLS(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return tr, nil
}
