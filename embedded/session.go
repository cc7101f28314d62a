package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// session is one session's live state. Locks, in order: turnMu (one
// snapshot, rollback, pause or destroy at a time), fsMu (file tools share
// it; a snapshot or rollback holds it exclusively), mu (state fields, held
// briefly, never across I/O), sbMu (sandbox start).
type session struct {
	h      *Host
	id     string
	volume string
	rec    ledger.SessionRecord
	cfg    environment.SessionConfig

	turnMu sync.Mutex
	fsMu   sync.RWMutex

	mu          sync.Mutex
	state       environment.SessionState
	vol         snapshot.Volume
	sb          container.Sandbox
	inflight    int
	idle        *sync.Cond // signalled when inflight drops to 0
	rollingBack bool
	closing     bool
	// mismatch, if set, says why this host must not run the session's
	// commands (it was created on another runtime).
	mismatch string
	// quota and autoPause: quota.go and idle.go.
	quota     quotaState
	autoPause idleState

	sbMu sync.Mutex

	life   context.Context // canceled on Destroy and on host shutdown
	cancel context.CancelFunc
}

func (h *Host) newSession(rec ledger.SessionRecord, vol snapshot.Volume) *session {
	var cfg environment.SessionConfig
	_ = json.Unmarshal(rec.Config, &cfg)
	s := &session{h: h, id: rec.ID, volume: rec.Volume, rec: rec, cfg: cfg, vol: vol,
		state: environment.SessionState(rec.State)}
	s.idle = sync.NewCond(&s.mu)
	s.life, s.cancel = context.WithCancel(context.Background())
	return s
}

func (s *session) info() SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	last, _ := s.h.ledger.NextTurn(s.id)
	return SessionInfo{ID: s.id, State: s.state, CreatedAt: s.rec.CreatedAt, ParentSession: s.rec.ParentSession,
		ParentSnapshot: s.rec.ParentSnapshot, LastTurn: max(last-1, 0), Path: s.vol.Path,
		IdlePaused: s.autoPause.paused, DiskQuotaBytes: s.quota.limit, DiskUsedBytes: s.quota.used,
		Limits: s.h.limitsInfo(s.limits(), s.quota.limit)}
}

func (s *session) currentState() environment.SessionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *session) notActive() error {
	return fmt.Errorf("%w: session %s is %s", environment.ErrNotActive, s.id, s.state)
}

// begin admits a tool call; the returned func ends it.
func (s *session) begin() (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return nil, fmt.Errorf("%w: session %s: host shutting down", environment.ErrClosed, s.id)
	case s.mismatch != "":
		return nil, fmt.Errorf("%w: session %s: %s", environment.ErrNotActive, s.id, s.mismatch)
	case s.state != environment.StateActive:
		return nil, s.notActive()
	case s.rollingBack:
		return nil, fmt.Errorf("%w: session %s is rolling back", environment.ErrBusy, s.id)
	}
	s.inflight++
	return func() {
		s.mu.Lock()
		s.inflight--
		if s.inflight == 0 {
			s.idle.Broadcast()
		}
		s.mu.Unlock()
	}, nil
}

