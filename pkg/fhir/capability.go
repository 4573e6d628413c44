package fhir

import (
	"slices"
	"sort"
	"strconv"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// CapabilityOptions describes the FHIR endpoint a CapabilityStatement
// reports on.
type CapabilityOptions struct {
	// SoftwareVersion is Junction's version ("dev" when empty).
	SoftwareVersion string
	// BaseURL is the endpoint's base URL, if known (implementation.url).
	BaseURL string
	// ResourceTypes are the single resource types accepted by
	// POST [base]/{type}. Names that are not FHIR R4 resource types are
	// left out, as is Bundle (always listed), and duplicates are removed.
	ResourceTypes []string
	// Date is the statement's date; the zero value means now.
	Date time.Time
	// AuditEventSearch says the endpoint also serves GET [base]/AuditEvent
	// (the patient's disclosures as AuditEvents, for authorised callers).
	AuditEventSearch bool
	// ConsentStore says POST [base]/Consent stores the Consent for the
	// consent engine instead of routing it (consent.engine: consent).
	ConsentStore bool
	// BearerToken says posts need the endpoint's bearer token.
	BearerToken bool
	// ClientCerts says posts need a client certificate (mutual TLS).
	ClientCerts bool
}

// consentDocumentation is what POST [base]/Consent does with the consent
// engine on.
const consentDocumentation = `POST [base]/Consent stores the patient's Consent for Junction's consent ` +
	`engine, which applies it to later routing; it is not routed itself. With admin tokens configured it ` +
	`needs a token holding the consent.write permission, otherwise the endpoint's bearer token if it has ` +
	`one. The reply is 201 Created with the stored Consent when its id is new for the patient, 200 OK ` +
	`when it replaces the stored one, 400 when the body is empty or malformed, 422 with an ` +
	`OperationOutcome when it is outside the profile the engine applies, and 503 when it was not stored.`

// auditEventDocumentation is what GET [base]/AuditEvent does.
const auditEventDocumentation = `GET [base]/AuditEvent?patient=<NHS number>&date=ge..&date=le..&_count=N ` +
	`(with admin tokens configured, one with the auditor role; without them, on loopback only) returns a searchset Bundle of the patient's releases of data ` +
	`and refused releases as AuditEvents following IHE Basic Audit Log Patterns, paged by a next link; ` +
	`POST [base]/AuditEvent/_search takes the same parameters form-encoded in its body. ` +
	`patient is required and is an NHS number, not a reference. AuditEvents cannot be read by id.`

// restDocumentation is what the endpoint does with what it accepts. It is
// the truth the CapabilityStatement's codes cannot say on their own.
const restDocumentation = `Junction is an integration engine, not a FHIR repository. ` +
	`POST [base] accepts a Bundle of type transaction, batch, message or collection; ` +
	`POST [base]/{type} accepts a single resource of a listed type; POST [base]/$process-message ` +
	`a Bundle of type message. ` +
	`The body is validated for structure and stored unchanged, then routed asynchronously: ` +
	`the reply is 202 Accepted with an OperationOutcome and the header X-Junction-Message-Id, ` +
	`not a transaction-response or batch-response Bundle, and no message response is returned ` +
	`(transaction and batch semantics are not applied at this endpoint). ` +
	`An entry whose request is DELETE, PATCH, GET or HEAD is refused with 400: destinations are sent ` +
	`resources to create or update; an entry posted with ifNoneExist stays a conditional create. ` +
	`A post with the If-None-Exist header is refused with 400: ask a conditional create by a ` +
	`transaction entry's request.ifNoneExist instead. ` +
	`A resend is recognised by Bundle.identifier (system and value) or, failing that, by the ` +
	`Idempotency-Key header, with the same body: it is answered 202 and is not routed again. ` +
	`A different body under an identifier already used is not a resend: it is routed as a message ` +
	`of its own, and its audit trail says the identifier was reused. A recognised resend's X-Junction-Message-Id ` +
	`is usually an id of the resend's own, whose audit trail names the message it repeats (resends are ` +
	`recognised after the reply, as messages are stored in groups); it is the original message's id only ` +
	`when the resend is recognised before the reply. ` +
	`A 503 reply means the message may not have been stored; resending it is safe. ` +
	`Resources cannot be read, updated or deleted here, nor searched except as said below.`

// CapabilityStatement returns the statement for Junction's FHIR ingress
// endpoint. It claims only what the endpoint does: JSON, and create
// (POST) of Bundle and of the listed resource types, and with
// AuditEventSearch the search of AuditEvent; no read, other search,
// update, delete, history or system-level transaction processing.
func CapabilityStatement(opts CapabilityOptions) *models.CapabilityStatement {
	version := opts.SoftwareVersion
	if version == "" {
		version = "dev"
	}
	date := opts.Date
	if date.IsZero() {
		date = time.Now()
	}
	name, title := "JunctionIngress", "Junction FHIR ingress endpoint"
	description := "FHIR R4 endpoint through which supplier systems submit bundles and resources to Junction for routing."
	impl := &models.CapabilityStatementImplementation{Description: title}
	if opts.BaseURL != "" {
		u := opts.BaseURL
		impl.Url = &u
	}
	restDoc := restDocumentation
	no := false
	notSupported := models.ConditionalDeleteStatusNotSupported
	readNo := models.ConditionalReadStatusNotSupported

	resources := make([]models.CapabilityStatementRestResource, 0, len(opts.ResourceTypes)+1)
	types := opts.ResourceTypes
	if opts.ConsentStore {
		types = append(slices.Clone(types), "Consent")
		restDoc += " " + consentDocumentation
	}
	for _, t := range acceptedTypes(types) {
		doc := "POST [base]/" + t.Code() + " stores the resource for routing and replies 202 Accepted."
		interactionDoc := "Stored unchanged and routed asynchronously; not readable afterwards."
		switch {
		case t == models.ResourceTypeBundle:
			doc = "POST [base] or POST [base]/Bundle stores a Bundle of type transaction, batch, message or collection for routing and replies 202 Accepted."
		case t == models.ResourceTypeConsent && opts.ConsentStore:
			doc = consentDocumentation
			interactionDoc = "Stored for the consent engine, not routed; not readable afterwards."
		}
		resources = append(resources, models.CapabilityStatementRestResource{
			Type:          t,
			Documentation: capStr(doc),
			Interaction: []models.CapabilityStatementRestResourceInteraction{{
				Code:          models.TypeRestfulInteractionCreate,
				Documentation: capStr(interactionDoc),
			}},
			ReadHistory:       &no,
			UpdateCreate:      &no,
			ConditionalCreate: &no,
			ConditionalUpdate: &no,
			ConditionalRead:   &readNo,
			ConditionalDelete: &notSupported,
		})
	}

	if opts.AuditEventSearch {
		restDoc += " " + auditEventDocumentation
		resources = append(resources, models.CapabilityStatementRestResource{
			Type:          models.ResourceTypeAuditEvent,
			Documentation: capStr(auditEventDocumentation),
			Interaction: []models.CapabilityStatementRestResourceInteraction{{
				Code: models.TypeRestfulInteractionSearchType,
			}},
			SearchParam: []models.CapabilityStatementRestResourceSearchParam{
				{Name: "patient", Type: models.SearchParamTypeToken, Documentation: capStr("The patient's NHS number (required).")},
				{Name: "date", Type: models.SearchParamTypeDate, Documentation: capStr("Prefixes ge, gt, le, lt, eq; at most two; default the last 90 days.")},
				{Name: "_count", Type: models.SearchParamTypeNumber, Documentation: capStr("Page size, default 50, at most 500.")},
			},
			ReadHistory:       &no,
			UpdateCreate:      &no,
			ConditionalCreate: &no,
			ConditionalUpdate: &no,
			ConditionalRead:   &readNo,
			ConditionalDelete: &notSupported,
		})
	}
	return &models.CapabilityStatement{
		Name:           &name,
		Title:          &title,
		Status:         models.PublicationStatusActive,
		Date:           date.UTC().Format(time.RFC3339),
		Publisher:      capStr("Junction"),
		Description:    &description,
		Kind:           models.CapabilityStatementKindInstance,
		Software:       &models.CapabilityStatementSoftware{Name: "Junction", Version: &version},
		Implementation: impl,
		FhirVersion:    models.FHIRVersion4_0_1,
		Format:         []string{"json"},
		Rest: []models.CapabilityStatementRest{{
			Mode:          models.RestfulCapabilityModeServer,
			Documentation: &restDoc,
			Security:      security(opts.BearerToken, opts.ClientCerts),
			Resource:      resources,
			Operation: []models.CapabilityStatementRestResourceOperation{{
				Name:       "process-message",
				Definition: "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
				Documentation: capStr("POST [base]/$process-message takes a Bundle of type message, stored and routed " +
					"asynchronously as POST [base] does: the reply is 202 Accepted with an OperationOutcome, whatever " +
					"the async parameter, and no response message is returned."),
			}},
		}},
	}
}

// security describes how posts are authenticated. CORS is not enabled.
func security(bearer, clientCerts bool) *models.CapabilityStatementRestSecurity {
	no := false
	var desc string
	switch {
	case bearer && clientCerts:
		desc = "Posts need a client certificate signed by the CA agreed with the endpoint's operator (mutual TLS), and the header Authorization: Bearer <token>, with the token agreed with the operator; without the certificate the reply is 403, without the token 401."
	case clientCerts:
		desc = "Posts need a client certificate signed by the CA agreed with the endpoint's operator (mutual TLS); without one the reply is 403."
	case bearer:
		desc = "Posts need the header Authorization: Bearer <token>, with the token agreed with the endpoint's operator; without it the reply is 401."
	default:
		desc = "Posts are not authenticated at this endpoint, so it takes them only from this machine: addressed to a loopback name (localhost, 127.0.0.1, [::1]), not forwarded by a proxy and not sent by a web page of another site; otherwise the reply is 403. Its operator sets a bearer token to take posts from elsewhere."
	}
	return &models.CapabilityStatementRestSecurity{Cors: &no, Description: &desc}
}

// acceptedTypes returns Bundle followed by the valid, distinct types in
// names, sorted by name.
func acceptedTypes(names []string) []models.ResourceType {
	seen := map[models.ResourceType]bool{models.ResourceTypeBundle: true}
	var out []models.ResourceType
	for _, n := range names {
		t, ok := ResourceTypeOf(n)
		if !ok || seen[t] {
			continue
		}
		seen[t] = true
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code() < out[j].Code() })
	return append([]models.ResourceType{models.ResourceTypeBundle}, out...)
}

// ResourceTypeOf returns the FHIR R4 resource type named name, and false
// when name is not one (names are case-sensitive, as in FHIR).
func ResourceTypeOf(name string) (models.ResourceType, bool) {
	var t models.ResourceType
	if name == "" {
		return t, false
	}
	if err := t.UnmarshalJSON([]byte(strconv.Quote(name))); err != nil {
		return t, false
	}
	return t, true
}

func capStr(s string) *string { return &s }
