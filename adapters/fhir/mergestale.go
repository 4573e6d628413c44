package fhir

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/junction-fhir/junction/pkg/nhs"
)

// clockAllowance is how much later than a message's receipt the server's
// copy may say it was written before the message counts as older: Junction
// processes sharing a store stamp receipts by their own clocks, and one
// patient's messages are kept in order anyway; replays come much later.
const clockAllowance = 5 * time.Second

// receivedOf returns the time the server's copy res says Junction received
// the message it was last written from (nhs.JunctionExtReceived on its
// meta), or zero.
func receivedOf(res []byte) time.Time {
	var r struct {
		Meta struct {
			Extension []struct {
				URL          string `json:"url"`
				ValueInstant string `json:"valueInstant"`
			} `json:"extension"`
		} `json:"meta"`
	}
	if json.Unmarshal(res, &r) != nil {
		return time.Time{}
	}
	for _, x := range r.Meta.Extension {
		if x.URL == nhs.JunctionExtReceived {
			t, _ := time.Parse(time.RFC3339Nano, x.ValueInstant)
			return t
		}
	}
	return time.Time{}
}

// olderThan reports whether a message received at received is older than
// what the server's copy have was last written from.
func olderThan(received time.Time, have []byte) bool {
	if received.IsZero() {
		return false
	}
	newest := receivedOf(have)
	return !newest.IsZero() && newest.Sub(received) > clockAllowance
}

// stampReceived returns the resource res with nhs.JunctionExtReceived on
// its meta set to at, replacing any it had.
func stampReceived(res []byte, at time.Time) ([]byte, error) {
	ms, err := members(res)
	if err != nil {
		return nil, err
	}
	stamp, _ := json.Marshal(struct {
		URL          string `json:"url"`
		ValueInstant string `json:"valueInstant"`
	}{nhs.JunctionExtReceived, at.UTC().Format(time.RFC3339Nano)})
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
		var ext struct {
			URL string `json:"url"`
		}
		if json.Unmarshal(x, &ext) != nil || ext.URL != nhs.JunctionExtReceived {
			kept = append(kept, x)
		}
	}
	extv, _ := json.Marshal(append(kept, stamp))
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

// keepServers returns the server's copy have, to be written back in place
// of an entry from an older message: its values stand, and only the
// identifiers the entry names that the server's lacks are added (a local
// identifier is the patient's whatever the message's age; the server's
// NHS number stays). It returns have's id and version as mergeResource
// does. The entry still goes in the transaction, so that the message's
// other entries referring to it find the server's resource.
func keepServers(incoming, have []byte) (kept []byte, id, version string, err error) {
	old, err := members(have)
	if err != nil {
		return nil, "", "", errors.New("the server's copy: " + err.Error())
	}
	in, err := members(incoming)
	if err != nil {
		return nil, "", "", errors.New("the entry: " + err.Error())
	}
	if id, version, err = serverHead(have); err != nil {
		return nil, "", "", err
	}
	if ids := valueOf(in, "identifier"); ids != nil {
		have := valueOf(old, "identifier")
		joined := ids
		if have != nil {
			if joined, err = identifierUnion(have, ids); err != nil {
				return nil, "", "", err
			}
		}
		old = setMember(old, "identifier", joined)
	}
	return writeObject(old), id, version, nil
}