// waitIdle waits until no tool call runs. Callers have already stopped
// admission (state change under mu). If ctx ends first, running calls are
// canceled and waited for.
func (s *session) waitIdle(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() {
		s.cancel()
		s.mu.Lock()
		s.idle.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	for s.inflight > 0 {
		s.idle.Wait()
	}
	s.mu.Unlock()
}

func (s *session) setState(st environment.SessionState) {
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
	if err := s.h.ledger.UpdateSession(s.id, func(r *ledger.SessionRecord) error {
		r.State = string(st)
		return nil
	}); err != nil && st != environment.StateDestroyed {
		s.h.log.Error("recording session state", "session", s.id, "state", st, "err", err)
	}
}

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
	s.sbMu.Lock()
	defer s.sbMu.Unlock()
	s.mu.Lock()
	sb, vol := s.sb, s.vol
	s.mu.Unlock()
	if sb != nil {
		select {
		case <-sb.Done():
			s.h.log.Warn("sandbox died; starting a new one", "session", s.id, "err", sb.Err())
			_ = stopBounded(ctx, sb)
		default:
			return sb, nil
		}
	}
	rootfs, err := s.h.imagePath(s.cfg.Image)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	sb, err = s.h.runtime.Start(ctx, container.Spec{
		ID: s.id, RootFS: rootfs, Workspace: vol.Path, Env: s.env(), Limits: s.limits(), Network: container.NetworkNone,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded: starting sandbox for %s: %w", s.id, err)
	}
	s.h.log.Debug("sandbox started", "session", s.id, "took", time.Since(start))
	s.mu.Lock()
	s.sb = sb
	s.mu.Unlock()
	go s.watchSandbox(sb)
	return sb, nil
}

// env returns the session's environment variables as KEY=value, sorted.
// Every command gets them (a pooled sandbox was started without them).
func (s *session) env() []string {
	env := make([]string, 0, len(s.cfg.Env))
	for k, v := range s.cfg.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
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

func (s *session) workspace() workspace {
	s.mu.Lock()
	defer s.mu.Unlock()
	return workspace{root: s.vol.Path}
}

func (s *session) outputCap() int {
	if s.cfg.MaxOutputBytes > 0 {
		return s.cfg.MaxOutputBytes
	}
	return s.h.cfg.MaxOutputBytes
}

func (s *session) toolTimeout(askedMS int64) time.Duration {
	d := s.h.cfg.ToolTimeout
	if s.cfg.ToolTimeout > 0 {
		d = s.cfg.ToolTimeout
	}
	if askedMS > 0 {
		d = time.Duration(askedMS) * time.Millisecond
	}
	return min(d, s.h.cfg.MaxToolTimeout)
}

// execute runs one tool call.
func (s *session) execute(ctx context.Context, req environment.ToolRequest, onProgress func(environment.ToolProgress)) (*environment.ToolResponse, error) {
	params, err := environment.ParseParams(req)
	if err != nil {
		s.h.metrics.toolCalls.WithLabelValues("invalid", "rejected").Inc()
		return nil, err
	}
	end, err := s.begin()
	if err != nil {
		s.h.metrics.toolCalls.WithLabelValues(req.ToolName, "rejected").Inc()
		return nil, err
	}
	defer end()
	defer s.touch()
	if err := s.wake(ctx); err != nil {
		s.h.metrics.toolCalls.WithLabelValues(req.ToolName, "rejected").Inc()
		return nil, err
	}
	if err := s.quotaAdmit(ctx, params); err != nil {
		s.h.metrics.toolCalls.WithLabelValues(req.ToolName, "rejected").Inc()
		return nil, err
	}
	resp, err := s.run(ctx, req, params, onProgress)
	resp, err = s.quotaAfter(ctx, params, resp, err)
	outcome := "ok"
	switch {
	case err != nil && resp != nil:
		outcome = "tool_error" // ran, and hit the disk quota
	case err != nil:
		outcome = "rejected"
	case resp.IsError:
		outcome = "tool_error"
	}
	s.h.metrics.toolCalls.WithLabelValues(req.ToolName, outcome).Inc()
	if resp != nil {
		s.h.metrics.opSeconds.WithLabelValues("exec_" + req.ToolName).Observe(resp.Duration.Seconds())
	}
	return resp, err
}

func (s *session) run(ctx context.Context, req environment.ToolRequest, params environment.ToolParams, onProgress func(environment.ToolProgress)) (*environment.ToolResponse, error) {
	// Destroy and shutdown cancel the session's life; the call ends with
	// them.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.life, cancel)()

	start := time.Now()
	out := &output{max: s.outputCap()}
	resp := &environment.ToolResponse{ToolCallID: req.ToolCallID}
	var toolErr error
	switch p := params.(type) {
	case environment.BashParams:
		toolErr = s.bash(ctx, req.ToolCallID, p, out, onProgress, resp)
	default:
		s.fsMu.RLock()
		ws := s.workspace()
		switch p := p.(type) {
		case environment.ReadFileParams:
			toolErr = ws.readFile(p, out)
		case environment.WriteFileParams:
			toolErr = ws.writeFile(p, out)
		case environment.EditFileParams:
			toolErr = ws.editFile(p, out)
		case environment.ListFilesParams:
			toolErr = ws.listFiles(ctx, p, out)
		case environment.GrepParams:
			toolErr = ws.grep(ctx, p, out)
		}
		s.fsMu.RUnlock()
		if toolErr == nil && onProgress != nil && out.buf.Len() > 0 {
			// File tools finish in one step: their output is one chunk.
			onProgress(environment.ToolProgress{ToolCallID: req.ToolCallID, Stream: environment.StreamStdout, Data: append([]byte(nil), out.buf.Bytes()...)})
		}
	}
	if toolErr != nil {
		var te *toolError
		if !errors.As(toolErr, &te) {
			if s.life.Err() != nil {
				return nil, fmt.Errorf("%w: session %s was destroyed or shut down during the call", environment.ErrNotActive, s.id)
			}
			return nil, toolErr
		}
		out.buf.Reset()
		out.truncated = false
		out.buf.WriteString(te.msg)
		resp.IsError, resp.ExitCode = true, 1
	}
	resp.Content, resp.Truncated = out.finish()
	resp.Duration = time.Since(start)
	if req.Snapshot {
		info, err := s.snapshot(ctx, "")
		if err != nil {
			return resp, fmt.Errorf("embedded: tool ran, but the snapshot after it failed: %w", err)
		}
		resp.SnapshotID = info.ID
	}
	return resp, nil
}

// finish returns the collected text, with a notice in place of what the cap
// dropped (the notice fits within the cap, so Content never exceeds it).
func (o *output) finish() (string, bool) {
	if !o.truncated {
		return o.buf.String(), false
	}
	notice := fmt.Sprintf("\n[turnbox: output truncated at %d bytes; %d more bytes dropped]", o.max, o.dropped)
	if o.note != "" {
		notice = o.note
	}
	b := o.buf.Bytes()
	if len(notice) < o.max {
		b = append(b[:min(len(b), o.max-len(notice))], notice...)
	}
	return string(b), true
}

// streamer fans a command's output into the capped buffer and to
// onProgress, in order, never calling onProgress concurrently or after the
// call has returned.
type streamer struct {
	mu         sync.Mutex
	out        *output
	onProgress func(environment.ToolProgress)
	id         string
	done       bool
}

type streamWriter struct {
	s      *streamer
	stream string
}

func (w streamWriter) Write(p []byte) (int, error) {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return len(p), nil
	}
	room := s.out.max - s.out.buf.Len()
	s.out.Write(p)
	if s.onProgress != nil && room > 0 {
		chunk := append([]byte(nil), p[:min(len(p), room)]...)
		s.onProgress(environment.ToolProgress{ToolCallID: s.id, Stream: w.stream, Data: chunk})
	}
	return len(p), nil
}

func (s *session) bash(ctx context.Context, callID string, p environment.BashParams, out *output, onProgress func(environment.ToolProgress), resp *environment.ToolResponse) error {
	dir := container.WorkspaceDir
	if p.Workdir != "" {
		ws := s.workspace()
		rel, err := ws.rel(p.Workdir)
		if err != nil {
			return err
		}
		fd, err := ws.openBeneath(rel, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		unix.Close(fd)
		if clean := path.Clean(rel); clean != "." {
			dir = container.WorkspaceDir + "/" + clean
		}
	}
	sb, err := s.sandbox(ctx)
	if err != nil {
		return err
	}
	st := &streamer{out: out, onProgress: onProgress, id: callID}
	timeout := s.toolTimeout(p.TimeoutMS)
	rootfs, _ := s.h.imagePath(s.cfg.Image)
	status, err := sb.Exec(ctx, container.Process{
		Args:    []string{s.shell(rootfs), "-c", p.Command},
		Env:     s.env(),
		Dir:     dir,
		Stdout:  streamWriter{st, environment.StreamStdout},
		Stderr:  streamWriter{st, environment.StreamStderr},
		Timeout: timeout,
	})
	st.mu.Lock()
	st.done = true
	st.mu.Unlock()
	if err != nil {
		if errors.Is(err, container.ErrPaused) {
			return fmt.Errorf("%w: session %s was paused as the call started", environment.ErrNotActive, s.id)
		}
		if errors.Is(err, container.ErrNotRunning) && s.life.Err() == nil {
			s.h.log.Error("sandbox died during a tool call; session failed", "session", s.id, "err", err)
			s.setState(environment.StateFailed)
			return fmt.Errorf("%w: session %s: its sandbox died (%v); Resume or Host.RestartSession restarts it, Destroy deletes it", environment.ErrNotActive, s.id, err)
		}
		return err
	}
	if ctx.Err() != nil {
		// Canceled by the caller, or by Destroy or shutdown (run
		// reports those as ErrNotActive): the command was killed
		// before it ended, so its status is not a result.
		return fmt.Errorf("tool call canceled: %w", ctx.Err())
	}
	resp.ExitCode = status.Code
	resp.IsError = status.Code != 0 || status.TimedOut
	if status.TimedOut {
		resp.TimedOut = true
		fmt.Fprintf(out, "\n[turnbox: timed out after %s; the command's process tree was killed]", timeout)
	}
	if status.OOMKilled {
		resp.OOMKilled, resp.IsError = true, true
		fmt.Fprintf(out, "\n[turnbox: killed: out of memory (the session's memory limit is %d bytes); the session lives on]", s.limits().MemoryBytes)
	}
	return nil
}

// snapshot quiesces the session (file tools finish, the sandbox is frozen
// where the runtime can), snapshots the volume as the next turn, thaws, and
// records the snapshot in the ledger.
func (s *session) snapshot(ctx context.Context, name string) (*environment.SnapshotInfo, error) {
	if err := environment.ValidateSnapshotName(name); err != nil {
		return nil, err
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	s.mu.Lock()
	state, sb, idlePaused := s.state, s.sb, s.autoPause.paused
	s.mu.Unlock()
	if state != environment.StateActive && state != environment.StatePaused {
		return nil, s.notActive()
	}
	if err := s.totalAdmit(ctx); err != nil {
		return nil, err
	}
	turn, err := s.h.ledger.NextTurn(s.id)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	bname := ledger.BackendSnapshotName(turn)

	s.fsMu.Lock()
	freezeStart := time.Now()
	// An idle-paused sandbox is frozen already and stays so.
	froze := state == environment.StateActive && sb != nil && s.h.caps.Pause && !idlePaused && s.freeze(ctx, sb)
	snap, err := s.h.storage.Snapshot(ctx, s.volume, bname)
	thawed := !froze || s.thaw(ctx, sb)
	frozeFor := time.Since(freezeStart)
	s.fsMu.Unlock()
	if !thawed {
		// Frozen for good: stop it; the next call starts a new sandbox.
		if serr := s.stopSandbox(ctx); serr != nil {
			s.h.log.Error("stopping a sandbox that could not be thawed", "session", s.id, "err", serr)
		}
	}
	s.h.metrics.freeze.Observe(frozeFor.Seconds())
	if err != nil {
		if errors.Is(err, snapshot.ErrNoSpace) {
			return nil, fmt.Errorf("%w: snapshot: %v", environment.ErrLimitExceeded, err)
		}
		return nil, fmt.Errorf("embedded: snapshot of %s: %w", s.id, err)
	}
	rec := ledger.SnapshotRecord{Session: s.id, Turn: turn, Name: name, Volume: s.volume, BackendName: bname,
		CreatedAt: snap.CreatedAt.UTC(), SizeBytes: snap.SizeBytes}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = time.Now().UTC()
	}
	if err := s.h.ledger.AddSnapshot(rec); err != nil {
		_ = s.h.storage.DestroySnapshot(context.WithoutCancel(ctx), s.volume, bname)
		return nil, fmt.Errorf("embedded: recording snapshot: %w", err)
	}
	rec.ID = ledger.SnapshotID(s.id, turn)
	s.h.log.Debug("snapshot", "session", s.id, "turn", turn, "frozen", frozeFor)
	s.h.metrics.observe("snapshot", freezeStart)
	s.prune(ctx)
	return toInfo(rec), nil
}

// freeze stops sb's processes for a snapshot if something in it could be
// writing, and reports whether it did. Between turns nothing usually runs
// (file tools are drained by fsMu), and a freeze then costs time for
// nothing. Each step is bounded: an agent that does not answer the idle
// query in time (starved by a fork bomb, or hostile) counts as busy, and
// a sandbox that cannot be frozen in time is snapshotted live.
func (s *session) freeze(ctx context.Context, sb container.Sandbox) bool {
	if ic, ok := sb.(container.IdleChecker); ok {
		ictx, cancel := context.WithTimeout(ctx, idleQueryTimeout)
		idle, err := ic.Idle(ictx)
		cancel()
		if err == nil && idle {
			return false
		}
		if err != nil {
			s.h.log.Warn("no answer to the idle query; freezing the sandbox anyway", "session", s.id, "err", err)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, freezeTimeout)
	defer cancel()
	if err := sb.Pause(fctx); err != nil {
		s.h.log.Warn("could not freeze the sandbox for a snapshot; taking it live", "session", s.id, "err", err)
		return false
	}
	return true
}

// thaw resumes sb after a snapshot, within freezeTimeout even if ctx was
// cancelled meanwhile, and reports whether it did.
func (s *session) thaw(ctx context.Context, sb container.Sandbox) bool {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), freezeTimeout)
	defer cancel()
	if err := sb.Resume(rctx); err != nil {
		s.h.log.Error("thawing the sandbox after a snapshot", "session", s.id, "err", err)
		return false
	}
	return true
}

func toInfo(r ledger.SnapshotRecord) *environment.SnapshotInfo {
	return &environment.SnapshotInfo{ID: r.ID, SessionID: r.Session, Name: r.Name, Turn: r.Turn, CreatedAt: r.CreatedAt, SizeBytes: r.SizeBytes}
}

// prune applies the host's retention policy. Called with turnMu held.
func (s *session) prune(ctx context.Context) {
	old, err := s.h.ledger.Prunable(s.id, s.h.cfg.Retention)
	if err != nil {
		s.h.log.Error("retention", "session", s.id, "err", err)
		return
	}
	for _, r := range old {
		if err := s.dropSnapshot(ctx, r); err != nil {
			s.h.log.Error("retention: destroying snapshot", "snapshot", r.ID, "err", err)
		}
	}
}

// dropSnapshot destroys the snapshot r in storage (one already gone is
// fine) and then forgets it. Called with turnMu held.
func (s *session) dropSnapshot(ctx context.Context, r ledger.SnapshotRecord) error {
	if err := s.h.storage.DestroySnapshot(ctx, s.volume, r.BackendName); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
		return err
	}
	return s.h.ledger.DeleteSnapshot(r.ID)
}

