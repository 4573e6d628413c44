package yamlx

import (
	"bytes"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Node is a raw, not yet decoded subtree, for configuration that is decoded
// later by its own struct (for example an adapter's settings). Aliases at
// the top of the subtree are already resolved, so Pos is that of the
// anchored value.
type Node struct {
	Node *yaml.Node
	// File is the file the node was read from, used in error positions.
	File string
	// Path is the dotted path of the node in its document, such as
	// "routes[2].config"; Decode puts it in front of the paths of errors.
	Path string

	src *source // text of File, to map String positions; may be nil
}

// IsZero reports whether the node is absent or an explicit null.
func (n Node) IsZero() bool {
	return isNull(n.Node)
}

// Pos returns where the node starts, or a Pos holding only the file when the
// node is absent.
func (n Node) Pos() Pos {
	if n.Node == nil {
		return Pos{File: n.File}
	}
	return Pos{File: n.File, Line: n.Node.Line, Col: n.Node.Column}
}

// Decode strictly decodes the subtree into out, a non-nil pointer, by the
// same rules as Decode. An absent or null node leaves out as it is.
func (n Node) Decode(out any) error {
	var errs Errors
	n.DecodeTo(out, &errs)
	return errs.Err()
}

// DecodeTo is Decode that appends its problems to errs, for an Unmarshaler
// or a loader gathering every error of a file.
func (n Node) DecodeTo(out any, errs *Errors) {
	if n.Node == nil {
		return
	}
	d := newDecoder(n.File, n.src)
	d.root(n.Node, n.Path, out)
	*errs = append(*errs, d.errs...)
}

// Child returns node, a part of n or a node built from its parts, as a Node
// of the same file at path n.Path + "." + key (n.Path itself when key is
// empty), keeping what Decode needs to place String values exactly.
func (n Node) Child(node *yaml.Node, key string) Node {
	path := n.Path
	if key != "" {
		path = join(path, key)
	}
	return Node{Node: node, File: n.File, Path: path, src: n.src}
}

// Equal reports whether n and o hold the same YAML, compared as re-encoded
// text so that positions do not matter. go-cmp uses it.
func (n Node) Equal(o Node) bool {
	if n.IsZero() || o.IsZero() {
		return n.IsZero() == o.IsZero()
	}
	a, errA := yaml.Marshal(n.Node)
	b, errB := yaml.Marshal(o.Node)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// PosOf returns where the value at path (dotted keys, each optionally
// indexed as key[2], relative to n) is written; when it is absent, where
// the key of its nearest parent present is, so an error about a missing
// "tls.key" points at tls. It suits errors a decoded struct's own
// validation gives by field path (see IsPath).
func (n Node) PosOf(path string) Pos {
	pos := func(y *yaml.Node) Pos { return Pos{File: n.File, Line: y.Line, Col: y.Column} }
	cur := n.Node
	for cur != nil && cur.Kind == yaml.DocumentNode && len(cur.Content) == 1 {
		cur = cur.Content[0]
	}
	at := n.Pos()
	for _, part := range strings.Split(path, ".") {
		key, idx, indexed := cutIndex(part)
		k, v := MapEntry(cur, key)
		if v == nil {
			return at
		}
		at = pos(k)
		if indexed {
			if v.Kind != yaml.SequenceNode || idx >= len(v.Content) {
				return at
			}
			v = v.Content[idx]
			at = pos(v)
		}
		cur = v
	}
	if cur == nil {
		return at
	}
	return pos(cur)
}

// IsPath reports whether s is a dotted path of settings keys, each
// starting with a lower-case letter, then lower-case letters, digits,
// '_' and '-', and optionally indexed, such as tls.client_ca,
// destinations.fhir-store.retry or hosts[2].
func IsPath(s string) bool {
	for _, part := range strings.Split(s, ".") {
		key, _, _ := cutIndex(part)
		if key == "" || key[0] < 'a' || key[0] > 'z' {
			return false
		}
		for _, r := range key {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' && r != '-' {
				return false
			}
		}
	}
	return true
}

// cutIndex splits "key[3]" into key and 3.
func cutIndex(part string) (key string, idx int, indexed bool) {
	open := strings.IndexByte(part, '[')
	if open < 0 || !strings.HasSuffix(part, "]") {
		return part, 0, false
	}
	i, err := strconv.Atoi(part[open+1 : len(part)-1])
	if err != nil || i < 0 {
		return part, 0, false
	}
	return part[:open], i, true
}

// MapEntry returns the key and value nodes of key in mapping m, or nils.
func MapEntry(m *yaml.Node, key string) (k, v *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}
