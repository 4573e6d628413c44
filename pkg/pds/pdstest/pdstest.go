// Package pdstest is a test double of the Personal Demographics Service
// (PDS) FHIR R4 API's "Get patient details" operation, GET
// {base}/Patient/{nhsNumber}, on an httptest server, seeded with
// synthetic patients (NHS numbers from the 999 range, which is never
// issued).
//
// It behaves as NHS England's published specification says (see the
// package documentation of pkg/pds for the pages: the "Get patient
// details" operation of
// https://digital.nhs.uk/developer/api-catalogue/personal-demographics-service-fhir
// and its OpenAPI source in NHSDigital/personal-demographics-service-api):
//
//   - Only GET /Patient/{id} is served; an empty id gets 400
//     UNSUPPORTED_SERVICE ("Missing NHS number").
//   - Authorization must be "Bearer <token>" (401 ACCESS_DENIED
//     otherwise; with Server.Token set, the token must match; with a key
//     registered (RegisterKey), the token must be one the double's token
//     endpoint issued and has not expired).
//   - X-Request-ID is required (400 MISSING_VALUE) and must be a UUID
//     (400 INVALID_VALUE); it is mirrored back, as is X-Correlation-ID.
//     (An older version of the published sandbox answered a missing
//     X-Request-ID with 412 PRECONDITION_FAILED; the current
//     specification lists 400.)
//   - An NHS number that is not ten digits with a valid modulus 11 check
//     digit gets 400 INVALID_RESOURCE_ID; a valid one PDS does not hold
//     gets 404 RESOURCE_NOT_FOUND; an invalidated one 404
//     INVALIDATED_RESOURCE.
//   - A known patient gets 200 with a UK Core Patient (id and
//     identifier the NHS number, meta.versionId, meta.security U or R,
//     name, gender, birthDate, address, telecom and generalPractitioner:
//     an Organization reference by ODS code in system
//     https://fhir.nhs.uk/Id/ods-organization-code with a period) and a
//     weak ETag W/"versionId".
//   - A restricted (R) patient is returned without address, telecom and
//     generalPractitioner.
//   - A superseded number returns the record that superseded it, whose
//     id differs from the number asked for.
//   - Failures can be scripted (Script): 429 TOO_MANY_REQUESTS or 503
//     SERVICE_UNAVAILABLE, with Retry-After in seconds.
//
// Errors are OperationOutcomes with the Spine error code in
// issue.details.coding (system
// https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode, version
// "1"). Checks run in the order listed; the real service's order among
// them is not published.
//
// # Token endpoint
//
// POST {base}/oauth2/token (TokenURL) doubles NHS England's OAuth 2.0
// token endpoint for application-restricted access by signed JWT
// ("Application-restricted RESTful APIs - signed JWT authentication",
// https://digital.nhs.uk/developer/guides-and-documentation/security-and-authorisation/application-restricted-restful-apis-signed-jwt-authentication).
// The page gives the request and the success reply; the error replies
// (status, error and error_description) are those asserted by NHS
// England's own end-to-end tests of the service, public in the
// repository NHSDigital/identity-service-api
// (e2e/tests/oauth/test_client_credentials.py). Every error body also
// carries a random message_id, as the real one does.
//
//   - The form must hold grant_type=client_credentials (missing: 400
//     invalid_request "grant_type is missing"; another value: 400
//     unsupported_grant_type "grant_type is invalid"),
//     client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
//     (400 invalid_request otherwise) and client_assertion (400 "Missing
//     client_assertion"; not a JWT: 400 "Malformed JWT in
//     client_assertion").
//   - The JWT header must have alg RS512 (400), typ JWT (400) and a kid
//     (400 when missing).
//   - iss and sub must be present and equal (400), and an API key
//     registered with RegisterKey (401); the kid must name a public key
//     registered for that API key (401 "no matching public key"); the
//     RS512 signature must verify with it (401 "public_key error", "JWT
//     signature verification failed").
//   - jti must be a string (400; missing 400); aud must equal TokenURL
//     exactly (401); exp must be an integer (400; missing 400), in the
//     future (400 "JWT has expired") and no more than 5 minutes ahead
//     (400 "more than 5 minutes in future"); a jti already used is
//     refused (400 "Non-unique 'jti' claim in client_assertion JWT": the
//     tests assert the body but not the status, so 400 is assumed).
//   - Success is 200 with {"access_token", "expires_in" (seconds, as a
//     string: "599" in the tests), "token_type": "Bearer"}. The token
//     expires after TokenLifetime, by the double's clock (Now).
//
// The real service's order among these checks is not published; the
// double checks in the order listed, signature before the other claims.
package pdstest

import (
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/junction-fhir/junction/pkg/nhs"
)

// SystemSpineError is the code system of PDS error codes.
const SystemSpineError = "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode"

// systemConfidentiality is the code system of the U and R labels.
const systemConfidentiality = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"

