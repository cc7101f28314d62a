package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/turnbox/turnbox/container/gvisor"
	"github.com/turnbox/turnbox/container/runc"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot/btrfs"
	"github.com/turnbox/turnbox/zfs"
)

// lap times one run of an operation's body: the body calls Start and Stop
// around the part that counts (several times if it likes) and does its
// preparation and clean-up outside. The hooks let a testing.B follow the
// same marks with StartTimer and StopTimer.
type lap struct {
	t0             time.Time
	d              time.Duration
	onStart, onOff func()
}

// Start starts the clock.
func (l *lap) Start() {
	if l.onStart != nil {
		l.onStart()
	}
	l.t0 = time.Now()
}

// Stop stops the clock and adds the time since Start.
func (l *lap) Stop() {
	l.d += time.Since(l.t0)
	if l.onOff != nil {
		l.onOff()
	}
}

// body is one run (the i-th) of an operation.
type body func(ctx context.Context, i int, l *lap) error

// measure runs fn n times and returns each run's timed duration.
func measure(ctx context.Context, n int, fn body) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var l lap
		if err := fn(ctx, i, &l); err != nil {
			return nil, err
		}
		out = append(out, l.d)
	}
	return out, nil
}

// timeN times the whole of fn, n times.
func timeN(n int, fn func(i int) error) ([]time.Duration, error) {
	return measure(context.Background(), n, func(_ context.Context, i int, l *lap) error {
		l.Start()
		defer l.Stop()
		return fn(i)
	})
}

// toolCalls numbers the benchmarks' tool calls: a repeated tool call id
// would be answered from the host's cache, measuring nothing.
var toolCalls atomic.Int64

// tool runs one tool call and turns a tool-level error into an error.
func tool(ctx context.Context, env environment.Environment, p environment.ToolParams) error {
	req, err := environment.NewToolRequest(fmt.Sprintf("bench-%d", toolCalls.Add(1)), p)
	if err != nil {
		return err
	}
	resp, err := env.ExecuteTool(ctx, req, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", p.ToolName(), err)
	}
	if resp.IsError {
		return fmt.Errorf("%s failed: %.200s", p.ToolName(), resp.Content)
	}
	return nil
}

// fixture is a running session with a filled workspace and the snapshots
// the ops take.
type fixture struct {
	h    *embedded.Host
	env  *embedded.Environment
	path string // host path of the workspace
	// volume is the host path of the session's volume tree (its root;
	// the workspace itself for an older layout).
	volume string
	snaps  []string
}

// newFixture creates a session and fills its workspace with files files
// of size bytes, then takes two snapshots (before and after a change) for
// rollback and fork.
func newFixture(ctx context.Context, h *embedded.Host, files, size int) (*fixture, error) {
	env, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		return nil, fmt.Errorf("bench: creating the session: %w", err)
	}
	f := &fixture{h: h, env: env}
	info, err := h.Session(env.SessionID())
	if err != nil {
		f.close()
		return nil, err
	}
	f.path, f.volume = info.Path, info.Path
	if info.Root != "" {
		f.volume = info.Root
	}
	if err := Fill(info.Path, files, size); err != nil {
		f.close()
		return nil, err
	}
	for i := range 2 {
		if err := tool(ctx, env, environment.WriteFileParams{Path: "turn.txt", Content: fmt.Sprint("base ", i)}); err != nil {
			f.close()
			return nil, err
		}
		s, err := env.TurnComplete(ctx, "")
		if err != nil {
			f.close()
			return nil, fmt.Errorf("bench: first snapshots: %w", err)
		}
		f.snaps = append(f.snaps, s.ID)
	}
	return f, nil
}

func (f *fixture) close() {
	_ = f.env.Destroy(context.Background())
}

// The operation bodies. Each leaves the session as it found it (a
// rollback alternates between two snapshots, a fork is destroyed untimed).

func (f *fixture) create(ctx context.Context, _ int, l *lap) error {
	l.Start()
	e, err := f.h.CreateSession(ctx, environment.SessionConfig{})
	l.Stop()
	if err != nil {
		return err
	}
	return e.Destroy(ctx)
}

func (f *fixture) start(ctx context.Context, i int, l *lap) error {
	l.Start()
	e, err := f.h.CreateSession(ctx, environment.SessionConfig{})
	if err == nil {
		err = tool(ctx, e, environment.BashParams{Command: "true"})
	}
	l.Stop()
	if e != nil {
		err = errors.Join(err, e.Destroy(ctx))
	}
	return err
}

func (f *fixture) exec(ctx context.Context, _ int, l *lap) error {
	l.Start()
	defer l.Stop()
	return tool(ctx, f.env, environment.BashParams{Command: "true"})
}

