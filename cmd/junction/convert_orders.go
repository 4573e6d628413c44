package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/junction-fhir/junction/adapters/pathology"
	"github.com/junction-fhir/junction/conformance"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// orderFlags are the convert flags --to hl7v2-order uses.
type orderFlags struct {
	files             []string
	dialect, received string
	version, msgType  string
}

// convertOrders is "junction convert --to hl7v2-order": each file holds
// one FHIR Bundle, printed as one order message.
func convertOrders(f orderFlags, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(f.files) == 0 {
		fmt.Fprintln(stderr, "junction convert: no input files (use - for standard input)")
		return errUsage
	}
	at, err := time.Parse(time.RFC3339, f.received)
	if err != nil {
		fmt.Fprintf(stderr, "junction convert: --received: %q is not an RFC 3339 time\n", f.received)
		return errUsage
	}
	// A pathology destination's defaults, so that what is printed is
	// what a destination with the same settings sends.
	opts := pathology.DefaultOrdersConfig().Order
	if f.dialect != "" {
		if err := yamlx.DecodeFile(f.dialect, &opts); err != nil {
			fmt.Fprintf(stderr, "junction convert: --dialect: %v\n", err)
			return exitError{code: 2}
		}
	}
	if f.version != "" {
		opts.Version = f.version
	}
	if f.msgType != "" {
		opts.MessageType = f.msgType
	}
	if errs := opts.Validate(); len(errs) > 0 {
		fmt.Fprintf(stderr, "junction convert: invalid order settings: %v\n", errors.Join(errs...))
		return exitError{code: 2}
	}
	opts.Time = at
	failed := false
	for i, name := range f.files {
		label := name
		var data []byte
		if name == "-" {
			label = "stdin"
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(name)
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: cannot read: %v\n", label, errors.Unwrap(err))
			failed = true
			continue
		}
		sum := sha256.Sum256([]byte(strconv.Itoa(i) + "\x00" + name))
		opts.ControlID = hex.EncodeToString(sum[:10])
		enc, err := pathology.EncodeOrder(data, opts)
		if err != nil {
			reason, _ := conformance.Reason(err)
			fmt.Fprintf(stderr, "%s: %s\n", label, reason)
			failed = true
			continue
		}
		if _, err := io.WriteString(stdout, strings.ReplaceAll(string(enc.Message), "\r", "\n")); err != nil {
			fmt.Fprintf(stderr, "%s: cannot write the message: %v\n", label, err)
			return exitError{code: 1}
		}
		for _, dq := range enc.DataQuality {
			fmt.Fprintf(stderr, "%s: data quality: %s\n", label, dq)
		}
	}
	if failed {
		return exitError{code: 1}
	}
	return nil
}
