package nhs

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// refCheck is an independent model of the modulus 11 rule, written from
// the NHS Data Dictionary description rather than from CheckDigit.
func refCheck(first9 string) (int, bool) {
	weights := []int{10, 9, 8, 7, 6, 5, 4, 3, 2}
	total := 0
	for i, r := range first9 {
		v, err := strconv.Atoi(string(r))
		if err != nil || i >= len(weights) {
			return 0, false
		}
		total += v * weights[i]
	}
	if len(first9) != 9 {
		return 0, false
	}
	rem := total % 11
	if rem == 0 {
		return 0, true
	}
	if 11-rem == 10 {
		return 0, false
	}
	return 11 - rem, true
}

func TestCheckDigit(t *testing.T) {
	tests := []struct {
		name   string
		first9 string
		digit  int
		ok     bool
	}{
		{"test range", "999000001", 8, true},
		{"remainder zero gives 0", "000000000", 0, true},
		{"weights", "100000000", 1, true},
		{"check of 10 is invalid", "000000006", 0, false},
		{"first 999 prefix is invalid", "999000000", 0, false},
		{"too short", "99900000", 0, false},
		{"too long", "9990000010", 0, false},
		{"non digit", "99900000a", 0, false},
		{"unicode digit", "99900000٣", 0, false},
		{"empty", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ok := CheckDigit(tt.first9)
			if diff := cmp.Diff([2]any{tt.digit, tt.ok}, [2]any{d, ok}); diff != "" {
				t.Errorf("CheckDigit(%q) (-want +got):\n%s", tt.first9, diff)
			}
		})
	}
}

