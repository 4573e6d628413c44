// Package fault classes errors as transient or permanent and gives each a
// stable code that maps to an HL7 v2 acknowledgement and a FHIR
// OperationOutcome issue type.
//
// The message of a fault is safe to log: it never holds patient data. Any
// detail that may hold patient data (a field value, a server's reply) goes
// in Detail, which is returned to the caller (ACK ERR segment,
// OperationOutcome) and never logged.
package fault

import (
	"errors"
	"fmt"
	"time"
)

// Class says whether retrying the same work may succeed.
type Class int

const (
	// Permanent faults fail the same way on every retry.
	Permanent Class = iota
	// Transient faults may succeed later (network, store unavailable, 5xx).
	Transient
)

func (c Class) String() string {
	if c == Transient {
		return "transient"
	}
	return "permanent"
}

// Code is a stable, documented identifier of a kind of failure.
type Code string

// Stable codes. New codes may be added; existing ones never change meaning.
const (
	CodeInternal         Code = "internal"
	CodeStoreUnavailable Code = "store.unavailable"
	CodeFrameInvalid     Code = "mllp.frame-invalid"
	CodeFrameTooLarge    Code = "mllp.frame-too-large"
	CodeFrameIncomplete  Code = "mllp.frame-incomplete"
	CodeFrameBusy        Code = "mllp.busy"
	CodeHL7Parse         Code = "hl7.parse"
	CodeHL7Unsupported   Code = "hl7.unsupported-message"
	CodeHL7Required      Code = "hl7.required-field-missing"
	CodeHL7Charset       Code = "hl7.unsupported-charset"
	// CodeHL7TooManySegments is an HL7 v2 message of more segments than
	// its listener takes (max_segments).
	CodeHL7TooManySegments Code = "hl7.too-many-segments"
	CodeFHIRInvalidJSON    Code = "fhir.invalid-json"
	CodeFHIRInvalid        Code = "fhir.invalid-resource"
	CodeFHIRMediaType      Code = "fhir.unsupported-media-type"
	CodeFHIRTooLarge       Code = "fhir.too-large"
	CodeFHIREmpty          Code = "fhir.empty-body"
	// CodeFHIRIncomplete is a body that stopped before its end: the
	// client went away or was too slow, and nothing of it was checked.
	CodeFHIRIncomplete Code = "fhir.incomplete-body"
	// CodeFHIRNotSupported is a request the FHIR endpoint does not serve:
	// a method or a path it does not take.
	CodeFHIRNotSupported Code = "fhir.not-supported"
	CodeTranslate        Code = "translate.failed"
	CodeRuleEval         Code = "rule.eval"
	CodeDestRejected     Code = "destination.rejected"
	CodeDestUnavailable  Code = "destination.unavailable"
	CodeDestAckMismatch  Code = "destination.ack-mismatch"
	CodeRetriesExhausted Code = "destination.retries-exhausted"
	CodeConsentDenied    Code = "consent.denied"
	// CodeConsentChanged is a queued payload not sent because a Consent
	// or the opt-out list changed after its consent decision and its
	// input is gone, so the decision cannot be made again.
	CodeConsentChanged Code = "consent.changed"
	CodeConfig         Code = "config.invalid"
	CodeNotFound       Code = "not-found"
	CodeUnauthorized   Code = "unauthorized"
	CodeDuplicate      Code = "duplicate"
	CodeTooLarge       Code = "store.payload-too-large"
	CodePanic          Code = "internal.panic"
	// CodeBacklog is input refused, not stored, because the messages
	// stored before it and not yet routed are over the configured limit
	// (router.max_backlog); the sender should resend later.
	CodeBacklog Code = "ingress.backlog"
)