// uuidPattern is the X-Request-ID pattern of the specification.
var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// Patient is one synthetic patient the double holds.
type Patient struct {
	// NHSNumber must be a valid number, from the 999 range.
	NHSNumber string
	Family    string
	Given     string
	Gender    string
	BirthDate string
	Postcode  string
	// GPPractice is the ODS code of the registered practice ("" for
	// none); GPStart is the registration's start date (yyyy-mm-dd).
	GPPractice string
	GPStart    string
	// Restricted marks a restricted (R) patient.
	Restricted bool
	// VersionID is meta.versionId ("1" if empty).
	VersionID string
}

// Failure is a scripted error reply.
type Failure struct {
	// Status is 429 (TOO_MANY_REQUESTS) or 503 (SERVICE_UNAVAILABLE);
	// another status gets code UNKNOWN_ERROR.
	Status int
	// RetryAfter is the Retry-After header ("" for none).
	RetryAfter string
}

// Request is what the double recorded of one request; it holds no
// patient data beyond the path.
type Request struct {
	Path          string
	RequestID     string
	CorrelationID string
	Authorization string
	Status        int
}

// Server is the double. Configure it before the requests it should affect.
type Server struct {
	*httptest.Server
	// Token, when set, is the only bearer token accepted (ignored once a
	// key is registered: then only tokens the double issued are).
	Token string
	// TokenLifetime is how long issued access tokens are valid
	// (DefaultTokenLifetime if zero).
	TokenLifetime time.Duration
	// Now is the double's clock for the token endpoint and token expiry
	// (time.Now if nil).
	Now func() time.Time

	mu            sync.Mutex
	patients      map[string]Patient
	superseded    map[string]string // old number to current
	invalid       map[string]bool
	script        []Failure
	requests      []Request
	apps          map[string]map[string]*rsa.PublicKey // API key to kid to key
	issued        map[string]time.Time                 // access token to expiry
	usedJTI       map[string]bool
	tokenRequests []TokenRequest
}

