package topcli

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keywarden/keywarden/internal/cli"
	"github.com/keywarden/keywarden/internal/proxy/usage"
	"github.com/keywarden/keywarden/providers"
)

// view is what one refresh shows: the totals of a scrape and, when there
// is an earlier scrape, the rates between the two.
type view struct {
	hasRates bool
	dt       time.Duration // between the two scrapes, with hasRates
	clients  []clientRow
	total    clientRow
	models   []modelRow
	errors   []errorRow
	budgets  []budgetRow
	limits   []limitRow
	unpriced float64
}

// clientRow is one client's totals and rates (per second).
type clientRow struct {
	name              string
	requests, reqRate float64
	errs, errRate     float64
	tokens, tokRate   float64
	cost, costRate    float64 // USD, USD per second
}

// modelRow is one client's use of one model.
type modelRow struct {
	client, model  string
	tokens         [usage.NumKinds]float64
	tokRate        float64
	cost, costRate float64
	unpriced       float64
}

// errorRow counts one client's errors of one type.
type errorRow struct {
	client, errType string
	count, rate     float64
}

// budgetRow is one budget.
type budgetRow struct {
	name                 string
	used                 float64 // ratio; valid with hasUsed
	hasUsed              bool
	refused, refusedRate float64
}

// limitRow is one key's upstream rate limit of one resource.
type limitRow struct {
	key, resource          string
	limit, remaining       float64
	hasLimit, hasRemaining bool
	// stale: the limit's reset time has passed (no request since), so
	// the upstream has replenished it and remaining is out of date.
	stale bool
}

// rate is the per-second increase of a counter from prev to cur over dt;
// a counter that went down was reset (the sidecar restarted), so all of
// cur is new, as Prometheus's rate() reads it.
func rate(cur, prev float64, dt time.Duration) float64 {
	if math.IsInf(cur, 0) {
		return cur // an overflowed spend stays visible
	}
	if dt <= 0 {
		return 0
	}
	d := cur - prev
	if d < 0 {
		d = cur
	}
	return d / dt.Seconds()
}

// newView computes the view of cur, with rates since prev when prev is an
// earlier scrape (nil: totals only).
func newView(prev, cur *snapshot) view {
	v := view{unpriced: cur.unpriced}
	var dt time.Duration
	if prev != nil && cur.at.After(prev.at) {
		v.hasRates, dt = true, cur.at.Sub(prev.at)
		v.dt = dt
	} else {
		prev = newSnapshot(cur.at)
	}
	byClient := map[string]*clientRow{}
	for _, name := range slices.Sorted(maps.Keys(cur.clients)) {
		c, p := cur.clients[name], prev.clients[name]
		if p == nil {
			p = &clientStats{}
		}
		r := clientRow{name: name, requests: c.requests, reqRate: rate(c.requests, p.requests, dt)}
		for _, et := range slices.Sorted(maps.Keys(c.errors)) {
			n := c.errors[et]
			er := errorRow{client: name, errType: et, count: n, rate: rate(n, p.errors[et], dt)}
			if n == 0 {
				continue
			}
			r.errs += er.count
			r.errRate += er.rate
			v.errors = append(v.errors, er)
		}
		v.clients = append(v.clients, r)
	}
	for i := range v.clients {
		byClient[v.clients[i].name] = &v.clients[i]
	}
	keys := slices.SortedFunc(maps.Keys(cur.models), func(a, b clientModel) int {
		return cmp.Or(strings.Compare(a.client, b.client), strings.Compare(a.model, b.model))
	})
	for _, k := range keys {
		m, p := cur.models[k], prev.models[k]
		if p == nil {
			p = &modelStats{}
		}
		r := modelRow{client: k.client, model: k.model, tokens: m.tokens, cost: m.cost,
			costRate: rate(m.cost, p.cost, dt), unpriced: m.unpriced}
		for i, n := range m.tokens {
			r.tokRate += rate(n, p.tokens[i], dt)
		}
		v.models = append(v.models, r)
		c := byClient[k.client] // parse gives every client of a model a row
		if c == nil {
			continue
		}
		for _, n := range m.tokens {
			c.tokens += n
		}
		c.tokRate += r.tokRate
		c.cost += r.cost
		c.costRate += r.costRate
	}
	v.total.name = "TOTAL"
	for _, c := range v.clients {
		v.total.requests += c.requests
		v.total.reqRate += c.reqRate
		v.total.errs += c.errs
		v.total.errRate += c.errRate
		v.total.tokens += c.tokens
		v.total.tokRate += c.tokRate
		v.total.cost += c.cost
		v.total.costRate += c.costRate
	}
	for _, name := range slices.Sorted(maps.Keys(cur.budgets)) {
		b, p := cur.budgets[name], prev.budgets[name]
		if p == nil {
			p = &budgetStats{}
		}
		v.budgets = append(v.budgets, budgetRow{name: name, used: b.used, hasUsed: b.hasUsed,
			refused: b.refused, refusedRate: rate(b.refused, p.refused, dt)})
	}
	lkeys := slices.SortedFunc(maps.Keys(cur.limits), func(a, b keyResource) int {
		return cmp.Or(strings.Compare(a.key, b.key), strings.Compare(a.resource, b.resource))
	})
	for _, k := range lkeys {
		l := cur.limits[k]
		if l.limit == 0 && l.remaining == 0 {
			continue // a resource whose headers the upstream never sent
		}
		// As the headroom alert does, a limit whose reset time has passed
		// is stale.
		stale := l.hasReset && float64(cur.at.UnixNano())/1e9 >= l.reset
		v.limits = append(v.limits, limitRow{key: k.key, resource: k.resource, limit: l.limit,
			remaining: l.remaining, hasLimit: l.hasLimit, hasRemaining: l.hasRemaining, stale: stale})
	}
	return v
}

