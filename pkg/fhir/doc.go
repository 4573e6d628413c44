// Package fhir holds what Junction's adapters share about FHIR R4: building
// resources and message Bundles with deterministic ids, FHIR dates and
// primitives, JSON encoding of the samply models, references inside a
// Bundle, security labels, OperationOutcomes, the FHIR endpoint's
// CapabilityStatement, and checks of a FHIR server's base URL.
package fhir
