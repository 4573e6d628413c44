package hl7v2

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/fault"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/golden")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(strings.Split(string(want), "\r"), strings.Split(string(got), "\r")); diff != "" {
		t.Errorf("golden %s (-want +got):\n%s", name, diff)
	}
}

var ackTime = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

func TestBuildAck(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		opts     AckOptions
		wantCode AckCode
		wantText string
		// paths checked on the parsed ACK.
		paths map[string]string
	}{
		{
			name:     "enhanced accept v2.5.1",
			file:     "adt_a01_v251_crlf.hl7",
			opts:     AckOptions{ControlID: "ACK0001", Time: ackTime, App: "JUNCTION", Facility: "RXX01"},
			wantCode: AckCA,
			paths: map[string]string{
				"MSH-3": "JUNCTION", "MSH-4": "RXX01",
				"MSH-5": "PASAPP^2.16.840.1.113883.2.1.3.2.4.18.1^ISO", "MSH-6": "RXX01",
				"MSH-7": "20240301120000+0000", "MSH-9": "ACK^A01^ACK", "MSH-10": "ACK0001",
				"MSH-11": "P", "MSH-12": "2.5.1", "MSH-15": "", "MSH-18": "8859/1", "ERR-1": "",
			},
		},
		{
			name: "original error v2.3",
			file: "adt_a01_v23_crlf.hl7",
			opts: AckOptions{ControlID: "ACK0002", Time: ackTime, App: "JUNCTION", Facility: "RXX01", Text: "rejected: PID-3 & more",
				Errors: []AckError{
					{Segment: "PID", Sequence: 1, Field: 3, Code: "101", Text: "NHS number ^ missing"},
					{Code: "207", Severity: "E", Text: "store unavailable"},
				}},
			wantCode: AckAE,
			wantText: "rejected: PID-3 & more",
			paths: map[string]string{
				"MSH-9": "ACK^A01^ACK", "MSH-12": "2.3", "MSH-18": "",
				"ERR[1]-1":     `PID^1^3^101&NHS number \S\ missing&HL70357`,
				"ERR[1]-1.4.2": "NHS number ^ missing",
				"ERR[2]-1.4.1": "207",
			},
		},
		{
			name: "v2.5 location and warning",
			file: "adt_a01_v251_crlf.hl7",
			opts: AckOptions{Code: AckAA, ControlID: "ACK0003", Time: ackTime, App: "JUNCTION",
				Errors: []AckError{{Segment: "PV1", Sequence: 1, Field: 3, Component: 2, Code: "102", Severity: "W", Text: "odd | bay"}}},
			wantCode: AckAA,
			wantText: "odd | bay",
			paths: map[string]string{
				"MSH-3": "JUNCTION", "MSH-4": "RXX01",
				"ERR-2": "PV1^1^3^1^2", "ERR-3": `102^odd \F\ bay^HL70357`, "ERR-3.2": "odd | bay", "ERR-4": "W",
			},
		},
		{
			name: "warnings alone accept",
			file: "truncation_hash.hl7",
			opts: AckOptions{ControlID: "ACK0004", Time: ackTime,
				Errors: []AckError{{Severity: "I", Text: "noted"}}},
			wantCode: AckAA,
			wantText: "noted",
			paths: map[string]string{
				"MSH-2": `^~\&#`, "MSH-3": "JUNCTION", "MSH-9": "ACK^R01^ACK", "ERR-2": "", "ERR-3": "207^noted^HL70357", "ERR-4": "I",
			},
		},
		{
			name: "star delimiters",
			file: "star_delims.hl7",
			opts: AckOptions{Code: AckAR, ControlID: "ACK*5", Time: ackTime, App: "JUN*CTION", Text: "bad * value ^ here",
				Errors: []AckError{{Segment: "PID", Sequence: 1, Field: 5, Code: "102", Text: "a*b"}}},
			wantCode: AckAR,
			wantText: "bad * value ^ here",
			paths: map[string]string{
				"MSH-1": "*", "MSH-3.1": "JUN*CTION", "MSH-10.1": "ACK*5", "MSH-5": "OLDAPP", "MSH-9": "ACK^A08^ACK",
				"ERR-1.4.2": "a*b",
			},
		},
		{
			name: "no escape character",
			file: "short_encoding.hl7",
			opts: AckOptions{ControlID: "ACK0006", Time: ackTime, App: "JUNCTION", Text: "a|b^c~d",
				Errors: []AckError{{Segment: "PID", Field: 5, Code: "102", Text: "x^y"}}},
			wantCode: AckAE,
			wantText: "a b c d",
			paths: map[string]string{
				"MSH-2": "^~", "MSH-9": "ACK^A04^ACK", "MSH-12": "2.1", "ERR-1": "PID^^5^102",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := mustParse(t, readTestdata(t, tt.file))
			ack := BuildAck(orig, tt.opts)
			golden(t, "ack_"+strings.ReplaceAll(tt.name, " ", "_")+".hl7", ack)
			if strings.Contains(string(ack), "\n") || !strings.HasSuffix(string(ack), "\r") {
				t.Errorf("segments must end with CR only: %q", ack)
			}
			code, ctrl, text, err := ParseAck(ack)
			if err != nil {
				t.Fatalf("ParseAck: %v", err)
			}
			if diff := cmp.Diff([]string{string(tt.wantCode), orig.ControlID(), tt.wantText}, []string{string(code), ctrl, text}); diff != "" {
				t.Errorf("ParseAck (-want +got):\n%s", diff)
			}
			m := mustParse(t, ack)
			if m.Delimiters() != orig.Delimiters() {
				t.Errorf("delimiters %+v, want %+v", m.Delimiters(), orig.Delimiters())
			}
			got := map[string]string{}
			for p := range tt.paths {
				got[p] = m.Get(p)
			}
			if diff := cmp.Diff(tt.paths, got); diff != "" {
				t.Errorf("ACK fields (-want +got):\n%s", diff)
			}
			if n := len(m.SegmentsNamed("ERR")); n != len(tt.opts.Errors) {
				t.Errorf("%d ERR segments, want %d", n, len(tt.opts.Errors))
			}
		})
	}
}

