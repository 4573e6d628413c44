// Package tlsconf builds TLS configurations from secret references
// ("file:PATH", or "env:NAME" naming a variable that holds the PEM), for
// the listeners and clients that take TLS: MLLP in and out, and the HTTP
// listener. A server's certificate is read again from its references
// while it runs, so a certificate renewed on disk (cert-manager, a
// mounted Secret) is served without a restart.
package tlsconf

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/junction-fhir/junction/pkg/fault"
)

// Resolver turns a secret reference into its value.
type Resolver interface {
	Resolve(ref string) (string, error)
}

// IsRef reports whether s is an "env:NAME" or "file:PATH" reference.
func IsRef(s string) bool {
	for _, p := range []string{"env:", "file:"} {
		if strings.HasPrefix(s, p) && len(s) > len(p) {
			return true
		}
	}
	return false
}

// CheckRef appends a problem to errs when ref is set but is not a
// reference, so PEM or a path is never written into a config file.
func CheckRef(errs []error, field, ref string) []error {
	if ref != "" && !IsRef(ref) {
		errs = append(errs, fmt.Errorf("%s: must be a secret reference (file:PATH or env:NAME holding PEM)", field))
	}
	return errs
}

// ServerFiles names a server's TLS material by reference.
type ServerFiles struct {
	// Cert and Key are the server's certificate chain and private key.
	Cert, Key string
	// ClientCA, when set, is the CA that signs the client certificates
	// accepted.
	ClientCA string
}

// ClientFiles names a client's TLS material by reference.
type ClientFiles struct {
	// CA verifies the server's certificate; the system roots when empty.
	CA string
	// Cert and Key are the client's certificate, for mutual TLS; both or
	// neither.
	Cert, Key string
	// ServerName overrides the name checked in the server's certificate.
	ServerName string
}

// ReloadInterval is how often, at most, a server reads its certificate's
// references again (on a handshake, so an idle server reads nothing).
const ReloadInterval = 30 * time.Second

// Server builds a server configuration: TLS 1.2 or later, the certificate
// read again from its references at most every ReloadInterval, and, when
// ClientCA is set, client certificates verified against it with
// clientAuth (tls.RequireAndVerifyClientCert to refuse a handshake
// without one, tls.VerifyClientCertIfGiven to leave the decision to the
// request's handler). prefix starts every error's field names, for
// example "mllp: tls." or "http.tls.". log, when not nil, is told when a
// renewed certificate cannot be loaded (the previous one is kept).
func Server(secrets Resolver, prefix string, f ServerFiles, clientAuth tls.ClientAuthType, log *slog.Logger) (*tls.Config, error) {
	src := &certSource{secrets: secrets, prefix: prefix, certRef: f.Cert, keyRef: f.Key, log: log, now: time.Now}
	if err := src.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: src.get}
	if f.ClientCA != "" {
		pool, err := certPool(secrets, prefix, "client_ca", f.ClientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = clientAuth
	}
	return cfg, nil
}

// Client builds a client configuration: TLS 1.2 or later, verifying the
// server against CA (the system roots when empty), with a client
// certificate when Cert and Key are set.
func Client(secrets Resolver, prefix string, f ClientFiles) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CA != "" {
		pool, err := certPool(secrets, prefix, "ca", f.CA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if f.Cert != "" || f.Key != "" {
		certPEM, keyPEM, err := loadPair(secrets, prefix, f.Cert, f.Key)
		if err != nil {
			return nil, err
		}
		cert, err := parsePair(prefix, certPEM, keyPEM)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// certSource serves a certificate, reading its references again when
// ReloadInterval has passed since they were last read.
type certSource struct {
	secrets         Resolver
	prefix          string
	certRef, keyRef string
	log             *slog.Logger
	now             func() time.Time

	mu              sync.Mutex
	cert            *tls.Certificate
	certPEM, keyPEM []byte
	checked         time.Time
	failing         bool
}

// load reads and parses the certificate and key, replacing the current
// pair when they changed, and says so when it replaces one.
func (s *certSource) load() error {
	certPEM, keyPEM, err := loadPair(s.secrets, s.prefix, s.certRef, s.keyRef)
	if err != nil {
		return err
	}
	if s.cert != nil && bytes.Equal(certPEM, s.certPEM) && bytes.Equal(keyPEM, s.keyPEM) {
		return nil
	}
	cert, err := parsePair(s.prefix, certPEM, keyPEM)
	if err != nil {
		return err
	}
	renewed := s.cert != nil
	s.cert, s.certPEM, s.keyPEM = &cert, certPEM, keyPEM
	if renewed && s.log != nil {
		attrs := []any{"field", s.prefix + "cert"}
		if cert.Leaf != nil {
			attrs = append(attrs, "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		s.log.Info("tls: renewed certificate loaded", attrs...)
	}
	return nil
}

// get is tls.Config.GetCertificate.
func (s *certSource) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.now(); now.Sub(s.checked) >= ReloadInterval {
		s.checked = now
		if err := s.load(); err != nil {
			// A certificate half written by a renewal, or a removed
			// file: keep serving the last good one, and say so once.
			if !s.failing && s.log != nil {
				s.log.Warn("tls: the renewed certificate cannot be loaded; serving the previous one", "field", s.prefix+"cert", "err", err)
			}
			s.failing = true
		} else {
			s.failing = false
		}
	}
	return s.cert, nil
}

// loadPair resolves a certificate's and a key's references.
func loadPair(secrets Resolver, prefix, certRef, keyRef string) (certPEM, keyPEM []byte, err error) {
	if certPEM, err = loadPEM(secrets, prefix, "cert", certRef); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = loadPEM(secrets, prefix, "key", keyRef); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// parsePair parses a certificate and its key.
func parsePair(prefix string, certPEM, keyPEM []byte) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The parse error names no key material.
		return tls.Certificate{}, fault.Wrap(fault.Permanent, fault.CodeConfig, prefix+"cert and key: not a valid certificate and key pair", err)
	}
	return cert, nil
}

// loadPEM resolves a secret reference to PEM bytes.
func loadPEM(secrets Resolver, prefix, field, ref string) ([]byte, error) {
	if secrets == nil {
		return nil, fault.Newf(fault.CodeConfig, "%s%s: no secret resolver", prefix, field)
	}
	if ref == "" {
		return nil, fault.Newf(fault.CodeConfig, "%s%s: required", prefix, field)
	}
	v, err := secrets.Resolve(ref)
	if err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, prefix+field+": cannot resolve secret reference", err)
	}
	if strings.TrimSpace(v) == "" {
		return nil, fault.Newf(fault.CodeConfig, "%s%s: secret is empty", prefix, field)
	}
	return []byte(v), nil
}

// certPool loads PEM certificates from a secret reference.
func certPool(secrets Resolver, prefix, field, ref string) (*x509.CertPool, error) {
	pemBytes, err := loadPEM(secrets, prefix, field, ref)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, prefix+field+": no PEM certificate found", errors.New("no certificates"))
	}
	return pool, nil
}
