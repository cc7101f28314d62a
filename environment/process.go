package environment

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ProcessRunner is implemented by environments whose sessions run
// processes that live between calls: a dev server, a REPL, a shell in a
// pseudo-terminal. It is optional (find it by type assertion) and gated by
// Capabilities.Processes (and Capabilities.PTY for ProcessConfig.PTY); an
// environment that implements it but lacks the capability returns
// ErrCapabilityNotSupported from every method.
//
// A process is named by its pid inside the sandbox. Every method but
// StartProcess fails with an error wrapping ErrProcessNotFound for a pid
// the session does not know (never started, or forgotten: the host keeps a
// bounded number of ended processes). A pid the sandbox reuses names the
// newest process. Bad input fails with ErrInvalidArgument and changes
// nothing. On a paused session StartProcess, SendInput, CloseInput,
// SignalProcess and ResizeProcess fail with ErrNotActive; ListProcesses,
// AttachProcess and WaitProcess work (a frozen process produces nothing).
//
// A process belongs to its session, not to the client that started it: it
// keeps running when that client disconnects, and any client of the session
// can attach to it. Rollback and Destroy kill every process and end it with
// ProcessExit.Killed set and a Reason naming the cause; Pause freezes them;
// TurnComplete freezes them for the instant of the snapshot.
type ProcessRunner interface {
	// StartProcess starts a process and returns once it runs, with its
	// pid; it does not wait for the process. ctx bounds only the start.
	StartProcess(ctx context.Context, config ProcessConfig) (*ProcessInfo, error)
	// ListProcesses lists the session's running processes and those that
	// ended recently, oldest first.
	ListProcesses(ctx context.Context) ([]ProcessInfo, error)
	// AttachProcess streams the process's output from byte offset
	// (an offset over all its streams together; 0 is the first byte):
	// first what the host still holds from that offset, then live output,
	// then an event with Exit set, and returns nil. When the host no
	// longer holds some bytes from offset (they were produced faster than
	// the attacher read, or before it attached), an event with Dropped set
	// says how many were skipped. It returns ctx.Err() when ctx is done
	// and the error of fn if fn fails; neither affects the process. Any
	// number of attachers may follow one process, from any client; none
	// ever slows the process down.
	AttachProcess(ctx context.Context, pid int, offset int64, fn func(ProcessEvent) error) error
	// SendInput writes data (at most MaxProcessInputBytes) to the
	// process's standard input (its terminal for a PTY). The process must
	// have been started with Stdin or PTY, and its input not closed.
	SendInput(ctx context.Context, pid int, data []byte) error
	// CloseInput closes the process's standard input (end of file; for a
	// PTY the terminal's EOF character).
	CloseInput(ctx context.Context, pid int) error
	// SignalProcess sends signal number sig (1 to 64) to the process.
	SignalProcess(ctx context.Context, pid int, sig int) error
	// ResizeProcess changes the size of the process's terminal; a process
	// without PTY fails with ErrInvalidArgument.
	ResizeProcess(ctx context.Context, pid int, size TermSize) error
	// WaitProcess waits until the process has ended and returns how, or
	// returns ctx.Err() when ctx is done first (the process runs on).
	WaitProcess(ctx context.Context, pid int) (*ProcessExit, error)
}

// Bounds of process requests.
const (
	// MaxProcessInputBytes bounds one SendInput.
	MaxProcessInputBytes = 1 << 20
	// MaxProcessArgs bounds ProcessConfig.Args.
	MaxProcessArgs = 4096
	// MaxProcessArgBytes bounds ProcessConfig.Args and Command together.
	MaxProcessArgBytes = 256 << 10
	// MaxProcessTagBytes bounds ProcessConfig.Tag.
	MaxProcessTagBytes = 256
	// MaxProcessUserBytes bounds ProcessConfig.User.
	MaxProcessUserBytes = 64
	// MaxSignal is the largest signal number SignalProcess accepts.
	MaxSignal = 64
)

