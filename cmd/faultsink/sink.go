package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/mllp"
)

// Mode is how the sink answers, set through its control API.
type Mode struct {
	// MLLP is one of "ok" (AA), "refuse" (connections closed at once),
	// "late" (AA after LateDelay), "wrong-msa" (AA naming another
	// message) and "ae" (AE for every message).
	MLLP string `json:"mllp"`
	// HTTP is "ok" (200) or "503".
	HTTP string `json:"http"`
	// PoisonPrefix makes messages whose control id (MLLP) or request id
	// (HTTP) starts with it permanently rejected: AE, or HTTP 400.
	PoisonPrefix string `json:"poison_prefix,omitempty"`
	// LateDelay is the delay of "late" answers.
	LateDelay Duration `json:"late_delay,omitempty"`
}

// Duration is a time.Duration written as a string such as "10s".
type Duration time.Duration

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Delivery is one message the sink accepted (answered positively).
type Delivery struct {
	// Key is the MSH-10 of an MLLP message, or the X-Request-Id (else
	// Idempotency-Key) of an HTTP one.
	Key      string    `json:"key"`
	Protocol string    `json:"protocol"`
	At       time.Time `json:"at"`
}

// Rejection is one message the sink answered negatively or not at all.
type Rejection struct {
	Key    string `json:"key"`
	Answer string `json:"answer"`
}

// Sink records deliveries and answers as its mode says.
type Sink struct {
	mu         sync.Mutex
	mode       Mode
	deliveries []Delivery
	rejections []Rejection
	bad        int
}

// NewSink returns a sink answering everything positively.
func NewSink() *Sink {
	return &Sink{mode: Mode{MLLP: "ok", HTTP: "ok", LateDelay: Duration(10 * time.Second)}}
}

func (s *Sink) current() Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

func (s *Sink) record(key, protocol string) {
	s.mu.Lock()
	s.deliveries = append(s.deliveries, Delivery{Key: key, Protocol: protocol, At: time.Now().UTC()})
	s.mu.Unlock()
}

func (s *Sink) reject(key, answer string) {
	s.mu.Lock()
	s.rejections = append(s.rejections, Rejection{Key: key, Answer: answer})
	s.mu.Unlock()
}

// ServeMLLP answers one HL7 v2 message.
func (s *Sink) ServeMLLP(ctx context.Context, _ *mllp.ConnInfo, payload []byte) ([]byte, bool) {
	mode := s.current()
	m, err := hl7v2.Parse(payload)
	if err != nil || m.ControlID() == "" {
		s.mu.Lock()
		s.bad++
		s.mu.Unlock()
		return hl7v2.BuildRawAck(hl7v2.AckOptions{Code: hl7v2.AckAR, Text: "sink: not an HL7 v2 message with MSH-10", App: "SINK"}), false
	}
	ctrl := m.ControlID()
	switch {
	case mode.MLLP == "refuse":
		s.reject(ctrl, "closed")
		return nil, true
	case mode.MLLP == "ae" || mode.PoisonPrefix != "" && strings.HasPrefix(ctrl, mode.PoisonPrefix):
		s.reject(ctrl, "AE")
		return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAE, App: "SINK", Text: "sink: rejected"}), false
	case mode.MLLP == "wrong-msa":
		s.reject(ctrl, "wrong MSA-2")
		other := strings.Replace(string(payload), "|"+ctrl+"|", "|WRONG"+ctrl+"|", 1)
		om, err := hl7v2.Parse([]byte(other))
		if err != nil {
			return nil, true
		}
		return hl7v2.BuildAck(om, hl7v2.AckOptions{Code: hl7v2.AckAA, App: "SINK"}), false
	case mode.MLLP == "late":
		s.reject(ctrl, "late AA")
		select {
		case <-time.After(time.Duration(mode.LateDelay)):
		case <-ctx.Done():
			return nil, true
		}
		return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAA, App: "SINK"}), false
	}
	s.record(ctrl, "mllp")
	return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAA, App: "SINK", Facility: "RX1"}), false
}

// ServeHTTP serves the FHIR endpoint (POST /fhir, and POST
// /fhir/{type}/_search, which finds nothing) and the control API:
// GET /deliveries, GET /rejections, GET and PUT /mode.
func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/fhir/") && strings.HasSuffix(r.URL.Path, "/_search"):
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<16))
		s.serveSearch(w)
	case r.Method == http.MethodPost && (r.URL.Path == "/fhir" || strings.HasPrefix(r.URL.Path, "/fhir/")):
		s.serveFHIR(w, r)
	case r.Method == http.MethodGet && r.URL.Path == "/deliveries":
		s.mu.Lock()
		out := append([]Delivery{}, s.deliveries...)
		s.mu.Unlock()
		writeJSON(w, out)
	case r.Method == http.MethodGet && r.URL.Path == "/rejections":
		s.mu.Lock()
		out := append([]Rejection{}, s.rejections...)
		s.mu.Unlock()
		writeJSON(w, out)
	case r.Method == http.MethodGet && r.URL.Path == "/mode":
		writeJSON(w, s.current())
	case r.Method == http.MethodPut && r.URL.Path == "/mode":
		var m Mode
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			http.Error(w, "bad mode: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := m.validate(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.mode = m
		s.mu.Unlock()
		writeJSON(w, m)
	default:
		http.NotFound(w, r)
	}
}

func (m *Mode) validate() error {
	switch m.MLLP {
	case "ok", "refuse", "late", "wrong-msa", "ae":
	default:
		return errors.New("mllp: want ok, refuse, late, wrong-msa or ae")
	}
	switch m.HTTP {
	case "ok", "503":
	default:
		return errors.New("http: want ok or 503")
	}
	if m.LateDelay <= 0 {
		m.LateDelay = Duration(10 * time.Second)
	}
	return nil
}

func (s *Sink) serveFHIR(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
	key := r.Header.Get("X-Request-Id")
	if key == "" {
		key = r.Header.Get("Idempotency-Key")
	}
	mode := s.current()
	w.Header().Set("Content-Type", "application/fhir+json")
	switch {
	case mode.HTTP == "503":
		s.reject(key, "503")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"sink unavailable"}]}`)
		return
	case mode.PoisonPrefix != "" && strings.HasPrefix(key, mode.PoisonPrefix):
		s.reject(key, "400")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"sink rejected"}]}`)
		return
	}
	s.record(key, "http")
	_, _ = io.WriteString(w, `{"resourceType":"Bundle","type":"transaction-response"}`)
}

// serveSearch answers a search (which a fhir destination makes before
// merging) with an empty searchset, or 503 when the sink is in that mode.
// Neither is recorded: only deliveries and their refusals are.
func (s *Sink) serveSearch(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/fhir+json")
	if s.current().HTTP == "503" {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"sink unavailable"}]}`)
		return
	}
	_, _ = io.WriteString(w, `{"resourceType":"Bundle","type":"searchset","total":0}`)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// listen starts the MLLP and HTTP listeners and serves until ctx ends.
func (s *Sink) listen(ctx context.Context, mllpAddr, httpAddr string) error {
	ms := &mllp.Server{Addr: mllpAddr, Handler: s, IdleTimeout: -1, MaxConns: 1024}
	if err := ms.Listen(); err != nil {
		return fmt.Errorf("mllp listener: %w", err)
	}
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- ms.Serve(ctx) }()
	go func() { errc <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	_ = ms.Shutdown(sctx)
	return nil
}
