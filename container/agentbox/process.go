package agentbox

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/cgroup"
)

var _ container.ProcessStarter = (*Sandbox)(nil)

// StartProcess implements container.ProcessStarter through the agent
// (agent.Client.StartProcess), with Exec's checks: Args and Dir as for
// Exec, container.ErrPaused on a paused sandbox, container.ErrNotRunning
// on a stopped one. A process killed by SIGKILL while the sandbox's
// memory cgroup counted an OOM kill is reported as OOMKilled.
func (s *Sandbox) StartProcess(ctx context.Context, spec container.ProcessSpec) (container.RunningProcess, error) {
	p, err := s.checkProcess(spec.Process)
	if err != nil {
		return nil, err
	}
	spec.Process = p
	before := cgroup.OOMKills(s.memCgroup)
	rp, err := s.client.StartProcess(ctx, spec)
	if err != nil {
		if nr := s.notRunning(err); nr != nil {
			return nil, nr
		}
		return nil, err
	}
	proc := &process{RunningProcess: rp, sb: s, oomBefore: before, done: make(chan struct{})}
	go proc.watch()
	return proc, nil
}

// checkProcess checks p as Exec and StartProcess do and returns it with
// its Dir resolved and PWD set.
func (s *Sandbox) checkProcess(p container.Process) (container.Process, error) {
	if len(p.Args) == 0 || p.Args[0] == "" {
		return p, fmt.Errorf("%w: empty Args", container.ErrInvalidSpec)
	}
	dir, err := s.SandboxDir(p.Dir)
	if err != nil {
		return p, err
	}
	p.Dir = dir
	if err := s.Require(container.StatusRunning); err != nil {
		return p, err
	}
	// The workspace is a symlink into the volume mount, so getcwd(2)
	// answers with that path; PWD makes shells show the /workspace one.
	if !hasEnv(p.Env, "PWD") {
		p.Env = append([]string{"PWD=" + dir}, p.Env...)
	}
	return p, nil
}

// oomKilled reports whether st, a command's status, is an OOM kill: a
// SIGKILL while the memory cgroup's OOM kill count rose past before.
// gVisor has no OOM killer of its own (the host's kills the systrap stub
// holding the command's memory, the Sentry then the command) and runc's
// kernel one acts in the cgroup: both show as SIGKILL plus a new oom_kill
// in the cgroup.
func (s *Sandbox) oomKilled(st container.ExitStatus, before int64) bool {
	return st.OOMKilled || (st.Code == 128+int(syscall.SIGKILL) && before >= 0 && cgroup.OOMKills(s.memCgroup) > before)
}

// process is a RunningProcess of the sandbox: the agent's, with OOM
// detection and the sandbox's errors.
type process struct {
	container.RunningProcess
	sb        *Sandbox
	oomBefore int64

	done chan struct{} // closed by watch once gone is set
	gone bool          // the process ended while its sandbox was stopping or gone

	once sync.Once
	st   container.ExitStatus
	err  error
}

// watch records, when the process ends, whether its sandbox was going
// away then: a process killed by Stop (or with a dead sandbox) reports
// container.ErrNotRunning from Wait, as on every runtime, even when the
// agent could still report its exit.
func (p *process) watch() {
	<-p.RunningProcess.Done()
	st := p.sb.Status()
	p.gone = st != container.StatusRunning && st != container.StatusPaused
	close(p.done)
}

// Done is closed when Wait would return without blocking.
func (p *process) Done() <-chan struct{} { return p.done }

// Wait waits for the process's end; the status is computed once, so every
// Wait reports the same.
func (p *process) Wait(ctx context.Context) (container.ExitStatus, error) {
	select {
	case <-p.Done():
	case <-ctx.Done():
		return container.ExitStatus{}, ctx.Err()
	}
	p.once.Do(func() {
		p.st, p.err = p.RunningProcess.Wait(context.Background())
		if p.err == nil && p.gone {
			p.err = fmt.Errorf("agentbox: process %d ended with its sandbox: %w", p.PID(), container.ErrNotRunning)
		}
		if p.err != nil {
			if nr := p.sb.notRunning(p.err); nr != nil {
				p.err = nr
			}
			return
		}
		p.st.OOMKilled = p.sb.oomKilled(p.st, p.oomBefore)
	})
	return p.st, p.err
}

// usable returns container.ErrPaused while the sandbox is paused (its
// agent is frozen: a Kill it cannot answer would end the connection after
// the kill grace) and container.ErrNotRunning once it stopped; nil when
// the sandbox runs or the process has ended (the agent's process then
// reports container.ErrProcessDone).
func (p *process) usable() error {
	select {
	case <-p.Done():
		return nil
	default:
	}
	return p.sb.Require(container.StatusRunning)
}

// WriteStdin writes to the process's stdin (see container.RunningProcess).
func (p *process) WriteStdin(ctx context.Context, b []byte) error {
	if err := p.usable(); err != nil {
		return err
	}
	return p.RunningProcess.WriteStdin(ctx, b)
}

// CloseStdin closes the process's stdin.
func (p *process) CloseStdin(ctx context.Context) error {
	if err := p.usable(); err != nil {
		return err
	}
	return p.RunningProcess.CloseStdin(ctx)
}

// Signal sends sig to the process alone.
func (p *process) Signal(ctx context.Context, sig syscall.Signal) error {
	if err := p.usable(); err != nil {
		return err
	}
	return p.RunningProcess.Signal(ctx, sig)
}

// Kill kills the process's tree.
func (p *process) Kill(ctx context.Context) error {
	if err := p.usable(); err != nil {
		return err
	}
	return p.RunningProcess.Kill(ctx)
}

// Resize changes the size of the process's PTY.
func (p *process) Resize(ctx context.Context, size container.TermSize) error {
	if err := p.usable(); err != nil {
		return err
	}
	return p.RunningProcess.Resize(ctx, size)
}
