package mllp

import (
	"crypto/tls"
	"log/slog"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/tlsconf"
)

// checkRef appends a problem to errs when ref is set but not a reference.
func checkRef(errs []error, field, ref string) []error {
	return tlsconf.CheckRef(errs, field, ref)
}

// serverTLS builds the inbound TLS configuration: TLS 1.2 or later, the
// certificate read again as it is renewed, and client certificates
// required and verified when ClientCA is set.
func serverTLS(secrets adapter.SecretResolver, c *TLSConfig, log *slog.Logger) (*tls.Config, error) {
	return tlsconf.Server(secrets, "mllp: tls.", tlsconf.ServerFiles{Cert: c.Cert, Key: c.Key, ClientCA: c.ClientCA}, tls.RequireAndVerifyClientCert, log)
}

// clientTLS builds the outbound TLS configuration: TLS 1.2 or later,
// verifying the receiver against CA (the system roots when empty), with a
// client certificate when Cert and Key are set.
func clientTLS(secrets adapter.SecretResolver, c *OutboundTLSConfig) (*tls.Config, error) {
	return tlsconf.Client(secrets, "mllp: tls.", tlsconf.ClientFiles{CA: c.CA, Cert: c.Cert, Key: c.Key, ServerName: c.ServerName})
}