// NewServer starts a double holding the patients (see Seed for a
// ready-made set). Close it when done.
func NewServer(patients ...Patient) *Server {
	s := &Server{
		patients: map[string]Patient{}, superseded: map[string]string{}, invalid: map[string]bool{},
		apps: map[string]map[string]*rsa.PublicKey{}, issued: map[string]time.Time{}, usedJTI: map[string]bool{},
	}
	for _, p := range patients {
		s.Add(p)
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Add adds or replaces a patient.
func (s *Server) Add(p Patient) {
	if p.VersionID == "" {
		p.VersionID = "1"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.patients[p.NHSNumber] = p
}

// Supersede makes old a superseded number of the patient current.
func (s *Server) Supersede(old, current string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.superseded[old] = current
}

// Invalidate makes a number invalidated (404 INVALIDATED_RESOURCE).
func (s *Server) Invalidate(nhsNumber string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalid[nhsNumber] = true
}

// Script queues failures: each of the next requests that pass the header
// checks gets the next failure instead of its answer.
func (s *Server) Script(fs ...Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, fs...)
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// URL returns the base URL to configure clients with.
func (s *Server) URL() string { return s.Server.URL }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == tokenPath {
		s.serveToken(w, r)
		return
	}
	rec := Request{
		Path: r.URL.Path, RequestID: r.Header.Get("X-Request-ID"),
		CorrelationID: r.Header.Get("X-Correlation-ID"), Authorization: r.Header.Get("Authorization"),
	}
	status := s.answer(w, r)
	rec.Status = status
	s.mu.Lock()
	s.requests = append(s.requests, rec)
	s.mu.Unlock()
}

// answer writes the reply and returns its status.
func (s *Server) answer(w http.ResponseWriter, r *http.Request) int {
	if v := r.Header.Get("X-Request-ID"); v != "" {
		w.Header().Set("X-Request-ID", v)
	}
	if v := r.Header.Get("X-Correlation-ID"); v != "" {
		w.Header().Set("X-Correlation-ID", v)
	}
	id, ok := strings.CutPrefix(r.URL.Path, "/Patient/")
	if r.Method != http.MethodGet || !ok || strings.Contains(id, "/") {
		// Only "Get patient details" is doubled.
		http.Error(w, "not supported by the double", http.StatusMethodNotAllowed)
		return http.StatusMethodNotAllowed
	}
	if id == "" {
		return outcome(w, http.StatusBadRequest, "not-supported", "UNSUPPORTED_SERVICE", "Unsupported Service", "")
	}
	token, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !bearer || strings.TrimSpace(token) == "" || !s.acceptToken(token) {
		return outcome(w, http.StatusUnauthorized, "forbidden", "ACCESS_DENIED", "Access Denied - Unauthorised", "")
	}
	switch rid := r.Header.Get("X-Request-ID"); {
	case rid == "":
		return outcome(w, http.StatusBadRequest, "required", "MISSING_VALUE", "Required value is missing", "Invalid request with error - X-Request-ID header must be supplied to access this resource")
	case !uuidPattern.MatchString(rid):
		return outcome(w, http.StatusBadRequest, "value", "INVALID_VALUE", "Provided value is invalid", "Invalid value - '"+rid+"' in header 'X-Request-ID'")
	}
	s.mu.Lock()
	var fail *Failure
	if len(s.script) > 0 {
		fail = &s.script[0]
		s.script = s.script[1:]
	}
	s.mu.Unlock()
	if fail != nil {
		if fail.RetryAfter != "" {
			w.Header().Set("Retry-After", fail.RetryAfter)
		}
		switch fail.Status {
		case http.StatusTooManyRequests:
			return outcome(w, fail.Status, "throttled", "TOO_MANY_REQUESTS", "You have exceeded your application's rate limit", "")
		case http.StatusServiceUnavailable:
			return outcome(w, fail.Status, "timeout", "SERVICE_UNAVAILABLE", "Service unavailable", "The downstream domain processing has not completed within the configured timeout period. Using the same 'X-Request-ID' header, retry your request after the time specified by the 'Retry-After' response header.")
		default:
			return outcome(w, fail.Status, "exception", "UNKNOWN_ERROR", "Unknown error", "")
		}
	}
	if !nhs.ValidNumber(id) {
		return outcome(w, http.StatusBadRequest, "value", "INVALID_RESOURCE_ID", "Resource Id is invalid", "")
	}
	s.mu.Lock()
	p, found := s.patients[id]
	if cur, ok := s.superseded[id]; ok {
		p, found = s.patients[cur]
	}
	invalid := s.invalid[id]
	s.mu.Unlock()
	if invalid {
		return outcome(w, http.StatusNotFound, "not-found", "INVALIDATED_RESOURCE", "Resource that has been marked as invalid was requested - invalid resources cannot be retrieved", "")
	}
	if !found {
		return outcome(w, http.StatusNotFound, "not-found", "RESOURCE_NOT_FOUND", "Resource not found", "")
	}
	w.Header().Set("ETag", `W/"`+p.VersionID+`"`)
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(resource(p))
	return http.StatusOK
}

// resource returns the Patient resource of p as PDS would return it.
func resource(p Patient) map[string]any {
	label := map[string]any{"system": systemConfidentiality, "code": "U", "display": "unrestricted"}
	if p.Restricted {
		label = map[string]any{"system": systemConfidentiality, "code": "R", "display": "restricted"}
	}
	res := map[string]any{
		"resourceType": "Patient",
		"id":           p.NHSNumber,
		"meta":         map[string]any{"versionId": p.VersionID, "security": []any{label}},
		"identifier": []any{map[string]any{
			"system": nhs.SystemNHSNumber, "value": p.NHSNumber,
			"extension": []any{map[string]any{
				"url": nhs.ExtNHSNumberVerificationStatus,
				"valueCodeableConcept": map[string]any{"coding": []any{map[string]any{
					"system": nhs.CodeSystemNHSNumberVerificationStatusEngland, "code": "01", "display": "Number present and verified",
				}}},
			}},
		}},
		"name":      []any{map[string]any{"use": "usual", "family": p.Family, "given": []any{p.Given}}},
		"gender":    p.Gender,
		"birthDate": p.BirthDate,
	}
	if p.Restricted {
		// Location-sensitive fields are removed.
		return res
	}
	if p.Postcode != "" {
		res["address"] = []any{map[string]any{"use": "home", "line": []any{"1 SYNTHETIC STREET"}, "postalCode": p.Postcode}}
		res["telecom"] = []any{map[string]any{"system": "phone", "use": "home", "value": "01632960000"}}
	}
	if p.GPPractice != "" {
		ident := map[string]any{"system": nhs.SystemODSOrganization, "value": p.GPPractice}
		if p.GPStart != "" {
			ident["period"] = map[string]any{"start": p.GPStart}
		}
		res["generalPractitioner"] = []any{map[string]any{
			"id": "GPREF" + p.VersionID, "type": "Organization", "identifier": ident,
		}}
	}
	return res
}

// outcome writes an OperationOutcome error and returns the status.
func outcome(w http.ResponseWriter, status int, issueCode, code, display, diagnostics string) int {
	issue := map[string]any{
		"severity": "error",
		"code":     issueCode,
		"details": map[string]any{"coding": []any{map[string]any{
			"system": SystemSpineError, "version": "1", "code": code, "display": display,
		}}},
	}
	if diagnostics != "" {
		issue["diagnostics"] = diagnostics
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"resourceType": "OperationOutcome", "issue": []any{issue}})
	return status
}

// Seed returns a set of synthetic patients: the i-th is
// nhs.TestNumber(i), from the 999 range.
//
//   - 0, 1: registered at practices Y12345 and Y23456;
//   - 2: registered at Y34567 but restricted (returned without it);
//   - 3: not registered with a practice.
func Seed() []Patient {
	mk := func(i int, practice string, restricted bool) Patient {
		return Patient{
			NHSNumber: nhs.TestNumber(i), Family: "TESTPATIENT", Given: "SYNTH" + strconv.Itoa(i),
			Gender: "unknown", BirthDate: "1980-01-01", Postcode: "LS1 1AA",
			GPPractice: practice, GPStart: "2020-01-01", Restricted: restricted, VersionID: strconv.Itoa(i + 2),
		}
	}
	return []Patient{mk(0, "Y12345", false), mk(1, "Y23456", false), mk(2, "Y34567", true), mk(3, "", false)}
}
