package environment

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Environment drives one sandbox session. Implementations are safe for
// concurrent use: several ExecuteTool calls may run at once, and any call may
// race Destroy or Pause (the loser gets a clear error, never a corrupt state).
type Environment interface {
	// Create makes a new session from config and binds this Environment to
	// it. It fails with ErrAlreadyBound if the Environment is bound already,
	// and with ErrInvalidArgument, having changed nothing, when config
	// fails SessionConfig.Validate or names an image the host lacks.
	Create(ctx context.Context, config SessionConfig) error
	// AttachSession binds this Environment to an existing session. It fails
	// with ErrSessionNotFound when no such session exists and with
	// ErrInvalidArgument when the id is malformed.
	AttachSession(sessionID string) error
	// Pause freezes the session's sandbox. Tool calls fail with ErrNotActive
	// until Resume.
	Pause(ctx context.Context) error
	// Resume thaws a paused session.
	Resume(ctx context.Context) error
	// Destroy stops the session's sandbox and deletes its workspace and
	// snapshots. Destroying a destroyed session is a no-op.
	Destroy(ctx context.Context) error
	// ExecuteTool runs one tool call. onProgress, if not nil, receives output
	// as it is produced (possibly from another goroutine, never concurrently
	// with itself). A tool that ran and failed (non-zero exit, file not
	// found, no match for an edit) returns a ToolResponse with IsError set
	// and a nil error; the error return is for calls that could not run:
	// unknown tool, invalid parameters, session not active, canceled context.
	ExecuteTool(ctx context.Context, req ToolRequest, onProgress func(ToolProgress)) (*ToolResponse, error)
	// State reports the session's state; StateUnbound before Create or
	// AttachSession.
	State() SessionState
	// Capabilities reports what this implementation can do.
	Capabilities() Capabilities
	// CreateSnapshot records the workspace as a new snapshot. name is a
	// label (may be empty); the returned SnapshotInfo carries the id used
	// by Rollback. The snapshot is durable once this returns.
	CreateSnapshot(ctx context.Context, name string) (*SnapshotInfo, error)
	// Rollback makes the workspace equal to snapshot snapshotID of this
	// session and resets the sandbox's processes. Newer snapshots survive.
	Rollback(ctx context.Context, snapshotID string) error
}

// Forker is implemented by environments that can fork a session: a new,
// independent session whose workspace starts as the given snapshot, sharing
// storage copy-on-write where the backend can.
type Forker interface {
	// Fork creates a new session from snapshotID (of this session) and
	// returns an Environment bound to it. config.SessionID may be empty.
	Fork(ctx context.Context, snapshotID string, config SessionConfig) (Environment, error)
}

// TurnCompleter is implemented by environments that number snapshots by
// agent turn. TurnComplete quiesces the sandbox, snapshots the workspace as
// the next turn and thaws it.
type TurnCompleter interface {
	TurnComplete(ctx context.Context, label string) (*SnapshotInfo, error)
}

// SnapshotLister is implemented by environments that can list a session's
// snapshots, oldest first.
type SnapshotLister interface {
	ListSnapshots(ctx context.Context) ([]SnapshotInfo, error)
}

// SnapshotDeleter is implemented by environments that can delete one of
// a session's snapshots, freeing what only it holds: the remedy when a
// disk limit that counts what snapshots pin is reached. Deleting a
// snapshot that forks were made from leaves the forks intact.
type SnapshotDeleter interface {
	// DeleteSnapshot deletes snapshotID (of this session). It fails with
	// ErrSnapshotNotFound for an id that is not one of this session's
	// snapshots, and ErrInvalidArgument for a malformed one.
	DeleteSnapshot(ctx context.Context, snapshotID string) error
}

// Hibernator is implemented by environments that can pause a session to
// disk (Capabilities.MemorySnapshots).
type Hibernator interface {
	// Hibernate pauses the session like Pause, but writes its sandbox
	// (memory and files) to disk and frees its memory: Resume brings the
	// processes back, in this host process or in a later one (a restart,
	// or a crash after Hibernate returned).
	Hibernate(ctx context.Context) error
}

// SessionIDer is implemented by environments that expose the id of the
// session they are bound to ("" when unbound).
type SessionIDer interface {
	SessionID() string
}

// SessionState is the lifecycle state of a session.
type SessionState string

// Session states. See the package documentation for the transitions.
const (
	StateUnbound    SessionState = "unbound"
	StateCreating   SessionState = "creating"
	StateActive     SessionState = "active"
	StatePaused     SessionState = "paused"
	StateDestroying SessionState = "destroying"
	StateDestroyed  SessionState = "destroyed"
	StateFailed     SessionState = "failed"
)

// IsolationKind names how a session's commands are isolated from the host.
type IsolationKind string

// Isolation kinds.
const (
	// IsolationNone runs commands as plain host processes: it isolates
	// nothing and is for development only.
	IsolationNone IsolationKind = "none"
	// IsolationGVisor runs commands in a gVisor (runsc) sandbox.
	IsolationGVisor IsolationKind = "gvisor"
	// IsolationRunc runs commands in a runc (libcontainer) container.
	IsolationRunc IsolationKind = "runc"
)