// deleteSnapshot deletes the session's snapshot snapshotID.
func (s *session) deleteSnapshot(ctx context.Context, snapshotID string) error {
	if err := environment.ValidateSnapshotID(snapshotID); err != nil {
		return err
	}
	rec, err := s.h.ledger.Snapshot(snapshotID)
	if err != nil || rec.Session != s.id {
		return fmt.Errorf("%w: %q is not a snapshot of session %s", environment.ErrSnapshotNotFound, snapshotID, s.id)
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	if st := s.currentState(); st == environment.StateDestroyed || st == environment.StateFailed {
		return fmt.Errorf("%w: session %s is %s", environment.ErrNotActive, s.id, st)
	}
	if err := s.dropSnapshot(ctx, rec); err != nil {
		return fmt.Errorf("embedded: deleting snapshot %s: %w", snapshotID, err)
	}
	return nil
}

func (s *session) snapshots() ([]environment.SnapshotInfo, error) {
	recs, err := s.h.ledger.Snapshots(s.id)
	if err != nil {
		return nil, err
	}
	out := make([]environment.SnapshotInfo, 0, len(recs))
	for _, r := range recs {
		out = append(out, *toInfo(r))
	}
	return out, nil
}

// rollback restores snapshotID and kills every process of the sandbox, so
// the next tool call sees exactly the snapshot's tree and no process
// started after the snapshot survives. It refuses (ErrBusy) while a tool
// call runs rather than cancel the caller's work.
func (s *session) rollback(ctx context.Context, snapshotID string) error {
	if err := environment.ValidateSnapshotID(snapshotID); err != nil {
		return err
	}
	rec, err := s.h.ledger.Snapshot(snapshotID)
	if err != nil || rec.Session != s.id {
		return fmt.Errorf("%w: %q is not a snapshot of session %s", environment.ErrSnapshotNotFound, snapshotID, s.id)
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	s.mu.Lock()
	switch {
	case s.state != environment.StateActive:
		s.mu.Unlock()
		return s.notActive()
	case s.inflight > 0:
		n := s.inflight
		s.mu.Unlock()
		return fmt.Errorf("%w: session %s has %d tool call(s) running; wait for them or cancel them before rolling back", environment.ErrBusy, s.id, n)
	}
	s.rollingBack = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.rollingBack = false
		s.mu.Unlock()
	}()
	// An idle-paused sandbox is thawed first: its processes are killed
	// below, and the next call needs it running.
	if err := s.wakeLocked(ctx); err != nil {
		return err
	}
	defer s.quotaAfterRollback(context.WithoutCancel(ctx))
	s.mu.Lock()
	sb := s.sb
	s.mu.Unlock()
	// A backend whose rollback mounts another filesystem at the volume
	// path (ZFS clone-and-swap) changes nothing a sandbox with its own
	// mount namespace sees: it keeps the old mount. Such a sandbox is
	// stopped before the rollback and started again after it.
	restart := sb != nil && s.h.rollbackRestartsSandbox()
	switch {
	case restart:
		if err := s.stopSandbox(ctx); err != nil {
			return fmt.Errorf("embedded: rollback of %s: stopping the sandbox: %w", s.id, err)
		}
	case sb != nil:
		var err error
		if restart, err = s.killAll(ctx, sb); err != nil {
			return fmt.Errorf("embedded: rollback of %s: %w", s.id, err)
		}
	}
	if err := s.rollbackVolume(ctx, rec.BackendName, sb != nil && !restart); err != nil {
		return fmt.Errorf("embedded: rollback of %s to %s: %w", s.id, snapshotID, err)
	} else if sb != nil {
		restart = restart || s.currentSandbox() == nil
	}
	// Volume.Path is stable across Rollback (the backend contract): a
	// sandbox that shares the host's view sees the restored tree at once.
	if restart {
		// Started now, so that the rollback returns a session ready to
		// run tools, as on the other backends.
		if _, err := s.sandbox(ctx); err != nil {
			return fmt.Errorf("embedded: rollback of %s: the filesystem is restored but the sandbox did not start again: %w", s.id, err)
		}
	}
	return nil
}

// rollbackVolume rolls the volume back to the backend snapshot bname
// with file tools held off. If the backend finds the workspace tampered
// with after its exchange (something in a running sandbox, its agent
// being the only process left, changed the workspace's directory in the
// instant the backend had it unsealed) and running says a sandbox is up,
// the sandbox is stopped, so that nothing can race the next try, and the
// rollback made again; the caller starts a new sandbox. Called with
// turnMu held.
func (s *session) rollbackVolume(ctx context.Context, bname string, running bool) error {
	s.fsMu.Lock()
	err := s.h.storage.Rollback(ctx, s.volume, bname)
	s.fsMu.Unlock()
	if errors.Is(err, snapshot.ErrTampered) && running {
		s.h.log.Warn("the sandbox tampered with its workspace during a rollback; restarting it", "session", s.id, "err", err)
		if err := s.stopSandbox(ctx); err != nil {
			return fmt.Errorf("stopping a sandbox that tampered with its workspace: %w", err)
		}
		s.fsMu.Lock()
		err = s.h.storage.Rollback(ctx, s.volume, bname)
		s.fsMu.Unlock()
	}
	if errors.Is(err, snapshot.ErrNoSpace) {
		return fmt.Errorf("%w: rollback: %v", environment.ErrLimitExceeded, err)
	}
	return err
}

// currentSandbox returns the session's sandbox (nil if none runs).
func (s *session) currentSandbox() container.Sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sb
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
	s.h.log.Warn("killing the sandbox's processes failed; stopping the sandbox", "session", s.id, "err", err)
	if err := s.stopSandbox(ctx); err != nil {
		return false, fmt.Errorf("stopping the sandbox: %w", err)
	}
	return true, nil
}

