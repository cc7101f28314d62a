package container

import (
	"context"
	"errors"
	"io"
	"time"
)

// WorkspaceDir is where a sandbox sees its session's volume.
const WorkspaceDir = "/workspace"

// Runtime starts sandboxes. One sandbox serves one session for the session's
// life; commands run in it through Exec. Implementations keep their state
// under a root directory so that a restarted host can find what a crashed
// one left behind. Safe for concurrent use.
//
// A restarted host never reattaches to a sandbox: the only channel to a
// sandbox is its agent's pipes, which died with the process that started
// it. The one path is: open the runtime on the same root, call Reap once
// before starting any sandbox, and start a fresh sandbox for each session
// on its first use (embedded.Host does this in its recovery). The
// workspace lives in the storage backend, not in the sandbox, so nothing
// of a session is lost but its running processes.
type Runtime interface {
	// Kind names the runtime: "none", "gvisor" or "runc".
	Kind() string
	// Start starts a sandbox and returns once it accepts Exec calls.
	Start(ctx context.Context, spec Spec) (Sandbox, error)
	// List returns the ids of sandboxes this runtime's root knows of,
	// including ones left by an earlier process (tests and operators use it
	// to find leftovers).
	List(ctx context.Context) ([]string, error)
	// Reap stops and cleans up (processes, cgroups, mounts, state) every
	// sandbox under this runtime's root: those an earlier process left and
	// any this one started that still run. A host calls it once at start,
	// before its first Start (see above).
	Reap(ctx context.Context) error
}

// Spec describes a sandbox to start.
type Spec struct {
	// ID identifies the sandbox (the session id).
	ID string
	// RootFS is a host directory holding the read-only root filesystem.
	// Ignored by the none runtime.
	RootFS string
	// Workspace is the host directory mounted read-write at WorkspaceDir.
	// With Root set it must be Root's directory "workspace".
	Workspace string
	// Root, if set, is the host directory of the session's own root tree
	// (a writable root): on gvisor and runc every command runs chrooted
	// into it, with its own /proc, /dev and /sys mounted by the agent,
	// and WorkspaceDir is its directory "workspace". Its parent directory
	// is what the runtime binds (and seals) instead of Workspace's. The
	// none runtime ignores it (commands run in Workspace on the host).
	// RootFS then is only the agent's outer root, never seen by commands.
	Root string
	// ReadOnlyRoot makes Root read-only to commands except for its
	// workspace (writes elsewhere fail with EROFS). Needs Root.
	ReadOnlyRoot bool
	// Env is the base environment of every command ("KEY=value").
	Env []string
	// Limits bounds the sandbox's resources (zero fields: unlimited).
	Limits Limits
	// Network selects the sandbox's network (default NetworkNone).
	Network Network
	// NetNS is the path of the network namespace for NetworkNamespace
	// (a bind mount the host made; never a path the sandbox can write).
	NetNS string
}

// VolumeTree is the host directory whose parent a runtime binds into
// the sandbox and seals: Root when set, else Workspace.
func (s Spec) VolumeTree() string {
	if s.Root != "" {
		return s.Root
	}
	return s.Workspace
}

// Limits bounds a sandbox's resources.
type Limits struct {
	// CPUs is the CPU quota in cores (e.g. 0.5).
	CPUs float64
	// MemoryBytes caps memory; exceeding it OOM-kills a process.
	MemoryBytes int64
	// Pids caps the number of processes (contains fork bombs).
	Pids int64
}

// Network is a sandbox's network mode.
type Network string

// Network modes.
const (
	// NetworkNone: no network interfaces but loopback (the default).
	NetworkNone Network = "none"
	// NetworkHost: the host's network (opt-in; no isolation of traffic).
	NetworkHost Network = "host"
	// NetworkNamespace: the network namespace bind-mounted at Spec.NetNS,
	// made by the host with its interfaces, addresses and routes
	// (container/netns); the sandbox's traffic goes through them.
	NetworkNamespace Network = "netns"
)

// Sandbox is one running sandbox. Safe for concurrent use: several Exec
// calls may run at once.
//
// Every runtime's sandboxes follow the same status machine (see Status;
// they implement StatusReporter). Pause means the same everywhere: Exec,
// KillAll and Idle on a paused sandbox return ErrPaused at once (they
// neither block until Resume nor start anything); a command already
// running when Pause comes is frozen with the rest and goes on after
// Resume. Pausing a paused sandbox or resuming a running one does
// nothing. A runtime that cannot freeze returns ErrUnsupported from Pause
// and Resume. On a stopped or dead sandbox every call but Stop, Done and
// Err returns an error wrapping ErrNotRunning.
type Sandbox interface {
	// ID is the sandbox's id.
	ID() string
	// Exec runs a command and waits for it. Output goes to p.Stdout and
	// p.Stderr as it is produced. When ctx is done or p.Timeout passes,
	// the command's whole process tree is killed. The error is for a
	// command that could not be run or a sandbox that died; a command that
	// ran and failed reports it in ExitStatus.
	Exec(ctx context.Context, p Process) (ExitStatus, error)
	// KillAll kills every process started by Exec and waits for them to
	// exit; the sandbox stays up. Rollback uses it so that no process
	// started after a snapshot survives.
	KillAll(ctx context.Context) error
	// Pause freezes every process in the sandbox; ErrUnsupported if the
	// runtime cannot. See above for what Exec does meanwhile.
	Pause(ctx context.Context) error
	// Resume thaws a paused sandbox.
	Resume(ctx context.Context) error
	// Stop kills the sandbox (paused or not) and releases its runtime
	// resources. The workspace is left untouched. A second Stop waits for
	// the first and returns its result.
	Stop(ctx context.Context) error
	// Done is closed when the sandbox has exited, by Stop or on its own
	// (a killed agent, a crash). Err then says why.
	Done() <-chan struct{}
	// Err is nil while the sandbox runs and after a clean Stop; otherwise
	// it describes how the sandbox died.
	Err() error
}