// ProcessConfig describes a process to start.
type ProcessConfig struct {
	// Args is the command and its arguments (Args[0] looked up in PATH).
	// Exactly one of Args and Command is set.
	Args []string `json:"args,omitempty"`
	// Command is a shell command, run as the bash tool runs one.
	Command string `json:"command,omitempty"`
	// Env is added to the session's environment (ValidateEnv).
	Env map[string]string `json:"env,omitempty"`
	// Cwd is the working directory: absolute in the sandbox, or relative
	// to the workspace (default: the session's image's WORKDIR, else the
	// workspace).
	Cwd string `json:"cwd,omitempty"`
	// User runs the process as this user of the sandbox: a name, "uid" or
	// "uid:gid" (default: the session's image's USER, else root; on
	// isolation none, the host user, and a User only where the host
	// process is root).
	User string `json:"user,omitempty"`
	// Tag is a caller's label kept with the process (at most
	// MaxProcessTagBytes). Tags starting "tool:" are the bash tool's.
	Tag string `json:"tag,omitempty"`
	// PTY, if set, runs the process in a pseudo-terminal of this size
	// (needs Capabilities.PTY); its output is one stream, StreamPTY.
	PTY *TermSize `json:"pty,omitempty"`
	// Stdin keeps standard input open for SendInput until CloseInput
	// (always so with PTY). When false, standard input is empty.
	Stdin bool `json:"stdin,omitempty"`
	// Timeout bounds the process (0: none); at the bound its whole tree
	// is killed and ProcessExit.TimedOut set.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// TermSize is a terminal's size in characters.
type TermSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Validate checks a terminal size: both sides 1 to 10000. The error wraps
// ErrInvalidArgument.
func (t TermSize) Validate() error {
	if t.Rows == 0 || t.Cols == 0 || t.Rows > 10000 || t.Cols > 10000 {
		return fmt.Errorf("%w: terminal size %dx%d: rows and cols must be 1 to 10000", ErrInvalidArgument, t.Rows, t.Cols)
	}
	return nil
}

// Validate checks the configuration against the bounds above; the error
// wraps ErrInvalidArgument.
func (c ProcessConfig) Validate() error {
	if (len(c.Args) == 0) == (c.Command == "") {
		return fmt.Errorf("%w: a process needs exactly one of args and command", ErrInvalidArgument)
	}
	if len(c.Args) > 0 && c.Args[0] == "" {
		return fmt.Errorf("%w: empty program name", ErrInvalidArgument)
	}
	if len(c.Args) > MaxProcessArgs {
		return fmt.Errorf("%w: %d args, at most %d", ErrInvalidArgument, len(c.Args), MaxProcessArgs)
	}
	n := len(c.Command)
	for _, a := range c.Args {
		n += len(a)
	}
	if n > MaxProcessArgBytes {
		return fmt.Errorf("%w: command of %d bytes, at most %d", ErrInvalidArgument, n, MaxProcessArgBytes)
	}
	if strings.ContainsRune(c.Command, 0) || strings.ContainsRune(strings.Join(c.Args, ""), 0) {
		return fmt.Errorf("%w: NUL in the command", ErrInvalidArgument)
	}
	if err := ValidateEnv(c.Env); err != nil {
		return err
	}
	if len(c.Cwd) > 4096 || strings.ContainsRune(c.Cwd, 0) {
		return fmt.Errorf("%w: cwd too long or with NUL", ErrInvalidArgument)
	}
	if len(c.Tag) > MaxProcessTagBytes || strings.ContainsRune(c.Tag, 0) {
		return fmt.Errorf("%w: tag longer than %d bytes or with NUL", ErrInvalidArgument, MaxProcessTagBytes)
	}
	if len(c.User) > MaxProcessUserBytes || strings.ContainsAny(c.User, "\x00/ \n") {
		return fmt.Errorf("%w: user %q", ErrInvalidArgument, c.User)
	}
	if c.PTY != nil {
		if err := c.PTY.Validate(); err != nil {
			return err
		}
	}
	if c.Timeout < 0 {
		return fmt.Errorf("%w: negative timeout", ErrInvalidArgument)
	}
	return nil
}

// ValidateSignal checks a signal number for SignalProcess; the error
// wraps ErrInvalidArgument.
func ValidateSignal(sig int) error {
	if sig < 1 || sig > MaxSignal {
		return fmt.Errorf("%w: signal %d is not 1 to %d", ErrInvalidArgument, sig, MaxSignal)
	}
	return nil
}

// StreamPTY is the one output stream of a process in a pseudo-terminal.
const StreamPTY = "pty"

// ProcessInfo describes a process of a session.
type ProcessInfo struct {
	// PID is the process's id inside the sandbox.
	PID int `json:"pid"`
	// Tag is ProcessConfig.Tag ("tool:<ToolCallID>" for a bash call).
	Tag string `json:"tag,omitempty"`
	// Args is the command as started (a shell command as its shell's
	// argv).
	Args []string `json:"args"`
	// PTY reports a process in a pseudo-terminal.
	PTY bool `json:"pty,omitempty"`
	// StartedAt is when the process started.
	StartedAt time.Time `json:"started_at"`
	// OutputBytes is how much output it has produced so far: the offset
	// the next byte will have.
	OutputBytes int64 `json:"output_bytes"`
	// Exit is how it ended; nil while it runs.
	Exit *ProcessExit `json:"exit,omitempty"`
}

// ProcessExit is how a process ended.
type ProcessExit struct {
	// Code is the exit code; 128+n when killed by signal n.
	Code int `json:"code"`
	// Signal is the signal that ended it (0 if it exited), when known.
	Signal int `json:"signal,omitempty"`
	// OOMKilled: the session's memory limit killed it.
	OOMKilled bool `json:"oom_killed,omitempty"`
	// TimedOut: its Timeout (or the bash tool's) killed it.
	TimedOut bool `json:"timed_out,omitempty"`
	// Killed: the host killed it (rollback, destroy, sandbox restart);
	// Reason says why.
	Killed bool `json:"killed,omitempty"`
	// Reason explains an end the process did not choose, e.g. "killed
	// by rollback to s@3" (empty for an ordinary exit).
	Reason string `json:"reason,omitempty"`
	// EndedAt is when it ended.
	EndedAt time.Time `json:"ended_at"`
}

// ProcessEvent is one event of AttachProcess: output, a gap, or the end.
type ProcessEvent struct {
	// Offset is the position of Data's first byte in the process's
	// output (or, with Dropped, of the first byte skipped).
	Offset int64 `json:"offset"`
	// Stream is StreamStdout, StreamStderr or StreamPTY (with Data).
	Stream string `json:"stream,omitempty"`
	// Data is output, as produced.
	Data []byte `json:"data,omitempty"`
	// Dropped, if positive, is how many bytes from Offset the host no
	// longer holds; the next event starts at Offset+Dropped.
	Dropped int64 `json:"dropped,omitempty"`
	// Exit, if set, is the last event: the process ended so.
	Exit *ProcessExit `json:"exit,omitempty"`
}

// ErrProcessNotFound: no process with that pid in this session.
var ErrProcessNotFound = errors.New("process not found")
