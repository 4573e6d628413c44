package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Checkpoint is a signed statement that a chain held Seq positions, the
// last with chain hash Hash, at Time. It is published on
// SubjCheckpoint.<chain> and is not itself part of the chain.
type Checkpoint struct {
	Chain string    `json:"chain"`
	Seq   uint64    `json:"seq"`
	Hash  string    `json:"hash"`
	Time  time.Time `json:"time"`
	// PublicKey is the signer's ed25519 public key (standard base64), so a
	// verifier can name the signer; trust comes from pinning it.
	PublicKey string `json:"public_key"`
	// Signature is the ed25519 signature (standard base64) of
	// SignedBytes.
	Signature string `json:"signature"`
}

// SignedBytes is what a checkpoint's signature covers:
//
//	"junction-audit-checkpoint-v1\n" chain "\n" seq "\n" hash "\n" time
//
// with seq in decimal and time in RFC 3339 with nanoseconds, UTC.
func (c Checkpoint) SignedBytes() []byte {
	var b strings.Builder
	b.WriteString("junction-audit-checkpoint-v1\n")
	b.WriteString(c.Chain)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatUint(c.Seq, 10))
	b.WriteByte('\n')
	b.WriteString(c.Hash)
	b.WriteByte('\n')
	b.WriteString(c.Time.UTC().Format(time.RFC3339Nano))
	return []byte(b.String())
}

// signCheckpoint fills in the key and signature.
func signCheckpoint(c Checkpoint, key ed25519.PrivateKey) Checkpoint {
	c.Time = c.Time.UTC()
	c.PublicKey = base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	c.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, c.SignedBytes()))
	return c
}

// check verifies the signature against the embedded key and returns it.
func (c Checkpoint) check() (ed25519.PublicKey, error) {
	pub, err := base64.StdEncoding.DecodeString(c.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("public key is not a base64 ed25519 key")
	}
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, errors.New("signature is not a base64 ed25519 signature")
	}
	if !ed25519.Verify(pub, c.SignedBytes(), sig) {
		return nil, errors.New("signature does not verify")
	}
	return pub, nil
}

// ParsePrivateKey reads an ed25519 signing key: a PEM "PRIVATE KEY"
// (PKCS #8, as GenerateKey writes), or a 32-byte seed in hex or standard
// base64.
func ParsePrivateKey(s string) (ed25519.PrivateKey, error) {
	s = strings.TrimSpace(s)
	if blk, _ := pem.Decode([]byte(s)); blk != nil {
		if blk.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("signing key: PEM block is %q, want PRIVATE KEY", blk.Type)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, errors.New("signing key: not an ed25519 key")
		}
		return ek, nil
	}
	seed, err := decodeKeyBytes(s, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// ParsePublicKey reads an ed25519 public key: a PEM "PUBLIC KEY" (PKIX, as
// GenerateKey writes), or 32 bytes in hex or standard base64 (the form
// checkpoints carry).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if blk, _ := pem.Decode([]byte(s)); blk != nil {
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("public key: PEM block is %q, want PUBLIC KEY", blk.Type)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, errors.New("public key: not an ed25519 key")
		}
		return ek, nil
	}
	b, err := decodeKeyBytes(s, ed25519.PublicKeySize)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return ed25519.PublicKey(b), nil
}

func decodeKeyBytes(s string, n int) ([]byte, error) {
	if b, err := hex.DecodeString(s); err == nil && len(b) == n {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == n {
		return b, nil
	}
	return nil, fmt.Errorf("want PEM, or %d bytes in hex or base64", n)
}

// GenerateKey makes a new ed25519 key pair and returns the private key as
// PEM (PKCS #8) and the public key as PEM (PKIX).
func GenerateKey() (private, public []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating key: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding private key: %w", err)
	}
	pb, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pb}), nil
}