// TestBuildAckCharset: the ACK declares the character set the message
// declared, since it echoes the sender's fields byte for byte; a message
// that declares none, or sends "", gets an ACK that declares none.
func TestBuildAckCharset(t *testing.T) {
	tests := []struct {
		name, msh18, want string
	}{
		{"UTF-8", "UNICODE UTF-8", "UNICODE UTF-8"},
		{"Latin-1 with an alternate", "8859/1~ISO IR87", "8859/1~ISO IR87"},
		{"none", "", ""},
		{"explicit null", `""`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := "MSH|^~\\&|PAS|RX1|JUNCTION|RX1|20240715120000||ADT^A01|CTRL1|P|2.4||||||" + tt.msh18 + "\rPID|1||9990000018^^^NHS^NH\r"
			ack := BuildAck(mustParse(t, []byte(raw)), AckOptions{ControlID: "A1", Time: ackTime, App: "JUNCTION"})
			msh, _, _ := strings.Cut(string(ack), "\r")
			fields := strings.Split(msh, "|") // fields[n] is MSH-(n+1)
			got := ""
			if len(fields) > 17 {
				got = fields[17]
			}
			if got != tt.want {
				t.Errorf("ACK MSH-18 = %q, want %q (%q)", got, tt.want, msh)
			}
			if len(fields) > 18 || strings.HasSuffix(msh, "|") {
				t.Errorf("ACK MSH has fields after MSH-18, or ends in empty ones: %q", msh)
			}
		})
	}
}

func TestBuildAckDefaults(t *testing.T) {
	orig := mustParse(t, []byte("MSH|^~\\&|PAS|SITE|JUNCTION|HUB|20240101||ADT|C1|P|2.4\rEVN|A28\r"))
	before := time.Now()
	ack := mustParse(t, BuildAck(orig, AckOptions{}))
	got := []string{ack.Get("MSH-3"), ack.Get("MSH-4"), ack.Get("MSH-5"), ack.Get("MSH-6"), ack.Get("MSH-9"), ack.Get("MSA-1"), ack.Get("MSA-2")}
	want := []string{"JUNCTION", "HUB", "PAS", "SITE", "ACK^A28^ACK", "AA", "C1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if ack.ControlID() == "" {
		t.Error("ACK has no control id")
	}
	stamp, err := time.Parse("20060102150405-0700", ack.Get("MSH-7"))
	if err != nil {
		t.Fatalf("MSH-7: %v", err)
	}
	if stamp.Before(before.Truncate(time.Second)) {
		t.Errorf("MSH-7 %v is before the call at %v", stamp, before)
	}
}

