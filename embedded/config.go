package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/runtimes"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/backends"
)

// StorageBackend names a storage backend.
type StorageBackend string

// Storage backends.
const (
	// StorageBackendLocalDisk keeps workspaces as directories and snapshots
	// as copies (reflinked where the filesystem can). Works anywhere.
	StorageBackendLocalDisk StorageBackend = backends.LocalDisk
	// StorageBackendBtrfs keeps workspaces as btrfs subvolumes.
	StorageBackendBtrfs StorageBackend = backends.Btrfs
	// StorageBackendZFS keeps workspaces as ZFS datasets.
	StorageBackendZFS StorageBackend = backends.ZFS
)

// ContainerRuntime names a container runtime.
type ContainerRuntime string

// Container runtimes.
const (
	// ContainerRuntimeGVisor runs each session in a gVisor (runsc) sandbox.
	ContainerRuntimeGVisor ContainerRuntime = runtimes.GVisor
	// ContainerRuntimeRunc runs each session in a runc container.
	ContainerRuntimeRunc ContainerRuntime = runtimes.Runc
	// ContainerRuntimeNone runs commands as host processes: NO ISOLATION.
	ContainerRuntimeNone ContainerRuntime = runtimes.None
)

// Defaults.
const (
	DefaultToolTimeout    = 2 * time.Minute
	DefaultMaxToolTimeout = 30 * time.Minute
	DefaultMaxOutputBytes = 256 << 10
	// DefaultPids is Config.Limits.Pids when it is zero: enough for
	// parallel builds and test runners, small enough that a fork bomb is
	// held and killed in seconds.
	DefaultPids = 1024
	// DefaultMemoryBytes is Config.Limits.MemoryBytes when it is zero:
	// 2 GiB, so that a handful of sessions fit a 24 GiB host with room
	// for its page cache, and builds and test runners still fit.
	DefaultMemoryBytes = 2 << 30
	// DefaultCPUs is Config.Limits.CPUs when it is zero: one core, so a
	// busy session leaves the others (and the host) at least one core of
	// a two-core machine.
	DefaultCPUs = 1.0
	// DefaultDiskBytes is Config.DiskQuotaBytes when it is zero and the
	// storage backend enforces quotas in the kernel (btrfs, zfs): 10 GiB
	// per session.
	DefaultDiskBytes = 10 << 30
	// DefaultMaxProcesses is Config.MaxProcesses when it is zero.
	DefaultMaxProcesses = 64
	// DefaultMaxEndedProcesses is Config.MaxEndedProcesses when it is
	// zero.
	DefaultMaxEndedProcesses = 64
	// DefaultProcessOutputBytes is Config.ProcessOutputBytes when it is
	// zero: with the defaults above, at most 32 MiB per session.
	DefaultProcessOutputBytes = 256 << 10
	// MaxFileBytes bounds the files edit_file rewrites (read_file streams
	// and is bounded by the output cap instead).
	MaxFileBytes = 64 << 20
)

