// Command turnbox is the CLI of turnbox: run a demo session, manage sessions
// on a state directory, build images and measure latency.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/container/runc"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/zfs"
)

// globals are the flags every command shares.
type globals struct {
	stateDir string
	storage  string
	runtime  string
	image    string
	root     string
	dataset  string
	zfsDrv   string
	agent    string
	logLevel string
	logJSON  bool
	logger   *slog.Logger

	maxSessions int
	limits      limitFlags
	idlePause   time.Duration
	pool        int
	netDefault  string   // --net-default
	netAllow    []string // --net-allow
	netCeiling  string   // --net-ceiling
	dns         []string // --dns
}

func defaultStateDir() string {
	if d := os.Getenv("TURNBOX_STATE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/turnbox"
	}
	if d, err := os.UserHomeDir(); err == nil {
		return d + "/.local/share/turnbox"
	}
	return ".turnbox"
}

func main() {
	runc.Init() // libcontainer re-executes this binary as each runc sandbox's init
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := &globals{}
	if cmd, err := newRootCmd(g).ExecuteContextC(ctx); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			stop()
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "turnbox:", explainError(g, cmd, err))
		os.Exit(1)
	}
}

// newRootCmd builds the CLI's command tree on g.
func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "turnbox",
		Short:         "Sandboxes for AI agents, snapshotted every turn",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			l, err := newLogger(g.logLevel, g.logJSON)
			if err != nil {
				return err
			}
			g.logger = l
			slog.SetDefault(l)
			return checkZFSDriver(g.zfsDrv)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.stateDir, "state-dir", defaultStateDir(), "host state directory (ledger, localdisk data, images); env TURNBOX_STATE_DIR")
	pf.StringVar(&g.storage, "storage", "", "storage backend: localdisk|btrfs|zfs (default: the one the state directory's sessions were made on, else localdisk)")
	pf.StringVar(&g.runtime, "runtime", "", "container runtime: gvisor|runc|none (default: gvisor when runsc and turnbox-agent are present and running as root, else none)")
	pf.StringVar(&g.root, "storage-root", "", "storage directory (btrfs: a directory on a mounted btrfs filesystem)")
	pf.StringVar(&g.dataset, "zfs-dataset", "", "parent ZFS dataset for --storage zfs (e.g. tank/turnbox)")
	pf.StringVar(&g.zfsDrv, "zfs-driver", zfs.DriverCommand, "driver of --storage zfs (and of bench's zfs backend and its raw baseline): command (the zfs command) or libzfs_core (in process; needs a build with CGO_ENABLED=1 -tags libzfs_core and kernel OpenZFS)")
	pf.StringVar(&g.agent, "agent", "", "turnbox-agent binary (default: $TURNBOX_AGENT, next to turnbox, or on PATH)")
	pf.IntVar(&g.maxSessions, "max-sessions", 0, "most live sessions on the host (0: unlimited)")
	pf.StringVar(&g.limits.disk, "disk-quota", "", "disk limit of each session's workspace and snapshots, e.g. 512M or 10G (default 10G on btrfs and zfs, none on localdisk; none: no limit)")
	g.limits.diskFlag = "disk-quota"
	g.limits.add(pf, "-limit", "each session's", "default: 2G memory, 1 CPU, 1024 pids; none: no limit")
	pf.IntVar(&g.pool, "pool", 0, "keep this many sandboxes started ahead of time for new sessions and forks (0: none); bench measures create/start/fork with it too")
	pf.DurationVar(&g.idlePause, "idle-pause", 0, "pause a session's sandbox after this long without a call; the next call resumes it (0: never)")
	pf.StringVar(&g.netDefault, "net-default", "", "network mode of sessions that name none: none|egress|open (default none: loopback only; docs/isolation.md)")
	pf.StringArrayVar(&g.netAllow, "net-allow", nil, "what sessions under --net-default may reach: HOST, *.SUFFIX, ADDRESS or CIDR, each with :PORT or :LO-HI (repeatable)")
	pf.StringVar(&g.netCeiling, "net-ceiling", "", "the most open network mode a session may ask for: none|egress|open (default open)")
	pf.StringArrayVar(&g.dns, "dns", nil, "resolver ADDRESS:PORT the sessions' DNS filter asks (repeatable; default: the nameservers of /etc/resolv.conf)")
	pf.StringVar(&g.logLevel, "log-level", "warn", "log level: debug|info|warn|error")
	pf.BoolVar(&g.logJSON, "log-json", false, "log as JSON")

	markHostFlags(pf, "storage", "runtime", "storage-root", "zfs-dataset", "zfs-driver", "agent", "max-sessions",
		"disk-quota", "memory-limit", "cpus-limit", "pids-limit", "pool", "idle-pause",
		"net-default", "net-allow", "net-ceiling", "dns")

	hostCmds := []*cobra.Command{demoCmd(g), benchCmd(g), serveCmd(g)}
	for _, c := range hostCmds {
		// The host's default image: only where a host makes sessions
		// whose config names none (session create has its own --image).
		c.Flags().StringVar(&g.image, "image", "", "default image for isolated runtimes (a name under <state-dir>/images; default busybox, built on demand)")
		markOpensHost(c)
	}
	root.AddCommand(hostCmds...)
	root.AddCommand(sessionCmd(g), imageCmd(g))
	scopeHelp(root)
	return root
}

