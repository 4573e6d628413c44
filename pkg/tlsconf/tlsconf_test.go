package tlsconf

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/tlsconf/tlstest"
)

// fileSecrets resolves file: references, as the engine's resolver does,
// and env: references from a map.
type fileSecrets map[string]string

func (f fileSecrets) Resolve(ref string) (string, error) {
	if p, ok := strings.CutPrefix(ref, "file:"); ok {
		b, err := os.ReadFile(p)
		return string(b), err
	}
	if v, ok := f[strings.TrimPrefix(ref, "env:")]; ok {
		return v, nil
	}
	return "", errors.New("not set")
}

// handshake connects a client with cfg to a listener serving srv, and
// returns the subject of the certificate the server presented and the
// error of the client's handshake, if any.
func handshake(t *testing.T, srv, cfg *tls.Config) (string, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// A byte after a good handshake; a refused client certificate
		// reaches the client as an alert instead.
		if c.(*tls.Conn).Handshake() == nil {
			_, _ = c.Write([]byte{1})
		}
		_, _ = io.Copy(io.Discard, c)
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err == nil {
		// With TLS 1.3 the server's verdict on a client certificate
		// arrives after the client's handshake: a read sees it.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		subject := c.ConnectionState().PeerCertificates[0].Subject.CommonName
		c.Close()
		<-done
		return subject, err
	}
	<-done
	return "", err
}

