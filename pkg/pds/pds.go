// Package pds is a client of NHS England's Personal Demographics Service
// (PDS) FHIR R4 API, reduced to what the patient index needs: the
// registered GP practice of an NHS number, whether the patient is
// restricted, and the current NHS number when the one asked for was
// superseded. Enricher runs the lookups in the background and writes
// their answers to the patient index.
//
// # The API, as published
//
// The behaviour below was taken from NHS England's published
// specification, "Personal Demographics Service (FHIR) API"
// (https://digital.nhs.uk/developer/api-catalogue/personal-demographics-service-fhir),
// whose OpenAPI source is public in the repository
// NHSDigital/personal-demographics-service-api: the "Get patient details"
// operation (specification/components/paths/patient-get.yaml), the
// schemas Meta.yaml, GeneralPractitionerReference.yaml, XRequestID.yaml,
// RetryAfter.yaml and OperationOutcome.yaml, the error example
// 4xx/service_unavailable.json, and the request parameters of
// specification/personal-demographics.yaml. Reviewers can check the test
// double (package pdstest) against the same pages.
//
//   - GET {base}/Patient/{nhsNumber} answers 200 with a UK Core Patient
//     resource (application/fhir+json) and a weak ETag W/"{versionId}".
//   - Patient.id is the NHS number. A superseded patient's current record
//     is returned in place of the one asked for: "You can spot a
//     superseded patient when the id is not the same as the one
//     requested."
//   - generalPractitioner holds the registered general practice (an
//     Organization, "not practitioner") as a logical reference whose
//     identifier is the practice's ODS code in system
//     https://fhir.nhs.uk/Id/ods-organization-code (older examples use
//     https://digital.nhs.uk/services/organisation-data-service), with an
//     optional identifier.period.
//   - meta.versionId is the PDS version of the record; meta.security
//     holds one label: U (unrestricted), R (restricted: address,
//     telecom and generalPractitioner are removed) or V; REDACTED
//     (invalidated) "is never returned", a 404 is given instead.
//   - Errors are OperationOutcomes whose issue.details.coding, in system
//     https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode, carries
//     the error code: 400 INVALID_RESOURCE_ID (invalid NHS number), 400
//     MISSING_VALUE or INVALID_VALUE (a header), 401 ACCESS_DENIED, 404
//     RESOURCE_NOT_FOUND, 404 INVALIDATED_RESOURCE (invalidated, not
//     superseded), 408 UNABLE_TO_CALL_SERVICE, 429 TOO_MANY_REQUESTS, 503
//     SERVICE_UNAVAILABLE ("retry your request after the time specified by
//     the 'Retry-After' response header", in seconds).
//   - Requests carry Authorization: Bearer (an OAuth 2.0 access token,
//     required except in the sandbox), X-Request-ID (a UUID, "ideally
//     version 4", required except in the sandbox, mirrored back; "If you
//     re-send a failed request, use the same value in this header") and
//     optionally X-Correlation-ID (mirrored back).
//
// The access token comes one of two ways. Config.Token names a secret
// holding the current token, read again for every request so that a
// rotated token is picked up. Or Config.Auth has TokenSource get it.
//
// # Signed JWT authentication, as published
//
// TokenSource follows NHS England's "Application-restricted RESTful APIs
// - signed JWT authentication"
// (https://digital.nhs.uk/developer/guides-and-documentation/security-and-authorisation/application-restricted-restful-apis-signed-jwt-authentication),
// the OAuth 2.0 client credentials grant with a private key JWT client
// assertion:
//
//   - The application registers a public key (NHS England asks for a
//     4096-bit RSA key) under a key id (kid), and is given an API key.
//   - It signs a JWT with RS512 (RSASSA-PKCS1-v1_5 with SHA-512), header
//     {"alg": "RS512", "typ": "JWT", "kid": kid}, claims iss and sub the
//     API key, aud the token endpoint URL
//     (https://int.api.service.nhs.uk/oauth2/token for integration,
//     https://api.service.nhs.uk/oauth2/token for production), jti a
//     unique id (a UUID) and exp, in seconds, "no more than 5 minutes in
//     the future". TokenSource sets exp AssertionLifetime (four minutes)
//     ahead, a minute short of the limit for clock skew.
//   - It POSTs application/x-www-form-urlencoded grant_type=client_credentials,
//     client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
//     and client_assertion=the JWT to the token endpoint.
//   - The reply is {"access_token", "expires_in", "token_type": "Bearer"};
//     expires_in is seconds as a string ("599" in NHS England's
//     examples), read here as a string or a number.
//   - Errors are JSON {"error", "error_description", "message_id"}, 400 or
//     401 (the error texts the test double uses are those of NHS
//     England's end-to-end tests of the service, public in
//     NHSDigital/identity-service-api, e2e/tests/oauth/test_client_credentials.py).
//
// The access token is cached until DefaultRefreshMargin before its
// expiry, timed from before the request. One exchange runs at a time;
// callers waiting share its token. The RSA key, the API key, the
// assertion and the access token never appear in errors.
//
// # Errors
//
// Lookup's errors wrap one of ErrNotFound, ErrInvalid, ErrUnavailable,
// ErrRefused or ErrBadReply (test with errors.Is) and never hold an NHS
// number, a name or an ODS code: only the HTTP status and the PDS error
// code.
package pds

