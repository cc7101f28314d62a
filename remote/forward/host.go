package forward

import (
	"context"
	"net"

	"github.com/turnbox/turnbox/embedded"
)

// HostDial returns the DialFunc that reaches sessions' ports on host
// (embedded.Environment.DialPort: it wakes an idle-paused session and
// refuses a paused one with ErrNotActive).
func HostDial(host *embedded.Host) DialFunc {
	return func(ctx context.Context, session string, port int) (net.Conn, error) {
		env := host.NewEnvironment()
		if err := env.AttachSession(session); err != nil {
			return nil, err
		}
		return env.DialPort(ctx, port)
	}
}

// HostCheck returns an Options.Check for sessions of host: it refuses a
// request for a session that is not active (a pooled connection to a
// paused sandbox would only time out), wakes an idle-paused one and
// restarts its idle clock (embedded.Host.WakeSession): traffic through a
// published port is activity.
func HostCheck(host *embedded.Host) func(ctx context.Context, session string, port int) error {
	return func(ctx context.Context, session string, _ int) error {
		return host.WakeSession(ctx, session)
	}
}
