package hl7v2

import "strings"

// TypeMatches reports whether messageType, a message type with its
// trigger event such as "ORM^O01", is one that pattern names: the same
// type and event, or, when pattern's event is "*" ("ORM^*"), any event
// of the same type.
func TypeMatches(pattern, messageType string) bool {
	if typ, ok := strings.CutSuffix(pattern, "^*"); ok {
		t, ev, found := strings.Cut(messageType, "^")
		return found && ev != "" && t == typ
	}
	return pattern == messageType
}

// ValidTypePattern reports whether p is a message type with its trigger
// event, or with "*" for every event: three upper-case letters or digits
// starting with a letter (HL7 table 0076, with Z for local types), "^",
// then three upper-case letters or digits (table 0003) or "*". "ORM^O01"
// and "SIU^*" are valid; "ORM", "orm^o01" and "*" are not.
func ValidTypePattern(p string) bool {
	typ, ev, ok := strings.Cut(p, "^")
	if !ok || len(typ) != 3 || typ[0] < 'A' || typ[0] > 'Z' || !upperAlnum(typ) {
		return false
	}
	return ev == "*" || len(ev) == 3 && upperAlnum(ev)
}

func upperAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
