// Package agentbox is the part of a sandbox that the gvisor and runc
// runtimes share: a sandbox whose init is the turnbox agent (package
// container/agent), reached over one pipe pair. It runs commands (Exec,
// with OOM detection from the host's memory cgroup), starts processes
// that outlive a call (container.ProcessStarter), kills them (KillAll),
// answers Idle, and keeps the sandbox's status (container.Lifecycle). The
// runtime supplies what differs through Ops: how to freeze, how to tear
// down, and what to do when the agent connection is lost.
package agentbox

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
	"github.com/turnbox/turnbox/container/cgroup"
)

// Ops are the runtime-specific parts of an agent-backed sandbox.
type Ops struct {
	// Freeze freezes (true) or thaws (false) every process of the sandbox.
	// Nil: Pause and Resume return container.ErrUnsupported.
	Freeze func(ctx context.Context, frozen bool) error
	// Teardown kills the sandbox (whatever its status; prev is the status
	// Stop found) and releases its runtime resources, waiting at most as
	// long as ctx allows. Stop calls it once.
	Teardown func(ctx context.Context, prev container.Status) error
	// Lost is called once when the agent connection ends while no Stop is
	// under way: the runtime kills what is left of the sandbox and calls
	// Exited, so nothing runs that the host no longer watches. May be nil.
	Lost func()
	// OwnRoot says commands run chrooted into the session's own root
	// (container.Spec.Root): a Process's Dir may then be any absolute
	// path of that root (container.RootDir), not only the workspace.
	OwnRoot bool
}

// Sandbox is an agent-backed sandbox. It implements container.Sandbox,
// container.ProcessStarter, container.IdleChecker,
// container.PortDialer and container.StatusReporter; runtimes embed it.
// Safe for concurrent use.
type Sandbox struct {
	*container.Lifecycle
	id        string
	label     string
	client    *agent.Client
	ops       Ops
	memCgroup string // set before Started, read-only after
}

// New returns a starting sandbox with id, talking to its agent through
// client. kind ("gvisor", "runc") prefixes its errors. The runtime calls
// Started once the agent answered; until then a lost agent is the
// runtime's to notice (its Ping fails).
func New(kind, id string, client *agent.Client, ops Ops) *Sandbox {
	label := fmt.Sprintf("%s: sandbox %s", kind, id)
	return &Sandbox{Lifecycle: container.NewLifecycle(label), id: id, label: label, client: client, ops: ops}
}

// Started moves the starting sandbox to running (see
// container.Lifecycle.Started) and from then on calls Ops.Lost if the
// agent connection ends. Everything Ops.Lost reads must be set before.
func (s *Sandbox) Started() error {
	if err := s.Lifecycle.Started(); err != nil {
		return err
	}
	go s.watchAgent()
	return nil
}

// SetMemoryCgroup names the host memory cgroup whose OOM kills Exec
// reports as ExitStatus.OOMKilled. Call it before Started.
func (s *Sandbox) SetMemoryCgroup(dir string) { s.memCgroup = dir }

// watchAgent calls Ops.Lost when the agent connection ends unless a Stop
// ended it.
func (s *Sandbox) watchAgent() {
	select {
	case <-s.client.Done():
	case <-s.Done():
		return
	}
	switch s.Status() {
	case container.StatusStopping, container.StatusStopped:
		return
	}
	if s.ops.Lost != nil {
		s.ops.Lost()
	}
}

// ID returns the sandbox's id.
func (s *Sandbox) ID() string { return s.id }

// Client returns the sandbox's agent client.
func (s *Sandbox) Client() *agent.Client { return s.client }

// notRunning is the error of a call that failed because the sandbox died
// under it (cause is the agent client's error), or nil if it still runs.
func (s *Sandbox) notRunning(cause error) error {
	select {
	case <-s.Done():
	default:
		if errors.Is(cause, container.ErrNotRunning) {
			return fmt.Errorf("%s: %w", s.label, cause)
		}
		return nil
	}
	if err := s.Require(); err != nil {
		return fmt.Errorf("%w (%v)", err, cause)
	}
	return nil
}

// Exec runs a command through the agent: a fork+exec inside the sandbox.
// Its whole process tree is killed when ctx is done or p.Timeout passes.
// A command killed by SIGKILL while the sandbox's memory cgroup counted
// an OOM kill is reported as OOMKilled. On a paused sandbox it returns
// container.ErrPaused; a command already running when Pause comes is
// frozen with the rest and goes on after Resume.
func (s *Sandbox) Exec(ctx context.Context, p container.Process) (container.ExitStatus, error) {
	p, err := s.checkProcess(p)
	if err != nil {
		return container.ExitStatus{}, err
	}
	before := cgroup.OOMKills(s.memCgroup)
	st, err := s.client.Exec(ctx, p)
	if err != nil {
		if nr := s.notRunning(err); nr != nil {
			return st, nr
		}
		return st, err
	}
	st.OOMKilled = s.oomKilled(st, before)
	return st, nil
}

// SandboxDir maps a Process's Dir to the directory a command starts in:
// container.RootDir in a sandbox with its own root, else
// container.SandboxDir.
func (s *Sandbox) SandboxDir(dir string) (string, error) {
	if s.ops.OwnRoot {
		return container.RootDir(dir)
	}
	return container.SandboxDir(dir)
}

// Idle implements container.IdleChecker through the agent.
func (s *Sandbox) Idle(ctx context.Context) (bool, error) {
	if err := s.Require(container.StatusRunning); err != nil {
		return false, err
	}
	idle, err := s.client.Idle(ctx)
	if nr := s.notRunning(err); err != nil && nr != nil {
		return false, nr
	}
	return idle, err
}

// KillAll kills every process in the sandbox but the agent and waits for
// them to exit. On a paused sandbox it returns container.ErrPaused.
func (s *Sandbox) KillAll(ctx context.Context) error {
	if err := s.Require(container.StatusRunning); err != nil {
		return err
	}
	err := s.client.KillAll(ctx)
	if nr := s.notRunning(err); err != nil && nr != nil {
		return nr
	}
	return err
}

// Pause freezes every process of the sandbox, the agent included.
func (s *Sandbox) Pause(ctx context.Context) error { return s.setPaused(ctx, true) }

// Resume thaws a paused sandbox; on a running one it does nothing.
func (s *Sandbox) Resume(ctx context.Context) error { return s.setPaused(ctx, false) }

func (s *Sandbox) setPaused(ctx context.Context, pause bool) error {
	if s.ops.Freeze == nil {
		return fmt.Errorf("%s: pause: %w", s.label, container.ErrUnsupported)
	}
	return s.SetPaused(pause, func() error { return s.ops.Freeze(ctx, pause) })
}

// Stop kills the sandbox (paused or not) and releases its runtime
// resources; the workspace is untouched. A second Stop waits for the
// first and returns its result.
func (s *Sandbox) Stop(ctx context.Context) error {
	prev, first, err := s.BeginStop(ctx)
	if !first {
		return err
	}
	return s.EndStop(s.ops.Teardown(ctx, prev))
}

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			return true
		}
	}
	return false
}
