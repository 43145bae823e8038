// Package config loads keywarden's YAML configuration: the named keys with
// their stores and refresh settings, their rotation, and the sidecar.
//
// Unknown fields are errors; every error names the field and what would fix
// it; durations are Go durations ("30s", "5m", "168h").
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/redact"
)

// Config is the whole configuration file.
type Config struct {
	// Keys are the named keys keywarden serves and rotates.
	Keys map[string]*Key `yaml:"keys"`
	// Sidecar configures `keywarden sidecar`.
	Sidecar Sidecar `yaml:"sidecar"`
	// Rotator configures `keywarden rotate` and `keywarden rotator`.
	Rotator Rotator `yaml:"rotator"`

	// Path is the file the config was loaded from ("" when parsed from bytes).
	Path string `yaml:"-"`
}

// Key is one named key.
type Key struct {
	// Name is the key's name in the config (the map key).
	Name string `yaml:"-"`
	// Store is the store URL, e.g. awssm://anthropic/prod?region=us-east-1.
	// Its portable parameters (field, refresh, jitter, max_stale) are
	// package providers' to decode, like the fields below.
	Store string `yaml:"store"`
	// Field is the JSON field holding the key when the payload is JSON.
	Field string `yaml:"field"`
	// Refresh is the background refresh interval (providers.DefaultRefresh).
	Refresh Duration `yaml:"refresh"`
	// Jitter is added at random to each refresh interval (providers: a
	// tenth of the refresh interval).
	Jitter Duration `yaml:"jitter"`
	// MaxStale bounds serving the last good key through store outages
	// (providers.DefaultMaxStale).
	MaxStale Duration `yaml:"max_stale"`
	// Rotation configures rotation of this key; nil when it is not rotated.
	Rotation *Rotation `yaml:"rotation"`
}

// SourceOptions returns the key's Source settings as the file set them;
// a zero field was not set. Pass them to providers.Open with the store URL
// unchanged: providers fills the zero fields from the URL's portable
// parameters, then from its defaults, and validates them, so that each
// setting is decoded and defaulted in one place.
func (k *Key) SourceOptions() providers.Options {
	return providers.Options{Field: k.Field, Refresh: k.Refresh.D, Jitter: k.Jitter.D, MaxStale: k.MaxStale.D}
}

// Effective returns the Source settings the key's consumers will use: the
// file's, else the store URL's portable parameters, else providers'
// defaults, resolved by providers.ResolveOptions, their one owner. It fails
// when the URL's portable parameters or the combination are invalid.
func (k *Key) Effective() (providers.Options, error) {
	return providers.ResolveOptions(k.Store, k.SourceOptions())
}

// FieldName returns the JSON field of the key's payload that consumers use:
// the file's field, else the store URL's field parameter, else
// providers.DefaultField.
func (k *Key) FieldName() string {
	o, err := k.Effective()
	if err != nil {
		return k.Field // Load refuses such a key; no default is guessed here.
	}
	return o.Field
}

// LongestRefreshGap is the longest time a consumer of this key can go
// between two store reads: refresh plus jitter (providers.Options.LongestGap).
// A rotation's grace period must be at least that.
func (k *Key) LongestRefreshGap() time.Duration {
	o, err := k.Effective()
	if err != nil {
		return 0 // Load refuses such a key.
	}
	return o.LongestGap()
}

