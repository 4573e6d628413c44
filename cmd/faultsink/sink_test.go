package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/mllp"
)

func msg(ctrl string) []byte {
	return []byte("MSH|^~\\&|PAS|RX1|SINK|RX1|20261123093000||ADT^A01|" + ctrl + "|P|2.4\rPID|1||9990000018^^^NHS^NH\r")
}

func startSink(t *testing.T) (*Sink, string, *httptest.Server) {
	t.Helper()
	s := NewSink()
	ms := &mllp.Server{Addr: "127.0.0.1:0", Handler: s, IdleTimeout: -1}
	if err := ms.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = ms.Serve(context.Background()) }()
	t.Cleanup(func() { _ = ms.Shutdown(context.Background()) })
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return s, ms.ListenAddr().String(), hs
}

func delivered(s *Sink) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.deliveries)
}

func setMode(t *testing.T, hs *httptest.Server, m string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, hs.URL+"/mode", strings.NewReader(m))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT /mode %s: %d", m, resp.StatusCode)
	}
}

func TestSinkMLLPModes(t *testing.T) {
	s, addr, hs := startSink(t)
	for _, tc := range []struct {
		mode    string
		ctrl    string
		wantAck string // MSA-1, "" for no answer
		wantMSA string
		stored  bool
	}{
		{`{"mllp":"ok","http":"ok"}`, "C1", "AA", "C1", true},
		{`{"mllp":"ae","http":"ok"}`, "C2", "AE", "C2", false},
		{`{"mllp":"wrong-msa","http":"ok"}`, "C3", "AA", "WRONGC3", false},
		{`{"mllp":"refuse","http":"ok"}`, "C4", "", "", false},
		{`{"mllp":"ok","http":"ok","poison_prefix":"BAD"}`, "BAD5", "AE", "BAD5", false},
		{`{"mllp":"late","http":"ok","late_delay":"50ms"}`, "C6", "AA", "C6", false},
	} {
		t.Run(tc.ctrl, func(t *testing.T) {
			setMode(t, hs, tc.mode)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			c, err := mllp.Dial(ctx, addr, nil, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			before := delivered(s)
			reply, err := c.Send(ctx, msg(tc.ctrl))
			if tc.wantAck == "" {
				if err == nil {
					t.Fatalf("got a reply %q, want the connection closed", reply)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ack, err := hl7v2.Parse(reply)
			if err != nil {
				t.Fatal(err)
			}
			msa := ack.Segment("MSA")
			if got := msa.Component(1, 1, 1, 1); got != tc.wantAck {
				t.Errorf("MSA-1 = %s, want %s", got, tc.wantAck)
			}
			if got := msa.Component(2, 1, 1, 1); got != tc.wantMSA {
				t.Errorf("MSA-2 = %s, want %s", got, tc.wantMSA)
			}
			if stored := delivered(s) > before; stored != tc.stored {
				t.Errorf("recorded as delivered = %v, want %v", stored, tc.stored)
			}
		})
	}
}

func TestSinkHTTP(t *testing.T) {
	_, _, hs := startSink(t)
	post := func(key string) int {
		req, _ := http.NewRequest(http.MethodPost, hs.URL+"/fhir", bytes.NewReader([]byte(`{"resourceType":"Bundle"}`)))
		req.Header.Set("X-Request-Id", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	search := func() (int, string) {
		resp, err := http.Post(hs.URL+"/fhir/Patient/_search", "application/x-www-form-urlencoded", strings.NewReader("identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number|9990000018&_count=2"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b struct{ ResourceType, Type string }
		_ = json.NewDecoder(resp.Body).Decode(&b)
		return resp.StatusCode, b.Type
	}
	if got := post("K1"); got != 200 {
		t.Errorf("ok mode: %d", got)
	}
	if code, typ := search(); code != 200 || typ != "searchset" {
		t.Errorf("search: %d %q, want 200 searchset", code, typ)
	}
	setMode(t, hs, `{"mllp":"ok","http":"503"}`)
	if got := post("K2"); got != 503 {
		t.Errorf("503 mode: %d", got)
	}
	if code, _ := search(); code != 503 {
		t.Errorf("search in 503 mode: %d", code)
	}
	setMode(t, hs, `{"mllp":"ok","http":"ok","poison_prefix":"P"}`)
	if got := post("P3"); got != 400 {
		t.Errorf("poison: %d", got)
	}
	resp, err := http.Get(hs.URL + "/deliveries")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ds []Delivery
	if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Key != "K1" || ds[0].Protocol != "http" {
		t.Errorf("deliveries = %+v, want K1 only", ds)
	}
	req, _ := http.NewRequest(http.MethodPut, hs.URL+"/mode", strings.NewReader(`{"mllp":"sideways","http":"ok"}`))
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 400 {
		t.Errorf("bad mode accepted: %d", r2.StatusCode)
	}
}

func TestSinkListen(t *testing.T) {
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	httpAddr := free()
	go func() { done <- NewSink().listen(ctx, free(), httpAddr) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/mode")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sink did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("listen: %v", err)
	}
}
