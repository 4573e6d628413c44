package fhir

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/junction-fhir/junction/pkg/nhs"
)

// An Encounter's participants and locations are lists HL7 v2 describes a
// part at a time, so replacing the server's list with a message's loses
// what the message did not repeat: an A02 that names only the attending
// doctor would drop the admitting one, and every transfer would drop the
// wards the patient stayed on before. These two merge them instead.

// participantUnion returns the participants of in followed by those of
// have whose type codings in carries none of and cleared (the
// v3-ParticipationType codes a message deleted: "ATND" for a PV1-7 sent
// as "") names none of: v2 sends the attending, referring, consulting and
// admitting doctors in four fields (PV1-7, 8, 9 and 17), each of which,
// left empty, means no change, so a message naming only the attending
// doctor replaces the server's attending doctor and keeps its admitting
// one. A server participant with no type (another system's) stays. in
// may be nil (the message names no doctor); the result is nil when no
// participant is left.
func participantUnion(in, have json.RawMessage, cleared []string) (json.RawMessage, error) {
	var a, b []json.RawMessage
	if in != nil {
		if err := json.Unmarshal(in, &a); err != nil {
			return nil, errors.New("the entry: participant is not an array")
		}
	}
	if have != nil {
		if err := json.Unmarshal(have, &b); err != nil {
			return nil, errors.New("the server's copy: participant is not an array")
		}
	}
	sent := map[string]bool{}
	for _, p := range a {
		for _, k := range participantTypes(p) {
			sent[k] = true
		}
	}
	for _, code := range cleared {
		sent[systemParticipationType+"|"+code] = true
	}
	out := a
	for _, p := range b {
		if !slices.ContainsFunc(participantTypes(p), func(k string) bool { return sent[k] }) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return json.Marshal(out)
}

// systemParticipationType is the code system of the participant types
// the PAS translator sends.
const systemParticipationType = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

// clearedParticipants returns the participant type codes c deletes
// ("participant.ATND"); a mark of the whole element (an earlier
// translation's, for all four doctor fields sent as "") deletes the four
// the PAS translator sends, not other systems' participants.
func (c clearing) clearedParticipants() []string {
	codes := c.within("participant")
	if c.clears("participant", "") {
		codes = append(codes, "ATND", "REF", "CON", "ADM")
	}
	return codes
}

// participantTypes returns the system|code of each coding of an
// Encounter.participant's type.
func participantTypes(raw json.RawMessage) []string {
	var p struct {
		Type []struct {
			Coding []struct{ System, Code string }
		}
	}
	_ = json.Unmarshal(raw, &p)
	var out []string
	for _, t := range p.Type {
		for _, c := range t.Coding {
			if c.Code != "" {
				out = append(out, c.System+"|"+c.Code)
			}
		}
	}
	return out
}

// encounterLocation is what locationHistory reads of an
// Encounter.location entry.
type encounterLocation struct {
	Location struct {
		Display string `json:"display"`
	} `json:"location"`
	Status string `json:"status"`
	Period struct {
		Start string `json:"start"`
	} `json:"period"`
	Extension []struct {
		URL          string `json:"url"`
		ValueBoolean bool   `json:"valueBoolean"`
	} `json:"extension"`
}

// cancelled reports whether the entry is a transfer's that was cancelled
// (nhs.JunctionExtEncounterLocationCancelled).
func (l encounterLocation) cancelled() bool {
	for _, x := range l.Extension {
		if x.URL == nhs.JunctionExtEncounterLocationCancelled && x.ValueBoolean {
			return true
		}
	}
	return false
}

// current reports whether the entry says where the patient is or will be
// (active, planned, reserved), not where the patient was.
func (l encounterLocation) current() bool {
	return l.Status != "completed" && !l.cancelled()
}

// locationHistory returns the Encounter.location list that results from
// the locations in a message carries laid over the server's have. A
// message's locations say where the patient is now (PV1-3) and, for a
// transfer, where the patient came from (PV1-6); the server's list holds
// the stay so far. The same location is known by its reference's
// display, since a message's references are to entries of its own
// transaction and the server's to what those became. So:
//
//   - each of in's entries is kept, its period joined with that of the
//     server's entry for the same location (the current one if there is
//     one, else the first), so an A03's ward keeps the start an A02 gave
//     it; an entry that is current loses the joined period's end (an
//     A12 puts the patient back where the cancelled move ended);
//   - an entry of a cancelled transfer (JunctionExtEncounterLocationCancelled)
//     is dropped, with the server's entry for that location: the move
//     did not happen;
//   - the server's other completed entries stay after them, as history;
//   - the server's other current entries go: the message says where the
//     patient is.
func locationHistory(in, have json.RawMessage) (json.RawMessage, error) {
	var a, b []json.RawMessage
	if err := json.Unmarshal(in, &a); err != nil {
		return nil, errors.New("the entry: location is not an array")
	}
	if err := json.Unmarshal(have, &b); err != nil {
		return nil, errors.New("the server's copy: location is not an array")
	}
	theirs := make([]encounterLocation, len(b))
	for i, raw := range b {
		_ = json.Unmarshal(raw, &theirs[i])
	}
	used := make([]bool, len(b))
	// same returns the index of the server's entry for the location
	// display names that no entry of in has taken, the current one first.
	same := func(mine encounterLocation) int {
		display := mine.Location.Display
		if display == "" {
			return -1
		}
		// A current entry that starts at a move (a transfer) begins a new
		// stay: it does not take over a completed stay on that ward.
		newStay := mine.current() && mine.Period.Start != ""
		first := -1
		for i, l := range theirs {
			if used[i] || l.Location.Display != display {
				continue
			}
			if l.current() {
				return i
			}
			if first < 0 && !newStay {
				first = i
			}
		}
		return first
	}
	moved := ""
	out := make([]json.RawMessage, 0, len(a)+len(b))
	for _, raw := range a {
		var mine encounterLocation
		if err := json.Unmarshal(raw, &mine); err != nil {
			return nil, errors.New("the entry: a location is not an object")
		}
		if mine.current() && mine.Period.Start != "" && moved == "" {
			moved = mine.Period.Start
		}
		j := same(mine)
		if j >= 0 {
			used[j] = true
		}
		if mine.cancelled() {
			continue
		}
		if j >= 0 {
			joined, err := joinPeriod(raw, b[j], mine.current())
			if err != nil {
				return nil, err
			}
			raw = joined
		}
		out = append(out, raw)
	}
	for i, raw := range b {
		switch {
		case used[i]:
		case !theirs[i].current():
			out = append(out, raw)
		case moved != "" && theirs[i].Status == "active":
			// The ward a transfer without PV1-6 left: history now.
			ms, err := members(raw)
			if err != nil {
				return nil, errors.New("the server's copy: a location is not an object")
			}
			ms = setMember(ms, "status", json.RawMessage(`"completed"`))
			p := valueOf(ms, "period")
			if p == nil {
				p = json.RawMessage(`{}`)
			}
			end, _ := json.Marshal(map[string]string{"end": moved})
			if p, err = memberUnion(end, p, nil); err != nil {
				return nil, err
			}
			out = append(out, writeObject(setMember(ms, "period", p)))
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return json.Marshal(out)
}

// joinPeriod returns the location entry mine with its period's members
// joined by those of the server's entry theirs that it does not carry,
// without an end when current.
func joinPeriod(mine, theirs json.RawMessage, current bool) (json.RawMessage, error) {
	ms, err := members(mine)
	if err != nil {
		return nil, errors.New("the entry: a location is not an object")
	}
	ts, err := members(theirs)
	if err != nil {
		return nil, errors.New("the server's copy: a location is not an object")
	}
	had := valueOf(ts, "period")
	if had == nil {
		return mine, nil
	}
	var drop []string
	if current {
		drop = []string{"end"}
	}
	p := valueOf(ms, "period")
	if p == nil {
		p = json.RawMessage(`{}`)
	}
	joined, err := memberUnion(p, had, drop)
	if err != nil {
		return nil, err
	}
	if string(joined) == "{}" {
		return mine, nil
	}
	for i := range ms {
		if ms[i].key == "period" {
			ms[i].value = joined
			return writeObject(ms), nil
		}
	}
	return writeObject(append(ms, member{"period", joined})), nil
}
