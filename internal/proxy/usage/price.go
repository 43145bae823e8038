package usage

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// Price is a model's list price in US dollars per million tokens.
type Price struct {
	// Input and Output are the prices of input and output tokens.
	Input, Output float64
	// CacheWrite is the price of cache creation input tokens written to
	// the 5-minute cache (zero: CacheWriteFactor × Input).
	CacheWrite float64
	// CacheWrite1h is the price of cache creation input tokens written to
	// the 1-hour cache (zero: CacheWrite1hFactor × Input).
	CacheWrite1h float64
	// CacheRead is the price of cache read input tokens (zero:
	// CacheReadFactor × Input).
	CacheRead float64
}

// Multipliers of the input price for cache writes to the 5-minute and the
// 1-hour cache and for cache reads, as the Claude API's prompt-caching
// price list has them (https://platform.claude.com/docs/en/build-with-claude/prompt-caching,
// Pricing: 5-minute cache writes 1.25× the base input price, 1-hour cache
// writes 2×, cache reads 0.1×; per model, e.g. Sonnet 4.6: $3 input,
// $3.75 5-minute write, $6 1-hour write, $0.30 read per million tokens).
const (
	CacheWriteFactor   = 1.25
	CacheWrite1hFactor = 2
	CacheReadFactor    = 0.1
)

// DefaultPrices are the list prices the sidecar ships with (USD per
// million input/output tokens). A config adds models or replaces these
// prices; a model not in the table is counted in tokens and as unpriced,
// never at a guessed price. Cache writes are priced by cache: the usage
// object's cache_creation.ephemeral_1h_input_tokens at the 1-hour cache's
// 2× input, the rest of cache_creation_input_tokens at the 5-minute
// cache's 1.25×.
var DefaultPrices = map[string]Price{
	"claude-opus-4-7":   {Input: 5, Output: 25},
	"claude-sonnet-4-6": {Input: 3, Output: 15},
	"claude-haiku-4-5":  {Input: 1, Output: 5},
}

// OtherModel is the model label of every model not in the price table: it
// bounds the model label's cardinality to the table's size plus one.
const OtherModel = "other"

// withDefaults fills the cache prices from the input price.
func (p Price) withDefaults() Price {
	if p.CacheWrite == 0 {
		p.CacheWrite = CacheWriteFactor * p.Input
	}
	if p.CacheWrite1h == 0 {
		p.CacheWrite1h = CacheWrite1hFactor * p.Input
	}
	if p.CacheRead == 0 {
		p.CacheRead = CacheReadFactor * p.Input
	}
	return p
}

// CheckPrice checks a price: every figure finite and not negative, and an
// input or output price set.
func CheckPrice(p Price) error {
	for _, v := range []float64{p.Input, p.Output, p.CacheWrite, p.CacheWrite1h, p.CacheRead} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return errors.New("prices must be finite and not negative (USD per million tokens)")
		}
	}
	if p.Input == 0 && p.Output == 0 {
		return errors.New("set input and output (USD per million tokens), e.g. input: 3, output: 15")
	}
	return nil
}

// CheckModel checks a model id of the price table: 1–64 bytes of
// lower-case letters, digits, '-', '.' and '_', and not OtherModel.
func CheckModel(id string) error {
	if id == "" || len(id) > valueCap || id == OtherModel {
		return fmt.Errorf("model id %q: must be 1-64 characters and not %q", id, OtherModel)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("model id %q: use lower-case letters, digits, '-', '.' and '_', as the API's model ids", id)
		}
	}
	return nil
}

// Catalog maps model names to a bounded set of labels with their prices.
// It is immutable and safe for concurrent use.
type Catalog struct {
	names  []string // index → label; the last is OtherModel
	index  map[string]int
	prices []Price
}

// NewCatalog returns the catalog of DefaultPrices with overrides applied
// (an entry replaces or adds a model).
func NewCatalog(overrides map[string]Price) (*Catalog, error) {
	all := map[string]Price{}
	for id, p := range DefaultPrices {
		all[id] = p
	}
	var errs []error
	for id, p := range overrides {
		if err := CheckModel(id); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := CheckPrice(p); err != nil {
			errs = append(errs, fmt.Errorf("model %s: %w", id, err))
			continue
		}
		all[id] = p
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	c := &Catalog{index: map[string]int{}}
	for id := range all {
		c.names = append(c.names, id)
	}
	sort.Strings(c.names)
	for i, id := range c.names {
		c.index[id] = i
		c.prices = append(c.prices, all[id].withDefaults())
	}
	c.names = append(c.names, OtherModel)
	return c, nil
}

// Len returns the number of labels, OtherModel included.
func (c *Catalog) Len() int { return len(c.names) }

// Name returns label i.
func (c *Catalog) Name(i int) string { return c.names[i] }

// Other returns the index of OtherModel.
func (c *Catalog) Other() int { return len(c.names) - 1 }

// Lookup returns the label index of a model as a response names it: the
// table's entry of that id, or of its dated snapshot (id-YYYYMMDD, as
// claude-haiku-4-5-20251001), else Other(). It does not allocate.
func (c *Catalog) Lookup(model []byte) int {
	if i, ok := c.index[string(model)]; ok {
		return i
	}
	if n := len(model); n > 9 && model[n-9] == '-' && allDigits(model[n-8:]) {
		if i, ok := c.index[string(model[:n-9])]; ok {
			return i
		}
	}
	return c.Other()
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Cost returns the cost in USD of u at label i's price, and false
// when the label has no price (OtherModel). Of the cache writes,
// u.CacheCreation1h (at most all of them) are priced as 1-hour cache
// writes, the rest as 5-minute ones.
func (c *Catalog) Cost(i int, u Usage) (float64, bool) {
	if i < 0 || i >= len(c.prices) {
		return 0, false
	}
	p, t := c.prices[i], u.Tokens
	h := min(max(u.CacheCreation1h, 0), max(t[CacheCreation], 0))
	return (float64(t[Input])*p.Input + float64(t[Output])*p.Output +
		float64(t[CacheCreation]-h)*p.CacheWrite + float64(h)*p.CacheWrite1h +
		float64(t[CacheRead])*p.CacheRead) / 1e6, true
}

// ErrorTypes are the upstream error types the Claude API documents, the
// label values of error counts; any other type folds into OtherError.
var ErrorTypes = []string{
	"invalid_request_error", "authentication_error", "billing_error", "permission_error",
	"not_found_error", "conflict_error", "request_too_large", "rate_limit_error",
	"api_error", "overloaded_error",
}

// Error label values besides ErrorTypes.
const (
	// NoError labels answers without an error.
	NoError = "none"
	// OtherError labels error types not in ErrorTypes.
	OtherError = "other"
)

var errorIndex = func() map[string]int {
	m := map[string]int{}
	for i, t := range ErrorTypes {
		m[t] = i
	}
	return m
}()

// ErrorIndex returns the index of an error type in ErrorTypes, or
// len(ErrorTypes) for OtherError. It does not allocate.
func ErrorIndex(t []byte) int {
	if i, ok := errorIndex[string(t)]; ok {
		return i
	}
	return len(ErrorTypes)
}