func (f *fixture) readFile(ctx context.Context, _ int, l *lap) error {
	l.Start()
	defer l.Stop()
	return tool(ctx, f.env, environment.ReadFileParams{Path: "d000/f00001.txt", Limit: 1})
}

func (f *fixture) writeFile(ctx context.Context, i int, l *lap) error {
	l.Start()
	defer l.Stop()
	return tool(ctx, f.env, environment.WriteFileParams{Path: "notes/w.txt", Content: fmt.Sprintf("line %d\n", i)})
}

func (f *fixture) editFile(ctx context.Context, i int, l *lap) error {
	if i == 0 {
		if err := tool(ctx, f.env, environment.WriteFileParams{Path: "notes/e.txt", Content: "alpha = 0\nbeta = 1\n"}); err != nil {
			return err
		}
	}
	from, to := "alpha = 0", "alpha = 1"
	if i%2 == 1 {
		from, to = to, from
	}
	l.Start()
	defer l.Stop()
	return tool(ctx, f.env, environment.EditFileParams{Path: "notes/e.txt", OldString: from, NewString: to})
}

func (f *fixture) grep(ctx context.Context, _ int, l *lap) error {
	l.Start()
	defer l.Stop()
	return tool(ctx, f.env, environment.GrepParams{Pattern: "NEEDLE|zzqx[0-9]+", Path: "d000"})
}

func (f *fixture) turnComplete(ctx context.Context, i int, l *lap) error {
	if err := tool(ctx, f.env, environment.WriteFileParams{Path: "turn.txt", Content: fmt.Sprint("turn ", i)}); err != nil {
		return err
	}
	l.Start()
	_, err := f.env.TurnComplete(ctx, "")
	l.Stop()
	return err
}

// saveImage times making one of the session's snapshots an image (the
// two alternate); the image is removed untimed.
func (f *fixture) saveImage(ctx context.Context, i int, l *lap) error {
	name := fmt.Sprintf("bench-save-%d", i)
	l.Start()
	_, err := f.h.SaveImage(ctx, f.env.SessionID(), name, embedded.SaveImageOptions{Snapshot: f.snaps[i%2]})
	l.Stop()
	if err != nil {
		return err
	}
	_, err = f.h.RemoveImage(ctx, name)
	return err
}

func (f *fixture) rollback(ctx context.Context, i int, l *lap) error {
	l.Start()
	defer l.Stop()
	return f.env.Rollback(ctx, f.snaps[i%2])
}

func (f *fixture) fork(ctx context.Context, _ int, l *lap) error {
	l.Start()
	e, err := f.env.Fork(ctx, f.snaps[0], environment.SessionConfig{})
	l.Stop()
	if err != nil {
		return err
	}
	return e.Destroy(ctx)
}

func (f *fixture) pauseResume(ctx context.Context, _ int, l *lap) error {
	l.Start()
	defer l.Stop()
	if err := f.env.Pause(ctx); err != nil {
		return err
	}
	return f.env.Resume(ctx)
}

// collector gathers a host's results and skips.
type collector struct {
	backend, runtime string
	files            int
	res              []Result
	skips            []Skip
}

func (c *collector) add(op, baseline string, samples []time.Duration) {
	r := Latencies(op, samples)
	r.Backend, r.Runtime, r.Files, r.Baseline = c.backend, c.runtime, c.files, baseline
	c.res = append(c.res, r)
}

func (c *collector) skip(op, reason string) {
	c.skips = append(c.skips, Skip{Backend: c.backend, Runtime: c.runtime, Op: op, Reason: reason})
}

// optionalOps measures the operations not every host can do (pause,
// saving an image), or records why they were skipped.
func optionalOps(ctx context.Context, f *fixture, cfg Config, c *collector) error {
	caps := f.h.Capabilities()
	for _, op := range []struct {
		name string
		can  bool
		why  string
		fn   body
	}{
		{OpPauseResume, caps.Pause, "the " + c.runtime + " runtime cannot pause here", f.pauseResume},
		{OpSaveImage, caps.Isolation != environment.IsolationNone, "the none runtime has no images", f.saveImage},
	} {
		if !op.can {
			c.skip(op.name, op.why)
			continue
		}
		samples, err := measure(ctx, cfg.N, op.fn)
		if err != nil {
			return fmt.Errorf("bench %s: %w", op.name, err)
		}
		c.add(op.name, "", samples)
	}
	return nil
}

