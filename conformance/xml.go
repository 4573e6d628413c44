package conformance

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
)

// xnode is a FHIR XML element: its name, its value attribute and its
// children. FHIR XML keeps primitive values in value attributes, so this
// is all the profile reader needs.
type xnode struct {
	name     string
	id       string
	value    string
	hasValue bool
	children []*xnode
}

// child returns the first child named name, or nil.
func (n *xnode) child(name string) *xnode {
	if n == nil {
		return nil
	}
	for _, c := range n.children {
		if c.name == name {
			return c
		}
	}
	return nil
}

// all returns the children named name.
func (n *xnode) all(name string) []*xnode {
	if n == nil {
		return nil
	}
	var out []*xnode
	for _, c := range n.children {
		if c.name == name {
			out = append(out, c)
		}
	}
	return out
}

// val returns the value attribute of the child named name, or "".
func (n *xnode) val(name string) string {
	if c := n.child(name); c != nil {
		return c.value
	}
	return ""
}

// readXML parses a FHIR XML file into an xnode tree.
func readXML(path string) (*xnode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	var stack []*xnode
	var root *xnode
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			n := &xnode{name: t.Name.Local}
			for _, a := range t.Attr {
				switch a.Name.Local {
				case "value":
					n.value, n.hasValue = a.Value, true
				case "id":
					n.id = a.Value
				}
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.children = append(p.children, n)
			} else {
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
	if root == nil {
		return nil, fmt.Errorf("%s: empty XML document", path)
	}
	return root, nil
}

// leaves flattens n's descendants with value attributes into a map from
// dotted path (relative to n) to value: a pattern such as
// <patternCodeableConcept><coding><system value="S"/></coding> gives
// {"coding.system": "S"}.
func (n *xnode) leaves() map[string]string {
	out := map[string]string{}
	var walk func(x *xnode, prefix string)
	walk = func(x *xnode, prefix string) {
		for _, c := range x.children {
			p := c.name
			if prefix != "" {
				p = prefix + "." + c.name
			}
			if c.hasValue {
				out[p] = c.value
			}
			walk(c, p)
		}
	}
	walk(n, "")
	return out
}
