package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/mllp"
)

func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("send", "FILE...", stderr)
	addr := fs.String("addr", "127.0.0.1:2575", "MLLP address to send HL7 v2 to")
	cfgPath := fs.String("c", "", "the running engine's config file: --addr defaults to the listen address of its input --input, --fhir's base URL to its http.listen")
	input := fs.String("input", "pas", "with -c: the input to send to")
	fhirURL := fs.String("fhir", "", "send FHIR JSON files by POST to this base URL instead (for example http://127.0.0.1:8080/fhir)")
	caFile := fs.String("tls-ca", "", "use TLS, trusting this CA certificate file (with --fhir: for an https URL; default the system's roots)")
	certFile := fs.String("tls-cert", "", "use TLS, presenting this client certificate file (mutual TLS; with --tls-key)")
	keyFile := fs.String("tls-key", "", "the private key file of --tls-cert")
	token := fs.String("token", "", "with --fhir: reference to the FHIR endpoint's bearer token (env:NAME or file:PATH; with -c, by default its FHIR input's bearer_token)")
	timeout := fs.Duration("timeout", 30*time.Second, "time to wait for each acknowledgement")
	silenceWait := fs.Duration("silence", 2*time.Second, "for a message whose MSH-15 is NE, ER or SU: how long silence must last to be taken as the answer HL7 gives it (raise it for a slow receiver)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	if *timeout <= 0 || *silenceWait <= 0 {
		return errors.New("--timeout and --silence must be positive")
	}
	if *cfgPath != "" {
		a, err := readEngineAddrs(*cfgPath)
		if err != nil {
			return err
		}
		if set(fs, "fhir") && *fhirURL == "" {
			*fhirURL = a.api + "/fhir"
		}
		if set(fs, "fhir") && !set(fs, "token") {
			// The engine's own FHIR input's token, by reference.
			*token = a.fhirToken
		}
		if !set(fs, "addr") && !set(fs, "fhir") {
			if *addr, err = a.input(*input); err != nil {
				return err
			}
			if a.inputTLS[*input] && *caFile == "" && *certFile == "" && *keyFile == "" {
				// The listener would drop a plain connection at the
				// handshake, leaving only a closed connection to report.
				return fmt.Errorf("input %s takes TLS only (its tls is set in %s): give --tls-ca with the CA that signed its certificate (and --tls-cert and --tls-key when it asks for client certificates)", *input, *cfgPath)
			}
		}
	}
	if *fhirURL != "" {
		tok := ""
		if *token != "" {
			var err error
			if tok, err = (config.Secrets{}).Resolve(*token); err != nil {
				return fmt.Errorf("--token: %w", err)
			}
		}
		if !strings.HasPrefix(strings.ToLower(*fhirURL), "https://") && (*caFile != "" || *certFile != "" || *keyFile != "") {
			return errors.New("--tls-ca, --tls-cert and --tls-key are for an https --fhir URL; this one is not https")
		}
		tr, err := httpsTransport(*caFile, *certFile, *keyFile)
		if err != nil {
			return err
		}
		return sendFHIR(ctx, *fhirURL, tok, fs.Args(), &http.Client{Timeout: *timeout, Transport: tr}, stdout)
	}
	if *token != "" {
		return errors.New("--token is for --fhir; MLLP has no tokens")
	}
	var tlsConf *tls.Config
	if *caFile != "" || *certFile != "" || *keyFile != "" {
		var err error
		if tlsConf, err = clientTLS(*caFile, *certFile, *keyFile); err != nil {
			return err
		}
	}
	dial := func() (*mllp.Client, error) {
		dctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		c, err := mllp.Dial(dctx, *addr, tlsConf, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", *addr, err)
		}
		return c, nil
	}
	c, err := dial()
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	// redial replaces a connection that may be out of step, so an answer
	// still to come cannot be taken for the next message's.
	redial := func() error {
		_ = c.Close()
		next, err := dial()
		if err != nil {
			return err
		}
		c = next
		return nil
	}
	failed := 0
	for _, file := range fs.Args() {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		for i, msg := range SplitMessages(data) {
			cond, ctrl := "", ""
			if m, err := hl7v2.Parse(msg); err == nil {
				cond, ctrl = m.AcceptAckType(), m.ControlID()
			}
			wait := *timeout
			meaning, silenceFailed, conditional := silence(cond)
			if conditional {
				// MSH-15 asks for an answer only in some cases, though a
				// receiver may answer all the same (Junction does unless
				// accept_ack: msh15).
				wait = min(wait, *silenceWait)
			}
			sctx, cancel := context.WithTimeout(ctx, wait)
			reply, err := c.Send(sctx, msg)
			cancel()
			if err != nil {
				// The client gave up the connection (or the receiver
				// closed it): dial again and go on with the rest.
				if conditional && errors.Is(err, context.DeadlineExceeded) {
					fmt.Fprintf(stdout, "%s #%d: sent; no acknowledgement within %s, %s\n", file, i+1, wait, meaning)
					if silenceFailed {
						failed++
					}
				} else {
					failed++
					fmt.Fprintf(stdout, "%s #%d: no acknowledgement: %v\n", file, i+1, err)
				}
				if err := redial(); err != nil {
					return err
				}
				continue
			}
			code, ackCtrl, text, err := hl7v2.ParseAck(reply)
			if err != nil {
				failed++
				fmt.Fprintf(stdout, "%s #%d: reply is not an ACK: %v\n", file, i+1, err)
				if err := redial(); err != nil {
					return err
				}
				continue
			}
			if ctrl != "" && ackCtrl != "" && ackCtrl != ctrl {
				// An answer to another message (a late or repeated one):
				// this message's is still to come, or lost.
				failed++
				fmt.Fprintf(stdout, "%s #%d: answer is for another message (MSA-2 %s, not MSH-10 %s)\n", file, i+1, ackCtrl, ctrl)
				if err := redial(); err != nil {
					return err
				}
				continue
			}
			if !code.Accepted() {
				failed++
			}
			line := fmt.Sprintf("%s #%d: %s %s", file, i+1, code, ackCtrl)
			if text != "" {
				line += " " + text
			}
			fmt.Fprintln(stdout, line)
		}
	}
	if failed > 0 {
		return exitError{code: 1}
	}
	return nil
}