func TestBuildAckNilOriginal(t *testing.T) {
	opts := AckOptions{ControlID: "X1", Time: ackTime, Text: "unreadable"}
	if diff := cmp.Diff(string(BuildRawAck(opts)), string(BuildAck(nil, opts))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestBuildRawAck(t *testing.T) {
	tests := []struct {
		name  string
		opts  AckOptions
		paths map[string]string
	}{
		{
			name: "default error",
			opts: AckOptions{ControlID: "RAW0001", Time: ackTime, App: "JUNCTION", Facility: "RXX01", Text: "segment 1 is not MSH"},
			paths: map[string]string{
				"MSH-2": `^~\&`, "MSH-3": "JUNCTION", "MSH-4": "RXX01", "MSH-5": "", "MSH-9": "ACK", "MSH-10": "RAW0001",
				"MSH-11": "P", "MSH-12": "2.5", "MSA-1": "AR", "MSA-2": "", "MSA-3": "segment 1 is not MSH",
				"ERR-3": "207^segment 1 is not MSH^HL70357", "ERR-4": "E", "ERR[2]-3": "",
			},
		},
		{
			name: "given error and code",
			opts: AckOptions{Code: AckCR, ControlID: "RAW0002", Time: ackTime, App: "JUNCTION",
				Errors: []AckError{{Segment: "MSH", Sequence: 1, Field: 2, Code: "102", Text: "MSH-2 encoding characters invalid"}}},
			paths: map[string]string{
				"MSA-1": "CR", "MSA-3": "", "ERR-2": "MSH^1^2^1", "ERR-3.1": "102", "ERR-3.2": "MSH-2 encoding characters invalid",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := BuildRawAck(tt.opts)
			golden(t, "rawack_"+strings.ReplaceAll(tt.name, " ", "_")+".hl7", raw)
			m := mustParse(t, raw)
			got := map[string]string{}
			for p := range tt.paths {
				got[p] = m.Get(p)
			}
			if diff := cmp.Diff(tt.paths, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAck(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    []string
		wantErr string
	}{
		{"MSA-3 text", "MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.3\rMSA|AE|C1|bad \\T\\ thing\r", []string{"AE", "C1", "bad & thing"}, ""},
		{"ERR-3 text", "MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\rMSA|AR|C2\rERR||PID^1^3|101^missing^HL70357|E\r", []string{"AR", "C2", "missing"}, ""},
		{"ERR-8 text", "MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\rMSA|AE|C3\rERR||||E||||user text\r", []string{"AE", "C3", "user text"}, ""},
		{"ERR-1 text", "MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.4\rMSA|AE|C4\rERR|PID^1^3^101&old style&HL70357\r", []string{"AE", "C4", "old style"}, ""},
		{"commit accept LF", "MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\nMSA|CA|C5\n", []string{"CA", "C5", ""}, ""},
		{"no MSA", "MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\rERR||||E\r", nil, "acknowledgement has no MSA segment"},
		{"not HL7", "HTTP/1.1 200 OK\r\n", nil, "segment 1 is not MSH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, ctrl, text, err := ParseAck([]byte(tt.raw))
			if tt.wantErr != "" {
				f := fault.As(err)
				if f == nil || f.Msg != tt.wantErr || f.Code != fault.CodeHL7Parse {
					t.Fatalf("error %v, want fault %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAck: %v", err)
			}
			if diff := cmp.Diff(tt.want, []string{string(code), ctrl, text}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestAckErrorCodes(t *testing.T) {
	tests := []struct {
		name  string
		raw   string
		codes []string
		later bool
	}{
		{"store down", "MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\rMSA|CE|C1\rERR|||207^message not stored^HL70357|E\r", []string{"207"}, true},
		{"record locked, old style", "MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.4\rMSA|AE|C2\rERR|PID^1^3^206&locked&HL70357\r", []string{"206"}, true},
		{"content error", "MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\rMSA|AE|C3\rERR||PID^1^3|101^missing^HL70357|E\r", []string{"101"}, false},
		{"mixed", "MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\rMSA|AE|C4\rERR|||207|E\rERR|||103|E\r", []string{"207", "103"}, false},
		{"no ERR", "MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\rMSA|AE|C5|bad\r", nil, false},
		{"not HL7", "HTTP/1.1 200 OK\r\n", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			codes := AckErrorCodes([]byte(tt.raw))
			if diff := cmp.Diff(tt.codes, codes); diff != "" {
				t.Errorf("AckErrorCodes (-want +got):\n%s", diff)
			}
			if got := RetryLater(codes); got != tt.later {
				t.Errorf("RetryLater = %v, want %v", got, tt.later)
			}
		})
	}
}

func TestAckCode(t *testing.T) {
	tests := []struct {
		code                               AckCode
		valid, accepted, errored, rejected bool
	}{
		{AckAA, true, true, false, false},
		{AckCA, true, true, false, false},
		{AckAE, true, false, true, false},
		{AckCE, true, false, true, false},
		{AckAR, true, false, false, true},
		{AckCR, true, false, false, true},
		{"XX", false, false, false, false},
		{"", false, false, false, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.code), func(t *testing.T) {
			got := []bool{tt.code.Valid(), tt.code.Accepted(), tt.code.Errored(), tt.code.Rejected()}
			want := []bool{tt.valid, tt.accepted, tt.errored, tt.rejected}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestHeaderNull checks that MSH-12, 15 and 16 sent as the HL7 null ""
// read as not valued: original acknowledgement mode, no version named.
func TestHeaderNull(t *testing.T) {
	tests := []struct {
		name, extra           string
		version, accept, app  string
		enhanced              bool
		acceptCode, errorCode AckCode
	}{
		{"not valued", "|2.4", "2.4", "", "", false, AckAA, AckAE},
		{"null", `|""|||""|""`, "", "", "", false, AckAA, AckAE},
		{"enhanced", "|2.5|||AL|NE", "2.5", "AL", "NE", true, AckCA, AckCE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, []byte("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P"+tt.extra+"\rPID|1\r"))
			got := []any{m.Version(), m.AcceptAckType(), m.AppAckType(), m.Enhanced(), m.AcceptCode(), m.ErrorCode()}
			want := []any{tt.version, tt.accept, tt.app, tt.enhanced, tt.acceptCode, tt.errorCode}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("version, MSH-15, MSH-16, enhanced, accept, error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestErrorFromFault(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want AckError
	}{
		{"parse fault", fault.New(fault.CodeHL7Parse, "segment 1 is not MSH").WithHL7("100"), AckError{Code: "100", Severity: "E", Text: "segment 1 is not MSH"}},
		{"detail", fault.New(fault.CodeHL7Required, "PID-3 missing").WithHL7("101").WithDetail("PID-3 is empty"), AckError{Code: "101", Severity: "E", Text: "PID-3 is empty"}},
		{"no HL7 code", fault.New(fault.CodeStoreUnavailable, "store down"), AckError{Code: "207", Severity: "E", Text: "store down"}},
		{"plain error", errors.New("boom"), AckError{Code: "207", Severity: "E", Text: "internal error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ErrorFromFault(tt.err)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestAtLeast25(t *testing.T) {
	tests := map[string]bool{
		"": true, "2.5": true, "2.5.1": true, "2.8": true, "2.10": true, "3": true, "x": true,
		"2.4": false, "2.3.1": false, "2.1": false, "2": false, "2.x": true,
	}
	for v, want := range tests {
		t.Run(v, func(t *testing.T) {
			if got := atLeast25(v); got != want {
				t.Errorf("atLeast25(%q) = %v, want %v", v, got, want)
			}
		})
	}
}

// TestAckErrorDetail checks what a refusal's detail says of each ERR: its
// code and text, where (v2.5's ERR-2 or the older ERR-1), and the
// receiver's message to its user.
func TestAckErrorDetail(t *testing.T) {
	const head = "MSH|^~\\&|RIS|RX1|JUNCTION|RX1|20261207010000||ACK|R1|P|2.5\rMSA|AE|C1\r"
	tests := []struct {
		name, errs, want string
	}{
		{"none", "", ""},
		{"v2.5 with where and a user message", "ERR||PID^1^3^1|103^Table value not found^HL70357|E||||Hospital number not known\r",
			"ERR 103 Table value not found at PID-3[1]: Hospital number not known"},
		{"a later segment of its kind", "ERR||OBX^2^5|102^Data type error^HL70357|E\r", "ERR 102 Data type error at OBX-5 #2"},
		{"the user message alone", "ERR||||E||||Ward code unknown\r", "Ward code unknown"},
		{"before v2.5 (ERR-1)", "ERR|PV1^1^3^103&Table value not found&HL70357\r", "ERR 103 Table value not found at PV1-3"},
		{"two", "ERR||PID^1^7|102^Data type error^HL70357|E\rERR||PV1^1^3|103^Table value not found^HL70357|E\r",
			"ERR 102 Data type error at PID-7; ERR 103 Table value not found at PV1-3"},
		{"the same text twice is said once", "ERR|||207^Store down^HL70357|E||||Store down\r", "ERR 207 Store down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AckErrorDetail([]byte(head + tt.errs)); got != tt.want {
				t.Errorf("AckErrorDetail = %q, want %q", got, tt.want)
			}
		})
	}
	if got := AckErrorDetail([]byte("not HL7")); got != "" {
		t.Errorf("AckErrorDetail of no message = %q", got)
	}
}
