package remote

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

// PortTCPProtocol is the HTTP Upgrade token of the plain TCP form of a
// published port: GET /tcp/<session id>/<port> with "Connection: Upgrade"
// and "Upgrade: turnbox-tcp", answered 101, after which the connection
// carries the port's bytes both ways.
const PortTCPProtocol = "turnbox-tcp"

// portConfig collects PortOptions.
type portConfig struct {
	tls    *tls.Config
	dialer *net.Dialer
}

// PortOption configures DialPort.
type PortOption func(*portConfig)

// WithPortTLSConfig sets the TLS configuration for https:// base URLs
// (default: the system roots, the URL's host as server name).
func WithPortTLSConfig(c *tls.Config) PortOption {
	return func(p *portConfig) { p.tls = c }
}

// DialPort opens a plain TCP connection to port of session through the
// turnbox server at baseURL (http:// or https://): the TCP form of a
// published port. token, if not empty, is sent as a bearer token (a
// public port needs none). ctx bounds the connect and the upgrade only.
// The connection half-closes (CloseWrite) like a TCP connection. Errors
// match the environment sentinels: ErrPortNotPublished,
// ErrSessionNotFound, ErrPortRefused, ErrNotActive, ErrInvalidArgument,
// and ErrUnauthenticated for a missing or wrong token.
func DialPort(ctx context.Context, baseURL, token, session string, port int, opts ...PortOption) (net.Conn, error) {
	cfg := portConfig{dialer: &net.Dialer{KeepAlive: 30 * time.Second}}
	for _, o := range opts {
		o(&cfg)
	}
	if err := environment.ValidatePort(port); err != nil {
		return nil, err
	}
	if err := environment.ValidateID(session); err != nil {
		return nil, err
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: base URL %q (want http:// or https://)", environment.ErrInvalidArgument, baseURL)
	}
	conn, err := dialBase(ctx, u, &cfg)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	c, err := upgradePort(conn, u, token, session, port)
	if !stop() || err != nil {
		conn.Close()
		return nil, errors.Join(err, ctx.Err())
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

// dialBase connects to u's host (TLS for https).
func dialBase(ctx context.Context, u *url.URL, cfg *portConfig) (net.Conn, error) {
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	if u.Scheme == "http" {
		return cfg.dialer.DialContext(ctx, "tcp", addr)
	}
	tc := cfg.tls
	if tc == nil {
		tc = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
	}
	d := tls.Dialer{NetDialer: cfg.dialer, Config: tc}
	return d.DialContext(ctx, "tcp", addr)
}

// upgradePort sends the TCP-form request on conn and reads the answer.
func upgradePort(conn net.Conn, u *url.URL, token, session string, port int) (net.Conn, error) {
	path := strings.TrimSuffix(u.Path, "/") + "/tcp/" + url.PathEscape(session) + "/" + strconv.Itoa(port)
	req := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nConnection: Upgrade\r\nUpgrade: " + PortTCPProtocol + "\r\n"
	if token = strings.TrimSpace(token); token != "" {
		req += "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		return nil, fmt.Errorf("remote: port %d of %s: %w", port, session, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("remote: port %d of %s: reading the answer: %w", port, session, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, portError(resp, session, port)
	}
	return &portConn{Conn: conn, r: br}, nil
}

// portError turns a refused upgrade into an error matching the
// environment sentinel its code names.
func portError(resp *http.Response, session string, port int) error {
	var body struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body)
	msg := fmt.Sprintf("remote: port %d of %s: %s: %s", port, session, resp.Status, body.Error)
	var sentinel error
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		sentinel = ErrUnauthenticated
	case body.Code == "port_not_published":
		sentinel = environment.ErrPortNotPublished
	case body.Code == "session_not_found":
		sentinel = environment.ErrSessionNotFound
	case body.Code == "port_refused":
		sentinel = environment.ErrPortRefused
	case body.Code == "not_active":
		sentinel = environment.ErrNotActive
	case body.Code == "invalid_argument":
		sentinel = environment.ErrInvalidArgument
	case body.Code == "limit_exceeded":
		sentinel = environment.ErrLimitExceeded
	default:
		return errors.New(msg)
	}
	return fmt.Errorf("%w: %s", sentinel, msg)
}

// portConn is an upgraded connection: reads drain what the answer's
// reader buffered first.
type portConn struct {
	net.Conn
	r *bufio.Reader
}

// Read implements net.Conn.
func (c *portConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite ends the sending half: the port's process reads EOF.
func (c *portConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("remote: %T cannot half-close", c.Conn)
}

var _ environment.PortPublisher = (*NativeSandboxEnvironment)(nil)

// PublishPort implements environment.PortPublisher: the server forwards
// to port of the session's sandbox (docs/ports.md). It is idempotent, so
// retried.
func (e *NativeSandboxEnvironment) PublishPort(ctx context.Context, port int, opts environment.PublishOptions) (environment.PublishedPort, error) {
	id, err := e.bound()
	if err != nil {
		return environment.PublishedPort{}, err
	}
	if err := environment.ValidatePort(port); err != nil {
		return environment.PublishedPort{}, err
	}
	resp, err := call(ctx, "PublishPort", e.service.PublishPort, &turnboxv1.PublishPortRequest{SessionId: id, Port: int32(port), Public: opts.Public})
	if err != nil {
		return environment.PublishedPort{}, err
	}
	return environment.PublishedPort{Port: int(resp.GetPort().GetPort()), Public: resp.GetPort().GetPublic()}, nil
}

// UnpublishPort implements environment.PortPublisher. It is not retried:
// a retry of an unpublish that took effect would report
// environment.ErrPortNotPublished.
func (e *NativeSandboxEnvironment) UnpublishPort(ctx context.Context, port int) error {
	id, err := e.bound()
	if err != nil {
		return err
	}
	if err := environment.ValidatePort(port); err != nil {
		return err
	}
	_, err = call(ctx, "UnpublishPort", e.service.UnpublishPort, &turnboxv1.UnpublishPortRequest{SessionId: id, Port: int32(port)})
	return err
}

// PublishedPorts implements environment.PortPublisher.
func (e *NativeSandboxEnvironment) PublishedPorts(ctx context.Context) ([]environment.PublishedPort, error) {
	id, err := e.bound()
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, "ListPorts", e.service.ListPorts, &turnboxv1.ListPortsRequest{SessionId: id})
	if err != nil {
		return nil, err
	}
	return wire.PortsFromProto(resp.GetPorts()), nil
}
