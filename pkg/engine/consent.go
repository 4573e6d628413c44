package engine

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/junction-fhir/junction/pkg/access"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/config"
	"github.com/junction-fhir/junction/pkg/consent"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/router"
)

// consentKeyBucket keeps the generated hash key (when none is configured)
// and the fingerprint of the key in use, so that a changed key is caught
// before it makes every stored Consent unreachable.
const consentKeyBucket = "consent_key"

// Keys of consentKeyBucket.
const (
	generatedKey   = "generated"
	keyFingerprint = "fingerprint"
)

// openConsent sets the engine's patient hash key (consent.hash_key, or a
// key generated once and kept in the store; audit records and the consent
// store both key patients by it) and builds the consent decider the config
// asks for. With the
// consent engine it opens the consent store on the engine's JetStream and
// returns the engine, which counts the decisions that skip the Consent
// gate, and the store, which the FHIR endpoint uses for POST
// /fhir/Consent. With the default policy the store is nil.
func (e *Engine) openConsent(ctx context.Context) (consent.Decider, *consent.Store, error) {
	cc := e.plan.Config.Consent
	replicas := e.plan.Config.NATS.Replicas
	key, generated, err := e.consentKey(ctx, cc, replicas)
	if err != nil {
		return nil, nil, err
	}
	e.patientKey = key
	if cc.Engine == config.ConsentEngineDefault {
		e.log.Info("consent", "engine", "default", "note", "each route's declared default decides; Consents are not consulted")
		return consent.DefaultPolicy{}, nil, nil
	}
	st, err := consent.OpenStore(ctx, e.store.JS, consent.StoreConfig{HashKey: key, OptOutMaxAge: cc.OptOutMaxAge, Replicas: replicas})
	if err != nil {
		return nil, nil, fmt.Errorf("consent: %w", err)
	}
	dests := make(map[string]consent.Destination, len(cc.Destinations))
	for name, d := range cc.Destinations {
		cd := consent.Destination{Name: name, ODS: d.ODS}
		for _, a := range d.Allow {
			cd.Allow = append(cd.Allow, consent.Clearance(a))
		}
		dests[name] = cd
	}
	e.log.Info("consent", "engine", "consent", "generated_key", generated, "destinations", len(dests))
	dec := &consent.Engine{Source: st, Destinations: dests}
	return skipCounter{next: dec, skipped: e.metrics.ConsentSkipped}, st, nil
}

// consentKey returns the engine's patient hash key (see PatientHashKey).
func (e *Engine) consentKey(ctx context.Context, cc config.ConsentConfig, replicas int) ([]byte, bool, error) {
	return PatientHashKey(ctx, e.store.JS, e.secrets, cc, replicas)
}

// PatientHashKey returns the patient hash key: the value of the
// configured reference cc.HashKey, or the key generated once and kept in
// the store's consent_key bucket (generating it when absent). Either way
// the key's fingerprint must match the one recorded when Consents were
// first stored. generated reports a generated key. The engine and the
// CLI's disclosure report share it so both hash patients alike.
func PatientHashKey(ctx context.Context, js jetstream.JetStream, secrets config.Secrets, cc config.ConsentConfig, replicas int) (key []byte, generated bool, err error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: consentKeyBucket, Description: "Junction: consent hash key fingerprint (and the generated key when none is configured)",
		History: 1, Replicas: max(replicas, 1), Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, false, fmt.Errorf("consent: creating bucket %s: %w", consentKeyBucket, err)
	}
	generated = cc.HashKey == ""
	if generated {
		if key, err = createOrGet(ctx, kv, generatedKey, func() ([]byte, error) {
			b := make([]byte, 32)
			_, err := rand.Read(b)
			return []byte(hex.EncodeToString(b)), err
		}); err != nil {
			return nil, false, fmt.Errorf("consent: generated hash key: %w", err)
		}
	} else {
		v, err := secrets.Resolve(cc.HashKey)
		if err != nil {
			return nil, false, fmt.Errorf("consent.hash_key: %w", err)
		}
		if len(v) < 16 {
			return nil, false, errors.New("consent.hash_key: the key must be at least 16 bytes")
		}
		key = []byte(v)
	}
	fp := fingerprint(key)
	have, err := createOrGet(ctx, kv, keyFingerprint, func() ([]byte, error) { return []byte(fp), nil })
	if err != nil {
		return nil, false, fmt.Errorf("consent: hash key fingerprint: %w", err)
	}
	if string(have) != fp {
		return nil, false, errors.New("consent.hash_key: this is not the key the stored Consents and opt-outs were written with, so none of them would be found; configure the previous key again (a generated key is kept in the consent_key bucket)")
	}
	return key, generated, nil
}

// patientHash is the keyed hash of a patient key under the engine's
// patient hash key (see PatientHash).
func (e *Engine) patientHash(patientKey string) string {
	return PatientHash(e.patientKey, patientKey)
}

// PatientHash is the keyed hash of a patient key (an NHS number, spaces
// and hyphens allowed, or a local identifier) under key: the hex
// HMAC-SHA256 of the normalised patient key, the same value the consent
// store keys a patient's Consents by. It is what audit records carry
// instead of the patient's identity.
func PatientHash(key []byte, patientKey string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(nhs.Normalize(patientKey)))
	return hex.EncodeToString(m.Sum(nil))
}

// fingerprint identifies a key without revealing it.
func fingerprint(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("junction consent hash key fingerprint"))
	return hex.EncodeToString(m.Sum(nil))
}

