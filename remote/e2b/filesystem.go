package e2b

import "net/http"

// mountFilesystem registers envd's filesystem.Filesystem service on mux.
func (s *Server) mountFilesystem(mux *http.ServeMux) {}