// runHost is Run returning the skipped operations too.
func runHost(ctx context.Context, h *embedded.Host, cfg Config) ([]Result, []Skip, error) {
	cfg = cfg.withDefaults()
	caps := h.Capabilities()
	c := &collector{backend: caps.Storage, runtime: string(caps.Isolation), files: cfg.Files}
	log := cfg.Logger.With("backend", c.backend, "runtime", c.runtime)

	f, err := newFixture(ctx, h, cfg.Files, cfg.FileSize)
	if err != nil {
		return nil, nil, err
	}
	defer f.close()

	log.Info("bench: create, start", "n", cfg.N)
	create, start, err := createStart(ctx, h, cfg.N, nil)
	if err != nil {
		return nil, nil, err
	}
	c.add(OpCreate, "", create)
	c.add(OpStart, "", start)

	steps := []struct {
		op string
		n  int
		fn body
	}{
		{OpExec, cfg.ExecN, f.exec},
		{OpReadFile, cfg.N, f.readFile},
		{OpWriteFile, cfg.N, f.writeFile},
		{OpEditFile, cfg.N, f.editFile},
		{OpGrep, cfg.N, f.grep},
		{OpTurnComplete, cfg.N, f.turnComplete},
		{OpRollback, cfg.N, f.rollback},
		{OpFork, cfg.N, f.fork},
	}
	for _, s := range steps {
		log.Info("bench: "+s.op, "n", s.n)
		samples, err := measure(ctx, s.n, s.fn)
		if err != nil {
			return nil, nil, fmt.Errorf("bench %s: %w", s.op, err)
		}
		c.add(s.op, "", samples)
	}
	if err := optionalOps(ctx, f, cfg, c); err != nil {
		return nil, nil, err
	}

	if err := runtimeBaselines(ctx, h, f, cfg, c); err != nil {
		return nil, nil, err
	}
	if !cfg.SkipStorageBaselines {
		if err := storageBaselines(ctx, h, f, cfg, c); err != nil {
			return nil, nil, err
		}
	}
	return c.res, c.skips, nil
}

// createStart times n CreateSession calls (create) and each with its first
// bash call (start: create plus the first call), destroying each session
// untimed. before, if not nil, runs untimed before each.
func createStart(ctx context.Context, h *embedded.Host, n int, before func() error) (create, start []time.Duration, err error) {
	for i := range n {
		if before != nil {
			if err := before(); err != nil {
				return nil, nil, err
			}
		}
		t0 := time.Now()
		e, err := h.CreateSession(ctx, environment.SessionConfig{})
		if err != nil {
			return nil, nil, fmt.Errorf("bench create %d: %w", i, err)
		}
		tc := time.Since(t0)
		err = tool(ctx, e, environment.BashParams{Command: "true"})
		ts := time.Since(t0)
		if derr := e.Destroy(ctx); err == nil {
			err = derr
		}
		if err != nil {
			return nil, nil, fmt.Errorf("bench start %d: %w", i, err)
		}
		create, start = append(create, tc), append(start, ts)
	}
	return create, start, nil
}

// runPooled measures create, start and fork on a host with a sandbox pool
// (create_pooled, start_pooled, fork_pooled). Before each timed call it
// waits, untimed, until the pool is full again: the figures are for
// sessions created no faster than the pool refills.
func runPooled(ctx context.Context, h *embedded.Host, size int, cfg Config) ([]Result, []Skip, error) {
	cfg = cfg.withDefaults()
	caps := h.Capabilities()
	c := &collector{backend: caps.Storage, runtime: string(caps.Isolation), files: cfg.Files}
	cfg.Logger.Info("bench: pooled create, start, fork", "backend", c.backend, "runtime", c.runtime, "pool", size, "n", cfg.N)
	full := func() error {
		for h.PoolReady() < size {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
		return nil
	}
	f, err := newFixture(ctx, h, cfg.Files, cfg.FileSize)
	if err != nil {
		return nil, nil, err
	}
	defer f.close()
	create, start, err := createStart(ctx, h, cfg.N, full)
	if err != nil {
		return nil, nil, err
	}
	c.add(OpCreatePooled, "", create)
	c.add(OpStartPooled, "", start)
	samples, err := measure(ctx, cfg.N, func(ctx context.Context, i int, l *lap) error {
		if err := full(); err != nil {
			return err
		}
		return f.fork(ctx, i, l)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bench fork_pooled: %w", err)
	}
	c.add(OpForkPooled, "", samples)
	return c.res, c.skips, nil
}

// HostForkExec measures BaselineHostForkExec n times: shell -c true by
// fork+exec and wait, from this process.
func HostForkExec(shell string, n int) (Result, error) {
	argv := []string{shell, "-c", "true"}
	samples, err := timeN(n, func(int) error {
		pid, err := syscall.ForkExec(shell, argv, &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Setsid: true}})
		if err != nil {
			return err
		}
		var ws syscall.WaitStatus
		for {
			_, err = syscall.Wait4(pid, &ws, 0, nil)
			if err != syscall.EINTR {
				break
			}
		}
		if err == nil && ws.ExitStatus() != 0 {
			err = fmt.Errorf("%s -c true: %v", shell, ws)
		}
		return err
	})
	if err != nil {
		return Result{}, fmt.Errorf("bench %s: %w", BaselineHostForkExec, err)
	}
	r := Latencies(OpExec, samples)
	r.Baseline = BaselineHostForkExec
	return r, nil
}

