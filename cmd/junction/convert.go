package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/junction-fhir/junction/adapters/all"
	"github.com/junction-fhir/junction/conformance"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/yamlx"
)

const convertHelp = `Convert HL7 v2 messages to FHIR offline (no NATS, no network).

Each FILE ("-" for standard input) may hold one or many messages: a message
starts at each segment beginning MSH; segments may end in CR, LF or CRLF,
and a UTF-8 byte order mark is allowed. Each message is translated by an
adapter's translator (by default chosen from MSH-9: ADT to pas, ORU to
pathology; OML, ORM and OUL go to pathology too, which translates
ORU^R01 only and refuses them) and printed as one FHIR Bundle per line (JSON
lines) on standard output.

A message that cannot be converted is reported on standard error as
FILE:LINE: reason (LINE is where its MSH starts; the reason is the fault's
code and safe message, never message content); the others are still
converted, and the exit code is 1 at the end.

Each message gets a deterministic id derived from FILE as given and its
index in the file, and the receipt time --received, so the output is
reproducible.

--dialect and --lab name YAML files holding sections of the adapter's input
config, as they are written under an input in the engine's config: the
"dialect" section (patient identifiers, time zone; pas and pathology) and
the "lab" section (local code system, order number systems and code_maps,
the ConceptMap files whose equivalent targets are added to local codes;
pathology). Both are decoded strictly and need --source-type; code_maps
paths are read as given, as by the engine.

With --to hl7v2-order the direction is reversed: each FILE holds one FHIR
Bundle (JSON) with ServiceRequests, their Patient and Specimens, and is
printed as an OML^O21 or ORM^O01 order message (--hl7-version,
--message-type; --dialect names a YAML file holding the pathology
destination's "order" settings), segments ended by line feeds. MSH-7 is
--received and MSH-10 is derived from FILE, so the output is
reproducible.
`

// runConvert is "junction convert".
func runConvert(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return convert(args, os.Stdin, stdout, stderr, all.Factories())
}

// convert is runConvert with its input and adapters injected, for tests.
func convert(args []string, stdin io.Reader, stdout, stderr io.Writer, factories []adapter.Factory) error {
	fs := newFlags("convert", "FILE...", stderr)
	usage := fs.Usage
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), convertHelp+"\n")
		usage()
	}
	sourceType := fs.String("source-type", "", "adapter type whose translator converts every message (such as pas or pathology); default: chosen per message by MSH-9")
	dialect := fs.String("dialect", "", "YAML `FILE` holding the adapter's dialect settings (its config's \"dialect\" section, decoded strictly); needs --source-type")
	lab := fs.String("lab", "", "YAML `FILE` holding the adapter's laboratory settings (its config's \"lab\" section, decoded strictly, code_maps included); needs --source-type")
	received := fs.String("received", conformance.DefaultReceivedAt.Format(time.RFC3339), "receipt `time` (RFC 3339) given to every message")
	to := fs.String("to", "fhir", "output: fhir (HL7 v2 in, FHIR out) or hl7v2-order (FHIR order bundles in, OML/ORM out)")
	version := fs.String("hl7-version", "", "with --to hl7v2-order: MSH-12 (2.3, 2.3.1, 2.4, 2.5, 2.5.1; default 2.5)")
	msgType := fs.String("message-type", "", "with --to hl7v2-order: OML^O21 (default) or ORM^O01")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch *to {
	case "fhir":
		if *version != "" || *msgType != "" {
			fmt.Fprintln(stderr, "junction convert: --hl7-version and --message-type need --to hl7v2-order")
			return errUsage
		}
	case "hl7v2-order":
		if *lab != "" {
			fmt.Fprintln(stderr, "junction convert: --lab needs --to fhir")
			return errUsage
		}
		return convertOrders(orderFlags{files: fs.Args(), dialect: *dialect, received: *received, version: *version, msgType: *msgType}, stdin, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "junction convert: --to: %q is not fhir or hl7v2-order\n", *to)
		return errUsage
	}
	files := fs.Args()
	if len(files) == 0 {
		fmt.Fprintln(stderr, "junction convert: no input files (use - for standard input)")
		fs.Usage()
		return errUsage
	}
	at, err := time.Parse(time.RFC3339, *received)
	if err != nil {
		fmt.Fprintf(stderr, "junction convert: --received: %q is not an RFC 3339 time\n", *received)
		return errUsage
	}
	sections := []sectionFile{{key: "dialect", flag: "--dialect", path: *dialect}, {key: "lab", flag: "--lab", path: *lab}}
	for _, sf := range sections {
		if sf.path != "" && *sourceType == "" {
			fmt.Fprintf(stderr, "junction convert: %s needs --source-type\n", sf.flag)
			return errUsage
		}
	}
	c := &converter{factories: translatorFactories(factories), translators: map[string]adapter.Translator{}, received: at, stdout: stdout, stderr: stderr}
	if *sourceType != "" {
		tr, err := c.build(*sourceType, sections...)
		if err != nil {
			fmt.Fprintf(stderr, "junction convert: %v\n", err)
			return exitError{code: 2}
		}
		c.fixed, c.fixedType = tr, *sourceType
	}
	failed := false
	for _, name := range files {
		if !c.file(name, stdin) {
			failed = true
		}
	}
	if failed {
		return exitError{code: 1}
	}
	return nil
}

