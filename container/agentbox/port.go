package agentbox

import (
	"context"
	"fmt"
	"net"

	"github.com/turnbox/turnbox/container"
)

var _ container.PortDialer = (*Sandbox)(nil)

// DialPort implements container.PortDialer through the agent
// (agent.Client.DialPort): the connection is made inside the sandbox,
// whatever its network, and its bytes flow over the agent connection. On
// a paused sandbox it returns container.ErrPaused (its agent is frozen);
// on a stopped one container.ErrNotRunning.
func (s *Sandbox) DialPort(ctx context.Context, port int) (net.Conn, error) {
	if err := s.Require(container.StatusRunning); err != nil {
		return nil, err
	}
	conn, err := s.client.DialPort(ctx, port)
	if err != nil {
		if nr := s.notRunning(err); nr != nil {
			return nil, nr
		}
		return nil, fmt.Errorf("%s: %w", s.label, err)
	}
	return conn, nil
}
