package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/store"
)

// exitVerifyFailed is the exit code when verification could not run (as
// opposed to 1: it ran and found tampering).
const exitVerifyFailed = 3

// runAuditVerify reads the whole audit stream, recomputes every chain and
// checks the checkpoints. It exits 1 when anything is wrong.
func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit verify", "", stderr)
	cfgPath := fs.String("c", "", "config file naming the NATS to read (default: built-in defaults, embedded NATS under ./data; with embedded NATS, refused while the engine runs on the same data_dir)")
	pubRef := fs.String("public-key", "", "reference (env:NAME or file:PATH) to the checkpoint signers' public key (PEM, or 32 bytes in hex or base64); default: derived from audit.signing_key in the config")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	fail := func(err error) error {
		fmt.Fprintf(stderr, "junction audit verify: %v\n", err)
		return exitError{code: exitVerifyFailed}
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return fail(err)
	}
	var keys []ed25519.PublicKey
	switch {
	case *pubRef != "":
		s, err := config.Secrets{}.Resolve(*pubRef)
		if err != nil {
			return fail(fmt.Errorf("--public-key: %w", err))
		}
		k, err := audit.ParsePublicKey(s)
		if err != nil {
			return fail(fmt.Errorf("--public-key: %w", err))
		}
		keys = append(keys, k)
	case cfg.Audit.SigningKey != "":
		k, err := signingKey(cfg)
		if err != nil {
			return fail(err)
		}
		keys = append(keys, k.Public().(ed25519.PublicKey))
	}
	st, err := store.Open(ctx, cfg.NATS, cfg.DataDir, config.Secrets{}, slog.New(slog.DiscardHandler))
	if err != nil {
		var inUse *store.InUseError
		if errors.As(err, &inUse) {
			// A second server on the store would verify stale data.
			err = fmt.Errorf("%w; audit verify has no admin API equivalent, so it needs the engine stopped", err)
		}
		return fail(err)
	}
	defer st.Close()
	rep, err := audit.VerifyStream(ctx, st.JS, keys...)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep)
	}
	if rep.Tampered() {
		return exitError{code: 1}
	}
	return nil
}

// printReport writes the verification report for people.
func printReport(w io.Writer, rep *audit.Report) {
	fmt.Fprintf(w, "read %d audit stream messages: %d chains, %d checkpoints, %d unchained (older format)\n", rep.Messages, len(rep.Chains), rep.Checkpoints, rep.Unchained)
	if !rep.KeysPinned {
		fmt.Fprintln(w, "no public key given: checkpoints are checked against the key they carry, which proves nothing about who signed them (use --public-key)")
	}
	for _, c := range rep.Chains {
		line := fmt.Sprintf("chain %s  positions 1-%d  stored %d", c.Chain, c.Last, c.Stored)
		if n := len(c.Explained); n > 0 {
			line += fmt.Sprintf("  explained gaps %d", n)
		}
		if c.Checkpoint == nil {
			line += "  checkpoint: absent"
		} else {
			line += fmt.Sprintf("  checkpoint at %d (%s)", c.Checkpoint.Seq, c.Checkpoint.Time.UTC().Format(time.RFC3339))
			if !c.Checkpoint.Pinned {
				line += " unpinned"
			}
		}
		if c.Uncovered > 0 {
			line += fmt.Sprintf("  %d not yet covered by a checkpoint", c.Uncovered)
		}
		if c.Expired > 0 {
			line += fmt.Sprintf("  positions 1-%d expired (the stream's limits)", c.Expired)
		}
		fmt.Fprintln(w, line)
		for _, g := range c.Explained {
			fmt.Fprintf(w, "  position %d: not stored (%s), explained by the writer\n", g.Seq, g.Reason)
		}
	}
	for _, f := range rep.Findings {
		fmt.Fprintln(w, f.String())
	}
	if rep.Tampered() {
		fmt.Fprintf(w, "TAMPERED: %d findings; the first is: %s\n", len(rep.Findings), rep.Findings[0])
		return
	}
	fmt.Fprintln(w, "ok: every chain verifies")
}

// signingKey resolves and parses the config's audit signing key.
func signingKey(cfg *config.Config) (ed25519.PrivateKey, error) {
	s, err := config.Secrets{}.Resolve(cfg.Audit.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("audit.signing_key: %w", err)
	}
	k, err := audit.ParsePrivateKey(s)
	if err != nil {
		return nil, fmt.Errorf("audit.signing_key: %w", err)
	}
	return k, nil
}

// runAuditKeygen writes a new checkpoint signing key pair.
func runAuditKeygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit keygen", "", stderr)
	out := fs.String("out", "", "write the private key (PEM) here, mode 0600, and the public key to OUT.pub; refuses to overwrite")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	priv, pub, err := audit.GenerateKey()
	if err != nil {
		return err
	}
	if err := writeNew(*out, priv, 0o600); err != nil {
		return err
	}
	if err := writeNew(*out+".pub", pub, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (set audit.signing_key: file:%s) and %s (give it to verifiers: --public-key file:%s.pub)\n", *out, *out, *out+".pub", *out)
	return nil
}

// writeNew creates path with data, synced to disk, failing if it exists:
// a signing key lost to a crash just after keygen reported it written
// would leave checkpoints no one can sign again.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; not overwriting a key", path)
		}
		return fmt.Errorf("creating %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