// openHost opens the host the global flags describe.
func (g *globals) openHost(ctx context.Context) (*embedded.Host, error) {
	limits, quota, err := g.limits.hostLimits()
	if err != nil {
		return nil, err
	}
	upstream, err := parseDNS(g.dns)
	if err != nil {
		return nil, err
	}
	return embedded.NewHost(ctx, embedded.Config{
		Network:          environment.NetworkPolicy{Mode: environment.NetworkMode(g.netDefault), Allow: g.netAllow},
		NetworkCeiling:   environment.NetworkMode(g.netCeiling),
		NetworkUpstream:  upstream,
		MaxSessions:      g.maxSessions,
		DiskQuotaBytes:   quota,
		Limits:           limits,
		IdlePause:        g.idlePause,
		PoolSize:         g.pool,
		StateDir:         g.stateDir,
		StorageBackend:   embedded.StorageBackend(g.storage),
		ContainerRuntime: embedded.ContainerRuntime(g.runtime),
		DefaultImage:     g.image,
		StorageRoot:      g.root,
		ZFSDataset:       g.dataset,
		ZFSDriver:        g.zfsDrv,
		AgentPath:        g.agent,
		Logger:           g.logger,
	})
}

// parseDNS parses the --dns flags.
func parseDNS(flags []string) ([]netip.AddrPort, error) {
	out := make([]netip.AddrPort, 0, len(flags))
	for _, f := range flags {
		ap, err := netip.ParseAddrPort(f)
		if err != nil {
			return nil, fmt.Errorf("%w: --dns %q: want ADDRESS:PORT (e.g. 1.1.1.1:53 or [2606:4700::1111]:53)", environment.ErrInvalidArgument, f)
		}
		out = append(out, ap)
	}
	return out, nil
}

// checkZFSDriver refuses a --zfs-driver this binary cannot use: an unknown
// name, or libzfs_core in a build without it (it exists only in builds
// with cgo and the libzfs_core tag). Whether the driver can run here
// (kernel OpenZFS, /dev/zfs) shows when a zfs backend opens it.
func checkZFSDriver(name string) error {
	switch name {
	case zfs.DriverCommand:
		return nil
	case zfs.DriverLZC:
		if !lzcBuilt {
			return fmt.Errorf("--zfs-driver %s: this turnbox binary was built without the libzfs_core driver; "+
				"build it with cgo and the tag: CGO_ENABLED=1 go build -tags libzfs_core ./cmd/turnbox "+
				"(needs the OpenZFS development files: eval \"$(bash zfs/scripts/fetch-libzfs-dev.sh)\"), "+
				"or use --zfs-driver %s", name, zfs.DriverCommand)
		}
		return nil
	}
	return fmt.Errorf("--zfs-driver: unknown driver %q (%s or %s)", name, zfs.DriverCommand, zfs.DriverLZC)
}

func closeHost(h *embedded.Host) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		slog.Error("closing host", "err", err)
	}
}

// parseSize parses a byte count with an optional K, M, G or T suffix
// (powers of 1024); "" is 0.
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	num := s
	if mult > 1 {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with K, M, G or T)", s)
	}
	return n * mult, nil
}
