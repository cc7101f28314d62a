package e2b

import (
	"crypto/hmac"
	"net/http"

	"github.com/turnbox/turnbox/remote/forward"
)

// Ports of a sandbox other than envd's: E2B makes every port of a sandbox
// reachable at <port>-<sandbox id>.<domain> (or with the E2b-Sandbox-Id
// and E2b-Sandbox-Port headers), with no publish step. A sandbox created
// with network.allowPublicTraffic false needs the header
// e2b-traffic-access-token (the create answer's trafficAccessToken);
// otherwise its ports are public, as on E2B.

// trafficHeader carries a sandbox's traffic access token.
const trafficHeader = "E2b-Traffic-Access-Token"

// labelTraffic, set to trafficPrivate, records a create request's
// network.allowPublicTraffic false.
const (
	labelTraffic   = labelPrefix + "traffic"
	trafficPrivate = "private"
)

// newForwarder makes the forwarder of sandboxes' ports: credentials of
// the E2B APIs never reach the sandbox, and errors are E2B's JSON.
func (s *Server) newForwarder() *forward.Forwarder {
	dial := forward.HostDial(s.host)
	return forward.New(dial, forward.Options{
		Check:        forward.HostCheck(s.host),
		StripHeaders: []string{"X-Access-Token", "X-API-KEY", trafficHeader},
		WriteError: func(w http.ResponseWriter, status int, _, msg string) {
			writeJSONError(w, status, msg)
		},
		Logger: s.log,
	})
}

// servePort forwards r to port of sandbox id once the sandbox exists, the
// caller holds its traffic token when it is private, and it runs
// (resumed when made with autoResume).
func (s *Server) servePort(w http.ResponseWriter, r *http.Request, id string, port int) {
	info, ok := s.liveSandbox(w, id)
	if !ok {
		return
	}
	if info.Labels[labelTraffic] == trafficPrivate && !hmac.Equal([]byte(r.Header.Get(trafficHeader)), []byte(s.trafficToken(id))) {
		writeJSONError(w, http.StatusUnauthorized, "missing or invalid traffic access token")
		return
	}
	if !s.running(w, r, info) {
		return
	}
	if forward.IsTCPUpgrade(r) {
		s.fwd.ServeTCP(w, r, id, port)
		return
	}
	s.fwd.Forward(w, r, id, port, "")
}

// trafficToken is the traffic access token of sandbox id: an HMAC of its
// id, under a label distinct from the envd access token's.
func (s *Server) trafficToken(id string) string {
	return s.derive("tbt_", "turnbox e2b traffic access token", id)
}

// trafficTokenOf is the trafficAccessToken a create or connect answer
// reports for a sandbox with labels ("" for a public one).
func (s *Server) trafficTokenOf(id string, labels map[string]string) string {
	if labels[labelTraffic] != trafficPrivate {
		return ""
	}
	return s.trafficToken(id)
}
