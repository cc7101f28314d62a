package embedded

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/environment"
)

// Tool calls: a session runs file tools on the host side of its
// workspace (through descriptors, fstools.go) and bash in its sandbox,
// streaming output under a cap.

func (s *session) workspace() workspace {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec.RootTree {
		return workspace{root: workspacePath(s.vol.Path, true), tree: s.vol.Path}
	}
	return workspace{root: s.vol.Path}
}

func (s *session) outputCap() int {
	if s.cfg.MaxOutputBytes > 0 {
		return s.cfg.MaxOutputBytes
	}
	return s.deps.maxOutputBytes
}

func (s *session) toolTimeout(askedMS int64) time.Duration {
	d := s.deps.toolTimeout
	if s.cfg.ToolTimeout > 0 {
		d = s.cfg.ToolTimeout
	}
	if askedMS > 0 {
		d = time.Duration(askedMS) * time.Millisecond
	}
	return min(d, s.deps.maxToolTimeout)
}

// execute runs one tool call.
func (s *session) execute(ctx context.Context, req environment.ToolRequest, onProgress func(environment.ToolProgress)) (*environment.ToolResponse, error) {
	params, err := environment.ParseParams(req)
	if err != nil {
		s.deps.metrics.toolCalls.WithLabelValues("invalid", "rejected").Inc()
		return nil, err
	}
	end, err := s.begin()
	if err != nil {
		s.deps.metrics.toolCalls.WithLabelValues(req.ToolName, "rejected").Inc()
		return nil, err
	}
	defer end()
	defer s.touch()
	if err := s.wake(ctx); err != nil {
		s.deps.metrics.toolCalls.WithLabelValues(req.ToolName, "rejected").Inc()
		return nil, err
	}
	if err := s.quotaAdmit(ctx, params); err != nil {
		s.deps.metrics.toolCalls.WithLabelValues(req.ToolName, "rejected").Inc()
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
	s.deps.metrics.toolCalls.WithLabelValues(req.ToolName, outcome).Inc()
	if resp != nil {
		s.deps.metrics.opSeconds.WithLabelValues("exec_" + req.ToolName).Observe(resp.Duration.Seconds())
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

// commandDir maps a command's working directory (relative to the
// workspace, or absolute in it) to the sandbox's path, checking through
// descriptors that it is a directory of the workspace. A command that
// names none starts in the session's default (defaultDir): its image's
// WORKDIR, else the workspace. A relative one stays relative to the
// workspace, whatever the image's WORKDIR.
func (s *session) commandDir(workdir string) (string, error) {
	if workdir == "" {
		return s.defaultDir()
	}
	ws := s.workspace()
	rel, err := ws.rel(workdir)
	if err != nil {
		return "", err
	}
	fd, err := ws.openBeneath(rel, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	if clean := path.Clean(rel); clean != "." {
		return container.WorkspaceDir + "/" + clean, nil
	}
	return container.WorkspaceDir, nil
}

func (s *session) bash(ctx context.Context, callID string, p environment.BashParams, out *output, onProgress func(environment.ToolProgress), resp *environment.ToolResponse) error {
	dir, err := s.commandDir(p.Workdir)
	if err != nil {
		return err
	}
	sb, err := s.sandbox(ctx)
	if err != nil {
		return err
	}
	st := &streamer{out: out, onProgress: onProgress, id: callID}
	timeout := s.toolTimeout(p.TimeoutMS)
	rootfs, _ := s.deps.images.path(s.cfg.Image)
	user := s.userFor("")
	status, err := s.execTracked(ctx, sb, callID, container.Process{
		Args:    []string{s.shell(rootfs), "-c", p.Command},
		Env:     s.env(),
		Dir:     dir,
		Stdout:  streamWriter{st, environment.StreamStdout},
		Stderr:  streamWriter{st, environment.StreamStderr},
		Timeout: timeout,
	}, user, resp)
	st.mu.Lock()
	st.done = true
	st.mu.Unlock()
	if err != nil {
		if errors.Is(err, container.ErrPaused) {
			return fmt.Errorf("%w: session %s was paused as the call started", environment.ErrNotActive, s.id)
		}
		if errors.Is(err, container.ErrInvalidSpec) && user != "" {
			return fmt.Errorf("%w: the session's default user %q (its image's USER): %w", environment.ErrInvalidArgument, user, err)
		}
		if errors.Is(err, container.ErrNotRunning) && s.life.Err() == nil {
			s.deps.log.Error("sandbox died during a tool call; session failed", "session", s.id, "err", err)
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
