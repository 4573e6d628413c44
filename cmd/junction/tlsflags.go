package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"

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

// engineTransport returns the transport of a command that reaches the
// engine's HTTPS listener at the address its config file gives (api,
// loopback for a wildcard listen address), where certRef is the
// certificate that config serves (http.tls.cert). Certificates seldom name
// the loopback address (cert-manager's name the Service), so a server
// presenting exactly that certificate is trusted; any other must verify
// as usual for the host dialled, against the CA in caFile or the system's
// roots. A certificate this command cannot read (an env: reference set
// only in the engine's environment, a file it may not open) leaves the
// usual verification alone, as without the config.
func engineTransport(api, certRef, caFile string) (http.RoundTripper, error) {
	u, err := url.Parse(api)
	if err != nil {
		return nil, fmt.Errorf("the engine's address %q: %w", api, err)
	}
	certPEM, err := config.Secrets{}.Resolve(certRef)
	if err != nil {
		return httpsTransport(caFile, "", "")
	}
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("the engine's certificate (http.tls.cert): no PEM certificate in it")
	}
	own := block.Bytes
	cfg, err := clientTLS(caFile, "", "")
	if err != nil {
		return nil, err
	}
	roots, host := cfg.RootCAs, u.Hostname()
	// Verification is done here, by VerifyConnection, for every
	// connection: the engine's own certificate, or a chain to roots
	// naming host.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the engine presented no certificate")
		}
		leaf := cs.PeerCertificates[0]
		if bytes.Equal(leaf.Raw, own) {
			return nil
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter}); err != nil {
			return fmt.Errorf("not the certificate the engine's config names (http.tls.cert), and %w", err)
		}
		return nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return tr, nil
}
