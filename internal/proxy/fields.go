package proxy

import "slices"

// fields is a request's header as the guards and the key rule read and
// change it (providers.Fields): each name once, in canonical form
// (fasthttp writes the request's names as net/http.CanonicalHeaderKey
// does), with its values in the order sent; the names in the order they
// first came. A slice rather than an http.Header: a request carries a
// dozen fields, and comparing a dozen names costs less than hashing each
// one into a map, then clearing it (docs/benchmarks.md, session 19).
type fields []field

// field is one name of fields and its values.
type field struct {
	name string
	vals []string
}

// fieldsIndexed is the number of lines from which a header's repeated
// names are found through a map (newFieldsIndex) rather than by scanning
// the names so far: it bounds the work of a header of many short names
// (8 KiB of them), which scans would make quadratic.
const fieldsIndexed = 32

// newFieldsIndex returns the index add needs for a header of n lines: nil
// (none) below fieldsIndexed.
func newFieldsIndex(n int) map[string]int {
	if n <= fieldsIndexed {
		return nil
	}
	return make(map[string]int, n)
}

// add puts a header line into f: v is its value as a slice of length and
// capacity 1 (of the caller's backing store), kept as the field's values
// when name is new and appended to them (a copy) when it repeats, as
// net/http's server joins lines of one name. index is newFieldsIndex's.
func (f *fields) add(name string, v []string, index map[string]int) {
	i := -1
	if index != nil {
		if j, ok := index[name]; ok {
			i = j
		} else {
			index[name] = len(*f)
		}
	} else {
		i = f.index(name)
	}
	if i >= 0 {
		(*f)[i].vals = append((*f)[i].vals, v[0])
		return
	}
	*f = append(*f, field{name: name, vals: v})
}

// index returns the position of the field name, or -1.
func (f fields) index(name string) int {
	for i := range f {
		if f[i].name == name {
			return i
		}
	}
	return -1
}

// Values returns the values of the field name, or nil.
func (f *fields) Values(name string) []string {
	if i := f.index(name); i >= 0 {
		return (*f)[i].vals
	}
	return nil
}

// Replace sets the values of the field name to vs, adding the field last
// when absent.
func (f *fields) Replace(name string, vs []string) {
	if i := f.index(name); i >= 0 {
		(*f)[i].vals = vs
		return
	}
	*f = append(*f, field{name: name, vals: vs})
}

// Del removes the field name, keeping the others' order (slices.Delete
// clears the freed slot: no view of a dropped value stays reachable).
func (f *fields) Del(name string) {
	if i := f.index(name); i >= 0 {
		*f = slices.Delete(*f, i, i+1)
	}
}

// drop removes every field whose name gone reports, keeping the others'
// order: one pass over the fields.
func (f *fields) drop(gone func(name string) bool) {
	*f = slices.DeleteFunc(*f, func(fl field) bool { return gone(fl.name) })
}
