package fault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"syscall"
)

// NetworkReason names, in safe words, why a connection to a receiver
// failed: "timed out", "connection refused", "connection reset",
// "connection closed without an answer", "host not found", "TLS certificate not trusted", "TLS handshake failed", or
// "" when err is none of these. Operators can tell an outage from a
// misconfiguration by it; it holds no address, name or payload.
func NetworkReason(err error) string {
	var dns *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var alert tls.AlertError
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &dns):
		return "host not found"
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &hostname), errors.As(err, &verify):
		return "TLS certificate not trusted"
	case errors.As(err, &record), errors.As(err, &alert):
		return "TLS handshake failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// The receiver closed the connection before its answer was whole.
		return "connection closed without an answer"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	}
	return ""
}