// silence says what no answer means for an MSH-15 that asks for an
// accept acknowledgement only in some cases (HL7 table 0155): NE never
// answers, ER answers only errors, SU only success. ok is false for any
// other MSH-15, which asks for an answer always.
func silence(cond string) (meaning string, failed, ok bool) {
	switch cond {
	case "NE":
		return "as MSH-15 NE asks", false, true
	case "ER":
		return "which under MSH-15 ER means no error", false, true
	case "SU":
		return "which under MSH-15 SU means not accepted", true, true
	}
	return "", false, false
}

// SplitMessages splits a file holding one or more HL7 v2 messages (any
// segment ending) into messages with CR segment ends. A file in HL7 batch
// form is split into its messages: its batch and file header and trailer
// segments (FHS, BHS, BTS, FTS) are not sent, as MLLP carries one message
// a frame.
func SplitMessages(data []byte) [][]byte {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	norm := bytes.ReplaceAll(data, []byte("\r\n"), []byte("\r"))
	norm = bytes.ReplaceAll(norm, []byte("\n"), []byte("\r"))
	var out [][]byte
	var cur []byte
	for _, seg := range bytes.Split(norm, []byte("\r")) {
		if len(bytes.TrimSpace(seg)) == 0 || batchSegment(seg) {
			continue
		}
		if bytes.HasPrefix(seg, []byte("MSH")) && len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
		cur = append(cur, seg...)
		cur = append(cur, '\r')
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// batchSegment reports whether seg is one of HL7's batch envelope
// segments: a file or batch header or trailer.
func batchSegment(seg []byte) bool {
	if len(seg) < 3 {
		return false
	}
	switch string(seg[:3]) {
	case "FHS", "BHS", "BTS", "FTS":
		return len(seg) == 3 || !(seg[3] >= 'A' && seg[3] <= 'Z' || seg[3] >= '0' && seg[3] <= '9')
	}
	return false
}

// fhirPostURL is where a FHIR JSON file is posted: a Bundle to [base], a
// single resource to [base]/[type]. A file whose resourceType cannot be
// read goes to [base], whose answer says what is wrong with it.
func fhirPostURL(base string, data []byte) string {
	base = strings.TrimRight(base, "/")
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	if json.Unmarshal(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")), &head) != nil || head.ResourceType == "" || head.ResourceType == "Bundle" {
		return base
	}
	for _, c := range head.ResourceType {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return base
		}
	}
	return base + "/" + head.ResourceType
}

func sendFHIR(ctx context.Context, base, token string, files []string, client *http.Client, stdout io.Writer) error {
	failed := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, fhirPostURL(base, data), bytes.NewReader(data))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/fhir+json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			failed++
		}
		id := resp.Header.Get("X-Junction-Message-Id")
		if q := resp.Header.Get("X-Junction-Quarantine-Id"); q != "" {
			// The id to quote to ops about a refusal.
			id = "quarantined as " + q
		}
		fmt.Fprintf(stdout, "%s: %s %s\n%s\n", file, resp.Status, id, bytes.TrimSpace(body))
	}
	if failed > 0 {
		return exitError{code: 1}
	}
	return nil
}
