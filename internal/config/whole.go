package config

import (
	"fmt"
	"reflect"

	"gopkg.in/yaml.v3"
)

// wholeNumbers checks, before the document is decoded, that every value
// bound for an integer field is written as an integer. The YAML decoder
// truncates a float into an int field (budgets tokens: 2.9 becomes 2,
// burst: 1.7 becomes 1) without a word; this is the one check for every
// integer field of the file, present and future. Types that decode
// themselves (Duration, Size) are theirs to check.
func wholeNumbers(doc *yaml.Node) error {
	if doc == nil || doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	return checkWhole(doc.Content[0], reflect.TypeFor[Config](), "")
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func checkWhole(n *yaml.Node, t reflect.Type, path string) error {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	switch n.Kind {
	case yaml.ScalarNode:
		switch t.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			if n.ShortTag() == "!!float" {
				return fmt.Errorf("config: %s: %s is not a whole number (line %d)", path, n.Value, n.Line)
			}
		}
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
			return nil
		}
		for i, c := range n.Content {
			if err := checkWhole(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			name := n.Content[i].Value
			var ft reflect.Type
			switch t.Kind() {
			case reflect.Map:
				ft = t.Elem()
			case reflect.Struct:
				ft = fieldByTag(t, name)
			}
			if ft == nil {
				continue // unknown fields are the decoder's to refuse
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			if err := checkWhole(n.Content[i+1], ft, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// fieldByTag returns the type of t's field whose yaml name is name, or nil.
func fieldByTag(t reflect.Type, name string) reflect.Type {
	for i := range t.NumField() {
		if f := t.Field(i); yamlName(f) == name {
			return f.Type
		}
	}
	return nil
}
