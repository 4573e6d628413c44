package nhs

// LooksLikeODSCode reports whether s has the shape of an Organisation Data
// Service code: three to six upper-case letters and digits with at least
// one letter ("RX1", "A81001", "RX1AB", "00L"). It is a shape test only;
// whether the code is issued needs the ODS directory. Callers use it to
// decide whether a sending facility names an organisation by ODS code or
// by a local name.
func LooksLikeODSCode(s string) bool {
	if len(s) < 3 || len(s) > 6 {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z':
			letter = true
		case c >= '0' && c <= '9':
		default:
			return false
		}
	}
	return letter
}
