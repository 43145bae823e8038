package anthropictest

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// models are the ids of the Go SDK's Model constants (anthropic-sdk-go
// v1.84.0), newest first as /v1/models lists them; the dates are the
// fake's.
var models = []struct{ id, name, created string }{
	{"claude-haiku-5-5", "Claude Haiku 5.5", "2026-10-01T00:00:00Z"},
	{"claude-sonnet-5-5", "Claude Sonnet 5.5", "2026-09-24T00:00:00Z"},
	{"claude-opus-5-5", "Claude Opus 5.5", "2026-09-17T00:00:00Z"},
	{"claude-fable-5-1", "Claude Fable 5.1", "2026-08-20T00:00:00Z"},
	{"claude-mythos-5-1", "Claude Mythos 5.1", "2026-08-13T00:00:00Z"},
	{"claude-sonnet-5", "Claude Sonnet 5", "2026-07-15T00:00:00Z"},
	{"claude-fable-5", "Claude Fable 5", "2026-07-08T00:00:00Z"},
	{"claude-mythos-5", "Claude Mythos 5", "2026-07-01T00:00:00Z"},
	{"claude-opus-5", "Claude Opus 5", "2026-06-24T00:00:00Z"},
	{"claude-opus-4-8", "Claude Opus 4.8", "2026-05-20T00:00:00Z"},
	{"claude-opus-4-7", "Claude Opus 4.7", "2026-04-15T00:00:00Z"},
	{"claude-mythos-preview", "Claude Mythos Preview", "2026-03-18T00:00:00Z"},
	{"claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z"},
	{"claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"},
	{"claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z"},
	{"claude-opus-4-5", "Claude Opus 4.5", "2025-11-24T00:00:00Z"},
	{"claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"},
	{"claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"},
	{"claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"},
	{"claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"},
}

var (
	modelIndex = map[string]int{} // id → index in models
	modelJSON  [][]byte           // each model object
	modelPage  []byte             // GET /v1/models without parameters
)

func init() {
	for i, m := range models {
		modelIndex[m.id] = i
		b := append([]byte(`{"type":"model","id":`), strconv.Quote(m.id)...)
		b = append(b, `,"display_name":`...)
		b = append(b, strconv.Quote(m.name)...)
		b = append(b, `,"created_at":"`+m.created+`"}`...)
		modelJSON = append(modelJSON, b)
	}
	all := make([]int, len(models))
	for i := range all {
		all[i] = i
	}
	modelPage = appendModelPage(nil, all[:min(20, len(all))], len(all) > 20)
}

func appendModelPage(b []byte, page []int, hasMore bool) []byte {
	b = append(b, `{"data":[`...)
	for i, m := range page {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, modelJSON[m]...)
	}
	b = append(b, `],"has_more":`...)
	b = strconv.AppendBool(b, hasMore)
	return appendFirstLast(b, len(page) > 0, func(first bool) string {
		if first {
			return models[page[0]].id
		}
		return models[page[len(page)-1]].id
	})
}

// appendFirstLast appends the first_id and last_id of a page and closes
// the object.
func appendFirstLast(b []byte, nonEmpty bool, id func(first bool) string) []byte {
	if !nonEmpty {
		return append(b, `,"first_id":null,"last_id":null}`...)
	}
	b = append(b, `,"first_id":`...)
	b = appendString(b, id(true))
	b = append(b, `,"last_id":`...)
	b = appendString(b, id(false))
	return append(b, '}')
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request, reqID string) int {
	if r.URL.RawQuery == "" {
		return writeJSON(w, modelPage)
	}
	all := make([]int, len(models))
	for i := range all {
		all[i] = i
	}
	page, more, e := paginate(r.URL.Query(), all, func(i int) string { return models[i].id }, nil)
	if e != nil {
		return s.fail(w, reqID, e)
	}
	return writeJSON(w, appendModelPage(nil, page, more))
}

func (s *Server) getModel(w http.ResponseWriter, reqID, id string) int {
	i, ok := modelIndex[id]
	if !ok {
		return s.fail(w, reqID, &apiError{404, "not_found_error", "model: " + id})
	}
	return writeJSON(w, modelJSON[i])
}

// paginate returns the page of all (in list order) that the limit,
// after_id and before_id of q select, among the items keep accepts (nil:
// all). Cursors are found among all items, so that a cursor whose item no
// longer passes the filter still works.
func paginate[T any](q url.Values, all []T, id func(T) string, keep func(T) bool) (page []T, hasMore bool, e *apiError) {
	limit := 20
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(strings.TrimSpace(l))
		switch {
		case err != nil:
			return nil, false, &apiError{400, "invalid_request_error", "limit: Input should be a valid integer"}
		case n < 1:
			return nil, false, &apiError{400, "invalid_request_error", "limit: Input should be greater than or equal to 1"}
		case n > 1000:
			return nil, false, &apiError{400, "invalid_request_error", "limit: Input should be less than or equal to 1000"}
		}
		limit = n
	}
	after, before := q.Get("after_id"), q.Get("before_id")
	if after != "" && before != "" {
		return nil, false, &apiError{400, "invalid_request_error", "after_id and before_id cannot be given together"}
	}
	find := func(cursor, name string) (int, *apiError) {
		for i, x := range all {
			if id(x) == cursor {
				return i, nil
			}
		}
		return 0, &apiError{400, "invalid_request_error", name + ": no object has the id " + cursor}
	}
	lo, hi := 0, len(all)
	switch {
	case after != "":
		i, e := find(after, "after_id")
		if e != nil {
			return nil, false, e
		}
		lo = i + 1
	case before != "":
		i, e := find(before, "before_id")
		if e != nil {
			return nil, false, e
		}
		hi = i
	}
	var cands []T
	for _, x := range all[lo:hi] {
		if keep == nil || keep(x) {
			cands = append(cands, x)
		}
	}
	if len(cands) <= limit {
		return cands, false, nil
	}
	if before != "" {
		return cands[len(cands)-limit:], true, nil
	}
	return cands[:limit], true, nil
}
