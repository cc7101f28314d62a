package e2b

import "net/http"

// mountProcess registers envd's process.Process service on mux.
func (s *Server) mountProcess(mux *http.ServeMux) {}