// Process is a command to run in a sandbox.
type Process struct {
	// Args is the command and its arguments; Args[0] is looked up in PATH.
	Args []string
	// Env is added to the sandbox's base environment ("KEY=value").
	Env []string
	// Dir is the working directory inside the sandbox (default
	// WorkspaceDir; a relative Dir is taken relative to it). It must be
	// WorkspaceDir or below it (see SandboxDir), except in a sandbox
	// with its own root (Spec.Root), where any absolute path of that
	// root is allowed (see RootDir).
	Dir string
	// Stdin is the command's standard input (nil: empty).
	Stdin io.Reader
	// Stdout and Stderr receive the command's output (nil: discarded).
	Stdout, Stderr io.Writer
	// Timeout bounds the command (0: none beyond ctx).
	Timeout time.Duration
}

// ExitStatus is how a command ended.
type ExitStatus struct {
	// Code is the exit code; 128+n when killed by signal n.
	Code int
	// Signal is the signal that ended the command, 0 if it exited (a
	// shell that reports a signal through its own exit code 128+n has
	// Code 128+n and Signal 0).
	Signal int
	// TimedOut reports that the timeout or ctx killed the command.
	TimedOut bool
	// OOMKilled reports that the memory limit killed the command.
	OOMKilled bool
	// Duration is how long the command ran.
	Duration time.Duration
}

// IdleChecker is implemented by sandboxes that can tell whether any
// process runs in them. A snapshot of an idle sandbox needs no freeze:
// nothing inside can be writing.
type IdleChecker interface {
	Idle(ctx context.Context) (bool, error)
}

// Checkpointer is implemented by sandboxes whose runtime can save the
// whole sandbox's memory state (gVisor). Checkpoint writes an image to dir
// and leaves the sandbox running.
type Checkpointer interface {
	Checkpoint(ctx context.Context, dir string) error
}

// Restorer is implemented by runtimes that can start a sandbox from an
// image a Checkpointer wrote (gVisor): the processes, their memory, open
// files, working directories and listening sockets come back as they
// were at the checkpoint, and the sandbox's agent serves the new host
// connection. spec is the new sandbox's (its own ID; the root, workspace
// and mounts must hold the files of the checkpoint's instant, at the same
// paths inside the sandbox). imageDir is only read: one image can be
// restored any number of times (rollback, fork).
type Restorer interface {
	Restore(ctx context.Context, spec Spec, imageDir string) (Sandbox, error)
}

// MemorySnapshotter is implemented by sandboxes that can take one
// consistent snapshot of their memory and their files (gVisor):
// SnapshotMemory freezes every process of the sandbox, saves its memory
// state to dir (an image a Restorer takes), calls during while the
// sandbox is still frozen (the caller snapshots the workspace or root
// tree then, so the files belong to the same instant as the memory), and
// thaws the sandbox, which goes on running. An error from during fails
// the call (dir then holds an image without its files). during must be
// short: the sandbox and its agent stay frozen while it runs. A sandbox
// whose memory cannot be restored consistently (one with a host network
// namespace) returns an error wrapping ErrUnsupported and freezes
// nothing.
type MemorySnapshotter interface {
	SnapshotMemory(ctx context.Context, dir string, during func(ctx context.Context) error) error
}

// Sentinel errors.
var (
	// ErrUnsupported: the runtime cannot do this.
	ErrUnsupported = errors.New("not supported by this runtime")
	// ErrNotRunning: the sandbox has stopped or died.
	ErrNotRunning = errors.New("sandbox not running")
	// ErrPaused: the sandbox is paused; Exec, KillAll and Idle return it
	// on every runtime instead of waiting for Resume.
	ErrPaused = errors.New("sandbox paused")
	// ErrRuntimeMissing: the runtime's binary or kernel support is absent.
	ErrRuntimeMissing = errors.New("container runtime not available")
	// ErrInvalidSpec: a Spec or Process is malformed.
	ErrInvalidSpec = errors.New("invalid sandbox spec")
	// ErrProcessDone: the process has ended (see RunningProcess).
	ErrProcessDone = errors.New("process has ended")
)
