// Package hl7v2 parses, reads, escapes and encodes HL7 version 2 messages
// in their traditional pipe-and-hat encoding (ER7), and builds and reads
// acknowledgements (ACK).
//
// # Parsing
//
// Parse reads the delimiters from MSH-1 and MSH-2 of each message; it never
// assumes the defaults. Segments may end with CR, LF or CRLF; a leading
// UTF-8 byte order mark, blank lines and lines holding only spaces or tabs
// are skipped. Z-segments and trailing empty fields are kept exactly.
// Parse copies its input once and indexes the field separators of every
// segment in a single pass, so reading a field later costs no allocation.
// A parsed Message is immutable and safe for concurrent readers.
//
// # Numbering
//
// Fields, repetitions, components and subcomponents are numbered from 1 as
// in the HL7 standard. For MSH (and any other segment named MSH), MSH-1 is
// the field separator itself and MSH-2 the encoding characters, so MSH-3 is
// the sending application, exactly as in the standard.
//
// # Paths
//
// Message.Get takes a path such as "PID-3", "PID-3[2]", "PID-3[2].1",
// "PID-5.1.2" or "OBX[2]-5"; see Get for the precise rules. The hyphen and
// the dot are interchangeable as separators ("PID.5.1", "PID-5-1").
//
// # Errors
//
// Parse errors are *fault.Error values with Code fault.CodeHL7Parse, a Msg
// that never holds message content, and HL7Err set to an HL7 table 0357
// error condition code ("100" segment sequence error, "102" data type
// error). Fault Detail may quote a few bytes of the offending text and goes
// only to the sender (for example in an ACK ERR segment).
package hl7v2
