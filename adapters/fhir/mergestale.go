package fhir

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/nhs"
)

// A merging destination records, on each Patient and Encounter it writes,
// when Junction received the message that last wrote each of its
// top-level elements (and each extension, by url): nhs.JunctionExtReceived
// on meta, one extension per receipt time, whose sub-extensions are the
// time ("at", valueInstant) and the elements it wrote ("element",
// valueString: "address", "deceased", "extension:<url>"). An element a
// message carries or deletes is left as the server has it when a message
// received later wrote it (a dead letter replayed after newer messages,
// or a message late on another route); the message's other elements are
// merged as usual. So an old message neither undoes a newer one's values
// nor loses its own changes to what nothing newer touched.

// clockAllowance is how much later than a message's receipt an element's
// stamp may be before the message counts as older for it: Junction
// processes sharing a store stamp receipts by their own clocks, and one
// patient's messages are kept in order anyway; replays come much later.
const clockAllowance = 5 * time.Second

// elementStamps is when each element was last written (see above).
type elementStamps map[string]time.Time

// stampsOf returns the element stamps of the server's copy res (none when
// it has no readable stamp).
func stampsOf(res []byte) elementStamps {
	var r struct {
		Meta struct {
			Extension []struct {
				URL       string `json:"url"`
				Extension []struct {
					URL          string `json:"url"`
					ValueInstant string `json:"valueInstant"`
					ValueString  string `json:"valueString"`
				} `json:"extension"`
			} `json:"extension"`
		} `json:"meta"`
	}
	s := elementStamps{}
	if json.Unmarshal(res, &r) != nil {
		return s
	}
	for _, x := range r.Meta.Extension {
		if x.URL != nhs.JunctionExtReceived {
			continue
		}
		var at time.Time
		var names []string
		for _, sub := range x.Extension {
			switch sub.URL {
			case "at":
				at, _ = time.Parse(time.RFC3339Nano, sub.ValueInstant)
			case "element":
				names = append(names, sub.ValueString)
			}
		}
		if at.IsZero() {
			continue
		}
		for _, n := range names {
			if at.After(s[n]) {
				s[n] = at
			}
		}
	}
	return s
}

// newer reports whether element k was written from a message received
// later than received (beyond the clock allowance).
func (s elementStamps) newer(k string, received time.Time) bool {
	at, ok := s[k]
	return ok && !received.IsZero() && at.Sub(received) > clockAllowance
}

// mark records that the elements keys were written from a message
// received at received, keeping a later stamp an element already has.
func (s elementStamps) mark(keys []string, received time.Time) {
	for _, k := range keys {
		if received.After(s[k]) {
			s[k] = received
		}
	}
}

// elementKey returns the stamp key of the top-level member key of a
// resource, whose choice elements choice maps to their names: the element
// ("deceased" for deceasedBoolean, "birthDate" for _birthDate), and
// false for members not stamped (resourceType, id, meta, identifier,
// whose identifiers are joined whatever the message's age, and
// extension, stamped per url).
func elementKey(key string, choice map[string]string) (string, bool) {
	k := strings.TrimPrefix(key, "_")
	switch k {
	case "resourceType", "id", "meta", "identifier", "extension":
		return "", false
	}
	if base, ok := choice[k]; ok {
		return base, true
	}
	return k, true
}

// extensionKey is the stamp key of a top-level extension.
func extensionKey(url string) string { return "extension:" + url }

// extensionURL returns the url of the extension raw.
func extensionURL(raw json.RawMessage) string {
	var ext struct {
		URL string `json:"url"`
	}
	_ = json.Unmarshal(raw, &ext)
	return ext.URL
}