// createOrGet returns the value of k, creating it with mk when absent.
// Of several processes starting at once, the first to create wins and the
// others read its value.
func createOrGet(ctx context.Context, kv jetstream.KeyValue, k string, mk func() ([]byte, error)) ([]byte, error) {
	for attempt := 0; attempt < 3; attempt++ {
		e, err := kv.Get(ctx, k)
		if err == nil {
			return e.Value(), nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, err
		}
		v, err := mk()
		if err != nil {
			return nil, err
		}
		if _, err := kv.Create(ctx, k, v); err == nil {
			return v, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%s keeps changing", k)
}

// skipCounter counts the decisions in which a statutory route skipped the
// Consent gate, by route and destination.
type skipCounter struct {
	next    consent.Decider
	skipped *prometheus.CounterVec
}

// Decide implements consent.Decider.
func (s skipCounter) Decide(ctx context.Context, req consent.Request) (consent.Decision, error) {
	d, err := s.next.Decide(ctx, req)
	if err == nil && d.ConsentSkipped {
		s.skipped.WithLabelValues(req.Route, req.Destination).Inc()
	}
	return d, err
}

// consentHost is the ingester offering the consent store as well: the FHIR
// endpoint looks for these methods (its ConsentStore interface) on its
// host, so POST /fhir/Consent stores Consents.
type consentHost struct {
	*router.Ingester
	store *consent.Store
	// patients, when the patient index is on, gets the patient's consent
	// summary after every stored Consent.
	patients *patient.Index
}

// PutConsent stores a Consent (see consent.Store.PutConsent) and then
// records in the patient index whether the patient has an active Consent
// in force, for rules to read as patient.consent.hasActiveConsent. If
// the index cannot be written the call fails so the sender resends
// (storing the same Consent again is harmless); the summary never
// decides consent.
func (h consentHost) PutConsent(ctx context.Context, data []byte) (consent.Policy, error) {
	pol, err := h.store.PutConsent(ctx, data)
	if err != nil || h.patients == nil {
		return pol, err
	}
	pols, err := h.store.Policies(ctx, pol.Patient)
	if err != nil {
		return pol, fmt.Errorf("reading the patient's Consents for the index: %w", err)
	}
	now := time.Now().UTC()
	sum := patient.ConsentSummary{UpdatedAt: now}
	for _, p := range pols {
		if p.Status == "active" && p.Root.Period.Contains(now) {
			sum.HasActiveConsent = true
		}
	}
	if _, err := h.patients.SetConsent(ctx, pol.Patient, sum); err != nil {
		return pol, fmt.Errorf("recording the consent summary in the patient index: %w", err)
	}
	return pol, nil
}

// consentEndpoint is the endpoint of Consent writes in access records (the
// FHIR endpoint's fhir.RoutePostConsent).
const consentEndpoint = "POST /fhir/Consent"

// guardedConsentHost is the consent host when http.tokens is configured:
// it offers the FHIR endpoint fhir.ConsentGuard as well, so recording or
// changing a Consent through POST /fhir/Consent needs a token whose roles
// grant access.ConsentWrite, and each write is audited.
type guardedConsentHost struct {
	consentHost
	e *Engine
}

// AuthorizeConsent implements the FHIR endpoint's ConsentGuard: it authenticates the
// caller by http.tokens and checks access.ConsentWrite. A refusal is
// recorded (without a patient: the body is not read) and answered with an
// OperationOutcome. An allowed caller gets a function that records the
// write with the patient's keyed hash before the Consent is stored.
func (h guardedConsentHost) AuthorizeConsent(w http.ResponseWriter, r *http.Request) (func(ctx context.Context, patientKey string) error, int) {
	r = r.WithContext(r.Context())
	r.Pattern = consentEndpoint
	name := string(access.ConsentWrite)
	r, p, ref := h.e.check(r, name, false)
	if ref != nil {
		issue := "forbidden"
		switch ref.status {
		case http.StatusUnauthorized:
			w.Header().Set("WWW-Authenticate", ref.challenge)
			issue = "login"
		case http.StatusServiceUnavailable:
			issue = "transient"
		}
		jfhir.WriteOutcome(w, ref.status, jfhir.Outcome("error", issue, ref.msg))
		return nil, ref.status
	}
	record := func(ctx context.Context, patientKey string) error {
		if err := h.e.recordAccess(r.WithContext(ctx), p, name, access.ConsentWrite, accessAllowed, patientKey); err != nil {
			h.e.metrics.Accesses.WithLabelValues(name, accessAuditFailed, p.Name).Inc()
			return err
		}
		h.e.metrics.Accesses.WithLabelValues(name, accessAllowed, p.Name).Inc()
		return nil
	}
	return record, 0
}

// consentWriter is what a consent-store destination writes Consents
// through: the consent store, updating the patient index as POST
// /fhir/Consent does; nil when the consent engine is off.
func (e *Engine) consentWriter() adapter.ConsentWriter {
	if e.consents == nil {
		return nil
	}
	return consentHost{store: e.consents, patients: e.patients}
}

// WriteConsent stores one Consent resource (see PutConsent).
func (h consentHost) WriteConsent(ctx context.Context, resource []byte) error {
	_, err := h.PutConsent(ctx, resource)
	return err
}

// Policies returns a patient's stored Consents.
func (h consentHost) Policies(ctx context.Context, patientKey string) ([]consent.Policy, error) {
	return h.store.Policies(ctx, patientKey)
}
