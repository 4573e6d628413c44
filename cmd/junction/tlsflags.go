package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
)

// clientTLS builds the TLS configuration of a command that connects to
// Junction: TLS 1.2 or later, trusting the CA in caFile (the system's
// roots when empty), presenting the certificate in certFile with the key
// in keyFile (both or neither) for mutual TLS.
func clientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca: no PEM certificate in %s", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
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
