package container

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
)

// Status is where a sandbox is in its life. A sandbox moves
//
//	starting ─► running ◄─► paused
//	   │           │           │
//	   └───────────┴─► failed  │   (died on its own; Err says why)
//	   any of them ──► stopping ─► stopped
//
// Only a running sandbox starts commands (Exec), kills them (KillAll) or
// answers Idle; a paused one returns ErrPaused for those, a starting,
// stopping, stopped or failed one ErrNotRunning.
type Status int

// Sandbox statuses.
const (
	// StatusStarting: Start has not returned the sandbox yet.
	StatusStarting Status = iota
	// StatusRunning: the sandbox accepts Exec.
	StatusRunning
	// StatusPaused: every process is frozen until Resume.
	StatusPaused
	// StatusStopping: Stop is under way.
	StatusStopping
	// StatusStopped: Stop has finished; Done is closed.
	StatusStopped
	// StatusFailed: the sandbox died on its own; Done is closed, Err says
	// why, and Stop still releases what it holds.
	StatusFailed
)

var statusNames = [...]string{"starting", "running", "paused", "stopping", "stopped", "failed"}

// String names the status ("running", ...).
func (s Status) String() string {
	if s < 0 || int(s) >= len(statusNames) {
		return fmt.Sprintf("status(%d)", int(s))
	}
	return statusNames[s]
}

// StatusReporter is implemented by sandboxes that report their Status
// (every sandbox of this module's runtimes).
type StatusReporter interface {
	Status() Status
}

// Lifecycle is the status machine of one sandbox, shared by the runtimes:
// it holds the Status, the Done channel and Err, and makes a second Stop
// wait for the first. Safe for concurrent use.
//
// Locks, in order: opMu (one Pause, Resume or the start of a Stop at a
// time; held across the runtime's freeze), mu (the fields, held briefly).
type Lifecycle struct {
	label string

	opMu sync.Mutex

	mu       sync.Mutex
	status   Status
	err      error // why it failed; nil otherwise
	stopErr  error
	done     chan struct{}
	doneSet  bool
	stopDone chan struct{}
}

// NewLifecycle returns a Lifecycle in StatusStarting. label prefixes its
// errors ("runc: sandbox s1").
func NewLifecycle(label string) *Lifecycle {
	return &Lifecycle{label: label, done: make(chan struct{}), stopDone: make(chan struct{})}
}

// Status returns the current status.
func (l *Lifecycle) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

// Done is closed when the sandbox has exited, by Stop or on its own.
func (l *Lifecycle) Done() <-chan struct{} { return l.done }

// Err is nil while the sandbox runs and after a clean Stop; after the
// sandbox died on its own it wraps ErrNotRunning and says how.
func (l *Lifecycle) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Require returns nil if the status is one of allowed, else the error
// an operation on the sandbox gets now: ErrPaused when paused, Err when it
// failed, ErrNotRunning otherwise.
func (l *Lifecycle) Require(allowed ...Status) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.requireLocked(allowed)
}

func (l *Lifecycle) requireLocked(allowed []Status) error {
	switch {
	case slices.Contains(allowed, l.status):
		return nil
	case l.status == StatusPaused:
		return fmt.Errorf("%s: %w", l.label, ErrPaused)
	case l.status == StatusFailed && l.err != nil:
		return l.err
	}
	return fmt.Errorf("%s is %s: %w", l.label, l.status, ErrNotRunning)
}

// Started moves a starting sandbox to running; it fails if the sandbox
// died while starting.
func (l *Lifecycle) Started() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.requireLocked([]Status{StatusStarting}); err != nil {
		return err
	}
	l.status = StatusRunning
	return nil
}

