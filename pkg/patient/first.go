package patient

// FirstRecord returns the record the index holds for the first patient of
// bundle (a translated message, JSON-shaped) once it has applied the
// message, when it knew nothing of the patient before: what routes read
// as patient for a patient's first message. Route tests that give no
// patient record read it, since at run time the index applies every
// message before routing it. It is nil when the index would leave the
// patient unindexed (no NHS number) or cannot read the bundle.
func FirstRecord(bundle map[string]any, src Source) *Record {
	p, err := parseBundle(bundle)
	if err != nil || len(p.patients) == 0 || p.patients[0].nhsNumber == "" {
		return nil
	}
	pd := &p.patients[0]
	r := &Record{NHSNumber: pd.nhsNumber}
	for _, fd := range pd.flags {
		r.applyFlag(fd, src)
	}
	if !pd.flagsOnly {
		pd.applyTo(r, src)
	}
	out, err := asRead(r)
	if err != nil {
		return nil
	}
	return out
}
