package nhs

// The URLs below are grouped by kind, and the kind is in the name: System
// (identifier systems), Profile (UK Core resource profiles), Ext (UK Core
// extensions), CodeSystem (UK Core code systems), and Junction (URLs
// Junction defines itself because UK Core has none for the purpose).
// TestUKCoreURLs reads this file and checks every constant against the UK
// Core corpus by that prefix, so a URL added here is checked too;
// Junction-defined URLs must not be in UK Core.

// Identifier systems.
const (
	// SystemNHSNumber is the identifier system of the NHS number.
	SystemNHSNumber = "https://fhir.nhs.uk/Id/nhs-number"
	// SystemODSOrganization is the identifier system of ODS organisation
	// codes (trusts, GP practices).
	SystemODSOrganization = "https://fhir.nhs.uk/Id/ods-organization-code"
	// SystemODSSite is the identifier system of ODS site codes.
	SystemODSSite = "https://fhir.nhs.uk/Id/ods-site-code"
	// SystemGMC is the identifier system of General Medical Council
	// reference numbers.
	SystemGMC = "https://fhir.hl7.org.uk/Id/gmc-number"
	// SystemGMP is the identifier system of GMP (GP) numbers.
	SystemGMP = "https://fhir.hl7.org.uk/Id/gmp-number"
	// SystemSDSUserID is the identifier system of Spine Directory Service
	// user ids (staff smartcard ids).
	SystemSDSUserID = "https://fhir.nhs.uk/Id/sds-user-id"
)

// UK Core profiles.
const (
	// ProfilePatient is the canonical URL of the UK Core Patient profile.
	ProfilePatient = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"
	// ProfileEncounter is the canonical URL of the UK Core Encounter
	// profile.
	ProfileEncounter = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Encounter"
	// ProfileMessageHeader is the canonical URL of the UK Core
	// MessageHeader profile.
	ProfileMessageHeader = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-MessageHeader"
	// ProfileBundle is the canonical URL of the UK Core Bundle profile.
	ProfileBundle = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Bundle"
	// ProfileLocation is the canonical URL of the UK Core Location
	// profile.
	ProfileLocation = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Location"
	// ProfileRelatedPerson is the canonical URL of the UK Core
	// RelatedPerson profile.
	ProfileRelatedPerson = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-RelatedPerson"
	// ProfileAllergyIntolerance is the canonical URL of the UK Core
	// AllergyIntolerance profile.
	ProfileAllergyIntolerance = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-AllergyIntolerance"
	// ProfileCondition is the canonical URL of the UK Core Condition
	// profile.
	ProfileCondition = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Condition"
	// ProfilePractitioner is the canonical URL of the UK Core
	// Practitioner profile.
	ProfilePractitioner = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Practitioner"
	// ProfileOrganization is the canonical URL of the UK Core
	// Organization profile.
	ProfileOrganization = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Organization"
	// ProfileProvenance is the canonical URL of the UK Core Provenance
	// profile.
	ProfileProvenance = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Provenance"
	// ProfileDiagnosticReportLab is the canonical URL of the UK Core
	// DiagnosticReport profile for laboratory reports.
	ProfileDiagnosticReportLab = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-DiagnosticReport-Lab"
	// ProfileObservationLab is the canonical URL of the UK Core
	// Observation profile for laboratory results.
	ProfileObservationLab = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Observation-Lab"
	// ProfileSpecimen is the canonical URL of the UK Core Specimen
	// profile.
	ProfileSpecimen = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Specimen"
	// ProfileServiceRequestLab is the canonical URL of the UK Core
	// ServiceRequest profile for laboratory orders.
	ProfileServiceRequestLab = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-ServiceRequest-Lab"
)

// UK Core extensions.
const (
	// ExtNHSNumberVerificationStatus is the URL of the extension on
	// Patient.identifier:nhsNumber that carries the trace status of the
	// number (a CodeableConcept).
	ExtNHSNumberVerificationStatus = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus"
	// ExtEthnicCategory is the URL of the extension on Patient that
	// carries the ethnic category (a CodeableConcept).
	ExtEthnicCategory = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory"
	// ExtAdmissionMethod is the URL of the extension on
	// Encounter.hospitalization that carries the admission method (a
	// CodeableConcept).
	ExtAdmissionMethod = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-AdmissionMethod"
	// ExtDischargeMethod is the URL of the extension on Encounter that
	// carries the discharge method (a CodeableConcept).
	ExtDischargeMethod = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-DischargeMethod"
)

