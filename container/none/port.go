package none

import (
	"context"
	"fmt"
	"net"

	"github.com/turnbox/turnbox/container"
)

var _ container.PortDialer = (*sandbox)(nil)

// DialPort implements container.PortDialer. A none sandbox shares the
// host's network, so this is a plain dial of the host's loopback: what
// listens there may be any process of the machine's, not only the
// sandbox's (the none runtime isolates nothing).
func (s *sandbox) DialPort(ctx context.Context, port int) (net.Conn, error) {
	if err := s.Require(container.StatusRunning); err != nil {
		return nil, err
	}
	c, err := container.DialLoopback(ctx, port)
	if err != nil {
		return nil, fmt.Errorf("none: sandbox %s: %w", s.ID(), err)
	}
	return c, nil
}