// Capabilities reports what an Environment can do.
type Capabilities struct {
	// Snapshots: CreateSnapshot works.
	Snapshots bool `json:"snapshots"`
	// Rollback: Rollback works.
	Rollback bool `json:"rollback"`
	// Fork: the Environment implements Forker.
	Fork bool `json:"fork"`
	// Pause: Pause and Resume freeze and thaw the sandbox.
	Pause bool `json:"pause"`
	// StreamingProgress: ExecuteTool calls onProgress while a tool runs.
	StreamingProgress bool `json:"streaming_progress"`
	// Isolation says how commands are isolated from the host.
	Isolation IsolationKind `json:"isolation"`
	// Storage names the storage backend (localdisk, btrfs, zfs).
	Storage string `json:"storage"`
	// Limits are the host's default (and largest) limits of a session;
	// zero fields are unlimited.
	Limits Limits `json:"limits"`
	// LimitsEnforced reports whether the runtime enforces Limits'
	// memory, CPU and process bounds (false for IsolationNone, which
	// isolates nothing and ignores them). DiskBytes is enforced by the
	// storage backend on every runtime.
	LimitsEnforced bool `json:"limits_enforced"`
	// WritableRoot: a session's whole root filesystem is its own (a
	// copy-on-write clone of its image) and writable outside /workspace
	// (unless SessionConfig.ReadOnlyRoot); snapshots, Rollback and Fork
	// cover all of it. False where commands run on the host (none).
	WritableRoot bool `json:"writable_root"`
	// Processes: the Environment implements ProcessRunner and its
	// sandboxes run processes that live between calls.
	Processes bool `json:"processes"`
	// PTY: ProcessRunner can run a process in a pseudo-terminal.
	PTY bool `json:"pty"`
	// Files: the Environment implements FileSystem (binary upload and
	// download, stat, list, mkdir, move, remove, watch).
	Files bool `json:"files"`
	// NetworkCeiling is the most open network mode
	// (SessionConfig.Network.Mode) sessions may ask for here; every mode
	// below it is offered too (NetworkModes). "" or none: loopback only,
	// as where the host cannot give sandboxes a network of their own. A
	// mode rather than a list, so that Capabilities stays comparable.
	NetworkCeiling NetworkMode `json:"network_ceiling,omitempty"`
	// MemorySnapshots: sessions may set SessionConfig.SnapshotMemory, and
	// the Environment implements Hibernator (gvisor only: runc has no
	// working checkpoint on these machines, none isolates nothing).
	MemorySnapshots bool `json:"memory_snapshots,omitempty"`
	// Ports: the Environment implements PortPublisher and PortDialer
	// (sessions publish ports that the host forwards to).
	Ports bool `json:"ports,omitempty"`
}

// NetworkModes lists the network modes sessions may ask for, from the
// most closed to NetworkCeiling.
func (c Capabilities) NetworkModes() []NetworkMode {
	out := []NetworkMode{NetworkNone}
	for _, m := range []NetworkMode{NetworkEgress, NetworkOpen} {
		if m.Rank() <= c.NetworkCeiling.Rank() {
			out = append(out, m)
		}
	}
	return out
}

// Limits bounds one session's resources so that it cannot take the
// host's, or deny them to other sessions. In a SessionConfig a zero field
// means the host's default and a set field may only lower it; negative
// values are invalid.
type Limits struct {
	// MemoryBytes caps the memory of the session's commands: past it the
	// command using the most is killed and reported with
	// ToolResponse.OOMKilled; the session lives on.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// CPUs caps the session's CPU time, in cores (e.g. 0.5).
	CPUs float64 `json:"cpus,omitempty"`
	// Pids caps the processes and threads of the session's commands
	// together (contains fork bombs).
	Pids int64 `json:"pids,omitempty"`
	// DiskBytes caps the space the session's workspace takes.
	DiskBytes int64 `json:"disk_bytes,omitempty"`
}

// Validate reports a negative limit; the error wraps ErrInvalidArgument.
func (l Limits) Validate() error {
	if l.MemoryBytes < 0 || l.CPUs < 0 || l.Pids < 0 || l.DiskBytes < 0 || l.CPUs != l.CPUs {
		return fmt.Errorf("%w: limits must be zero (the host's default) or positive: %+v", ErrInvalidArgument, l)
	}
	return nil
}