// Codes returns every code this package defines, in declaration order.
func Codes() []Code {
	return []Code{CodeInternal, CodeStoreUnavailable, CodeFrameInvalid, CodeFrameTooLarge, CodeFrameIncomplete, CodeFrameBusy, CodeHL7Parse,
		CodeHL7Unsupported, CodeHL7Required, CodeHL7Charset, CodeHL7TooManySegments, CodeFHIRInvalidJSON, CodeFHIRInvalid,
		CodeFHIRMediaType, CodeFHIRTooLarge, CodeFHIREmpty, CodeFHIRIncomplete, CodeFHIRNotSupported, CodeTranslate, CodeRuleEval, CodeDestRejected,
		CodeDestUnavailable, CodeDestAckMismatch, CodeRetriesExhausted, CodeConsentDenied, CodeConsentChanged, CodeConfig,
		CodeNotFound, CodeUnauthorized, CodeDuplicate, CodeTooLarge, CodePanic, CodeBacklog}
}

// Error is a classed, coded error.
type Error struct {
	Code  Code
	Class Class
	// Msg is a short description that never holds patient data.
	Msg string
	// Detail may hold patient data; it goes only to the caller.
	Detail string
	// HL7Err is the HL7 table 0357 error condition code, if any.
	HL7Err string
	// RetryAfter, on a transient fault, is how long the other side asked
	// to be left alone (an HTTP Retry-After); 0 when it did not say.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	s := string(e.Code) + ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// New returns a permanent fault.
func New(code Code, msg string) *Error {
	return &Error{Code: code, Class: Permanent, Msg: msg}
}

// Newf returns a permanent fault with a formatted message. Never format
// patient data into it.
func Newf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Class: Permanent, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns a fault of the given class wrapping err.
func Wrap(class Class, code Code, msg string, err error) *Error {
	return &Error{Code: code, Class: class, Msg: msg, Err: err}
}

// WithDetail sets the caller-only detail and returns e.
func (e *Error) WithDetail(d string) *Error { e.Detail = d; return e }

// WithHL7 sets the HL7 error condition code (table 0357) and returns e.
func (e *Error) WithHL7(code string) *Error { e.HL7Err = code; return e }

// RetryAfterOf returns the RetryAfter of the fault in err's chain, or 0.
func RetryAfterOf(err error) time.Duration {
	if f := As(err); f != nil {
		return f.RetryAfter
	}
	return 0
}

// As returns the fault in err's chain, or nil.
func As(err error) *Error {
	var f *Error
	if errors.As(err, &f) {
		return f
	}
	return nil
}

// IsTransient reports whether err is a transient fault. Unclassed errors
// are treated as transient, since an unknown failure may be infrastructure.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if f := As(err); f != nil {
		return f.Class == Transient
	}
	return true
}

// CodeOf returns err's code, or CodeInternal.
func CodeOf(err error) Code {
	if f := As(err); f != nil {
		return f.Code
	}
	return CodeInternal
}

// DetailOf returns the caller-only detail of err, or its safe message.
func DetailOf(err error) string {
	if f := As(err); f != nil {
		if f.Detail != "" {
			return f.Detail
		}
		return f.Msg
	}
	return "internal error"
}

// IssueType maps a code to a FHIR OperationOutcome issue type.
func IssueType(c Code) string {
	switch c {
	case CodeFHIRInvalidJSON, CodeHL7Parse:
		return "structure"
	case CodeFHIRInvalid, CodeHL7Required:
		return "invalid"
	case CodeFHIRTooLarge, CodeFrameTooLarge, CodeHL7TooManySegments:
		return "too-costly"
	case CodeFHIRMediaType, CodeFHIRNotSupported, CodeHL7Unsupported, CodeHL7Charset:
		return "not-supported"
	case CodeFHIREmpty:
		return "required"
	case CodeStoreUnavailable, CodeDestUnavailable, CodeFrameBusy:
		return "transient"
	case CodeFHIRIncomplete:
		return "incomplete"
	case CodeBacklog:
		return "throttled"
	case CodeNotFound:
		return "not-found"
	case CodeUnauthorized:
		return "security"
	case CodeDuplicate:
		return "duplicate"
	default:
		return "exception"
	}
}
