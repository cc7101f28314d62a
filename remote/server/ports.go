package server

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote/forward"
)

// Published ports (environment.PortPublisher) forwarded by Handler:
//
//   - /ports/<session id>/<port>/... forwards HTTP and WebSocket with the
//     prefix stripped (the sandbox sees /...); an app that writes
//     absolute links needs the host-name form;
//   - /tcp/<session id>/<port> is the plain TCP form (remote.DialPort);
//   - with WithPortDomain, a request for the host <port>-<session
//     id>.<domain> forwards its whole path (or, with the TCP upgrade
//     headers, is the TCP form).
//
// A public port needs no token; any other needs the API's. A port the
// session does not publish is refused (404), token or not.

// WithPortDomain serves published ports under host names
// <port>-<session id>.<domain> (a wildcard DNS name and, for TLS, a
// wildcard certificate pointing at the server). Empty: only the path form.
func WithPortDomain(domain string) Option {
	return func(s *Server) { s.portDomain = strings.TrimSuffix(strings.TrimSpace(domain), ".") }
}

// newPortForwarder makes the server's forwarder and its metrics.
func (s *Server) newPortForwarder() {
	s.portReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnbox_port_forward_requests_total",
		Help: "Requests and TCP connections forwarded to published ports, by result (ok, tcp, or why not).",
	}, []string{"result"})
	s.portInflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "turnbox_port_forward_in_flight",
		Help: "Requests and connections being forwarded to published ports.",
	})
	s.reg.MustRegister(s.portReqs, s.portInflight)
	dial := forward.HostDial(s.host)
	s.fwd = forward.New(dial, forward.Options{
		Check:    forward.HostCheck(s.host),
		Requests: s.portReqs,
		InFlight: s.portInflight,
		Logger:   s.log,
	})
}

// withPortHosts serves requests for <port>-<session id>.<domain> host
// names as published ports and passes every other request to next.
func (s *Server) withPortHosts(next http.Handler) http.Handler {
	if s.portDomain == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		session, port, ok := forward.ParseHost(r.Host, s.portDomain)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		s.servePort(w, r, session, port, forward.IsTCPUpgrade(r), "")
	})
}

// portsHandler serves /ports/<session id>/<port>/...
func (s *Server) portsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest := strings.TrimPrefix(r.URL.EscapedPath(), "/ports/")
		session, rest, _ := strings.Cut(rest, "/")
		portStr, path, slash := strings.Cut(rest, "/")
		port, ok := parsePort(w, portStr)
		if !ok {
			return
		}
		if !slash {
			// Relative links resolve against a directory: add its slash.
			u := *r.URL
			u.Path, u.RawPath = r.URL.Path+"/", ""
			http.Redirect(w, r, u.RequestURI(), http.StatusPermanentRedirect)
			return
		}
		s.servePort(w, r, session, port, false, "/"+path)
	})
}

// tcpHandler serves /tcp/<session id>/<port>, the TCP form.
func (s *Server) tcpHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		session, portStr, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/tcp/"), "/")
		if port, ok := parsePort(w, portStr); ok {
			s.servePort(w, r, session, port, true, "")
		}
	})
}

// parsePort parses a port of a path, answering 400 (and ok false) when
// it is not one.
func parsePort(w http.ResponseWriter, s string) (int, bool) {
	port, err := strconv.Atoi(s)
	if err == nil {
		err = environment.ValidatePort(port)
	} else {
		err = fmt.Errorf("%w: port %q is not a number", environment.ErrInvalidArgument, s)
	}
	if err != nil {
		status, code := forward.Status(err)
		forward.WriteJSONError(w, status, code, err.Error())
		return 0, false
	}
	return port, true
}

// servePort checks that session publishes port and that the caller may
// reach it, then forwards r (the TCP form when tcp; path "" forwards r's
// path as it is).
func (s *Server) servePort(w http.ResponseWriter, r *http.Request, session string, port int, tcp bool, path string) {
	if err := environment.ValidatePort(port); err != nil {
		status, code := forward.Status(err)
		forward.WriteJSONError(w, status, code, err.Error())
		return
	}
	p, err := s.host.PublishedPort(session, port)
	if (err != nil || !p.Public) && !s.authorized(r.Header) {
		// Before any other answer: without a token a caller learns
		// nothing of the sessions and their ports.
		s.authFail.Inc()
		s.portReqs.WithLabelValues("unauthenticated").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="turnbox"`)
		forward.WriteJSONError(w, http.StatusUnauthorized, "unauthenticated", errUnauthenticated.Error())
		return
	}
	if err != nil {
		if !errors.Is(err, environment.ErrPortNotPublished) {
			err = fmt.Errorf("%w: session %s", environment.ErrSessionNotFound, session)
		}
		status, code := forward.Status(err)
		s.portReqs.WithLabelValues(code).Inc()
		forward.WriteJSONError(w, status, code, err.Error())
		return
	}
	if tcp {
		s.fwd.ServeTCP(w, r, session, port)
		return
	}
	s.fwd.Forward(w, r, session, port, path)
}
