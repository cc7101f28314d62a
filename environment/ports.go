package environment

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// Published ports: a server a process of the session listens with (a dev
// server, a notebook, an API under test) that the host forwards to.
// `turnbox serve` forwards HTTP, WebSocket and plain TCP to a published
// port, addressed by path (/ports/<session id>/<port>/...) or by host name
// (<port>-<session id>.<domain>), with the API's auth unless the port is
// published as public. A publication is the session's, not a snapshot's:
// it survives Pause/Resume, Rollback and a host restart, is not inherited
// by a fork, and ends with Destroy. The process behind it follows the
// session: a rollback or restart that ends it leaves the port published
// with nothing listening (connections are refused) until it listens
// again.

// MaxPublishedPorts bounds the ports one session publishes.
const MaxPublishedPorts = 64

// PublishOptions are how a port is published.
type PublishOptions struct {
	// Public lets requests through without the API's token (a browser
	// following a link). Anyone who knows the URL can reach the port.
	Public bool `json:"public,omitempty"`
}

// PublishedPort is one port a session publishes.
type PublishedPort struct {
	// Port is the TCP port inside the sandbox (1-65535).
	Port int `json:"port"`
	// Public reports that requests need no token.
	Public bool `json:"public,omitempty"`
}

// PortPublisher is implemented by environments whose sessions can publish
// ports. It is optional: find it by type assertion.
type PortPublisher interface {
	// PublishPort publishes port of the bound session, or changes how it
	// is published. It fails with ErrInvalidArgument for a port outside
	// 1-65535, ErrLimitExceeded past MaxPublishedPorts, and
	// ErrCapabilityNotSupported where the host cannot reach its
	// sandboxes' ports. Nothing need listen on port yet.
	PublishPort(ctx context.Context, port int, opts PublishOptions) (PublishedPort, error)
	// UnpublishPort ends port's publication; connections through it
	// already open stay open. It fails with ErrPortNotPublished for a
	// port the session does not publish.
	UnpublishPort(ctx context.Context, port int) error
	// PublishedPorts lists the session's published ports, by port.
	PublishedPorts(ctx context.Context) ([]PublishedPort, error)
}

// PortDialer is implemented by environments that can open a connection to
// a port inside the bound session's sandbox (what a host's forwarder
// calls for a published port). It is optional: find it by type
// assertion.
type PortDialer interface {
	// DialPort connects to port inside the session's sandbox, whether it
	// is published or not (publication is the forwarder's check). It
	// wakes an auto-paused session. ctx bounds the connect only. Nothing
	// listening fails with ErrPortRefused; a paused or stopped session
	// with ErrNotActive.
	DialPort(ctx context.Context, port int) (net.Conn, error)
}

// Errors of published ports.
var (
	// ErrPortNotPublished: the session does not publish that port.
	ErrPortNotPublished = errors.New("port not published")
	// ErrPortRefused: nothing listens on that port inside the sandbox.
	ErrPortRefused = errors.New("connection refused inside the sandbox")
)

// ValidatePort checks that port is a TCP port number (1-65535); the error
// wraps ErrInvalidArgument.
func ValidatePort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%w: port %d (want 1-65535)", ErrInvalidArgument, port)
	}
	return nil
}