// SessionConfig configures a new session.
type SessionConfig struct {
	// SessionID is the new session's id. Empty means generate one. A given
	// id must match IDPattern.
	SessionID string `json:"session_id,omitempty"`
	// Image names the base root filesystem for isolated runtimes (empty:
	// the host's default image): a name in the host's image store, never a
	// path (ValidateImageName). Ignored by IsolationNone once validated.
	// Commands inherit the image's ENV (under Env), WORKDIR and USER
	// where the host applies them (docs/images.md).
	Image string `json:"image,omitempty"`
	// ReadOnlyRoot makes the session's root filesystem read-only to its
	// commands except for /workspace (writes elsewhere fail with EROFS),
	// where Capabilities.WritableRoot; ignored elsewhere.
	ReadOnlyRoot bool `json:"read_only_root,omitempty"`
	// FromSnapshot, if set, starts the workspace as a copy of that snapshot
	// (an id returned by CreateSnapshot, of any session on the same host).
	FromSnapshot string `json:"from_snapshot,omitempty"`
	// Env is added to the environment of every command, over the
	// image's (ValidateEnv: shell names, no NUL, MaxEnvVars and
	// MaxEnvBytes).
	Env map[string]string `json:"env,omitempty"`
	// Labels are metadata kept with the session (ValidateLabels).
	Labels map[string]string `json:"labels,omitempty"`
	// ToolTimeout bounds each tool call (0: the host's default).
	ToolTimeout time.Duration `json:"tool_timeout,omitempty"`
	// MaxOutputBytes caps the Content of each ToolResponse (0: the host's
	// default). Output beyond it is dropped and Truncated is set.
	MaxOutputBytes int `json:"max_output_bytes,omitempty"`
	// Limits bounds the session's resources; zero fields take the host's
	// defaults (Capabilities.Limits), and a field above the host's is
	// refused with ErrInvalidArgument.
	Limits Limits `json:"limits,omitzero"`
	// Network is the session's network policy (zero: the host's default,
	// loopback only unless the host says otherwise). A policy beyond the
	// host's ceiling is refused with ErrInvalidArgument.
	Network NetworkPolicy `json:"network,omitzero"`
	// SnapshotMemory makes the session's snapshots hold its processes
	// too: TurnComplete and CreateSnapshot save the sandbox's memory with
	// its files at one instant, and Rollback and Fork to such a snapshot
	// bring the processes back (docs/storage.md, "Memory snapshots"). It needs
	// Capabilities.MemorySnapshots (ErrCapabilityNotSupported otherwise);
	// a fork keeps its parent's choice unless its config sets it.
	SnapshotMemory bool `json:"snapshot_memory,omitempty"`
}

// SnapshotInfo describes one snapshot of a session's workspace.
type SnapshotInfo struct {
	// ID identifies the snapshot for Rollback and FromSnapshot.
	ID string `json:"id"`
	// SessionID is the session the snapshot belongs to.
	SessionID string `json:"session_id"`
	// Name is the caller's label (may be empty).
	Name string `json:"name,omitempty"`
	// Turn is the snapshot's sequence number within its session, from 1.
	Turn int `json:"turn"`
	// CreatedAt is when the snapshot was taken.
	CreatedAt time.Time `json:"created_at"`
	// SizeBytes is the space the snapshot uses (backend-defined: its unique
	// blocks on copy-on-write backends, its full size on localdisk).
	SizeBytes int64 `json:"size_bytes"`
	// Memory reports that the snapshot holds the session's processes (its
	// sandbox's memory) as well as its files; MemoryBytes is the size of
	// that memory image.
	Memory      bool  `json:"memory,omitempty"`
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
}

// Sentinel errors. Implementations wrap them with context; test with
// errors.Is.
var (
	// ErrCapabilityNotSupported: the Environment cannot do this (see
	// Capabilities).
	ErrCapabilityNotSupported = errors.New("capability not supported")
	// ErrSessionNotFound: no session with that id.
	ErrSessionNotFound = errors.New("session not found")
	// ErrSnapshotNotFound: no snapshot with that id in this session.
	ErrSnapshotNotFound = errors.New("snapshot not found")
	// ErrNotActive: the session is not active (paused, destroyed, failed or
	// being created).
	ErrNotActive = errors.New("session not active")
	// ErrNotBound: the Environment is not bound to a session yet.
	ErrNotBound = errors.New("environment not bound to a session")
	// ErrAlreadyBound: Create or AttachSession on a bound Environment.
	ErrAlreadyBound = errors.New("environment already bound to a session")
	// ErrAlreadyExists: a session with that id exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: a malformed id, parameter or request.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnknownTool: ToolRequest.ToolName is not in the catalogue.
	ErrUnknownTool = errors.New("unknown tool")
	// ErrPathEscapes: a path resolves outside the workspace (through "..",
	// an absolute path or a symlink).
	ErrPathEscapes = errors.New("path escapes the workspace")
	// ErrBusy: the session is doing something that excludes this call
	// (e.g. Rollback while a tool call runs).
	ErrBusy = errors.New("session busy")
	// ErrLimitExceeded: a host or session limit (sessions, disk quota).
	ErrLimitExceeded = errors.New("limit exceeded")
	// ErrClosed: the host is shutting down or closed.
	ErrClosed = errors.New("host closed")
	// ErrImageNotFound: no image of that name in the host's store.
	ErrImageNotFound = errors.New("image not found")
	// ErrImageInUse: the image cannot be removed while sessions made from
	// it exist (the error's message names them).
	ErrImageInUse = errors.New("image in use")
)
