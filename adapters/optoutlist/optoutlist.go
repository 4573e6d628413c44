// Package optoutlist is the optout-list destination: a route that
// receives the national data opt-out extract (from a MESH mailbox
// watcher, a file drop or a supplier posting to the FHIR endpoint)
// delivers it here, and the consent engine's opt-out list is replaced
// with it, as POST /api/optouts replaces it.
//
// A delivery is a FHIR Binary, a DocumentReference, or a Bundle holding
// exactly one of them (the FHIR endpoint hands a posted Binary to routes
// as a collection Bundle of one entry). The extract is the Binary's data,
// or the data of the DocumentReference's first attachment, base64 as FHIR
// has it, with contentType text/csv or text/plain; it is parsed as POST
// /api/optouts parses its body. The list's date (as_of) is the Binary's
// meta.lastUpdated; for a DocumentReference, the attachment's creation,
// else DocumentReference.date, else meta.lastUpdated. Attachments by url
// are not fetched.
//
// A malformed delivery (no extract, bad base64, another content type, no
// date, no valid NHS number at all) is a permanent fault and the
// delivery is dead-lettered with a reason naming elements, counts and
// line numbers, never an NHS number. Lines without a valid NHS number are
// left out and reported by line number in the receipt, as the API
// reports them. A store that cannot be written is transient and retried.
// Loading is idempotent, and a list dated before the stored one is not
// loaded (receipt status superseded), so a retried or replayed delivery
// never brings back an older list.
package optoutlist

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/fhir"
)

// Type is the adapter type name used in config files.
const Type = "optout-list"

// Receipt statuses.
const (
	// StatusLoaded: the list replaced the stored one.
	StatusLoaded = "loaded"
	// StatusSuperseded: the list is older than the stored one and was not
	// loaded.
	StatusSuperseded = "superseded"
)

// Config configures an optout-list destination. It has no settings: the
// list is the consent engine's.
type Config struct{}

// Factory builds optout-list destinations.
type Factory struct{}

var _ adapter.OutboundFactory = Factory{}

// Type returns "optout-list".
func (Factory) Type() string { return Type }

// NewConfig returns a *Config.
func (Factory) NewConfig() any { return &Config{} }

// Internal reports true (adapter.InternalFactory): what it is given stays
// in the consent engine's opt-out list.
func (Factory) Internal() bool { return true }

// NewOutbound returns an optout-list destination. It needs the consent
// engine (set.OptOuts); with consent.engine: default there is no list to
// replace, which is a configuration error.
func (Factory) NewOutbound(_ context.Context, set adapter.Settings, _ any) (adapter.Outbound, error) {
	if set.OptOuts == nil {
		return nil, fault.New(fault.CodeConfig, "optout-list: needs the consent engine (consent.engine: consent)")
	}
	return &Outbound{l: set.OptOuts}, nil
}

// Outbound loads the opt-out list each delivery carries.
type Outbound struct {
	l adapter.OptOutLoader
}

// Start does nothing: the list is the engine's.
func (o *Outbound) Start(context.Context) error { return nil }

// Shutdown does nothing: each Send finishes before it returns.
func (o *Outbound) Shutdown(context.Context) error { return nil }

// Send loads the extract in d's payload; see the package doc.
func (o *Outbound) Send(ctx context.Context, d *adapter.Delivery) (adapter.Receipt, error) {
	ex, err := ExtractOf(d.Body)
	if err != nil {
		return adapter.Receipt{}, err
	}
	sum, err := o.l.LoadOptOuts(ctx, ex.Data, ex.AsOf)
	if err != nil {
		return adapter.Receipt{}, err
	}
	status := StatusLoaded
	if sum.Superseded {
		status = StatusSuperseded
	}
	loc := strconv.Itoa(sum.Accepted) + " NHS number(s), " + strconv.Itoa(sum.Invalid) + " invalid line(s)"
	if len(sum.InvalidLines) > 0 {
		loc += " (lines " + sum.InvalidLinesText(20) + ")"
	}
	loc += ", as of " + ex.AsOf.UTC().Format(time.RFC3339)
	if sum.Stale {
		loc += ", already stale"
	}
	return adapter.Receipt{Status: status, Location: loc}, nil
}

// Extract is an opt-out list found in a payload.
type Extract struct {
	// Data is the decoded list.
	Data []byte
	// AsOf is the list's date.
	AsOf time.Time
}

