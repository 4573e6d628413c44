package fhir

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// uuidNamespace is the fixed 16-byte name space Junction hashes into its
// deterministic UUIDs, so they never collide with version 5 UUIDs that
// other software derives from the same parts.
const uuidNamespace = "junction-fhir-v1"

// DeterministicUUID returns a UUID derived only from parts, in the manner
// of an RFC 4122 version 5 UUID: the SHA-1 of a fixed Junction name space
// followed by the parts, each prefixed with its length so that ("ab","c")
// and ("a","bc") differ, with the version and variant bits set. The same
// parts always give the same UUID, which keeps translations reproducible
// (urn:uuid: fullUrls in bundles).
func DeterministicUUID(parts ...string) string {
	var out [36]byte
	putDeterministicUUID(&out, parts)
	return string(out[:])
}

// DeterministicURN returns "urn:uuid:" followed by
// DeterministicUUID(parts...), the fullUrl form, in one allocation.
func DeterministicURN(parts ...string) string {
	const prefix = "urn:uuid:"
	var out [len(prefix) + 36]byte
	copy(out[:], prefix)
	putDeterministicUUID((*[36]byte)(out[len(prefix):]), parts)
	return string(out[:])
}

// AppendDeterministicURN appends DeterministicURN(parts...) to dst, for
// callers that keep many fullUrls in one buffer.
func AppendDeterministicURN(dst []byte, parts ...string) []byte {
	const prefix = "urn:uuid:"
	var out [36]byte
	putDeterministicUUID(&out, parts)
	dst = append(dst, prefix...)
	return append(dst, out[:]...)
}

// putDeterministicUUID writes the UUID of parts to out.
func putDeterministicUUID(out *[36]byte, parts []string) {
	// The hashed bytes are gathered in one buffer, on the stack for the
	// short parts Junction uses, and hashed at once: hashing part by part
	// through io.Writer allocated for every part.
	var stack [256]byte
	in := append(stack[:0], uuidNamespace...)
	for _, p := range parts {
		in = binary.AppendUvarint(in, uint64(len(p)))
		in = append(in, p...)
	}
	u := sha1.Sum(in)
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	hex.Encode(out[0:8], u[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], u[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], u[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], u[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], u[10:16])
}

// MarshalResource encodes a resource (normally one of the samply model
// types, whose MarshalJSON adds resourceType) as FHIR JSON. FHIR forbids
// empty strings, objects and arrays, which the models emit for required
// fields left unset (MessageHeader.eventUri when eventCoding is used), so
// they are removed. Member order is kept, except that resourceType comes
// first, where FHIR's own examples put it and streaming readers look for
// it. The result must be a JSON object with a resourceType.
func MarshalResource(resource any) (json.RawMessage, error) {
	raw, err := json.Marshal(resource)
	if err != nil {
		return nil, fmt.Errorf("marshal resource: %w", err)
	}
	raw, err = pruneEmpty(raw)
	if err != nil {
		return nil, fmt.Errorf("marshal resource: %w", err)
	}
	if _, err := ResourceType(raw); err != nil {
		return nil, fmt.Errorf("marshal resource: %w", err)
	}
	return raw, nil
}

// EntryFor marshals resource with MarshalResource into a Bundle entry with
// the given fullUrl (omitted when empty).
func EntryFor(resource any, fullURL string) (models.BundleEntry, error) {
	raw, err := MarshalResource(resource)
	if err != nil {
		return models.BundleEntry{}, err
	}
	e := models.BundleEntry{Resource: raw}
	if fullURL != "" {
		u := fullURL
		e.FullUrl = &u
	}
	return e, nil
}

// Errors returned by ResourceType and FindResources. Their text never
// holds payload content.
var (
	// ErrNotResource means the input is not a JSON object.
	ErrNotResource = errors.New("fhir: not a JSON object")
	// ErrNoResourceType means the object has no non-empty string
	// resourceType.
	ErrNoResourceType = errors.New("fhir: resourceType missing or not a string")
	// ErrNotBundle means the resource is not a Bundle.
	ErrNotBundle = errors.New("fhir: not a Bundle")
)

// ResourceType returns the resourceType of a FHIR JSON resource without
// decoding the rest of it. It reads top-level members only, so a
// resourceType inside a contained or nested resource is not mistaken for
// the outer one.
func ResourceType(raw []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotResource, safeJSONError(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return "", ErrNotResource
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrNotResource, safeJSONError(err))
		}
		if key == "resourceType" {
			v, err := dec.Token()
			if err != nil {
				return "", fmt.Errorf("%w: %w", ErrNotResource, safeJSONError(err))
			}
			s, ok := v.(string)
			if !ok || s == "" {
				return "", ErrNoResourceType
			}
			return s, nil
		}
		if err := skipValue(dec); err != nil {
			return "", fmt.Errorf("%w: %w", ErrNotResource, safeJSONError(err))
		}
	}
	return "", ErrNoResourceType
}

