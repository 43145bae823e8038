package anthropictest

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

const apiKeysPath = "/v1/organizations/api_keys"

// admin serves the Admin API's key endpoints; the caller authenticated
// the admin key.
func (s *Server) admin(w http.ResponseWriter, r *http.Request, reqID string) int {
	path := r.URL.Path
	if path == apiKeysPath {
		if r.Method != http.MethodGet {
			return s.fail(w, reqID, errMethod)
		}
		return s.listKeys(w, r, reqID)
	}
	id, ok := strings.CutPrefix(path, apiKeysPath+"/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return s.fail(w, reqID, errNotFound)
	}
	switch r.Method {
	case http.MethodGet:
		rg := &s.keys
		rg.mu.Lock()
		k := rg.byID[id]
		var b []byte
		if k != nil {
			b = appendKeyObject(nil, k, s.now(), rg.userID)
		}
		rg.mu.Unlock()
		if k == nil {
			return s.fail(w, reqID, notFoundKey(id))
		}
		return writeJSON(w, b)
	case http.MethodPost:
		return s.updateKey(w, r, reqID, id)
	}
	return s.fail(w, reqID, errMethod)
}

func (s *Server) updateKey(w http.ResponseWriter, r *http.Request, reqID, id string) int {
	if !isJSON(r.Header.Get("Content-Type")) {
		return s.fail(w, reqID, errContentType)
	}
	var body struct {
		Name   *string `json:"name"`
		Status *string `json:"status"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		msg := "the request body is not valid JSON"
		if strings.Contains(err.Error(), "unknown field") {
			msg = "Extra inputs are not permitted: " + strings.TrimPrefix(err.Error(), "json: ")
		}
		return s.fail(w, reqID, &apiError{400, "invalid_request_error", msg})
	}
	b, e := s.update(id, body.Name, body.Status)
	if e != nil {
		return s.fail(w, reqID, e)
	}
	return writeJSON(w, b)
}

var listStatuses = []string{StatusActive, StatusArchived, StatusExpired, StatusInactive}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, reqID string) int {
	q := r.URL.Query()
	status, workspace, user := q.Get("status"), q.Get("workspace_id"), q.Get("created_by_user_id")
	if status != "" && !slices.Contains(listStatuses, status) {
		return s.fail(w, reqID, &apiError{400, "invalid_request_error", "status: Input should be 'active', 'archived', 'expired' or 'inactive'"})
	}
	rg := &s.keys
	rg.mu.Lock()
	defer rg.mu.Unlock()
	now := s.now()
	all := slices.Clone(rg.order)
	slices.Reverse(all) // newest first
	keep := func(k *key) bool {
		return (status == "" || k.status(now) == status) &&
			workspace == "" && // every key is in the default workspace
			(user == "" || user == rg.userID)
	}
	page, more, e := paginate(q, all, func(k *key) string { return k.id }, keep)
	if e != nil {
		return s.fail(w, reqID, e)
	}
	b := append([]byte(nil), `{"data":[`...)
	for i, k := range page {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendKeyObject(b, k, now, rg.userID)
	}
	b = append(b, `],"has_more":`...)
	if more {
		b = append(b, "true"...)
	} else {
		b = append(b, "false"...)
	}
	b = appendFirstLast(b, len(page) > 0, func(first bool) string {
		if first {
			return page[0].id
		}
		return page[len(page)-1].id
	})
	return writeJSON(w, b)
}

// rfc3339Micro is the Admin API's timestamp format.
const rfc3339Micro = "2006-01-02T15:04:05.000000Z07:00"

// appendKeyObject appends the Admin API's object of k; the caller holds
// the keyring's lock.
func appendKeyObject(b []byte, k *key, now time.Time, userID string) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, k.id)
	b = append(b, `,"type":"api_key","name":`...)
	b = appendString(b, k.name)
	b = append(b, `,"status":"`...)
	b = append(b, k.status(now)...)
	b = append(b, `","created_at":"`...)
	b = k.createdAt.UTC().AppendFormat(b, rfc3339Micro)
	b = append(b, `","created_by":{"id":"`...)
	b = append(b, userID...)
	b = append(b, `","type":"user"},"expires_at":`...)
	if e := k.expiresAt.Load(); e != 0 {
		b = append(b, '"')
		b = time.Unix(0, e).UTC().AppendFormat(b, rfc3339Micro)
		b = append(b, '"')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"partial_key_hint":`...)
	b = appendString(b, k.hint)
	b = append(b, `,"principal":{"type":"user_actor","user_id":"`...)
	b = append(b, userID...)
	return append(b, `"},"scope":{"type":"organization"},"workspace_id":null}`...)
}
