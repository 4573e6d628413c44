package engine

import "net/http"

// Admin exposes the admin wrapper to the external tests, which register
// stand-in handlers under endpoint names served elsewhere.
func (e *Engine) Admin(name string, h http.HandlerFunc) http.Handler { return e.admin(name, h) }

// HoldBulkReads takes every admin read of whole streams' slot, as that
// many long reads in progress would, until release is called.
func (e *Engine) HoldBulkReads() (release func()) {
	for range cap(e.bulkReads) {
		e.bulkReads <- struct{}{}
	}
	return func() {
		for range cap(e.bulkReads) {
			<-e.bulkReads
		}
	}
}

// HoldPatientServiceRead takes the slots a patient service's read of
// whole streams in progress holds, until release is called.
func (e *Engine) HoldPatientServiceRead() (release func()) {
	e.patientServiceReads <- struct{}{}
	e.bulkReads <- struct{}{}
	return func() {
		<-e.bulkReads
		<-e.patientServiceReads
	}
}