// written returns the stamp keys of what the entry res (without its
// Junction marks) and its clearing cl write: the elements and extensions
// it carries or deletes, but not those it only infers (cl.derived).
func written(res []byte, cl clearing, choice map[string]string) ([]string, error) {
	ms, err := members(res)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, m := range ms {
		if m.key == "extension" {
			var exts []json.RawMessage
			if err := json.Unmarshal(m.value, &exts); err != nil {
				return nil, errors.New("extension is not an array")
			}
			for _, x := range exts {
				keys = append(keys, extensionKey(extensionURL(x)))
			}
			continue
		}
		if k, ok := elementKey(m.key, choice); ok && !slices.Contains(cl.derived, k) {
			keys = append(keys, k)
		}
	}
	for _, e := range cl.elements {
		parent, _, _ := strings.Cut(e, ".")
		keys = append(keys, parent)
	}
	for _, u := range cl.extensions {
		keys = append(keys, extensionKey(u))
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// withoutNewer returns the entry res and its clearing cl without what a
// message received at received may not write because a later one wrote
// it (s), and how many elements and extensions it left out.
func withoutNewer(res []byte, cl clearing, choice map[string]string, s elementStamps, received time.Time) ([]byte, clearing, int, error) {
	if received.IsZero() || len(s) == 0 {
		return res, cl, 0, nil
	}
	ms, err := members(res)
	if err != nil {
		return nil, cl, 0, err
	}
	dropped := 0
	kept := ms[:0:0]
	for _, m := range ms {
		if m.key == "extension" {
			var exts []json.RawMessage
			if err := json.Unmarshal(m.value, &exts); err != nil {
				return nil, cl, 0, errors.New("extension is not an array")
			}
			left := exts[:0:0]
			for _, x := range exts {
				if s.newer(extensionKey(extensionURL(x)), received) {
					dropped++
					continue
				}
				left = append(left, x)
			}
			if len(left) > 0 {
				v, _ := json.Marshal(left)
				kept = append(kept, member{m.key, v})
			}
			continue
		}
		if k, ok := elementKey(m.key, choice); ok && s.newer(k, received) {
			if !strings.HasPrefix(m.key, "_") {
				dropped++
			}
			continue
		}
		kept = append(kept, m)
	}
	out := clearing{derived: cl.derived}
	for _, e := range cl.elements {
		parent, _, _ := strings.Cut(e, ".")
		if s.newer(parent, received) {
			dropped++
			continue
		}
		out.elements = append(out.elements, e)
	}
	for _, u := range cl.extensions {
		if s.newer(extensionKey(u), received) {
			dropped++
			continue
		}
		out.extensions = append(out.extensions, u)
	}
	return writeObject(kept), out, dropped, nil
}

// withStamps returns the resource res with its element stamps set to s
// (nhs.JunctionExtReceived on meta, replacing any it had).
func withStamps(res []byte, s elementStamps) ([]byte, error) {
	ms, err := members(res)
	if err != nil {
		return nil, err
	}
	type sub struct {
		URL          string `json:"url"`
		ValueInstant string `json:"valueInstant,omitempty"`
		ValueString  string `json:"valueString,omitempty"`
	}
	type ext struct {
		URL       string `json:"url"`
		Extension []sub  `json:"extension"`
	}
	byTime := map[time.Time][]string{}
	for k, at := range s {
		byTime[at] = append(byTime[at], k)
	}
	times := make([]time.Time, 0, len(byTime))
	for at := range byTime {
		times = append(times, at)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return b.Compare(a) })
	var stamps []json.RawMessage
	for _, at := range times {
		names := byTime[at]
		slices.Sort(names)
		x := ext{URL: nhs.JunctionExtReceived, Extension: []sub{{URL: "at", ValueInstant: at.UTC().Format(time.RFC3339Nano)}}}
		for _, n := range names {
			x.Extension = append(x.Extension, sub{URL: "element", ValueString: n})
		}
		b, _ := json.Marshal(x)
		stamps = append(stamps, b)
	}
	meta := valueOf(ms, "meta")
	var mm []member
	if meta != nil {
		if mm, err = members(meta); err != nil {
			return nil, errors.New("meta is not an object")
		}
	}
	var exts []json.RawMessage
	if x := valueOf(mm, "extension"); x != nil {
		if err := json.Unmarshal(x, &exts); err != nil {
			return nil, errors.New("meta.extension is not an array")
		}
	}
	kept := exts[:0:0]
	for _, x := range exts {
		if extensionURL(x) != nhs.JunctionExtReceived {
			kept = append(kept, x)
		}
	}
	kept = append(kept, stamps...)
	if len(kept) == 0 {
		return res, nil
	}
	extv, _ := json.Marshal(kept)
	mm = setMember(mm, "extension", extv)
	if meta == nil {
		// After resourceType and id, where a reader looks for it.
		at := 0
		for at < len(ms) && (ms[at].key == "resourceType" || ms[at].key == "id") {
			at++
		}
		ms = append(ms[:at], append([]member{{"meta", writeObject(mm)}}, ms[at:]...)...)
		return writeObject(ms), nil
	}
	return writeObject(setMember(ms, "meta", writeObject(mm))), nil
}

// setMember returns ms with key's value v, replaced in place or added at
// the end.
func setMember(ms []member, key string, v json.RawMessage) []member {
	for i := range ms {
		if ms[i].key == key {
			ms[i].value = v
			return ms
		}
	}
	return append(ms, member{key, v})
}
