package container

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
)

// PortDialer is implemented by sandboxes that can open a TCP connection to
// a port inside them: to a server a process of the sandbox listens with
// on its loopback (127.0.0.1, else [::1]) or on any address. It is how
// the host reaches a published port whatever the sandbox's network mode:
// a sandbox with loopback only is reached too, and no address of the
// sandbox's is ever exposed to the host's network.
//
// It is optional: a caller finds it by type assertion.
type PortDialer interface {
	// DialPort connects to port (1-65535) inside the sandbox. ctx bounds
	// the connect only; the connection lives until either end closes it
	// or the sandbox stops. Nothing listening fails with an error
	// wrapping ErrPortRefused; a stopped sandbox with ErrNotRunning.
	// The connection's bytes come from inside the sandbox: the host
	// bounds what it buffers of them.
	DialPort(ctx context.Context, port int) (net.Conn, error)
}

// ErrPortRefused reports that nothing listens on the port DialPort was
// asked for (the connection was refused inside the sandbox).
var ErrPortRefused = errors.New("container: connection refused inside the sandbox")

// DialLoopback dials port on 127.0.0.1, then on [::1] if nothing listens
// there: what DialPort does inside a sandbox (the agent calls it there;
// the none runtime on the host). A refusal on both wraps ErrPortRefused;
// a port outside 1-65535 wraps ErrInvalidSpec.
func DialLoopback(ctx context.Context, port int) (net.Conn, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("%w: port %d (want 1-65535)", ErrInvalidSpec, port)
	}
	var d net.Dialer
	p := strconv.Itoa(port)
	c, err := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", p))
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return nil, fmt.Errorf("port %d: %w", port, err)
	}
	if c6, err6 := d.DialContext(ctx, "tcp6", net.JoinHostPort("::1", p)); err6 == nil {
		return c6, nil
	}
	return nil, fmt.Errorf("port %d: %w", port, ErrPortRefused)
}
