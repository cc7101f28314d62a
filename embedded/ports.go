package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
)

// Published ports (environment.PortPublisher, environment.PortDialer).
// A publication is a field of the session's ledger record, so it
// outlives Pause, Rollback and the host; connections go through the
// sandbox's container.PortDialer (its agent, for gvisor and runc), which
// reaches the sandbox's loopback whatever its network mode.

var (
	_ environment.PortPublisher = (*Environment)(nil)
	_ environment.PortDialer    = (*Environment)(nil)
)

// PublishPort implements environment.PortPublisher.
func (e *Environment) PublishPort(ctx context.Context, port int, opts environment.PublishOptions) (environment.PublishedPort, error) {
	s, err := e.session()
	if err != nil {
		return environment.PublishedPort{}, err
	}
	if err := environment.ValidatePort(port); err != nil {
		return environment.PublishedPort{}, err
	}
	p := ledger.PublishedPort{Port: port, Public: opts.Public}
	err = s.updatePorts(func(ports []ledger.PublishedPort) ([]ledger.PublishedPort, error) {
		i, found := slices.BinarySearchFunc(ports, port, comparePort)
		if found {
			ports[i] = p
			return ports, nil
		}
		if len(ports) >= environment.MaxPublishedPorts {
			return nil, fmt.Errorf("%w: session %s publishes %d ports already (at most %d)", environment.ErrLimitExceeded, s.id, len(ports), environment.MaxPublishedPorts)
		}
		return slices.Insert(ports, i, p), nil
	})
	if err != nil {
		return environment.PublishedPort{}, err
	}
	s.deps.log.Info("port published", "session", s.id, "port", port, "public", opts.Public)
	return environment.PublishedPort{Port: port, Public: opts.Public}, nil
}

// UnpublishPort implements environment.PortPublisher.
func (e *Environment) UnpublishPort(ctx context.Context, port int) error {
	s, err := e.session()
	if err != nil {
		return err
	}
	if err := environment.ValidatePort(port); err != nil {
		return err
	}
	err = s.updatePorts(func(ports []ledger.PublishedPort) ([]ledger.PublishedPort, error) {
		i, found := slices.BinarySearchFunc(ports, port, comparePort)
		if !found {
			return nil, fmt.Errorf("%w: session %s does not publish port %d", environment.ErrPortNotPublished, s.id, port)
		}
		return slices.Delete(ports, i, i+1), nil
	})
	if err != nil {
		return err
	}
	s.deps.log.Info("port unpublished", "session", s.id, "port", port)
	return nil
}

// PublishedPorts implements environment.PortPublisher.
func (e *Environment) PublishedPorts(ctx context.Context) ([]environment.PublishedPort, error) {
	s, err := e.session()
	if err != nil {
		return nil, err
	}
	return s.publishedPorts(), nil
}

// DialPort implements environment.PortDialer.
func (e *Environment) DialPort(ctx context.Context, port int) (net.Conn, error) {
	s, err := e.session()
	if err != nil {
		return nil, err
	}
	if err := environment.ValidatePort(port); err != nil {
		return nil, err
	}
	return s.dialPort(ctx, port)
}

// comparePort orders a session's ports by number.
func comparePort(p ledger.PublishedPort, port int) int { return p.Port - port }

// updatePorts changes the session's published ports with fn (given a
// copy), recording them in the ledger before the session sees them.
// Publications change in any state but destroyed.
func (s *session) updatePorts(fn func([]ledger.PublishedPort) ([]ledger.PublishedPort, error)) error {
	s.portMu.Lock()
	defer s.portMu.Unlock()
	s.mu.Lock()
	destroyed := s.state == environment.StateDestroyed
	ports := slices.Clone(s.rec.Ports)
	s.mu.Unlock()
	if destroyed {
		return fmt.Errorf("%w: session %s was destroyed", environment.ErrNotActive, s.id)
	}
	ports, err := fn(ports)
	if err != nil {
		return err
	}
	if err := s.deps.ledger.UpdateSession(s.id, func(r *ledger.SessionRecord) error {
		r.Ports = ports
		return nil
	}); err != nil {
		return fmt.Errorf("embedded: recording the ports of %s: %w", s.id, err)
	}
	s.mu.Lock()
	s.rec.Ports = ports
	s.mu.Unlock()
	return nil
}

// publishedPorts returns the session's published ports, by port.
func (s *session) publishedPorts() []environment.PublishedPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.portsLocked()
}

// portsLocked is publishedPorts with s.mu held (nil when none).
func (s *session) portsLocked() []environment.PublishedPort {
	if len(s.rec.Ports) == 0 {
		return nil
	}
	out := make([]environment.PublishedPort, len(s.rec.Ports))
	for i, p := range s.rec.Ports {
		out[i] = environment.PublishedPort{Port: p.Port, Public: p.Public}
	}
	return out
}

// published returns how the session publishes port, if it does.
func (s *session) published(port int) (environment.PublishedPort, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearchFunc(s.rec.Ports, port, comparePort)
	if !found {
		return environment.PublishedPort{}, false
	}
	return environment.PublishedPort{Port: port, Public: s.rec.Ports[i].Public}, true
}

// dialPort connects to port in the session's sandbox, waking it if idle
// paused. The call is admitted like any other (a paused session refuses
// it with ErrNotActive); the connection outlives it.
func (s *session) dialPort(ctx context.Context, port int) (net.Conn, error) {
	end, err := s.beginAwake(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	sb, err := s.sandbox(ctx)
	if err != nil {
		return nil, err
	}
	d, ok := sb.(container.PortDialer)
	if !ok {
		return nil, fmt.Errorf("%w: ports of the %s runtime's sandboxes", environment.ErrCapabilityNotSupported, s.deps.runtime.Kind())
	}
	c, err := d.DialPort(ctx, port)
	switch {
	case errors.Is(err, container.ErrPortRefused):
		return nil, fmt.Errorf("%w: nothing listens on port %d in session %s", environment.ErrPortRefused, port, s.id)
	case errors.Is(err, container.ErrNotRunning):
		return nil, fmt.Errorf("%w: session %s: its sandbox stopped: %w", environment.ErrNotActive, s.id, err)
	case err != nil:
		return nil, fmt.Errorf("embedded: port %d of session %s: %w", port, s.id, err)
	}
	return c, nil
}

// PublishedPort reports how session id publishes port: what a forwarder
// checks before it dials (ErrPortNotPublished if it does not).
func (h *Host) PublishedPort(id string, port int) (environment.PublishedPort, error) {
	s, err := h.lookup(id)
	if err != nil {
		return environment.PublishedPort{}, err
	}
	p, ok := s.published(port)
	if !ok {
		return environment.PublishedPort{}, fmt.Errorf("%w: session %s does not publish port %d", environment.ErrPortNotPublished, id, port)
	}
	return p, nil
}

// WakeSession records activity on session id, as a forwarded request to
// one of its ports does: it thaws the session's sandbox if it was idle
// paused and restarts its idle clock. It fails with ErrNotActive for a
// session that is not active (paused, failed) and ErrSessionNotFound for
// an unknown one.
func (h *Host) WakeSession(ctx context.Context, id string) error {
	s, err := h.lookup(id)
	if err != nil {
		return err
	}
	end, err := s.beginAwake(ctx)
	if err != nil {
		return err
	}
	end()
	return nil
}
