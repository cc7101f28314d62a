package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/turnbox/turnbox/environment"
)

// Environment is an environment.Environment bound to at most one session
// of a Host. It also implements environment.Forker, TurnCompleter,
// SnapshotLister, SessionIDer and Hibernator (hibernate.go). Safe for
// concurrent use.
type Environment struct {
	host *Host

	mu      sync.Mutex
	id      string
	binding bool
}

var (
	_ environment.Environment    = (*Environment)(nil)
	_ environment.Forker         = (*Environment)(nil)
	_ environment.TurnCompleter  = (*Environment)(nil)
	_ environment.SnapshotLister = (*Environment)(nil)
	_ environment.SessionIDer    = (*Environment)(nil)
)

// SessionID returns the bound session's id ("" when unbound).
func (e *Environment) SessionID() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.id
}

// bind reserves the Environment for one Create or AttachSession.
func (e *Environment) bind(fn func() (string, error)) error {
	e.mu.Lock()
	if e.id != "" || e.binding {
		id := e.id
		e.mu.Unlock()
		return fmt.Errorf("%w: to session %q", environment.ErrAlreadyBound, id)
	}
	e.binding = true
	e.mu.Unlock()
	id, err := fn()
	e.mu.Lock()
	e.binding = false
	if err == nil {
		e.id = id
	}
	e.mu.Unlock()
	return err
}

// session returns the bound session. A session destroyed (through this or
// another Environment) gives an error matching both ErrNotActive and
// ErrSessionNotFound.
func (e *Environment) session() (*session, error) {
	id := e.SessionID()
	if id == "" {
		return nil, environment.ErrNotBound
	}
	s, err := e.host.lookup(id)
	if err != nil {
		return nil, fmt.Errorf("%w: session %s was destroyed (%w)", environment.ErrNotActive, id, environment.ErrSessionNotFound)
	}
	return s, nil
}

// Create implements environment.Environment.
func (e *Environment) Create(ctx context.Context, config environment.SessionConfig) error {
	return e.bind(func() (string, error) {
		s, err := e.host.createSession(ctx, config)
		if err != nil {
			return "", err
		}
		return s.id, nil
	})
}

// AttachSession implements environment.Environment.
func (e *Environment) AttachSession(sessionID string) error {
	return e.bind(func() (string, error) {
		if _, err := e.host.lookup(sessionID); err != nil {
			return "", err
		}
		return sessionID, nil
	})
}

// Pause implements environment.Environment: the sandbox is frozen (cgroup
// freezer or the runtime's own pause) until Resume.
func (e *Environment) Pause(ctx context.Context) error {
	s, err := e.session()
	if err != nil {
		return err
	}
	return timed(s, "pause", func() error { return s.pause(ctx) })
}

// Resume implements environment.Environment. On a failed session (its
// sandbox died) it starts a new sandbox on the same workspace.
func (e *Environment) Resume(ctx context.Context) error {
	s, err := e.session()
	if err != nil {
		return err
	}
	return timed(s, "resume", func() error { return s.resume(ctx) })
}

// Destroy implements environment.Environment.
func (e *Environment) Destroy(ctx context.Context) error {
	s, err := e.session()
	if errors.Is(err, environment.ErrSessionNotFound) {
		return nil // destroyed already
	}
	if err != nil {
		return err
	}
	return timed(s, "destroy", func() error { return s.destroy(ctx) })
}

// ExecuteTool implements environment.Environment. It is idempotent by
// req.ToolCallID within the session: a call repeating the id of an earlier
// call that finished returns that call's response without running again,
// and one racing it waits for it. Only finished calls count: one that
// failed, or was canceled or killed before its tool finished, is forgotten
// and its id runs again (see Config.ToolCallCacheEntries).
func (e *Environment) ExecuteTool(ctx context.Context, req environment.ToolRequest, onProgress func(environment.ToolProgress)) (*environment.ToolResponse, error) {
	s, err := e.session()
	if err != nil {
		return nil, err
	}
	return e.host.calls.execute(ctx, s, req, onProgress)
}

// State implements environment.Environment.
func (e *Environment) State() environment.SessionState {
	id := e.SessionID()
	if id == "" {
		return environment.StateUnbound
	}
	s, err := e.host.lookup(id)
	if err != nil {
		return environment.StateDestroyed
	}
	return s.currentState()
}

// Capabilities implements environment.Environment.
func (e *Environment) Capabilities() environment.Capabilities { return e.host.caps }

// CreateSnapshot implements environment.Environment. It is TurnComplete
// with a label: every snapshot is numbered as the session's next turn.
func (e *Environment) CreateSnapshot(ctx context.Context, name string) (*environment.SnapshotInfo, error) {
	s, err := e.session()
	if err != nil {
		return nil, err
	}
	return s.snapshot(ctx, name)
}

// TurnComplete implements environment.TurnCompleter.
func (e *Environment) TurnComplete(ctx context.Context, label string) (*environment.SnapshotInfo, error) {
	return e.CreateSnapshot(ctx, label)
}

// ListSnapshots implements environment.SnapshotLister.
func (e *Environment) ListSnapshots(ctx context.Context) ([]environment.SnapshotInfo, error) {
	s, err := e.session()
	if err != nil {
		return nil, err
	}
	return s.snapshots()
}

// Rollback implements environment.Environment.
func (e *Environment) Rollback(ctx context.Context, snapshotID string) error {
	s, err := e.session()
	if err != nil {
		return err
	}
	return timed(s, "rollback", func() error { return s.rollback(ctx, snapshotID) })
}

// DeleteSnapshot deletes one of the session's snapshots (see
// environment.SnapshotDeleter). It waits for a TurnComplete or Rollback in
// progress.
func (e *Environment) DeleteSnapshot(ctx context.Context, snapshotID string) error {
	s, err := e.session()
	if err != nil {
		return err
	}
	return timed(s, "delete_snapshot", func() error { return s.deleteSnapshot(ctx, snapshotID) })
}

// Fork implements environment.Forker: a new session starting from
// snapshotID, which must be a snapshot of this Environment's session.
func (e *Environment) Fork(ctx context.Context, snapshotID string, config environment.SessionConfig) (environment.Environment, error) {
	s, err := e.session()
	if err != nil {
		return nil, err
	}
	if _, err := s.ownSnapshot(snapshotID); err != nil {
		return nil, err
	}
	return e.host.Fork(ctx, snapshotID, config)
}

// timed runs op and records its latency when it succeeds.
func timed(s *session, op string, fn func() error) error {
	start := time.Now()
	err := fn()
	if err == nil {
		s.deps.metrics.observe(op, start)
	}
	return err
}