func TestValidNumber(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"9990000018", true},
		{"9990000069", true},
		{"9990000017", false},
		{"9990000019", false},
		{"999 000 0018", false},
		{"999-000-0018", false},
		{"", false},
		{"999000001", false},
		{"99900000181", false},
		{"999000001X", false},
		{"0000000060", false},
		// Passes the modulus 11 check, so it is accepted: the format rule
		// is the only rule (see the ValidNumber documentation).
		{"0000000000", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := ValidNumber(tt.in); got != tt.want {
				t.Errorf("ValidNumber(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// TestValidNumberRefusesBytesBesideDigits puts '/' and ':', the bytes
// either side of '0' to '9', in each of the first nine places of a valid
// number: no last digit may make it valid. A range check one byte too
// wide would read ':' as the digit 10 and pass some of these.
func TestValidNumberRefusesBytesBesideDigits(t *testing.T) {
	const valid = "9990000018"
	for i := range 9 {
		for _, c := range []byte{'/', ':'} {
			first9 := valid[:i] + string(c) + valid[i+1:9]
			t.Run(first9, func(t *testing.T) {
				if d, ok := CheckDigit(first9); ok {
					t.Errorf("CheckDigit(%q) = %d, true; want false", first9, d)
				}
				for last := 0; last <= 9; last++ {
					if s := first9 + strconv.Itoa(last); ValidNumber(s) {
						t.Errorf("ValidNumber(%q) = true, want false", s)
					}
				}
			})
		}
	}
}

// TestCheckDigitProperty compares CheckDigit and ValidNumber with the
// reference model over random prefixes: a prefix with a check digit has
// exactly one valid completion, one without has none.
func TestCheckDigitProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		prefix := itoa9(r.IntN(1_000_000_000))
		d, ok := CheckDigit(prefix)
		rd, rok := refCheck(prefix)
		if d != rd || ok != rok {
			t.Fatalf("CheckDigit(%q) = %d,%v; model says %d,%v", prefix, d, ok, rd, rok)
		}
		var valid []int
		for last := 0; last <= 9; last++ {
			if ValidNumber(prefix + strconv.Itoa(last)) {
				valid = append(valid, last)
			}
		}
		var want []int
		if ok {
			want = []int{d}
		}
		if diff := cmp.Diff(want, valid); diff != "" {
			t.Fatalf("valid completions of %q (-want +got):\n%s", prefix, diff)
		}
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"999 000 0018", "9990000018"},
		{"999-000-0018", "9990000018"},
		{" 999 - 000 - 0018 ", "9990000018"},
		{"9990000018", "9990000018"},
		{"", ""},
		// Other white space, dashes and invisible characters, which a
		// receiver may drop: left in, a patient's refusal would not
		// match the number.
		{"999\t000\t0018", "9990000018"},
		{"999\u00a0000\u00a00018", "9990000018"},
		{"999\u2013000\u20140018", "9990000018"},
		{"999\u200b0000018\n", "9990000018"},
		{"\ufeff9990000018", "9990000018"},
		// What is not a separator stays, for ValidNumber to refuse:
		// a direction override would show 8100000999 as 9990000018,
		// and bytes that are not UTF-8 are kept as they are.
		{"\u202e8100000999", "\u202e8100000999"},
		{"MRN\xff 1", "MRN\xff1"},
		{"MRN\xfe 1", "MRN\xfe1"},
		{"999O000018", "999O000018"},
		{"\uff19\uff19\uff19", "\uff19\uff19\uff19"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Normalize(tt.in)); diff != "" {
				t.Errorf("Normalize(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestTestNumber(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for i := range 500 {
		n := TestNumber(i)
		if !ValidNumber(n) {
			t.Fatalf("TestNumber(%d) = %q, not valid", i, n)
		}
		if !strings.HasPrefix(n, "999") {
			t.Fatalf("TestNumber(%d) = %q, outside the 999 range", i, n)
		}
		if seen[n] || n <= prev {
			t.Fatalf("TestNumber(%d) = %q, not strictly increasing after %q", i, n, prev)
		}
		seen[n] = true
		prev = n
	}
	// No valid number is skipped: every valid number between two
	// neighbours would have to be listed.
	for i := range 50 {
		a, b := TestNumber(i), TestNumber(i+1)
		an, _ := strconv.Atoi(a[:9])
		bn, _ := strconv.Atoi(b[:9])
		for n := an + 1; n < bn; n++ {
			if _, ok := CheckDigit(itoa9(n)); ok {
				t.Fatalf("prefix %d has a check digit but lies between TestNumber(%d) and TestNumber(%d)", n, i, i+1)
			}
		}
	}
	// Against every valid number of the range, listed by counting.
	var all []string
	for n := 999_000_000; n <= 999_999_999; n++ {
		if d, ok := CheckDigit(itoa9(n)); ok {
			all = append(all, itoa9(n)+strconv.Itoa(d))
		}
	}
	for i := 0; i < len(all); i += 1 + i/100 {
		if got := TestNumber(i); got != all[i] {
			t.Fatalf("TestNumber(%d) = %q, want %q", i, got, all[i])
		}
	}
	if got, last := TestNumber(len(all)-1), all[len(all)-1]; got != last {
		t.Errorf("TestNumber(%d) = %q, want the last, %q", len(all)-1, got, last)
	}
	if got := TestNumber(len(all)); got != "" {
		t.Errorf("TestNumber(%d), past the last, = %q, want empty", len(all), got)
	}
	if got := TestNumber(0); got != "9990000018" {
		t.Errorf("TestNumber(0) = %q, want 9990000018", got)
	}
	for _, i := range []int{-1, 1_000_000_000} {
		if got := TestNumber(i); got != "" {
			t.Errorf("TestNumber(%d) = %q, want empty", i, got)
		}
	}
}

func TestLooksLikeODSCode(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"RX1", true},
		{"A81001", true},
		{"RX1AB", true},
		{"00L", true},
		{"R1", false},
		{"1234567", false},
		{"123", false},
		{"rx1", false},
		{"RX-1", false},
		{"GHHSFacility", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := LooksLikeODSCode(tt.in); got != tt.want {
				t.Errorf("LooksLikeODSCode(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzValidNumber(f *testing.F) {
	// The last: two bytes that are not UTF-8 around spaces, which join
	// into a dash (U+05BE) when the spaces go.
	for _, s := range []string{"9990000018", "999 000 0018", "", "0000000000", "99900000a8", "9990000017", "\xd6  \xbe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := Normalize(s)
		if strings.ContainsAny(n, " -") {
			t.Fatalf("Normalize(%q) = %q still has separators", s, n)
		}
		if Normalize(n) != n {
			t.Fatalf("Normalize is not idempotent on %q", s)
		}
		if !ValidNumber(s) {
			return
		}
		if len(s) != 10 {
			t.Fatalf("ValidNumber accepted %d bytes", len(s))
		}
		d, ok := CheckDigit(s[:9])
		rd, rok := refCheck(s[:9])
		if !ok || !rok || d != rd || int(s[9]-'0') != d {
			t.Fatalf("ValidNumber accepted %q against the check digit", s)
		}
	})
}

func BenchmarkValidNumber(b *testing.B) {
	n := TestNumber(42)
	for b.Loop() {
		if !ValidNumber(n) {
			b.Fatal("invalid")
		}
	}
}

// TestIsNHSNumberSystemLowerCases: comparing ASCII systems without
// lower casing a copy gives what lower casing every system gives, and a
// system with other letters is lower cased, not folded (ſ is no s).
func TestIsNHSNumberSystemLowerCases(t *testing.T) {
	lowered := func(system string) bool {
		return isNHSNumberSystemLower(strings.ToLower(strings.TrimSuffix(strings.TrimSpace(system), "/")))
	}
	for _, system := range []string{
		SystemNHSNumber, "HTTP://FHIR.NHS.NET/ID/NHS-NUMBER/", " https://fhir.nhs.uk/Id/nhs-number ", "https://", "http://",
		"https:/fhir.nhs.uk/Id/nhs-number", "httpS://fhir.NHS.uk/id/nhs-number", "https://fhir.nhs.uk/Id/nhs-numbe",
		"https://fhir.nhſ.uk/Id/nhs-number", "https://fhir.nhs.uk/Id/nhs-number\u212a", "HTTPS://FHIR.NHS.UK/ID/NHS-NUMBER\u00a0",
		"\u00a0https://fhir.nhs.uk/Id/nhs-number", "https://fhir.nhs.uk/Id/NHS-NUMBER//", "urn:oid:" + OIDNHSNumber, "",
	} {
		if got, want := IsNHSNumberSystem(system), system == "urn:oid:"+OIDNHSNumber || lowered(system); got != want {
			t.Errorf("IsNHSNumberSystem(%q) = %v, lower cased it is %v", system, got, want)
		}
	}
}

func TestIsNHSNumberSystem(t *testing.T) {
	tests := []struct {
		system string
		want   bool
	}{
		{SystemNHSNumber, true},
		{"http://fhir.nhs.uk/Id/nhs-number", true},
		{"https://fhir.nhs.net/Id/nhs-number", true},
		{"http://fhir.nhs.net/Id/nhs-number/", true},
		{"HTTPS://FHIR.NHS.UK/Id/NHS-Number", true},
		{"https://fhir.nhs.uk/Id/nhs-number-x", false},
		{"https://fhir.example-trust.nhs.uk/Id/nhs-number", false},
		{"urn:oid:2.16.840.1.113883.2.1.4.1", true},
		{"urn:oid:2.16.840.1.113883.2.1.4.2", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.system, func(t *testing.T) {
			if got := IsNHSNumberSystem(tt.system); got != tt.want {
				t.Errorf("IsNHSNumberSystem(%q) = %v, want %v", tt.system, got, tt.want)
			}
		})
	}
}

func TestSearchedNumbers(t *testing.T) {
	tests := []struct {
		name string
		ref  string
		want []string
	}{
		{"by NHS number", "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018", []string{"9990000018"}},
		{"URL-escaped", "Patient?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9990000026", []string{"9990000026"}},
		{"older system spelling", "Patient?identifier=http://fhir.nhs.net/Id/nhs-number|9990000034", []string{"9990000034"}},
		{"alternatives and other parameters", "Patient?active=true&identifier=https://fhir.example-trust.nhs.uk/Id/mrn|X1,https://fhir.nhs.uk/Id/nhs-number|9990000042",
			[]string{"9990000042"}},
		{"search escapes", `Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|999000\,0018`, []string{"999000,0018"}},
		{"a malformed parameter beside it", "Patient?x=%zz&identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018", []string{"9990000018"}},
		{"another system", "Patient?identifier=https://fhir.example-trust.nhs.uk/Id/mrn|9990000018", nil},
		{"no system", "Patient?identifier=9990000018", nil},
		{"a literal reference", "Patient/9990000018", nil},
		{"a urn", "urn:uuid:11111111-1111-4111-8111-111111111111", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, SearchedNumbers(tt.ref)); diff != "" {
				t.Errorf("SearchedNumbers(%q) (-want +got):\n%s", tt.ref, diff)
			}
		})
	}
}

// itoa9 formats a non-negative n below one billion as nine digits.
func itoa9(n int) string {
	var b [9]byte
	for i := 8; i >= 0; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[:])
}

func BenchmarkTestNumber(b *testing.B) {
	for b.Loop() {
		TestNumber(800_000)
	}
}