// Names returns the key names, sorted.
func (c *Config) Names() []string {
	names := make([]string, 0, len(c.Keys))
	for n := range c.Keys {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Key returns the named key, or an error listing the known names.
func (c *Config) Key(name string) (*Key, error) {
	if k, ok := c.Keys[name]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("config: no key named %q (keys: %s)", name, strings.Join(c.Names(), ", "))
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// emptyDocument reports whether a decoded YAML document sets nothing (a
// trailing --- line).
func emptyDocument(n *yaml.Node) bool {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	return n.Kind == 0 || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// Parse parses and validates a config document. Its errors quote the
// values at fault, with anything shaped like a key redacted: a key pasted
// into the wrong field must not reach a log.
func Parse(b []byte) (*Config, error) {
	c, err := parse(b)
	if err != nil {
		return nil, errors.New(redact.String(err.Error()))
	}
	return c, nil
}

func parse(b []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err == nil {
		if err := wholeNumbers(&doc); err != nil {
			return nil, err
		}
	} // a syntax error is reported by the decoding below
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config: the file is empty; it needs at least a keys: section")
		}
		return nil, fmt.Errorf("config: %s", explainYAML(err))
	}
	// A second document (after ---) would be ignored: refuse it, so that
	// nothing a file sets is silently dropped.
	for {
		var more yaml.Node
		err := dec.Decode(&more)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || !emptyDocument(&more) {
			return nil, errors.New("config: the file holds more than one YAML document (a --- line); keywarden reads one: merge them")
		}
	}
	for name, k := range c.Keys {
		if k == nil {
			return nil, fmt.Errorf("config: keys.%s is empty; give it at least a store: URL", name)
		}
		k.Name = name
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// keyName is the shape of a key's name, at most 63 bytes (checked apart: a
// counted repetition compiles into one copy of the class per count).
var keyName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// validKeyName says whether s can name a key.
func validKeyName(s string) bool { return len(s) <= 63 && keyName.MatchString(s) }

func (c *Config) validate() error {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if len(c.Keys) == 0 {
		add("keys: no keys configured; add one, e.g. keys: {prod: {store: \"file:///etc/keywarden/keys.json?name=prod\"}}")
	}
	for _, name := range c.Names() {
		k := c.Keys[name]
		p := "keys." + name
		if providers.KeyShaped(name) {
			// The name is printed as it is (tables, status, /metrics,
			// /readyz): a key pasted as a name is refused, and named
			// nowhere, not even by the path of its field.
			p = "keys.<a name shaped like a key>"
			add("%s: the name is %s; name the key (such as prod), never write the key itself here", p, providers.KeyShapes)
		} else if !validKeyName(name) {
			add("%s: key name must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", p)
		}
		if strings.TrimSpace(k.Store) == "" {
			add("%s.store: missing; set the store URL, e.g. awssm://anthropic/prod?region=us-east-1", p)
		} else if !strings.Contains(k.Store, ":") {
			add("%s.store: %q is not a URL; use scheme://..., e.g. file:///etc/keywarden/keys.json?name=%s", p, k.Store, name)
		}
		if k.Refresh.D < 0 {
			add("%s.refresh: must be positive", p)
		}
		if k.Jitter.D < 0 {
			add("%s.jitter: must not be negative", p)
		}
		if k.Refresh.D >= 0 && k.Jitter.D >= 0 && strings.Contains(k.Store, ":") {
			if _, err := k.Effective(); err != nil {
				add("%s: %v", p, err) // the error names the URL or the parameter at fault
			}
		}
		if k.Rotation != nil {
			errs = append(errs, k.Rotation.validate(p+".rotation", k, c)...)
		}
	}
	errs = append(errs, c.Sidecar.validate("sidecar", c)...)
	errs = append(errs, c.Rotator.validate("rotator", c)...)
	if len(errs) > 0 {
		return fmt.Errorf("config: %s", strings.Join(errs, "\n  "))
	}
	return nil
}

// Duration is a time.Duration written as a Go duration string ("30s", "5m").
// A bare number is refused: it would be read as nanoseconds.
type Duration struct{ D time.Duration }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 30s or 5m", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a Go duration; write it with a unit, such as 30s, 5m or 168h", n.Line, n.Value)
	}
	d.D = v
	return nil
}

// MarshalYAML writes the duration as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return d.D.String(), nil }

var fieldNotFound = regexp.MustCompile(`field (\S+) not found in type (\S+)`)

// explainYAML rewrites yaml.v3's errors to name the section and list the
// known fields.
func explainYAML(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
	return fieldNotFound.ReplaceAllStringFunc(msg, func(m string) string {
		sub := fieldNotFound.FindStringSubmatch(m)
		known := knownFields[sub[2]]
		return fmt.Sprintf("unknown field %q (known fields here: %s)", sub[1], strings.Join(known, ", "))
	})
}

// yamlName returns the key yaml.v3 decodes a struct field from: its tag's
// name, or its lower-cased Go name when untagged; "" for a field it skips
// (unexported, or tagged "-").
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return strings.ToLower(f.Name)
	}
	return name
}

// knownFields maps "config.Type" to its YAML field names, for error messages.
var knownFields = map[string][]string{}

func registerFields(v any) {
	t := reflect.TypeOf(v)
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if n := yamlName(t.Field(i)); n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	knownFields["config."+t.Name()] = names
}

func init() {
	for _, v := range []any{Config{}, Key{}, Rotation{}, Sidecar{}, Rotator{}} {
		registerFields(v)
	}
}
