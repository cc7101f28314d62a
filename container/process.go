package container

import (
	"context"
	"syscall"
)

// ProcessStarter is implemented by sandboxes that can start a process and
// return while it runs: a background process, an interactive program fed
// through its standard input, or a shell in a pseudo-terminal. It is
// optional: a caller finds it by type assertion.
//
// Exec is StartProcess followed by Wait, with the same semantics for
// Timeout, ctx and output; a sandbox that implements both keeps them
// consistent. The process's output goes to spec.Stdout and spec.Stderr
// (a PTY has one stream: spec.Stdout) from a goroutine of the sandbox's,
// as it is produced; writers should not block for long, since a blocked
// writer stops the output of every process of the sandbox (the host-side
// buffers are bounded).
//
// A started process is independent of the ctx given to StartProcess: ctx
// bounds only the start. It ends when it exits, when Kill or a signal
// ends it, when spec.Timeout passes, when KillAll runs, or with the
// sandbox.
type ProcessStarter interface {
	StartProcess(ctx context.Context, spec ProcessSpec) (RunningProcess, error)
}

// ProcessSpec describes a process to start.
type ProcessSpec struct {
	// Process gives the command, its environment, directory, output
	// writers and timeout as for Exec. Its Stdin field is ignored: input
	// comes through RunningProcess.WriteStdin when OpenStdin is set.
	Process
	// User runs the process as this user of the sandbox: a name from the
	// sandbox's /etc/passwd, or "uid" or "uid:gid". Empty: root.
	// An unknown user fails the start with ErrInvalidSpec.
	User string
	// OpenStdin keeps the process's standard input open for WriteStdin
	// until CloseStdin. When false its standard input is empty.
	OpenStdin bool
	// PTY, if not nil, runs the process in a new pseudo-terminal of this
	// size as its controlling terminal, with standard input, output and
	// error on it; output (raw bytes) goes to Stdout and input always
	// comes through WriteStdin.
	PTY *TermSize
}

// TermSize is a terminal's size in characters.
type TermSize struct {
	Rows, Cols uint16
}

// RunningProcess is a process started by StartProcess. Methods are safe
// for concurrent use. Calls after the process ended fail with an error
// wrapping ErrProcessDone (Wait and Done excepted).
type RunningProcess interface {
	// PID is the process's id inside the sandbox.
	PID() int
	// WriteStdin writes to the process's standard input (its terminal for
	// a PTY). It fails with ErrInvalidSpec if the process was started
	// without OpenStdin or PTY, or after CloseStdin.
	WriteStdin(ctx context.Context, p []byte) error
	// CloseStdin closes the process's standard input (sends EOF). For a
	// PTY it sends the terminal's end-of-file character.
	CloseStdin(ctx context.Context) error
	// Signal sends sig to the process alone.
	Signal(ctx context.Context, sig syscall.Signal) error
	// Kill kills the process's whole tree (its process group and
	// session), as a timeout does; Wait then reports TimedOut.
	Kill(ctx context.Context) error
	// Resize changes a PTY's size; ErrInvalidSpec for a process without
	// one.
	Resize(ctx context.Context, size TermSize) error
	// Wait waits until the process has ended and its output has been
	// delivered, or ctx is done (which leaves the process running).
	Wait(ctx context.Context) (ExitStatus, error)
	// Done is closed when Wait would return without blocking.
	Done() <-chan struct{}
}
