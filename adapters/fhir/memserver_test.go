package fhir

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// memServer is an in-memory FHIR R4 server for tests: identifier search
// (POST [base]/Type/_search, identifier=system|value in the form, with
// _include=DiagnosticReport:result), reads (GET [base]/Type/id) and
// transaction Bundles
// (POST [base]) with PUT by id (honouring If-Match), conditional PUT by
// identifier and conditional create (ifNoneExist), applied atomically,
// with versions and references to entries' fullUrls resolved, and failed
// when two entries resolve to one resource, as the FHIR RESTful API
// requires. Only what the fhir destination uses.
type memServer struct {
	*httptest.Server
	mu  sync.Mutex
	res map[string]map[string]map[string]any // type, id, resource
	ids int
	// searches and posts count the requests of each kind.
	searches, posts int
	// afterSearch, when set, runs (holding no lock) after each search of
	// a type has read its result and before it answers: to change a
	// resource between a read and a write.
	afterSearch func(typ string)
	// noInclude makes searches ignore _include, as some servers do.
	noInclude bool
	// reads counts GET [base]/Type/id.
	reads int
}

func newMemServer(t testing.TB) *memServer {
	t.Helper()
	s := &memServer{res: map[string]map[string]map[string]any{}}
	s.Server = httptest.NewServer(http.StripPrefix("/fhir", http.HandlerFunc(s.serve)))
	t.Cleanup(s.Close)
	return s
}

// put stores r as type/id with the next version, as another system would.
func (s *memServer) put(typ, id string, r map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.store(s.res, typ, id, r)
}

// all returns a copy of every resource of typ.
func (s *memServer) all(typ string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, r := range s.res[typ] {
		out = append(out, clone(r))
	}
	return out
}

