package e2b

import "net/http"

// controlHandler serves E2B's control plane (REST, X-API-KEY).
func (s *Server) controlHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSONError(w, http.StatusNotImplemented, "not implemented yet")
	})
}