// translatorFactories indexes the factories that build translators.
func translatorFactories(fs []adapter.Factory) map[string]adapter.TranslatorFactory {
	out := map[string]adapter.TranslatorFactory{}
	for _, f := range fs {
		if tf, ok := f.(adapter.TranslatorFactory); ok {
			out[f.Type()] = tf
		}
	}
	return out
}

type converter struct {
	factories   map[string]adapter.TranslatorFactory
	translators map[string]adapter.Translator
	fixed       adapter.Translator
	fixedType   string
	received    time.Time
	stdout      io.Writer
	stderr      io.Writer
}

// sectionFile names a YAML file holding one section of an adapter's
// config, given by a flag.
type sectionFile struct {
	key  string // the section's YAML key, such as "dialect"
	flag string // the flag naming the file, for messages
	path string // the file; "" when not given
}

// build makes the translator of an adapter type: its default config, with
// each section decoded from its file when given.
func (c *converter) build(typ string, sections ...sectionFile) (adapter.Translator, error) {
	f, ok := c.factories[typ]
	if !ok {
		names := make([]string, 0, len(c.factories))
		for n := range c.factories {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("--source-type: %q is not an adapter type with a translator (have %s)", typ, strings.Join(names, ", "))
	}
	cfg := f.NewConfig()
	for _, sf := range sections {
		if sf.path == "" {
			continue
		}
		section, err := configSection(cfg, sf.key)
		if err != nil {
			return nil, fmt.Errorf("%s: adapter %s: %w", sf.flag, typ, err)
		}
		if err := yamlx.DecodeFile(sf.path, section); err != nil {
			return nil, fmt.Errorf("%s: %w", sf.flag, err)
		}
	}
	if v, ok := cfg.(adapter.Validator); ok {
		if errs := v.Validate(); len(errs) > 0 {
			return nil, fmt.Errorf("adapter %s: invalid settings: %w", typ, errors.Join(errs...))
		}
	}
	tr, err := f.NewTranslator(cfg)
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", typ, err)
	}
	return tr, nil
}

// configSection returns a pointer to the field of cfg (a pointer to a
// config struct) whose YAML key is key.
func configSection(cfg any, key string) (any, error) {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("its config has no %s section", key)
	}
	s := v.Elem()
	for i := 0; i < s.NumField(); i++ {
		name, _, _ := strings.Cut(s.Type().Field(i).Tag.Get("yaml"), ",")
		if name == key && s.Field(i).CanAddr() {
			return s.Field(i).Addr().Interface(), nil
		}
	}
	return nil, fmt.Errorf("its config has no %s section", key)
}

// file converts every message of one file and reports whether all
// converted.
func (c *converter) file(name string, stdin io.Reader) bool {
	label := name
	var data []byte
	var err error
	if name == "-" {
		label = "stdin"
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "%s: cannot read: %v\n", label, errors.Unwrap(err))
		return false
	}
	msgs, preamble := conformance.Split(data)
	if preamble {
		fmt.Fprintf(c.stderr, "%s:1: text before the first MSH segment was skipped\n", label)
	}
	if len(msgs) == 0 {
		fmt.Fprintf(c.stderr, "%s:1: no HL7 v2 message (no segment starts with MSH)\n", label)
		return false
	}
	ok := true
	for i, m := range msgs {
		if reason := c.message(name, i+1, m.Raw); reason != "" {
			fmt.Fprintf(c.stderr, "%s:%d: %s\n", label, m.Line, reason)
			ok = false
		}
	}
	return ok
}

// message converts one message and prints its bundle, or returns why it
// could not.
func (c *converter) message(name string, index int, raw []byte) string {
	typ, tr := c.fixedType, c.fixed
	if tr == nil {
		mt := conformance.MessageType(raw)
		typ = conformance.AdapterFor(mt)
		if typ == "" || c.factories[typ] == nil {
			if !safeCode(mt) {
				return "no adapter translates this message type (MSH-9 is missing or unreadable; use --source-type)"
			}
			return fmt.Sprintf("no adapter translates %s messages (use --source-type)", mt)
		}
		if tr = c.translators[typ]; tr == nil {
			var err error
			if tr, err = c.build(typ); err != nil {
				return err.Error()
			}
			c.translators[typ] = tr
		}
	}
	res := conformance.Translate(tr, conformance.NewEnvelope(name, index, raw, typ, c.received))
	if res.Err != nil {
		reason, _ := conformance.Reason(res.Err)
		return reason
	}
	var line bytes.Buffer
	if err := json.Compact(&line, res.Translation.Bundle); err != nil {
		return "internal: the translator's bundle is not valid JSON"
	}
	line.WriteByte('\n')
	if _, err := c.stdout.Write(line.Bytes()); err != nil {
		return "cannot write the bundle: " + err.Error()
	}
	return ""
}

// safeCode reports whether s looks like an HL7 message type code, safe to
// print.
func safeCode(s string) bool {
	if len(s) != 3 {
		return false
	}
	for _, c := range s {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