func (s *session) pause(ctx context.Context) error {
	if !s.h.caps.Pause {
		return fmt.Errorf("%w: pause on the %s runtime", environment.ErrCapabilityNotSupported, s.h.runtime.Kind())
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	s.mu.Lock()
	if s.state != environment.StateActive {
		s.mu.Unlock()
		return s.notActive()
	}
	s.mu.Unlock()
	if s.takeIdlePause() {
		// Frozen by idle pause already: it is now an explicit pause.
		s.setState(environment.StatePaused)
		return nil
	}
	sb, err := s.sandbox(ctx)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, freezeTimeout)
	defer cancel()
	if err := sb.Pause(pctx); err != nil {
		return fmt.Errorf("embedded: pausing %s: %w", s.id, err)
	}
	s.setState(environment.StatePaused)
	return nil
}

// resume thaws a paused session, or restarts the sandbox of a failed one.
func (s *session) resume(ctx context.Context) error {
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	s.mu.Lock()
	state, sb := s.state, s.sb
	s.mu.Unlock()
	switch state {
	case environment.StatePaused:
		if !s.h.caps.Pause {
			return fmt.Errorf("%w: resume on the %s runtime", environment.ErrCapabilityNotSupported, s.h.runtime.Kind())
		}
		if sb != nil {
			rctx, cancel := context.WithTimeout(ctx, freezeTimeout)
			err := sb.Resume(rctx)
			cancel()
			if err != nil {
				return fmt.Errorf("embedded: resuming %s: %w", s.id, err)
			}
		}
	case environment.StateFailed:
		_ = s.stopSandbox(ctx)
		if err := s.ensureSandbox(ctx); err != nil {
			return err
		}
	default:
		return s.notActive()
	}
	s.setState(environment.StateActive)
	s.touch()
	return nil
}

