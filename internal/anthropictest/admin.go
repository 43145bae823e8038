package anthropictest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type keyObject struct {
	Type           string         `json:"type"`
	ID             string         `json:"id"`
	Name           string         `json:"name"`
	Status         string         `json:"status"`
	CreatedAt      string         `json:"created_at"`
	CreatedBy      map[string]any `json:"created_by"`
	ExpiresAt      *string        `json:"expires_at"`
	PartialKeyHint string         `json:"partial_key_hint"`
	WorkspaceID    *string        `json:"workspace_id"`
}

func toObject(k *Key) keyObject {
	return keyObject{
		Type: "api_key", ID: k.ID, Name: k.Name, Status: k.Status,
		CreatedAt: k.CreatedAt.Format(time.RFC3339), PartialKeyHint: k.Hint(),
		CreatedBy: map[string]any{"id": "user_01fake", "type": "user"},
	}
}

var validStatus = map[string]bool{StatusActive: true, StatusInactive: true, StatusArchived: true}

// admin serves the Admin API's key endpoints.
func (h *handler) admin(w http.ResponseWriter, r *http.Request, reqID string) int {
	s := h.s
	v := r.Header.Get("x-api-key")
	switch {
	case v == "":
		return h.fail(w, reqID, errMissingKey)
	case v != s.admin:
		return h.fail(w, reqID, errNotAdmin)
	case r.Header.Get("anthropic-version") == "":
		return h.fail(w, reqID, errVersion)
	}
	const base = "/v1/organizations/api_keys"
	path := r.URL.Path
	if path == base {
		if r.Method != http.MethodGet {
			return h.fail(w, reqID, errMethod)
		}
		return h.listKeys(w, r, reqID)
	}
	if !strings.HasPrefix(path, base+"/") {
		return h.fail(w, reqID, errNotFound)
	}
	id := strings.TrimPrefix(path, base+"/")
	switch r.Method {
	case http.MethodGet:
		k, ok := s.Key(id)
		if !ok {
			return h.fail(w, reqID, &apiError{404, "not_found_error", "API key not found: " + id})
		}
		b, _ := json.Marshal(toObject(&k))
		return writeJSON(w, 200, b)
	case http.MethodPost:
		if !jsonBody(r) {
			return h.fail(w, reqID, errContentType)
		}
		var body struct {
			Name   *string `json:"name"`
			Status *string `json:"status"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			return h.fail(w, reqID, errBody)
		}
		if body.Status != nil && !validStatus[*body.Status] {
			return h.fail(w, reqID, &apiError{400, "invalid_request_error", "status: Input should be 'active', 'inactive' or 'archived'"})
		}
		s.mu.Lock()
		k, ok := s.byID[id]
		if !ok {
			s.mu.Unlock()
			return h.fail(w, reqID, &apiError{404, "not_found_error", "API key not found: " + id})
		}
		if k.Status == StatusArchived && (body.Status == nil || *body.Status != StatusArchived) {
			s.mu.Unlock()
			return h.fail(w, reqID, &apiError{400, "invalid_request_error", "Cannot update an archived API key"})
		}
		if body.Name != nil {
			k.Name = *body.Name
		}
		if body.Status != nil {
			s.setStatusLocked(k, *body.Status)
		}
		obj := toObject(k)
		s.mu.Unlock()
		b, _ := json.Marshal(obj)
		return writeJSON(w, 200, b)
	}
	return h.fail(w, reqID, errMethod)
}

func (h *handler) listKeys(w http.ResponseWriter, r *http.Request, reqID string) int {
	q := r.URL.Query()
	limit := 20
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return h.fail(w, reqID, &apiError{400, "invalid_request_error", "limit: Input should be between 1 and 1000"})
		}
		limit = n
	}
	status := q.Get("status")
	if status != "" && !validStatus[status] && status != StatusExpired {
		return h.fail(w, reqID, &apiError{400, "invalid_request_error", "status: invalid value"})
	}
	all := h.s.list(status)
	start, end := 0, len(all)
	if after := q.Get("after_id"); after != "" {
		start = indexOf(all, after) + 1
		if start == 0 {
			return h.fail(w, reqID, &apiError{400, "invalid_request_error", "after_id: unknown id"})
		}
	}
	if before := q.Get("before_id"); before != "" {
		end = indexOf(all, before)
		if end < 0 {
			return h.fail(w, reqID, &apiError{400, "invalid_request_error", "before_id: unknown id"})
		}
		if end-limit > start {
			start = end - limit
		}
	}
	hasMore := false
	if end-start > limit {
		end = start + limit
		hasMore = true
	} else if q.Get("before_id") != "" && start > 0 {
		hasMore = true
	}
	data := make([]keyObject, 0, end-start)
	for _, k := range all[start:end] {
		data = append(data, toObject(k))
	}
	out := map[string]any{"data": data, "has_more": hasMore, "first_id": nil, "last_id": nil}
	if len(data) > 0 {
		out["first_id"], out["last_id"] = data[0].ID, data[len(data)-1].ID
	}
	b, _ := json.Marshal(out)
	return writeJSON(w, 200, b)
}

func indexOf(keys []*Key, id string) int {
	for i, k := range keys {
		if k.ID == id {
			return i
		}
	}
	return -1
}
