package adaptertest

import (
	"bytes"
	"os"
	"testing"
)

// AddHL7Seeds adds each of files, HL7 v2 messages, to f's seed corpus
// twice: as it is, and with its newlines made the carriage returns that
// end segments on the wire.
func AddHL7Seeds(f *testing.F, files []string) {
	f.Helper()
	for _, s := range files {
		raw, err := os.ReadFile(s)
		if err != nil {
			f.Fatalf("read seed: %v", err)
		}
		f.Add(raw)
		f.Add(bytes.ReplaceAll(raw, []byte("\n"), []byte("\r")))
	}
}