// Config configures a Host.
type Config struct {
	// StateDir holds the ledger and, for the localdisk backend, the data.
	// Required. A host restarted on the same StateDir recovers every
	// session.
	StateDir string
	// Storage is the storage backend to use. If nil, one is opened by
	// StorageBackend (default localdisk under StateDir/storage).
	Storage snapshot.Backend
	// StorageBackend names the backend when Storage is nil. Empty means
	// the one the ledger's sessions were created on, when they agree,
	// else localdisk.
	StorageBackend StorageBackend
	// StorageRoot is where a backend opened by name keeps its data:
	// localdisk default StateDir/storage; btrfs a directory on a mounted
	// btrfs filesystem (default StateDir/btrfs); zfs the mount root of
	// the datasets (default StateDir/zfs).
	StorageRoot string
	// ZFSDataset is the parent dataset of the zfs backend (e.g.
	// tank/turnbox); required for it.
	ZFSDataset string
	// ZFSDriver is the zfs backend's driver (zfs.OpenDriver): "command"
	// (the default, also for "") runs the zfs command; "libzfs_core"
	// calls libzfs_core in process (a build with the libzfs_core tag and
	// kernel OpenZFS).
	ZFSDriver string
	// Runtime is the container runtime. If nil, one is made by
	// ContainerRuntime (default none).
	Runtime container.Runtime
	// ContainerRuntime names the runtime when Runtime is nil. Empty means
	// gvisor when it can run here (root, runsc on PATH, the agent binary
	// found), else none with a warning.
	ContainerRuntime ContainerRuntime
	// RuntimeRoot is the runtime's state directory (default
	// StateDir/runtime/<kind>).
	RuntimeRoot string
	// AgentPath is the turnbox-agent binary for isolated runtimes
	// (default: $TURNBOX_AGENT, next to the executable, or on PATH).
	AgentPath string
	// ImagesDir holds base root filesystems by name (ImagesDir/<name>);
	// used by isolated runtimes. Default StateDir/images. Sessions name
	// images only by name: each must be a real directory directly in
	// ImagesDir (a symlink there is refused).
	ImagesDir string
	// DefaultImage is the image of sessions whose config names none
	// (default DefaultImage, built from busybox when missing): a name in
	// ImagesDir (environment.ValidateImageName), never a path.
	DefaultImage string
	// ToolTimeout is the default bound of a tool call (DefaultToolTimeout).
	ToolTimeout time.Duration
	// MaxToolTimeout caps timeouts that callers ask for.
	MaxToolTimeout time.Duration
	// MaxOutputBytes is the default output cap of a tool call.
	MaxOutputBytes int
	// ToolCallCacheEntries and ToolCallCacheBytes bound the cache that
	// makes tool calls idempotent by ToolCallID: at most this many
	// finished calls and this much of their output (defaults
	// DefaultToolCallCacheEntries and DefaultToolCallCacheBytes). A retry
	// of a call evicted from it runs the call again.
	ToolCallCacheEntries int
	ToolCallCacheBytes   int64
	// MaxSessions bounds live sessions (0: unlimited).
	MaxSessions int
	// Retention prunes old unnamed snapshots after each new one (zero
	// value: keep all).
	Retention ledger.Retention
	// Limits bounds each sandbox's resources (ignored by the none
	// runtime); they are also the largest limits a session may ask for
	// (SessionConfig.Limits only lowers them). A zero field means its
	// default (DefaultMemoryBytes, DefaultCPUs, DefaultPids); a negative
	// one means no limit.
	Limits container.Limits
	// DiskQuotaBytes bounds each session's workspace (0: DefaultDiskBytes
	// on a backend whose kernel enforces quotas, none on localdisk, whose
	// host-side check walks the tree; negative: none); snapshots do not
	// count. Host.SetDiskQuota overrides it per session. btrfs
	// (qgroups) and zfs (refquota) enforce it in the kernel; localdisk
	// only records it and the host checks usage after each writing tool
	// call (see the package documentation). A backend given as Storage
	// must implement snapshot.Quotaer to use it.
	DiskQuotaBytes int64
	// PoolSize, if positive, keeps that many sandboxes of the default
	// image started ahead of time, each on an empty volume, for new
	// sessions of the default image: CreateSession then costs a ledger
	// record, not a sandbox start (hundreds of milliseconds on gVisor).
	// Forks use the pool on btrfs and localdisk, whose volumes can take
	// a snapshot in place (snapshot.Replacer), not on zfs. The pool refills in the background after each claim and
	// holds its sandboxes' memory and volumes while idle; Close removes
	// them. 0 (default): every session starts its own sandbox.
	PoolSize int
	// IdlePause, if positive, freezes the sandbox of a session that has
	// had no tool call for that long; the next call thaws it without an
	// error (unlike an explicit Pause). It needs a runtime that can pause
	// (Capabilities.Pause); otherwise it is ignored.
	IdlePause time.Duration
	// MaxProcesses bounds the running processes a session started
	// through ProcessRunner (default DefaultMaxProcesses); a start past it
	// fails with ErrLimitExceeded. Running bash tool calls count toward
	// it but are never refused by it.
	MaxProcesses int
	// MaxEndedProcesses bounds the ended processes a session keeps, with
	// their exit and output tail (default DefaultMaxEndedProcesses); the
	// oldest are forgotten first.
	MaxEndedProcesses int
	// ProcessOutputBytes bounds the output the host holds per process,
	// its newest bytes (default DefaultProcessOutputBytes). Host memory
	// for processes is at most (MaxProcesses + MaxEndedProcesses + running
	// bash calls) x ProcessOutputBytes per session.
	ProcessOutputBytes int
	// Network is the policy of sessions whose config names no network
	// mode (zero value: none, loopback only). A fork without a mode of
	// its own keeps its parent's policy instead.
	Network environment.NetworkPolicy
	// NetworkCeiling is the most open mode a session may ask for
	// (default environment.NetworkOpen); a session asking more is
	// refused with ErrInvalidArgument.
	NetworkCeiling environment.NetworkMode
	// NetworkUpstream are the resolvers the sessions' DNS filter asks
	// (default: the nameservers of the host's /etc/resolv.conf).
	NetworkUpstream []netip.AddrPort
	// NetworkSubnet is the IPv4 prefix sessions' veth pairs get their
	// /30s from (default netns.DefaultSubnet, in 100.64.0.0/10).
	NetworkSubnet netip.Prefix
	// Logger receives the host's logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.StateDir == "" {
		return fmt.Errorf("embedded: Config.StateDir is required: %w", environment.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(c.StateDir)
	if err != nil {
		return fmt.Errorf("embedded: state dir: %w", err)
	}
	c.StateDir = abs
	if c.DefaultImage != "" {
		if err := environment.ValidateImageName(c.DefaultImage); err != nil {
			return fmt.Errorf("embedded: Config.DefaultImage: %w", err)
		}
	}
	if c.ImagesDir == "" {
		c.ImagesDir = filepath.Join(c.StateDir, "images")
	}
	if c.ToolTimeout <= 0 {
		c.ToolTimeout = DefaultToolTimeout
	}
	if c.MaxToolTimeout <= 0 {
		c.MaxToolTimeout = DefaultMaxToolTimeout
	}
	if c.MaxOutputBytes <= 0 {
		c.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxProcesses < 0 || c.MaxEndedProcesses < 0 || c.ProcessOutputBytes < 0 {
		return fmt.Errorf("embedded: negative Config.MaxProcesses, MaxEndedProcesses or ProcessOutputBytes")
	}
	if c.MaxProcesses == 0 {
		c.MaxProcesses = DefaultMaxProcesses
	}
	if c.MaxEndedProcesses == 0 {
		c.MaxEndedProcesses = DefaultMaxEndedProcesses
	}
	if c.ProcessOutputBytes == 0 {
		c.ProcessOutputBytes = DefaultProcessOutputBytes
	}
	c.Limits.Pids = orDefault(c.Limits.Pids, DefaultPids)
	c.Limits.MemoryBytes = orDefault(c.Limits.MemoryBytes, DefaultMemoryBytes)
	c.Limits.CPUs = orDefault(c.Limits.CPUs, DefaultCPUs)
	if c.Limits.CPUs != c.Limits.CPUs {
		return fmt.Errorf("embedded: Config.Limits.CPUs is NaN")
	}
	if c.PoolSize < 0 {
		return fmt.Errorf("embedded: negative Config.PoolSize (%d)", c.PoolSize)
	}
	if err := c.checkNetworkConfig(); err != nil {
		return err
	}
	if c.IdlePause < 0 {
		return fmt.Errorf("embedded: negative Config.IdlePause (%s)", c.IdlePause)
	}
	if _, err := os.Stat(c.StateDir); errors.Is(err, os.ErrNotExist) {
		c.Logger.Info("creating the state directory", "dir", c.StateDir)
	}
	return os.MkdirAll(c.StateDir, 0o700)
}

// orDefault is a limit's configured value: def for 0, 0 (the runtimes'
// "no limit") for a negative value.
func orDefault[T int64 | float64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}
