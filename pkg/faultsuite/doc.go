// Package faultsuite holds Junction's fault-injection tests on a real
// NATS JetStream cluster in containers: three nats-server nodes with R3
// streams on a private Docker network, one or two Junction replicas, and
// a recording destination (cmd/faultsink), all in one image built FROM
// scratch, in the test, from static binaries of this module (nats-server
// from the version go.mod pins). Senders in the test process send over
// MLLP and resend what is not acknowledged; faults are SIGKILLs of
// Junction replicas and NATS nodes, network cuts and destination
// failures; the checker (pkg/durability) reports acknowledged messages
// lost, delivered twice, out of per-patient order, and `junction audit
// reconcile` lists messages without a terminal state.
//
// The tests skip when no Docker engine answers, unless
// JUNCTION_REQUIRE_DOCKER=1 (which CI sets); they are skipped with -short.
// JUNCTION_FAULTS_MESSAGES scales the message counts.
package faultsuite