// hostShell is the shell exec's `true` runs in: the image's sh, or on the
// none runtime bash (else sh) from PATH, as embedded picks it.
func hostShell(h *embedded.Host) (string, error) {
	rootfs, err := h.ImagePath("")
	if err != nil {
		return "", err
	}
	if rootfs != "" {
		for _, p := range []string{"bin/bash", "usr/bin/bash", "bin/sh"} {
			if _, err := os.Stat(filepath.Join(rootfs, p)); err == nil {
				return filepath.Join(rootfs, p), nil
			}
		}
		return "", fmt.Errorf("no shell in image %s", rootfs)
	}
	for _, name := range []string{"bash", "sh"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no bash or sh on PATH")
}

// runtimeBaselines measures the host's bare fork+exec and the per-call
// runtime processes beside exec, and gVisor's checkpoint/restore beside
// turn_complete and rollback.
func runtimeBaselines(ctx context.Context, h *embedded.Host, f *fixture, cfg Config, c *collector) error {
	shell, err := hostShell(h)
	if err != nil {
		return fmt.Errorf("bench %s: %w", BaselineHostForkExec, err)
	}
	fe, err := HostForkExec(shell, cfg.ExecN)
	if err != nil {
		return err
	}
	fe.Backend, fe.Runtime, fe.Files = c.backend, c.runtime, c.files
	c.res = append(c.res, fe)
	switch rt := h.Runtime().(type) {
	case *gvisor.Runtime:
		rootfs, err := h.ImagePath("")
		if err != nil {
			return err
		}
		base, err := RunscBaselines(ctx, rt, f.env.SessionID(), rootfs, f.path, cfg.ExecN, cfg.N)
		if err != nil {
			return fmt.Errorf("bench runsc baselines: %w", err)
		}
		base2, err := GVisorCheckpointRestore(ctx, rt, rootfs, cfg.N)
		if err != nil {
			return fmt.Errorf("bench gvisor checkpoint/restore: %w", err)
		}
		for _, r := range append(base, base2...) {
			r.Backend, r.Runtime, r.Files = c.backend, c.runtime, c.files
			c.res = append(c.res, r)
		}
	case *runc.Runtime:
		rootfs, err := h.ImagePath("")
		if err != nil {
			return err
		}
		base, err := RuncBaselines(ctx, rt, rootfs, f.path, cfg.ExecN)
		if errors.Is(err, ErrNoRuncBinary) {
			c.skip(OpExec, BaselineRuncExec+": "+err.Error())
			return nil
		}
		if err != nil {
			return fmt.Errorf("bench runc baseline: %w", err)
		}
		for _, r := range base {
			r.Backend, r.Runtime, r.Files = c.backend, c.runtime, c.files
			c.res = append(c.res, r)
		}
	}
	return nil
}

// storageBaselines measures full-copy and the raw backend operations on
// the same filesystem; their Runtime is "" (they do not depend on it).
func storageBaselines(ctx context.Context, h *embedded.Host, f *fixture, cfg Config, c *collector) error {
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Dir(f.volume)), ".bench-copy-")
	if err != nil {
		return fmt.Errorf("bench full-copy: %w", err)
	}
	defer os.RemoveAll(tmp)
	samples, err := measure(ctx, cfg.N, func(ctx context.Context, i int, l *lap) error {
		dst := filepath.Join(tmp, fmt.Sprint(i))
		l.Start()
		out, err := exec.CommandContext(ctx, "cp", "-a", f.path, dst).CombinedOutput()
		l.Stop()
		if err != nil {
			return fmt.Errorf("cp -a: %w: %s", err, out)
		}
		return os.RemoveAll(dst)
	})
	if err != nil {
		return fmt.Errorf("bench full-copy: %w", err)
	}
	r := Latencies(OpTurnComplete, samples)
	r.Backend, r.Files, r.Baseline = c.backend, c.files, BaselineFullCopy
	c.res = append(c.res, r)

	var raw []Result
	switch b := h.Storage().(type) {
	case *btrfs.Backend:
		raw, err = RawBtrfs(ctx, b.Root(), cfg.Files, cfg.FileSize, cfg.N)
	case *zfs.Backend:
		raw, err = RawZFS(ctx, b.Driver(), b.Parent(), tmp, cfg.Files, cfg.FileSize, cfg.N)
	}
	if err != nil {
		return fmt.Errorf("bench raw baseline: %w", err)
	}
	for _, r := range raw {
		r.Backend, r.Files, r.Baseline = c.backend, c.files, BaselineRaw
		c.res = append(c.res, r)
	}
	return nil
}
