package embedded

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/environment"
)

// A session's sandbox: started on first use (or taken from the pool),
// watched, stopped and restarted. The sandbox is the session's only part
// that runs attacker-controlled code: every wait on it is bounded
// (bounds.go).

// shell picks bash when the sandbox has it (the tool is called bash and
// models write bash), else sh.
func (s *session) shell(rootfs string) string {
	if rootfs == "" {
		if _, err := exec.LookPath("bash"); err == nil {
			return "bash"
		}
		return "sh"
	}
	for _, p := range []string{"bin/bash", "usr/bin/bash"} {
		if _, err := os.Stat(filepath.Join(rootfs, p)); err == nil {
			return "bash"
		}
	}
	return "sh"
}

// ensureSandbox returns the session's running sandbox, starting one if
// there is none (first use after a host restart) or the last one died.
func (s *session) ensureSandbox(ctx context.Context) error {
	_, err := s.sandbox(ctx)
	return err
}

func (s *session) sandbox(ctx context.Context) (container.Sandbox, error) {
	return s.sandboxFrom(ctx, "")
}

// sandboxFrom returns the session's running sandbox, or starts one: from
// the memory image in imageDir when set (container.Restorer; the caller
// stopped the sandbox it replaces), else fresh.
func (s *session) sandboxFrom(ctx context.Context, imageDir string) (container.Sandbox, error) {
	s.sbMu.Lock()
	defer s.sbMu.Unlock()
	s.mu.Lock()
	sb, vol := s.sb, s.vol
	s.mu.Unlock()
	if sb != nil {
		select {
		case <-sb.Done():
			s.deps.log.Warn("sandbox died; starting a new one", "session", s.id, "err", sb.Err())
			_ = stopBounded(ctx, sb)
		default:
			if imageDir == "" {
				return sb, nil
			}
			return nil, fmt.Errorf("embedded: restoring the sandbox of %s: one runs already", s.id)
		}
	}
	rootfs, err := s.deps.images.path(s.cfg.Image)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	spec := container.Spec{
		ID: s.id, RootFS: rootfs, Workspace: vol.Path, Env: s.ownEnv(), Limits: s.limits(), Network: container.NetworkNone,
	}
	if s.rec.RootTree {
		spec.Root, spec.Workspace, spec.ReadOnlyRoot = vol.Path, workspacePath(vol.Path, true), s.cfg.ReadOnlyRoot
	}
	if err := s.setupNetwork(ctx, &spec); err != nil {
		return nil, err
	}
	if sb, err = s.launch(ctx, spec, imageDir); err != nil {
		return nil, err
	}
	s.deps.log.Debug("sandbox started", "session", s.id, "restored", imageDir != "", "took", time.Since(start))
	s.mu.Lock()
	s.sb = sb
	s.mu.Unlock()
	go s.watchSandbox(sb)
	return sb, nil
}

// launch starts a sandbox for spec, from the memory image in imageDir
// when set.
func (s *session) launch(ctx context.Context, spec container.Spec, imageDir string) (container.Sandbox, error) {
	if imageDir == "" {
		sb, err := s.deps.runtime.Start(ctx, spec)
		if err != nil {
			return nil, fmt.Errorf("embedded: starting sandbox for %s: %w", s.id, err)
		}
		return sb, nil
	}
	r, ok := s.deps.runtime.(container.Restorer)
	if !ok {
		return nil, fmt.Errorf("%w: restoring a memory image on the %s runtime", environment.ErrCapabilityNotSupported, s.deps.runtime.Kind())
	}
	sb, err := r.Restore(ctx, spec, imageDir)
	if err != nil {
		return nil, fmt.Errorf("embedded: restoring the sandbox of %s: %w", s.id, err)
	}
	return sb, nil
}

// ownEnv returns the session's own environment variables (its config's)
// as KEY=value, sorted: the sandbox's base environment. Every command
// also gets them with its image's under them (env; a pooled sandbox was
// started without them).
func (s *session) ownEnv() []string {
	env := make([]string, 0, len(s.cfg.Env))
	for k, v := range s.cfg.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// currentSandbox returns the session's sandbox (nil if none runs).
func (s *session) currentSandbox() container.Sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sb
}

func (s *session) stopSandbox(ctx context.Context) error {
	s.sbMu.Lock()
	defer s.sbMu.Unlock()
	s.mu.Lock()
	sb := s.sb
	s.sb = nil
	s.autoPause.paused = false // nothing left frozen
	s.mu.Unlock()
	if sb == nil {
		return nil
	}
	s.procs.killing("killed: the sandbox was stopped")
	return stopBounded(ctx, sb)
}

// stopBounded stops sb within stopTimeout, whatever ctx says: a cancelled
// caller does not leave a sandbox half stopped, and one without a
// deadline does not wait forever.
func stopBounded(ctx context.Context, sb container.Sandbox) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	return sb.Stop(ctx)
}

// killAll kills every process of sb but its agent, within
// killAllTimeout. If the agent cannot (a fork bomb outruns it, or the
// agent is dead or hostile), sb is stopped whole and stopped reports
// that the caller must start a new one.
func (s *session) killAll(ctx context.Context, sb container.Sandbox) (stopped bool, err error) {
	kctx, cancel := context.WithTimeout(ctx, killAllTimeout)
	err = sb.KillAll(kctx)
	cancel()
	switch {
	case err == nil:
		return false, nil
	case ctx.Err() != nil:
		return false, fmt.Errorf("killing processes: %w", err)
	}
	s.deps.log.Warn("killing the sandbox's processes failed; stopping the sandbox", "session", s.id, "err", err)
	if err := s.stopSandbox(ctx); err != nil {
		return false, fmt.Errorf("stopping the sandbox: %w", err)
	}
	return true, nil
}

// watchSandbox marks the session failed when sb exits on its own (not by
// stopSandbox, destroy or shutdown): its processes were killed from
// outside, it crashed, or its agent died.
func (s *session) watchSandbox(sb container.Sandbox) {
	select {
	case <-sb.Done():
	case <-s.life.Done():
		return
	}
	s.mu.Lock()
	current, st := s.sb == sb, s.state
	s.mu.Unlock()
	if !current || s.life.Err() != nil {
		return
	}
	s.deps.metrics.sandboxDeaths.Inc()
	if st != environment.StateActive && st != environment.StatePaused {
		return
	}
	s.deps.log.Error("sandbox died; session failed (Resume or Host.RestartSession starts a new sandbox, Destroy deletes the session)", "session", s.id, "err", sb.Err())
	s.setState(environment.StateFailed)
}

func (s *session) restart(ctx context.Context) error {
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	s.mu.Lock()
	err := s.exclusiveLocked(environment.StateActive, environment.StateFailed)
	if s.closing {
		err = fmt.Errorf("%w: session %s: host shutting down", environment.ErrClosed, s.id)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	// Thaw an idle-paused sandbox so that it stops like a running one
	// (best effort: a dead one cannot be thawed, and is stopped anyway).
	_ = s.wakeLocked(ctx)
	s.procs.killing("killed: the session's sandbox was restarted")
	if err := s.stopSandbox(ctx); err != nil {
		s.deps.log.Warn("stopping the old sandbox before a restart", "session", s.id, "err", err)
	}
	if err := s.ensureSandbox(ctx); err != nil {
		return err
	}
	if s.currentState() != environment.StateActive {
		s.setState(environment.StateActive)
	}
	s.deps.log.Info("session restarted", "session", s.id)
	s.touch()
	return nil
}