// destroy stops the sandbox and deletes the session's data. Running tool
// calls are canceled.
func (s *session) destroy(ctx context.Context) error {
	s.mu.Lock()
	if s.state == environment.StateDestroyed {
		s.mu.Unlock()
		return nil
	}
	already := s.state == environment.StateDestroying
	s.state = environment.StateDestroying
	s.mu.Unlock()
	if !already {
		s.setState(environment.StateDestroying)
	}
	s.cancel()
	s.stopIdle()
	s.waitIdle(ctx)
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	if s.currentState() == environment.StateDestroyed {
		return nil // a concurrent Destroy finished first
	}
	if err := s.stopSandbox(ctx); err != nil {
		s.h.log.Error("stopping sandbox", "session", s.id, "err", err)
	}
	s.h.stopForkSandboxes(ctx, s.id)
	if err := s.h.finishDestroy(ctx, s); err != nil {
		s.setState(environment.StateFailed)
		return err
	}
	s.mu.Lock()
	s.state = environment.StateDestroyed
	s.mu.Unlock()
	s.h.log.Info("session destroyed", "session", s.id)
	return nil
}

// shutdown is the host's Close for one session: stop admitting calls,
// drain, stop the sandbox, keep the data.
func (s *session) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.waitIdle(ctx)
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	s.cancel()
	s.stopIdle()
	return s.stopSandbox(context.WithoutCancel(ctx))
}