import (
	"errors"
	"fmt"
)

// Error kinds. Every error of Lookup wraps exactly one.
var (
	// ErrNotFound: PDS has no patient for the NHS number (404
	// RESOURCE_NOT_FOUND), or had one that was invalidated (404
	// INVALIDATED_RESOURCE).
	ErrNotFound = errors.New("pds: patient not found")
	// ErrInvalid: the NHS number is not valid (refused before asking, or
	// 400 INVALID_RESOURCE_ID).
	ErrInvalid = errors.New("pds: invalid NHS number")
	// ErrUnavailable: PDS, or the token endpoint, did not answer in time,
	// throttled (429) or failed (408, 5xx), on every attempt; worth
	// asking again later.
	ErrUnavailable = errors.New("pds: service unavailable")
	// ErrRefused: PDS refused the request for a reason asking again will
	// not fix (401 or 403: the token; another 4xx: the request), or the
	// token could not be read, or the token endpoint refused the
	// assertion (a wrong key, kid or API key).
	ErrRefused = errors.New("pds: request refused")
	// ErrBadReply: PDS answered 200 with something that is not a usable
	// Patient, or the token endpoint with something that is not a usable
	// token.
	ErrBadReply = errors.New("pds: unusable reply")
)

// Error is a failed lookup: its kind (one of the Err variables), the HTTP
// status (0 when there was no answer) and the PDS error code from the
// OperationOutcome ("" when none). It holds no patient data.
type Error struct {
	Kind   error
	Status int
	Code   string
	// Attempts is how many requests were made.
	Attempts int
	// Err is the underlying cause (a network error, say), if any.
	Err error
}

func (e *Error) Error() string {
	s := e.Kind.Error()
	if e.Status != 0 {
		s += fmt.Sprintf(": HTTP %d", e.Status)
	}
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Attempts > 1 {
		s += fmt.Sprintf(" after %d attempts", e.Attempts)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// Result is what PDS says about one patient.
type Result struct {
	// NHSNumber is the patient's current NHS number: the one asked for,
	// or, when Superseded, the one that replaced it.
	NHSNumber string
	// Superseded reports that the number asked for was superseded by
	// NHSNumber.
	Superseded bool
	// GPPractice is the ODS code of the registered general practice (""
	// when PDS gives none: not registered, or a restricted patient).
	GPPractice string
	// GP is the GMP code of the registered GP, when PDS gives one (it
	// normally gives the practice only).
	GP string
	// Restricted reports a restricted patient (security label R or V);
	// PDS removes the GP practice of such patients.
	Restricted bool
	// VersionID is the PDS record's meta.versionId.
	VersionID string
}
