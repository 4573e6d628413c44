package nhs

import (
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Normalize removes the spaces and hyphens people write inside NHS numbers
// ("999 000 0018" and "999-000-0018" become "9990000018"), and any other
// Unicode white space (a non-breaking space), dash or invisible joiner (a
// zero-width space, a soft hyphen, a byte order mark), so that no spelling
// of a number a receiver might read as the patient's escapes matching
// here. Direction marks and overrides stay, so a number displayed in
// another order than it is written is refused; so do bytes that are not
// UTF-8. It does not check the result; pass it to ValidNumber for that.
// Normalizing what it returns changes nothing.
func Normalize(s string) string {
	for {
		// Dropping a separator between two bytes that are not UTF-8
		// can join them into a rune that is one ("\xd6 \xbe" becomes
		// U+05BE, a dash): until nothing changes. Each pass that
		// changes something makes s shorter.
		n := normalizeOnce(s)
		if len(n) == len(s) {
			return n
		}
		s = n
	}
}

// normalizeOnce drops the separators of s (see Normalize) in one pass.
func normalizeOnce(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ' ' || c == '-' || c >= utf8.RuneSelf || c < ' ' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !(r == utf8.RuneError && size == 1) && separator(r) {
			i += size
			continue
		}
		b.WriteString(s[i : i+size])
		i += size
	}
	return b.String()
}

// separator reports whether r is dropped from an NHS number as written.
func separator(r rune) bool {
	switch r {
	case '\u00ad', '\u200b', '\u200c', '\u200d', '\u2060', '\ufeff':
		// Soft hyphen, zero-width space, non-joiner and joiner, word
		// joiner, byte order mark: invisible, and not reordering.
		return true
	}
	return unicode.IsSpace(r) || unicode.Is(unicode.Pd, r)
}

// CheckDigit computes the modulus 11 check digit for the first nine digits
// of an NHS number: each digit is multiplied by a weight from 10 down to 2,
// the products are summed, and the check digit is 11 minus the remainder of
// the sum divided by 11, where 11 becomes 0. A result of 10 means no valid
// NHS number starts with these nine digits, and ok is false; ok is also
// false when first9 is not exactly nine ASCII digits.
func CheckDigit(first9 string) (digit int, ok bool) {
	if len(first9) != 9 {
		return 0, false
	}
	sum := 0
	for i := 0; i < 9; i++ {
		c := first9[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		sum += int(c-'0') * (10 - i)
	}
	check := 11 - sum%11
	switch check {
	case 11:
		return 0, true
	case 10:
		return 0, false
	default:
		return check, true
	}
}

// ValidNumber reports whether s is a well-formed NHS number: exactly ten
// ASCII digits, no spaces (use Normalize first), whose last digit is the
// modulus 11 check digit of the first nine.
//
// This is the only test NHS Digital defines for the format. It does not
// reject numbers that pass the check but are never issued (for example
// 0000000000, or the 999 range reserved for testing), and it cannot tell
// whether a number belongs to the patient: that is what tracing (the
// verification status) records.
func ValidNumber(s string) bool {
	if len(s) != 10 {
		return false
	}
	d, ok := CheckDigit(s[:9])
	if !ok {
		return false
	}
	last := s[9]
	return last >= '0' && last <= '9' && int(last-'0') == d
}

// TestNumber returns the i-th (from 0) valid NHS number in the range
// 9990000000 to 9999999999, which is never issued to a person and is meant
// for test data. It returns "" when i is negative or beyond the range. The
// sequence is fixed, so tests across the project can name their patients
// by index. Its cost does not grow with i: it picks each of the six free
// digits in turn by counting, with suffixCounts, how many valid numbers
// each choice leaves.
func TestNumber(i int) string {
	if i < 0 {
		return ""
	}
	// The first three digits are 9, with weights 10, 9 and 8; the six
	// free digits after them have weights 7 down to 2. A number is valid
	// when its nine-digit weighted sum is not 1 modulo 11.
	const prefixSum = 9*10 + 9*9 + 9*8
	ways := suffixCounts()
	var b [9]byte
	b[0], b[1], b[2] = '9', '9', '9'
	acc := prefixSum % 11
	for k := range testFreeDigits {
		w := 7 - k
		for d := 0; ; d++ {
			if d == 10 {
				return "" // i is past the last valid number
			}
			next := (acc + d*w) % 11
			left := ways[k+1][11] - ways[k+1][(12-next)%11] // suffixes whose sum avoids 1
			if i < left {
				b[3+k] = byte('0' + d)
				acc = next
				break
			}
			i -= left
		}
	}
	d, ok := CheckDigit(string(b[:]))
	if !ok {
		return ""
	}
	return string(b[:]) + string(rune('0'+d))
}

// testFreeDigits is how many of TestNumber's nine leading digits vary.
const testFreeDigits = 6

// suffixCounts returns, for each k from 0 to testFreeDigits, how many
// ways the free digits from k on can be chosen so that their weighted sum
// (weights 7-k down to 2) is r modulo 11, at index r, with the total
// number of ways at index 11.
func suffixCounts() (ways [testFreeDigits + 1][12]int) {
	ways[testFreeDigits][0], ways[testFreeDigits][11] = 1, 1
	for k := testFreeDigits - 1; k >= 0; k-- {
		w := 7 - k
		for d := range 10 {
			for r := range 11 {
				ways[k][(r+d*w)%11] += ways[k+1][r]
			}
		}
		ways[k][11] = 10 * ways[k+1][11]
	}
	return ways
}

// IsNHSNumberSystem reports whether system names the NHS number: the UK
// Core system (SystemNHSNumber), or one of the spellings older NHS FHIR
// APIs used (http rather than https, the fhir.nhs.net host of the DSTU2
// Care Connect profiles, other letter case, a trailing slash), or its
// OID as a URN. It is for
// deciding whose data a resource carries, where missing a patient is
// the unsafe mistake; what Junction writes uses SystemNHSNumber.
func IsNHSNumberSystem(system string) bool {
	if system == SystemNHSNumber || system == "urn:oid:"+OIDNHSNumber {
		return true
	}
	s := strings.TrimSuffix(strings.TrimSpace(system), "/")
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			// Unicode case mapping: lower case it as it is, since
			// folding would match more than lower casing does (ſ as s).
			return isNHSNumberSystemLower(strings.ToLower(s))
		}
	}
	// ASCII, the usual case: compared ignoring case, with no copy (every
	// identifier of every resource passes here).
	for _, scheme := range [...]string{"https://", "http://"} {
		if len(s) > len(scheme) && strings.EqualFold(s[:len(scheme)], scheme) {
			rest := s[len(scheme):]
			return strings.EqualFold(rest, "fhir.nhs.uk/id/nhs-number") || strings.EqualFold(rest, "fhir.nhs.net/id/nhs-number")
		}
	}
	return false
}

