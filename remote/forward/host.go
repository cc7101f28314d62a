package forward

import (
	"context"
	"fmt"
	"net"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
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
// paused sandbox would only time out) and wakes an idle-paused one with
// a dial through dial, the one way the host offers (the process behind
// the port sees that connection open and close at once).
func HostCheck(host *embedded.Host, dial DialFunc) func(ctx context.Context, session string, port int) error {
	return func(ctx context.Context, session string, port int) error {
		info, err := host.Session(session)
		if err != nil {
			return err
		}
		if info.State != environment.StateActive {
			return fmt.Errorf("%w: session %s is %s", environment.ErrNotActive, session, info.State)
		}
		if info.IdlePaused {
			c, err := dial(ctx, session, port)
			if err != nil {
				return err
			}
			_ = c.Close()
		}
		return nil
	}
}