// header is the first line of a frame.
type header struct {
	url      string // redacted
	at       time.Time
	interval time.Duration // 0: a single scrape
}

// render writes the frame of v (or of err, when the scrape failed) as
// plain lines: tables aligned with spaces, no escape codes, and no control
// character from the body (label values are sanitized).
func render(w io.Writer, h header, v *view, err error) {
	fmt.Fprintf(w, "keywarden top  %s  %s", h.url, h.at.UTC().Format("2006-01-02 15:04:05 UTC"))
	if h.interval > 0 {
		fmt.Fprintf(w, "  every %s", h.interval)
	}
	fmt.Fprintln(w)
	if err != nil {
		// As every command prints an error (cli.ErrText): a body's text
		// quoted by the parser's error may hold anything.
		fmt.Fprintf(w, "error: %s\n", clean(cli.ErrText(err), 0))
		return
	}
	if v.hasRates {
		fmt.Fprintf(w, "rates: per second over the last %s\n", v.dt.Round(time.Millisecond))
	} else {
		fmt.Fprintln(w, "rates: after the next scrape")
	}
	fmt.Fprintln(w)
	rt := func(r float64) string {
		if !v.hasRates {
			return "-"
		}
		return fmt.Sprintf("%.2f", r) // "+Inf" too
	}
	usdRate := func(perSecond float64) string {
		if !v.hasRates {
			return "-"
		}
		return usd(perSecond * 3600)
	}
	if len(v.clients) == 0 {
		fmt.Fprintln(w, "no client requests yet")
	} else {
		tw := table(w)
		fmt.Fprintln(tw, "CLIENT\tREQS\tREQ/S\tERRORS\tERR/S\tTOKENS\tTOK/S\tSPEND $\t$/H")
		for _, c := range append(v.clients, v.total) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clean(c.name, nameWidth), count(c.requests), rt(c.reqRate),
				count(c.errs), rt(c.errRate), count(c.tokens), rt(c.tokRate), usd(c.cost), usdRate(c.costRate))
		}
		tw.Flush()
	}
	if len(v.models) > 0 {
		fmt.Fprintln(w)
		tw := table(w)
		fmt.Fprintln(tw, "CLIENT\tMODEL\tINPUT\tOUTPUT\tCACHE_W\tCACHE_R\tTOK/S\tSPEND $\t$/H")
		for _, m := range v.models {
			spend := usd(m.cost)
			if m.cost == 0 && m.unpriced > 0 {
				spend = "unpriced"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clean(m.client, nameWidth), clean(m.model, nameWidth),
				count(m.tokens[usage.Input]), count(m.tokens[usage.Output]), count(m.tokens[usage.CacheCreation]),
				count(m.tokens[usage.CacheRead]), rt(m.tokRate), spend, usdRate(m.costRate))
		}
		tw.Flush()
	}
	if v.unpriced > 0 {
		fmt.Fprintf(w, "%s tokens of models without a price are not in the spend (sidecar.usage.prices)\n", count(v.unpriced))
	}
	if len(v.errors) > 0 {
		fmt.Fprintln(w)
		tw := table(w)
		fmt.Fprintln(tw, "CLIENT\tERROR\tCOUNT\tPER S")
		for _, e := range v.errors {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", clean(e.client, nameWidth), clean(e.errType, nameWidth), count(e.count), rt(e.rate))
		}
		tw.Flush()
	}
	if len(v.budgets) > 0 {
		fmt.Fprintln(w)
		tw := table(w)
		fmt.Fprintln(tw, "BUDGET\tUSED\tLEFT\tREFUSED\tPER S")
		for _, b := range v.budgets {
			used, left := "-", "-"
			if b.hasUsed {
				used, left = percent(b.used), percent(max(0, 1-b.used))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", clean(b.name, nameWidth), used, left, count(b.refused), rt(b.refusedRate))
		}
		tw.Flush()
	}
	if len(v.limits) > 0 {
		fmt.Fprintln(w)
		tw := table(w)
		fmt.Fprintln(tw, "KEY\tRATE LIMIT\tREMAINING\tLIMIT\tHEADROOM")
		stale := false
		for _, l := range v.limits {
			rem, lim, head := "-", "-", "-"
			if l.hasRemaining && !l.stale {
				rem = count(l.remaining)
			}
			if l.hasLimit {
				lim = count(l.limit)
			}
			switch {
			case l.stale:
				head, stale = "stale", true
			case l.hasRemaining && l.hasLimit && l.limit > 0:
				head = percent(l.remaining / l.limit)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", clean(l.key, nameWidth), clean(l.resource, nameWidth), rem, lim, head)
		}
		tw.Flush()
		if stale {
			fmt.Fprintln(w, "stale: the limit's reset time has passed with no request since; the upstream has replenished it")
		}
	}
}

// nameWidth bounds a label value's width in a table.
const nameWidth = 40

func table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// notFinite spells a value that is infinite or NaN, as the sidecar's
// metrics do (an overflowed spend is +Inf), so that it is not hidden.
func notFinite(v float64) (string, bool) {
	switch {
	case math.IsInf(v, 1):
		return "+Inf", true
	case math.IsInf(v, -1):
		return "-Inf", true
	case math.IsNaN(v):
		return "NaN", true
	}
	return "", false
}

func count(v float64) string {
	if s, ok := notFinite(v); ok {
		return s
	}
	return fmt.Sprintf("%.0f", v)
}

func percent(ratio float64) string {
	if s, ok := notFinite(ratio); ok {
		return s
	}
	return fmt.Sprintf("%.1f%%", ratio*100)
}

// usd formats dollars with the precision small test spends need.
func usd(v float64) string {
	switch {
	case math.IsInf(v, 0) || math.IsNaN(v):
		s, _ := notFinite(v)
		return s
	case v >= 100:
		return fmt.Sprintf("%.2f", v)
	case v >= 1:
		return fmt.Sprintf("%.4f", v)
	}
	return fmt.Sprintf("%.6f", v)
}

// clean makes an untrusted string safe to print in a table: a value
// shaped like a key becomes its fingerprint (providers.RedactKeys: the
// scraped body is whatever answers on the address, and a label value may
// hold a key), every character that is not printable (escape codes, tabs,
// newlines, invalid UTF-8) becomes '?', an empty string "-", and a string
// longer than width runes (0: no bound) is cut with "…".
func clean(s string, width int) string {
	if s == "" {
		return "-"
	}
	s = providers.RedactKeys(s)
	var b strings.Builder
	n := 0
	for _, r := range s {
		if width > 0 && n == width {
			b.WriteString("…")
			break
		}
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// ANSI sequences of the in-place refresh.
const (
	ansiClear    = "\x1b[2J" // erase the screen
	ansiHome     = "\x1b[H"  // cursor to the top left
	ansiClearEOL = "\x1b[K"  // erase to the end of the line
	ansiClearEOS = "\x1b[J"  // erase to the end of the screen
)

// inPlace rewrites a plain frame for a terminal: from the top left, each
// line erasing what the previous frame left on it, and the rest of the
// screen erased; the first frame clears the screen first.
func inPlace(frame []byte, first bool) []byte {
	var b bytes.Buffer
	if first {
		b.WriteString(ansiClear)
	}
	b.WriteString(ansiHome)
	for line := range bytes.Lines(frame) {
		b.Write(bytes.TrimSuffix(line, []byte("\n")))
		b.WriteString(ansiClearEOL + "\n")
	}
	b.WriteString(ansiClearEOS)
	return b.Bytes()
}