func (s *memServer) store(into map[string]map[string]map[string]any, typ, id string, r map[string]any) {
	v := 1
	if old, ok := into[typ][id]; ok {
		v, _ = strconv.Atoi(old["meta"].(map[string]any)["versionId"].(string))
		v++
	}
	r = clone(r)
	r["id"] = id
	meta, _ := r["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["versionId"] = strconv.Itoa(v)
	r["meta"] = meta
	if into[typ] == nil {
		into[typ] = map[string]map[string]any{}
	}
	into[typ][id] = r
}

func clone(r map[string]any) map[string]any {
	b, _ := json.Marshal(r)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// match returns the ids of the resources of typ whose identifiers include
// the search value "system|value".
func match(in map[string]map[string]map[string]any, typ, param string) []string {
	sys, val, _ := strings.Cut(param, "|")
	var ids []string
	for id, r := range in[typ] {
		list, _ := r["identifier"].([]any)
		for _, x := range list {
			m, _ := x.(map[string]any)
			if m["system"] == sys && m["value"] == val {
				ids = append(ids, id)
				break
			}
		}
	}
	return ids
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func outcome(diag string) map[string]any {
	return map[string]any{"resourceType": "OperationOutcome", "issue": []any{map[string]any{"severity": "error", "code": "processing", "diagnostics": diag}}}
}

func (s *memServer) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/_search") && strings.Count(r.URL.Path, "/") == 2:
		typ := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/_search")
		if err := r.ParseForm(); err != nil || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			writeJSON(w, http.StatusBadRequest, outcome("bad search form"))
			return
		}
		s.mu.Lock()
		s.searches++
		set := map[string]any{"resourceType": "Bundle", "type": "searchset"}
		var entries []any
		for _, id := range match(s.res, typ, r.PostForm.Get("identifier")) {
			entries = append(entries, map[string]any{"resource": clone(s.res[typ][id]), "search": map[string]any{"mode": "match"}})
			if r.PostForm.Get("_include") != "DiagnosticReport:result" || typ != "DiagnosticReport" || s.noInclude {
				continue
			}
			results, _ := s.res[typ][id]["result"].([]any)
			for _, x := range results {
				ref, _ := x.(map[string]any)["reference"].(string)
				if rt, rid, ok := strings.Cut(ref, "/"); ok && s.res[rt][rid] != nil {
					entries = append(entries, map[string]any{"resource": clone(s.res[rt][rid]), "search": map[string]any{"mode": "include"}})
				}
			}
		}
		set["total"] = len(entries)
		set["entry"] = entries
		after := s.afterSearch
		s.mu.Unlock()
		if after != nil {
			after(typ)
		}
		writeJSON(w, http.StatusOK, set)
	case r.Method == http.MethodPost && (r.URL.Path == "" || r.URL.Path == "/"):
		body, _ := io.ReadAll(r.Body)
		var tx struct {
			Type  string `json:"type"`
			Entry []struct {
				FullURL  string         `json:"fullUrl"`
				Resource map[string]any `json:"resource"`
				Request  struct {
					Method, URL, IfMatch, IfNoneExist string
				} `json:"request"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(body, &tx); err != nil || tx.Type != "transaction" {
			writeJSON(w, http.StatusBadRequest, outcome("not a transaction Bundle"))
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.posts++
		work := map[string]map[string]map[string]any{}
		for typ, m := range s.res {
			work[typ] = maps.Clone(m)
		}
		// Resolve every entry's target first, so references to any
		// entry's fullUrl can be rewritten.
		targets := make([]string, len(tx.Entry))
		write := make([]bool, len(tx.Entry))
		ref := map[string]string{}
		for i, e := range tx.Entry {
			typ, _ := e.Resource["resourceType"].(string)
			req := e.Request
			var id string
			switch {
			case req.Method == "PUT" && strings.HasPrefix(req.URL, typ+"?"):
				q, err := url.ParseQuery(strings.TrimPrefix(req.URL, typ+"?"))
				if err != nil {
					writeJSON(w, http.StatusBadRequest, outcome("bad query"))
					return
				}
				ids := match(work, typ, q.Get("identifier"))
				switch len(ids) {
				case 0:
					s.ids++
					id = fmt.Sprintf("s%d", s.ids)
				case 1:
					id = ids[0]
				default:
					writeJSON(w, http.StatusPreconditionFailed, outcome("multiple matches for a conditional update"))
					return
				}
				write[i] = true
			case req.Method == "PUT" && strings.HasPrefix(req.URL, typ+"/"):
				id = strings.TrimPrefix(req.URL, typ+"/")
				if req.IfMatch != "" {
					cur, ok := work[typ][id]
					if !ok || `W/"`+cur["meta"].(map[string]any)["versionId"].(string)+`"` != req.IfMatch {
						writeJSON(w, http.StatusPreconditionFailed, outcome("version conflict"))
						return
					}
				}
				write[i] = true
			case req.Method == "POST" && req.IfNoneExist != "":
				q, _ := url.ParseQuery(req.IfNoneExist)
				ids := match(work, typ, q.Get("identifier"))
				if len(ids) == 1 {
					id = ids[0]
				} else {
					s.ids++
					id = fmt.Sprintf("s%d", s.ids)
					write[i] = true
				}
			default:
				writeJSON(w, http.StatusBadRequest, outcome("unsupported entry request"))
				return
			}
			targets[i] = typ + "/" + id
			for j := range i {
				if targets[j] == targets[i] {
					writeJSON(w, http.StatusBadRequest, outcome("two entries for one resource"))
					return
				}
			}
			if e.FullURL != "" {
				ref[e.FullURL] = targets[i]
			}
		}
		resp := map[string]any{"resourceType": "Bundle", "type": "transaction-response"}
		var out []any
		for i, e := range tx.Entry {
			typ, id, _ := strings.Cut(targets[i], "/")
			if write[i] {
				resolve(e.Resource, ref)
				s.store(work, typ, id, e.Resource)
			}
			out = append(out, map[string]any{"response": map[string]any{"status": "200 OK", "location": targets[i]}})
		}
		resp["entry"] = out
		s.res = work
		writeJSON(w, http.StatusOK, resp)
	case r.Method == http.MethodGet && strings.Count(r.URL.Path, "/") == 2:
		typ, id, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		s.mu.Lock()
		s.reads++
		res, ok := s.res[typ][id]
		if ok {
			res = clone(res)
		}
		s.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusNotFound, outcome("no such resource"))
			return
		}
		writeJSON(w, http.StatusOK, res)
	default:
		writeJSON(w, http.StatusNotFound, outcome("not supported by this test server"))
	}
}

// resolve rewrites references to transaction entries' fullUrls.
func resolve(v any, ref map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if s, ok := c.(string); ok && k == "reference" {
				if to, ok := ref[s]; ok {
					x[k] = to
				}
				continue
			}
			resolve(c, ref)
		}
	case []any:
		for _, c := range x {
			resolve(c, ref)
		}
	}
}
