package mllp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/fault"
)

// isSecretRef reports whether s is an "env:NAME" or "file:PATH" reference.
func isSecretRef(s string) bool {
	for _, p := range []string{"env:", "file:"} {
		if strings.HasPrefix(s, p) && len(s) > len(p) {
			return true
		}
	}
	return false
}

// checkRef appends a problem to errs when ref is set but not a reference.
func checkRef(errs []error, field, ref string) []error {
	if ref != "" && !isSecretRef(ref) {
		errs = append(errs, fmt.Errorf("%s: must be a secret reference (file:PATH or env:NAME holding PEM)", field))
	}
	return errs
}

// loadPEM resolves a secret reference to PEM bytes.
func loadPEM(secrets adapter.SecretResolver, field, ref string) ([]byte, error) {
	if secrets == nil {
		return nil, fault.Newf(fault.CodeConfig, "mllp: %s: no secret resolver", field)
	}
	v, err := secrets.Resolve(ref)
	if err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "mllp: "+field+": cannot resolve secret reference", err)
	}
	if strings.TrimSpace(v) == "" {
		return nil, fault.Newf(fault.CodeConfig, "mllp: %s: secret is empty", field)
	}
	return []byte(v), nil
}

// keyPair loads a certificate and its key from secret references.
func keyPair(secrets adapter.SecretResolver, prefix, certRef, keyRef string) (tls.Certificate, error) {
	certPEM, err := loadPEM(secrets, prefix+"cert", certRef)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := loadPEM(secrets, prefix+"key", keyRef)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The parse error names no key material.
		return tls.Certificate{}, fault.Wrap(fault.Permanent, fault.CodeConfig, "mllp: "+prefix+"cert/"+prefix+"key: not a valid certificate and key pair", err)
	}
	return cert, nil
}

// certPool loads PEM certificates from a secret reference.
func certPool(secrets adapter.SecretResolver, field, ref string) (*x509.CertPool, error) {
	pemBytes, err := loadPEM(secrets, field, ref)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "mllp: "+field+": no PEM certificate found", errors.New("no certificates"))
	}
	return pool, nil
}

// serverTLS builds the inbound TLS configuration: TLS 1.2 or later, and
// client certificates required and verified when ClientCA is set.
func serverTLS(secrets adapter.SecretResolver, c *TLSConfig) (*tls.Config, error) {
	cert, err := keyPair(secrets, "tls.", c.Cert, c.Key)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if c.ClientCA != "" {
		pool, err := certPool(secrets, "tls.client_ca", c.ClientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// clientTLS builds the outbound TLS configuration: TLS 1.2 or later,
// verifying the server against CA (the system roots when empty), with a
// client certificate when Cert and Key are set.
func clientTLS(secrets adapter.SecretResolver, c *OutboundTLSConfig) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CA != "" {
		pool, err := certPool(secrets, "tls.ca", c.CA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if c.Cert != "" {
		cert, err := keyPair(secrets, "tls.", c.Cert, c.Key)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