// Exited records that the sandbox's processes are gone and closes Done.
// Unless a Stop is under way or done, the sandbox failed: cause says how
// (Err wraps it and ErrNotRunning). It reports whether it failed.
func (l *Lifecycle) Exited(cause error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	failed := false
	switch l.status {
	case StatusStarting, StatusRunning, StatusPaused:
		if !errors.Is(cause, ErrNotRunning) {
			cause = fmt.Errorf("%s died: %w: %w", l.label, ErrNotRunning, cause)
		}
		l.status, l.err, failed = StatusFailed, cause, true
	}
	l.closeDoneLocked()
	return failed
}

func (l *Lifecycle) closeDoneLocked() {
	if !l.doneSet {
		l.doneSet = true
		close(l.done)
	}
}

// SetPaused freezes (pause true) or thaws the sandbox with freeze, which
// the runtime supplies, and records the new status. Pausing a paused or
// resuming a running sandbox does nothing; on any status but running and
// paused it returns Require's error.
func (l *Lifecycle) SetPaused(pause bool, freeze func() error) error {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	from, to := StatusRunning, StatusPaused
	if !pause {
		from, to = to, from
	}
	if err := l.Require(from, to); err != nil {
		return err
	}
	if l.Status() == to {
		return nil
	}
	if err := freeze(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.status == from { // not failed or stopping meanwhile
		l.status = to
	}
	return nil
}

// While runs fn if the status is one of allowed (else returns Require's
// error), with no Pause, Resume or Stop starting meanwhile.
func (l *Lifecycle) While(fn func() error, allowed ...Status) error {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	if err := l.Require(allowed...); err != nil {
		return err
	}
	return fn()
}

// BeginStop starts a Stop. The first call moves the sandbox to stopping
// and returns first true and the status it had; the caller tears it down
// and calls EndStop. Later calls wait for the first Stop (bounded by ctx)
// and return its error.
func (l *Lifecycle) BeginStop(ctx context.Context) (prev Status, first bool, err error) {
	l.opMu.Lock()
	l.mu.Lock()
	prev = l.status
	if prev != StatusStopping && prev != StatusStopped {
		l.status = StatusStopping
	}
	l.mu.Unlock()
	l.opMu.Unlock()
	if prev != StatusStopping && prev != StatusStopped {
		return prev, true, nil
	}
	select {
	case <-l.stopDone:
		l.mu.Lock()
		defer l.mu.Unlock()
		return prev, false, l.stopErr
	case <-ctx.Done():
		return prev, false, ctx.Err()
	}
}

// EndStop finishes the Stop BeginStop started: the sandbox is stopped,
// Done is closed and later Stops return err, which EndStop returns.
func (l *Lifecycle) EndStop(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status, l.stopErr = StatusStopped, err
	l.closeDoneLocked()
	close(l.stopDone)
	return err
}

// SandboxDir maps a Process's Dir to a directory inside the sandbox: ""
// is WorkspaceDir, a relative path is taken relative to it, and the
// result must be WorkspaceDir or below it (else ErrInvalidSpec).
func SandboxDir(dir string) (string, error) {
	if dir == "" {
		return WorkspaceDir, nil
	}
	if !path.IsAbs(dir) {
		dir = path.Join(WorkspaceDir, dir)
	}
	dir = path.Clean(dir)
	if dir != WorkspaceDir && !strings.HasPrefix(dir, WorkspaceDir+"/") {
		return "", fmt.Errorf("%w: Dir %q is outside %s", ErrInvalidSpec, dir, WorkspaceDir)
	}
	return dir, nil
}

// RootDir maps a Process's Dir to a directory inside a sandbox with its
// own root (Spec.Root): "" is WorkspaceDir, a relative path is taken
// relative to it, and an absolute path is any directory of the root
// (the chroot keeps it there). A NUL byte is ErrInvalidSpec.
func RootDir(dir string) (string, error) {
	if strings.IndexByte(dir, 0) >= 0 {
		return "", fmt.Errorf("%w: Dir contains a NUL byte", ErrInvalidSpec)
	}
	if dir == "" {
		return WorkspaceDir, nil
	}
	if !path.IsAbs(dir) {
		dir = path.Join(WorkspaceDir, dir)
	}
	return path.Clean(dir), nil
}