// isNHSNumberSystemLower is IsNHSNumberSystem of a system already
// trimmed and lower cased.
func isNHSNumberSystemLower(s string) bool {
	s, ok := strings.CutPrefix(s, "https://")
	if !ok {
		if s, ok = strings.CutPrefix(s, "http://"); !ok {
			return false
		}
	}
	return s == "fhir.nhs.uk/id/nhs-number" || s == "fhir.nhs.net/id/nhs-number"
}

// OIDNHSNumber is the OID of the NHS number (as HL7 v2 CX-4.2 and
// urn:oid: identifier systems give it).
const OIDNHSNumber = "2.16.840.1.113883.2.1.4.1"

// SearchedNumbers returns the values, not normalised or checked, that a
// conditional reference (Type?identifier=system|value, by which a FHIR
// transaction names a resource it cannot give the id of, such as
// "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018")
// searches for in an NHS number system (IsNHSNumberSystem), or nil. Each
// identifier parameter is read, with its comma-separated alternatives
// and FHIR search escapes (\| \, \$ \\). Like IsNHSNumberSystem it is
// for deciding whose data a resource carries: such a reference names its
// patient as surely as a logical reference does.
func SearchedNumbers(ref string) []string {
	_, query, ok := strings.Cut(ref, "?")
	if !ok {
		return nil
	}
	// A malformed parameter elsewhere in the query does not hide the
	// others: ParseQuery returns those it could read.
	params, _ := url.ParseQuery(query)
	var out []string
	for _, p := range params["identifier"] {
		for _, token := range splitUnescaped(p, ',') {
			parts := splitUnescaped(token, '|')
			if len(parts) == 2 && IsNHSNumberSystem(searchUnescape(parts[0])) {
				out = append(out, searchUnescape(parts[1]))
			}
		}
	}
	return out
}

// splitUnescaped splits s at each sep not escaped by a backslash.
func splitUnescaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// searchUnescape removes FHIR search escapes: a backslash keeps the
// character after it.
func searchUnescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