// FindResources returns, in entry order, the resources of type typ in the
// entries of a JSON Bundle; an empty typ returns every entry's resource.
// Bundles nested inside entries are not searched.
func FindResources(bundle []byte, typ string) ([]json.RawMessage, error) {
	rt, err := ResourceType(bundle)
	if err != nil {
		return nil, err
	}
	if rt != "Bundle" {
		return nil, ErrNotBundle
	}
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(bundle, &b); err != nil {
		return nil, fmt.Errorf("fhir: decode bundle: %w", safeJSONError(err))
	}
	var out []json.RawMessage
	for i, e := range b.Entry {
		if len(e.Resource) == 0 || string(e.Resource) == "null" {
			continue
		}
		t, err := ResourceType(e.Resource)
		if err != nil {
			return nil, fmt.Errorf("fhir: bundle entry %d: %w", i, err)
		}
		if typ == "" || t == typ {
			out = append(out, e.Resource)
		}
	}
	return out, nil
}

// skipValue consumes one complete JSON value from dec.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			default:
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

// safeJSONError drops the parts of encoding/json errors that may quote
// payload content (unmarshal type errors name the value), keeping offsets.
func safeJSONError(err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("invalid JSON at offset %d", syn.Offset)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Errorf("wrong JSON type at offset %d", typ.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("unexpected end of JSON")
	}
	return errors.New("invalid JSON")
}

// pruneEmpty rewrites the JSON value in raw without object members and
// array items whose value is "", null, {} or [] (after pruning their own
// contents), keeping member order, strings and numbers exactly as written,
// except that a top-level "resourceType" member is moved first. (Arrays of
// the "_element" primitive extension form, which align items with nulls,
// are not something the models emit.) An input that prunes to nothing
// gives an empty result.
func pruneEmpty(raw []byte) ([]byte, error) {
	if !json.Valid(raw) {
		var v any
		return nil, safeJSONError(json.Unmarshal(raw, &v))
	}
	p := pruner{src: raw}
	out, _ := p.value(make([]byte, 0, len(raw)), true)
	return out, nil
}

// pruner walks JSON already known to be valid.
type pruner struct {
	src []byte
	i   int
}

func (p *pruner) skipSpace() {
	for p.i < len(p.src) {
		switch p.src[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// value appends the pruned next value to out and reports whether it was
// empty (in which case nothing is appended).
func (p *pruner) value(out []byte, top bool) ([]byte, bool) {
	p.skipSpace()
	switch c := p.src[p.i]; {
	case c == '{':
		return p.object(out, top)
	case c == '[':
		return p.array(out)
	case c == '"':
		s := p.str()
		if len(s) == 2 {
			return out, true
		}
		return append(out, s...), false
	case c == 'n':
		p.i += len("null")
		return out, true
	default: // number, true, false
		start := p.i
		for p.i < len(p.src) {
			switch p.src[p.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return append(out, p.src[start:p.i]...), false
			}
			p.i++
		}
		return append(out, p.src[start:p.i]...), false
	}
}

// str consumes a string and returns it with its quotes and escapes.
func (p *pruner) str() []byte {
	start := p.i
	p.i++
	for p.src[p.i] != '"' {
		if p.src[p.i] == '\\' {
			p.i++
		}
		p.i++
	}
	p.i++
	return p.src[start:p.i]
}

func (p *pruner) object(out []byte, top bool) ([]byte, bool) {
	mark := len(out)
	out = append(out, '{')
	p.i++
	n := 0
	rtStart, rtEnd := -1, -1
	for {
		p.skipSpace()
		if p.src[p.i] == '}' {
			p.i++
			break
		}
		if p.src[p.i] == ',' {
			p.i++
			p.skipSpace()
		}
		key := p.str()
		p.skipSpace()
		p.i++ // ':'
		member := len(out)
		if n > 0 {
			out = append(out, ',')
		}
		valueStart := len(out)
		out = append(out, key...)
		out = append(out, ':')
		var empty bool
		out, empty = p.value(out, false)
		if empty {
			out = out[:member]
			continue
		}
		if top && rtStart < 0 && string(key) == `"resourceType"` {
			rtStart, rtEnd = valueStart, len(out)
		}
		n++
	}
	if n == 0 {
		return out[:mark], true
	}
	out = append(out, '}')
	if rtStart > mark+1 {
		// Move the resourceType member (and the comma before it) to the
		// front of the object.
		member := append([]byte(nil), out[rtStart:rtEnd]...)
		before := append([]byte(nil), out[mark+1:rtStart-1]...)
		after := append([]byte(nil), out[rtEnd:]...)
		out = append(out[:mark+1], member...)
		out = append(out, ',')
		out = append(out, before...)
		out = append(out, after...)
	}
	return out, false
}

func (p *pruner) array(out []byte) ([]byte, bool) {
	mark := len(out)
	out = append(out, '[')
	p.i++
	n := 0
	for {
		p.skipSpace()
		if p.src[p.i] == ']' {
			p.i++
			break
		}
		if p.src[p.i] == ',' {
			p.i++
		}
		item := len(out)
		if n > 0 {
			out = append(out, ',')
		}
		var empty bool
		out, empty = p.value(out, false)
		if empty {
			out = out[:item]
			continue
		}
		n++
	}
	if n == 0 {
		return out[:mark], true
	}
	return append(out, ']'), false
}