// resource is the part of a Binary, DocumentReference or Bundle read
// here.
type resource struct {
	ResourceType string `json:"resourceType"`
	Meta         *struct {
		LastUpdated string `json:"lastUpdated"`
	} `json:"meta"`
	// Binary.
	ContentType string `json:"contentType"`
	Data        string `json:"data"`
	// DocumentReference.
	Date    string `json:"date"`
	Content []struct {
		Attachment attachment `json:"attachment"`
	} `json:"content"`
	// Bundle.
	Entry []struct {
		Resource json.RawMessage `json:"resource"`
	} `json:"entry"`
}

type attachment struct {
	ContentType string `json:"contentType"`
	Data        string `json:"data"`
	URL         string `json:"url"`
	Creation    string `json:"creation"`
}

// ExtractOf returns the opt-out list of a payload: a Binary, a
// DocumentReference, or a Bundle holding exactly one of them. Anything
// else is a permanent fault whose message names elements, never data.
func ExtractOf(body []byte) (Extract, error) {
	var r resource
	if err := json.Unmarshal(body, &r); err != nil {
		return Extract{}, fault.Wrap(fault.Permanent, fault.CodeFHIRInvalidJSON, "optout-list: payload is not FHIR JSON", err)
	}
	where := r.ResourceType
	if r.ResourceType == "Bundle" {
		var found []int
		var inner resource
		for i, e := range r.Entry {
			var er resource
			if len(e.Resource) == 0 || json.Unmarshal(e.Resource, &er) != nil {
				continue
			}
			if er.ResourceType == "Binary" || er.ResourceType == "DocumentReference" {
				found = append(found, i)
				inner = er
			}
		}
		switch len(found) {
		case 0:
			return Extract{}, fault.New(fault.CodeFHIRInvalid, "optout-list: the Bundle holds no Binary or DocumentReference")
		case 1:
		default:
			return Extract{}, fault.Newf(fault.CodeFHIRInvalid, "optout-list: the Bundle holds %d Binary or DocumentReference entries; send one list per delivery", len(found))
		}
		r = inner
		where = fmt.Sprintf("Bundle.entry[%d].resource", found[0])
	}
	switch r.ResourceType {
	case "Binary":
		return extract(where, attachment{ContentType: r.ContentType, Data: r.Data}, r.lastUpdated(), where+" (Binary.meta.lastUpdated)")
	case "DocumentReference":
		if len(r.Content) == 0 {
			return Extract{}, fault.New(fault.CodeFHIRInvalid, "optout-list: "+where+": DocumentReference.content is empty")
		}
		a := r.Content[0].Attachment
		date := a.Creation
		if date == "" {
			date = r.Date
		}
		if date == "" {
			date = r.lastUpdated()
		}
		return extract(where+".content[0].attachment", a, date, where+" (attachment.creation, DocumentReference.date or meta.lastUpdated)")
	}
	return Extract{}, fault.New(fault.CodeFHIRInvalid, fmt.Sprintf("optout-list: payload is a %q, not a Binary, DocumentReference or Bundle", r.ResourceType))
}

func (r resource) lastUpdated() string {
	if r.Meta == nil {
		return ""
	}
	return r.Meta.LastUpdated
}

// extract decodes attachment a (at where) dated date (from dateWhere).
func extract(where string, a attachment, date, dateWhere string) (Extract, error) {
	bad := func(msg string) (Extract, error) {
		return Extract{}, fault.New(fault.CodeFHIRInvalid, "optout-list: "+where+": "+msg)
	}
	if a.ContentType == "" {
		return bad("contentType is required (text/csv)")
	}
	mt, _, err := mime.ParseMediaType(a.ContentType)
	if err != nil || (mt != "text/csv" && mt != "text/plain") {
		return bad("contentType must be text/csv or text/plain")
	}
	if a.Data == "" {
		if a.URL != "" {
			return bad("the list is referenced by url, which is not fetched; send it as data")
		}
		return bad("data is empty")
	}
	data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a.Data))
	if err != nil {
		return bad("data is not base64")
	}
	asOf, err := parseDate(date)
	if err != nil {
		return Extract{}, fault.New(fault.CodeFHIRInvalid, "optout-list: the list's date "+err.Error()+": "+dateWhere)
	}
	return Extract{Data: data, AsOf: asOf}, nil
}

// parseDate reads a FHIR instant, dateTime or date (the start of that
// English calendar day, fhir.DateSpan), as UTC.
func parseDate(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("is missing")
	}
	if len(s) >= len(time.DateOnly) { // a year or a month alone is no list's date
		if t, _, err := fhir.DateSpan(s, false); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("is not a FHIR date or dateTime with a time zone")
}