// UK Core code systems.
const (
	// CodeSystemPersonMaritalStatusEngland is the code system of the NHS
	// Data Dictionary person marital status codes used in England.
	CodeSystemPersonMaritalStatusEngland = "https://fhir.hl7.org.uk/CodeSystem/UKCore-PersonMaritalStatusEngland"
	// CodeSystemNHSNumberVerificationStatusEngland is the code system of
	// the NHS Data Dictionary NHS Number Status Indicator codes (01-08)
	// used in England.
	CodeSystemNHSNumberVerificationStatusEngland = "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland"
	// CodeSystemEthnicCategoryEngland is the code system of the NHS Data
	// Dictionary ethnic category codes used in England.
	CodeSystemEthnicCategoryEngland = "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategoryEngland"
	// CodeSystemAdmissionMethodEngland is the code system of the NHS Data
	// Dictionary admission method codes used in England.
	CodeSystemAdmissionMethodEngland = "https://fhir.hl7.org.uk/CodeSystem/UKCore-AdmissionMethodEngland"
	// CodeSystemDischargeMethodEngland is the code system of the NHS Data
	// Dictionary discharge method codes used in England.
	CodeSystemDischargeMethodEngland = "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeMethodEngland"
	// CodeSystemSourceOfAdmissionEngland is the code system of the NHS
	// Data Dictionary source of admission codes used in England.
	CodeSystemSourceOfAdmissionEngland = "https://fhir.hl7.org.uk/CodeSystem/UKCore-SourceOfAdmissionEngland"
	// CodeSystemDischargeDestinationEngland is the code system of the NHS
	// Data Dictionary discharge destination codes used in England.
	CodeSystemDischargeDestinationEngland = "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeDestinationEngland"
)

// Junction-defined URLs: not UK Core, published by the Junction project
// for what UK Core and FHIR R4 have no element or extension for.
const (
	// JunctionExtEncounterLocationCancelled marks, on an Encounter, the
	// location entry of a transfer that was cancelled (valueBoolean
	// true). FHIR R4 has no location status for a movement recorded in
	// error; receivers that ignore the extension still see an entry
	// without a status.
	JunctionExtEncounterLocationCancelled = "https://junction-fhir.github.io/fhir/StructureDefinition/encounter-location-cancelled"
	// JunctionExtClearedElement names, on a resource, an element the
	// sender deleted: valueCode is a top-level element's name (a choice
	// element without its type, "deceased"), valueUri the url of a
	// top-level extension. HL7 v2's explicit null ("") asks for such a
	// delete, and some events withdraw what earlier ones set (A13's
	// discharge details). A receiver that merges a resource into what it
	// holds deletes those elements; one that replaces the whole resource
	// can ignore it. The fhir destination does the first and strips the
	// extension before sending.
	JunctionExtClearedElement = "https://junction-fhir.github.io/fhir/StructureDefinition/cleared-element"
	// JunctionExtDerivedElement names, on a resource, a top-level
	// element (valueCode) whose value the sender did not assert but
	// Junction inferred (an A08's Encounter.status, from PV1): a receiver
	// that merges into what it holds keeps its own value where it has
	// one. The fhir destination does so and strips the extension.
	JunctionExtDerivedElement = "https://junction-fhir.github.io/fhir/StructureDefinition/derived-element"
	// JunctionExtReceived records, on a resource's meta (valueInstant),
	// when Junction received the message it was last written from. A
	// fhir destination that merges into the server's copy writes it, and
	// keeps the server's copy when a message received earlier comes
	// after (a replayed dead letter, or a message late on another
	// route), so an old message does not overwrite a newer one's values.
	JunctionExtReceived = "https://junction-fhir.github.io/fhir/StructureDefinition/received"
)