func TestServerAndClient(t *testing.T) {
	pki := tlstest.PKI(t)
	other := tlstest.PKI(t)
	secrets := fileSecrets{"CLIENT_KEY": tlstest.Read(t, pki["client.key"])}
	tests := []struct {
		name       string
		clientCA   string
		clientAuth tls.ClientAuthType
		client     ClientFiles
		ok         bool
	}{
		{"server only", "", tls.NoClientCert, ClientFiles{CA: "file:" + pki["ca"]}, true},
		{"client certificate required and given", "file:" + pki["ca"], tls.RequireAndVerifyClientCert,
			ClientFiles{CA: "file:" + pki["ca"], Cert: "file:" + pki["client.crt"], Key: "env:CLIENT_KEY"}, true},
		{"client certificate required, none given", "file:" + pki["ca"], tls.RequireAndVerifyClientCert, ClientFiles{CA: "file:" + pki["ca"]}, false},
		{"client certificate from another CA", "file:" + pki["ca"], tls.VerifyClientCertIfGiven,
			ClientFiles{CA: "file:" + pki["ca"], Cert: "file:" + other["client.crt"], Key: "file:" + other["client.key"]}, false},
		{"client certificate optional, none given", "file:" + pki["ca"], tls.VerifyClientCertIfGiven, ClientFiles{CA: "file:" + pki["ca"]}, true},
		{"server not trusted", "", tls.NoClientCert, ClientFiles{CA: "file:" + other["ca"]}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := Server(secrets, "http.tls.", ServerFiles{Cert: "file:" + pki["server.crt"], Key: "file:" + pki["server.key"], ClientCA: tt.clientCA}, tt.clientAuth, nil)
			if err != nil {
				t.Fatal(err)
			}
			cli, err := Client(secrets, "tls.", tt.client)
			if err != nil {
				t.Fatal(err)
			}
			_, err = handshake(t, srv, cli)
			if (err == nil) != tt.ok {
				t.Fatalf("handshake error %v, want success %v", err, tt.ok)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	pki := tlstest.PKI(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secrets := fileSecrets{}
	tests := []struct {
		name  string
		files ServerFiles
		want  string
	}{
		{"no key", ServerFiles{Cert: "file:" + pki["server.crt"]}, "http.tls.key: required"},
		{"unresolvable", ServerFiles{Cert: "env:NOPE", Key: "file:" + pki["server.key"]}, "http.tls.cert: cannot resolve secret reference"},
		{"not PEM", ServerFiles{Cert: "file:" + notPEM, Key: "file:" + pki["server.key"]}, "http.tls.cert and key: not a valid certificate and key pair"},
		{"key of another certificate", ServerFiles{Cert: "file:" + pki["server.crt"], Key: "file:" + pki["client.key"]}, "not a valid certificate and key pair"},
		{"client CA not PEM", ServerFiles{Cert: "file:" + pki["server.crt"], Key: "file:" + pki["server.key"], ClientCA: "file:" + notPEM}, "http.tls.client_ca: no PEM certificate found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Server(secrets, "http.tls.", tt.files, tls.RequireAndVerifyClientCert, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatalf("error quotes key material: %v", err)
			}
		})
	}
	if _, err := Client(secrets, "tls.", ClientFiles{Cert: "file:" + pki["client.crt"]}); err == nil || !strings.Contains(err.Error(), "tls.key: required") {
		t.Fatalf("client certificate without key: %v", err)
	}
}

func TestCheckRef(t *testing.T) {
	for _, tt := range []struct {
		ref  string
		errs int
	}{{"", 0}, {"file:/run/cert.pem", 0}, {"env:CERT", 0}, {"/run/cert.pem", 1}, {"-----BEGIN CERTIFICATE-----", 1}, {"file:", 1}} {
		t.Run(tt.ref, func(t *testing.T) {
			if got := CheckRef(nil, "http.tls.cert", tt.ref); len(got) != tt.errs {
				t.Fatalf("CheckRef(%q) = %v, want %d errors", tt.ref, got, tt.errs)
			}
		})
	}
}

// TestRenewedCertificateIsServed replaces the certificate's files while
// a server runs: the new one is served once ReloadInterval has passed, and
// a broken renewal keeps the last good one, said once in the log.
func TestRenewedCertificateIsServed(t *testing.T) {
	first, second := tlstest.PKI(t), tlstest.PKI(t)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	install := func(crt, key string) {
		t.Helper()
		for _, f := range [][2]string{{crt, certPath}, {key, keyPath}} {
			if err := os.WriteFile(f[1], []byte(tlstest.Read(t, f[0])), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(first["server.crt"], first["server.key"])
	var logged bytes.Buffer
	now := time.Now()
	src := &certSource{secrets: fileSecrets{}, prefix: "http.tls.", certRef: "file:" + certPath, keyRef: "file:" + keyPath,
		log: slog.New(slog.NewTextHandler(&logged, nil)), now: func() time.Time { return now }}
	if err := src.load(); err != nil {
		t.Fatal(err)
	}
	srv := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: src.get}
	trusts := func(pki map[string]string) *tls.Config {
		c, err := Client(fileSecrets{}, "tls.", ClientFiles{CA: "file:" + pki["ca"]})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if _, err := handshake(t, srv, trusts(first)); err != nil {
		t.Fatalf("first certificate: %v", err)
	}
	install(second["server.crt"], second["server.key"])
	if _, err := handshake(t, srv, trusts(first)); err != nil {
		t.Fatalf("within ReloadInterval the first certificate is still served: %v", err)
	}
	now = now.Add(ReloadInterval)
	if _, err := handshake(t, srv, trusts(second)); err != nil {
		t.Fatalf("renewed certificate not served: %v", err)
	}
	// A renewal caught half written: the key no longer matches.
	if err := os.WriteFile(keyPath, []byte(tlstest.Read(t, first["server.key"])), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		now = now.Add(ReloadInterval)
		if _, err := handshake(t, srv, trusts(second)); err != nil {
			t.Fatalf("broken renewal: the last good certificate is not served: %v", err)
		}
	}
	if n := strings.Count(logged.String(), "renewed certificate loaded"); n != 1 {
		t.Fatalf("the renewal logged %d times, want once:\n%s", n, logged.String())
	}
	if n := strings.Count(logged.String(), "cannot be loaded"); n != 1 {
		t.Fatalf("broken renewal logged %d times, want once:\n%s", n, logged.String())
	}
	if strings.Contains(logged.String(), "PRIVATE KEY") {
		t.Fatalf("log quotes key material:\n%s", logged.String())
	}
}
