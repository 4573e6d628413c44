// Package pathology is the adapter for laboratory systems (LIMS) that send
// HL7 v2 results over MLLP. Its factory, type "pathology", builds an MLLP
// listener (default 127.0.0.1:2576) that partitions messages by patient as
// the pas adapter does, and a translator that turns ORU^R01 messages (the
// v2.3 to v2.5.1 structures, read leniently) into UK Core FHIR R4 message
// bundles. The translator is pure (bytes in, FHIR out, no I/O, no clock):
// it reads its code maps once, when it is built.
//
// # Output
//
// Each message becomes a Bundle of type "message" whose entries are, in
// order: a MessageHeader (event R01, source and destination as in the pas
// adapter, focus on every DiagnosticReport), the Patient (mapped from PID
// by the pas translator under the feed's dialect), then for each OBR, in
// message order, a ServiceRequest, its Specimens, a DiagnosticReport and
// one Observation per OBX. Bundle.id is the Junction message id, and every
// fullUrl is a urn:uuid derived from that id and the resource's kind and
// position ("Observation/2/5" is the fifth OBX of the second OBR), so
// translating the same stored message again gives the same bytes. Every
// reference in the bundle is to one of its entries, except practitioners
// (ordering provider, results interpreter), which are logical references
// by identifier and name.
//
// # Result keys
//
// The first identifier of every ServiceRequest, DiagnosticReport, Specimen
// and Observation is its result key, in the configured result key system
// (lab.result_key_system), so that a fhir destination, which updates a
// resource by its first identifier with a system, writes a corrected,
// withdrawn or final result over the earlier one rather than beside it.
// A key's value is the first 32 hex digits of a SHA-256 of what names the
// result, so nothing in it needs escaping and no two names run together:
//
//   - an order: which number it has (its filler order number, else its
//     placer order number), that number's system, value and assigning
//     authority (EI-2 to EI-4, else the sending facility and application,
//     MSH-4.1 and MSH-3.1), and its test code (OBR-4.1). Two laboratories
//     on one input numbering accessions alike make different keys, so one
//     never updates the other's results. A laboratory that splits one request into
//     accessions, or runs several tests under one accession, makes
//     reports with keys of their own, and a placer number equal to
//     another order's filler number names another order. An order with
//     neither number has no key, and its resources none;
//   - its ServiceRequest and DiagnosticReport have the order's key, its
//     Specimens the order and their position;
//   - an Observation: the order, its code (OBX-3.1) and its sub-id (OBX-4);
//   - a name met again in the same message (an order repeated, a report
//     sent as several OBX lines of one code) is counted, the second
//     differing from the first.
//
// A correction must therefore come with the numbers and codes of the
// report it corrects, as HL7 v2 asks; a correction with fewer lines of a
// multi-line report leaves the earlier extra lines at the server. OBX-21,
// when sent, is kept as a further Observation identifier.
//
// An OBX with status U and no value ("status change to final without
// retransmitting results already sent as preliminary") is not an
// Observation: its report refers to the earlier one by its result key
// (DQResultStatusOnly), since an Observation written whole would replace
// the preliminary value at the server with none; a fhir destination makes
// the stored Observation final, its value kept.
//
// # Mapping choices
//
//   - DiagnosticReport (UKCore-DiagnosticReport-Lab): placer (PLAC) and
//     filler (FILL) identifiers from OBR-2 and OBR-3, else ORC-2 and
//     ORC-3, with the universal id as system when sent, else the
//     configured systems; code OBR-4, keeping the local code as a coding;
//     status OBR-25 (see reportStatus); category LAB (HL7 table 0074) plus
//     OBR-24; effective OBR-7 (a period with OBR-8); issued OBR-22;
//     resultsInterpreter OBR-32; notes after the OBR in the R5 backport
//     extension extension-DiagnosticReport.note, since R4
//     DiagnosticReport has no note.
//   - ServiceRequest (UKCore-ServiceRequest-Lab): the same identifiers and
//     code, intent order (reflex-order when OBR-11 is G), status ORC-5 or, without it, from the report
//     status; authoredOn ORC-9; requester ORC-12, else OBR-16; basedOn
//     the parent order of OBR-29 (a susceptibility report's culture), by
//     logical references with its placer and filler identifiers.
//   - Specimen (UKCore-Specimen): one per SPM (v2.5); an order without SPM
//     gets one from OBR-15 (v2.3, v2.4) or OBR-14 when either is sent,
//     collected at OBR-7 and received at OBR-14. Which source is used depends on what the
//     message holds, not on MSH-12.
//   - Observation (UKCore-Observation-Lab): see mapObservation and
//     setValue for every value type. Quantities carry the UCUM system and
//     code when OBX-6 is UCUM (or a common UK spelling of a UCUM unit, such
//     as µmol/L with a micro sign),
//     else the unit text only. Reference ranges keep OBX-7 as text and add
//     low and high when it parses ("3.5-5.3", "<=5", ">=60"; FHIR's bounds
//     are inclusive, so "<21" and ">90" stay text only). OBX-8 flags map to
//     v3-ObservationInterpretation. Notes after the OBX become notes.
//     Performers, as logical references: OBX-16's observers, then the
//     laboratory of OBX-23, else OBX-15 (see performers).
//   - Codes: HL7 coding system names map to URIs (LN to LOINC, SCT to
//     SNOMED CT, local names to the configured local code system); the
//     configured ConceptMaps add codings (equivalence equivalent or equal)
//     to OBR-4 and OBX-3 codes.
//   - Notes: after an ORC they become ServiceRequest notes, after an SPM
//     Specimen notes; after PID (or any segment whose resource has no
//     note) they are not mapped and the translation is flagged
//     DQNoteNotMapped.
//   - An OBX before the first OBR (a v2.6+ patient observation) becomes
//     an Observation of the patient with no order, report or result key,
//     after the Patient, flagged DQObservationOutsideOrder.
//   - Not mapped: PV1 (no Encounter), TQ1, CTD, FT1, PRT, OBX-4 sub-ids
//     as a grouping (no hasMember: they are kept in the
//     observation-v2-subid extension and are part of the result key),
//     OBR-26 (the parent result; OBR-29 links the parent order),
//     OBX-24 and OBX-25 (the performing laboratory's address and medical
//     director).
//
// # Faults
//
// A message that is not ORU is refused as unsupported (HL7 error 200), an
// ORU event other than R01 likewise (201); a message without PID or OBR
// has a required segment missing (100), and results for more than one
// patient in one message are refused (100), since they cannot be put in
// one patient's bundle safely. An OBR without a test code (OBR-4) or an
// OBX with a value but no observation code (OBX-3) is refused as a
// required field missing (101): the result would reach a clinician as
// "Unknown". An OBX with neither code nor value is left out, its notes
// going to the report (DQCodeMissing). The listener refuses all of these before
// storing, with the ERR code above (the listener's accepted types: AR, or
// CR in enhanced mode; Screen, for content: AE, or CE), so the laboratory
// hears of them at once rather than after an AA.
//
// # Data quality
//
// Problems that do not stop translation (a result that is not a number, an
// unparsable time, an unknown value type or status, a unit that is not
// UCUM, and the pas patient codes) leave the affected element out or keep
// it as text, and are listed in Translation.DataQuality using the DQ*
// codes, which the engine counts per feed.
package pathology
