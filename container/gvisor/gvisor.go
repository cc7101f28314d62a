package gvisor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
)

// Kind is the runtime's name.
const Kind = "gvisor"

// Paths inside the sandbox.
const (
	// AgentPath is where the agent binary is bind-mounted (read-only).
	AgentPath = "/.turnbox/agent"
	// VolumeMount is where the workspace's parent directory is
	// bind-mounted (read-write); WorkspaceDir is a symlink into it.
	VolumeMount = "/.turnbox/vol"
)

// DefaultRoot is the default state directory.
const DefaultRoot = "/run/turnbox/gvisor"

// DefaultStartTimeout bounds how long Start waits for the agent to answer.
const DefaultStartTimeout = 30 * time.Second

// Option configures New.
type Option func(*config)

type config struct {
	runsc        string
	root         string
	agent        string
	platform     string
	overlay      string
	freezer      bool
	debugLog     bool
	startTimeout time.Duration
	extraFlags   []string
	nsNetwork    string // runsc --network for NetworkNamespace
}

// WithRunsc sets the runsc binary (default: runsc on PATH, then
// /usr/local/bin/runsc).
func WithRunsc(path string) Option { return func(c *config) { c.runsc = path } }

// WithRoot sets the runtime's state directory (default DefaultRoot). It
// holds runsc's own state (state/), one OCI bundle per sandbox (bundles/)
// and logs. Two Runtimes must not share a root.
func WithRoot(dir string) Option { return func(c *config) { c.root = dir } }

// WithAgent sets the agent binary (default: agent.FindBinary's search:
// $TURNBOX_AGENT, next to the executable, PATH).
func WithAgent(path string) Option { return func(c *config) { c.agent = path } }

// WithPlatform sets runsc's --platform (default "systrap").
func WithPlatform(p string) Option { return func(c *config) { c.platform = p } }

// WithOverlay sets runsc's --overlay2 (default "root:memory": writes
// outside bind mounts go to sandbox memory and vanish at Stop; the host's
// root filesystem directory is never written).
func WithOverlay(o string) Option { return func(c *config) { c.overlay = o } }

// WithCgroupFreezer selects how Pause and Resume work. false (default):
// gVisor's kernel stops its tasks at safe points, asked through the
// sandbox's control socket (what `runsc pause` and `runsc resume` do,
// without their process start). true: the sandbox's cgroup is frozen
// underneath gVisor; that is what the cgroup freezer costs, for
// benchmarks, but it is NOT safe with the systrap platform (commands
// crashed after a thaw in our tests). When the cgroup cannot be found,
// the control socket is used anyway.
func WithCgroupFreezer(on bool) Option { return func(c *config) { c.freezer = on } }

// WithDebugLog makes runsc write debug logs under the root's logs/
// directory.
func WithDebugLog(on bool) Option { return func(c *config) { c.debugLog = on } }

// WithStartTimeout bounds how long Start waits for the agent to answer
// (default DefaultStartTimeout).
func WithStartTimeout(d time.Duration) Option { return func(c *config) { c.startTimeout = d } }

// Values of WithNamespaceNetwork.
const (
	// NetstackInNamespace: gVisor's own network stack (runsc
	// --network=sandbox) takes over the namespace's interfaces, addresses
	// and routes; the host kernel only moves packets (the default).
	NetstackInNamespace = "sandbox"
	// HostInNamespace: the sandbox's socket calls go to the host kernel
	// (runsc --network=host) inside the namespace.
	HostInNamespace = "host"
)

// WithNamespaceNetwork selects how a sandbox with
// container.NetworkNamespace uses its namespace: NetstackInNamespace
// (default) or HostInNamespace. Either way the sandbox runs in the
// namespace at Spec.NetNS; see docs/isolation.md for the measures.
func WithNamespaceNetwork(mode string) Option { return func(c *config) { c.nsNetwork = mode } }

// WithRunscFlags adds global flags to every runsc invocation.
func WithRunscFlags(flags ...string) Option {
	return func(c *config) { c.extraFlags = append(c.extraFlags, flags...) }
}

// Runtime runs each sandbox as a gVisor (runsc) sandbox whose init is the
// turnbox agent. Create it with New. Safe for concurrent use.
type Runtime struct {
	cfg       config
	stateDir  string
	bundleDir string
	logDir    string
	cgParent  string // cgroup path parent for this root, e.g. /turnbox-gvisor-1a2b3c4d

	// nsMu is held for reading while runsc starts a sandbox and for
	// writing while the shared null network namespace mount is removed.
	nsMu sync.RWMutex
}

var _ container.Runtime = (*Runtime)(nil)

// New returns a gVisor runtime. It fails with an error wrapping
// container.ErrRuntimeMissing when runsc or the agent binary is absent.
func New(opts ...Option) (*Runtime, error) {
	c := config{root: DefaultRoot, platform: "systrap", overlay: "root:memory", startTimeout: DefaultStartTimeout, nsNetwork: NetstackInNamespace}
	for _, o := range opts {
		o(&c)
	}
	if c.nsNetwork != NetstackInNamespace && c.nsNetwork != HostInNamespace {
		return nil, fmt.Errorf("%w: gvisor: namespace network %q (want %q or %q)", container.ErrInvalidSpec, c.nsNetwork, NetstackInNamespace, HostInNamespace)
	}
	if c.runsc == "" {
		if p, err := exec.LookPath("runsc"); err == nil {
			c.runsc = p
		} else {
			c.runsc = "/usr/local/bin/runsc"
		}
	}
	if fi, err := os.Stat(c.runsc); err != nil || fi.IsDir() {
		return nil, fmt.Errorf("gvisor: runsc not found at %s (install gVisor's runsc): %w", c.runsc, container.ErrRuntimeMissing)
	}
	a, err := agent.FindBinary(c.agent)
	if err != nil {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	c.agent = a
	root, err := filepath.Abs(c.root)
	if err != nil {
		return nil, fmt.Errorf("gvisor: root: %w", err)
	}
	c.root = root
	r := &Runtime{
		cfg:       c,
		stateDir:  filepath.Join(root, "state"),
		bundleDir: filepath.Join(root, "bundles"),
		logDir:    filepath.Join(root, "logs"),
	}
	sum := sha256.Sum256([]byte(root))
	r.cgParent = "/turnbox-gvisor-" + hex.EncodeToString(sum[:4])
	for _, d := range []string{r.stateDir, r.bundleDir, r.logDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("gvisor: %w", err)
		}
	}
	return r, nil
}

// Kind returns "gvisor".
func (r *Runtime) Kind() string { return Kind }

// Root returns the runtime's state directory.
func (r *Runtime) Root() string { return r.cfg.root }

// AgentBinary returns the path of the agent binary sandboxes run.
func (r *Runtime) AgentBinary() string { return r.cfg.agent }

// Runsc returns the path of the runsc binary.
func (r *Runtime) Runsc() string { return r.cfg.runsc }

// RunscArgs returns the global flags this runtime passes to runsc for a
// sandbox with the given network, followed by args. Benchmarks use it to
// run runsc directly against the same state root.
func (r *Runtime) RunscArgs(network container.Network, args ...string) []string {
	flags := []string{"--root", r.stateDir, "--platform", r.cfg.platform}
	switch network {
	case container.NetworkHost:
		flags = append(flags, "--network=host")
	case container.NetworkNamespace:
		// runsc starts the sandbox in the spec's network namespace
		// (Spec.NetNS) for any mode but none.
		flags = append(flags, "--network="+r.cfg.nsNetwork)
	default:
		flags = append(flags, "--network=none")
	}
	if r.cfg.overlay != "" {
		flags = append(flags, "--overlay2="+r.cfg.overlay)
	}
	if r.cfg.debugLog {
		flags = append(flags, "--debug", "--debug-log="+r.logDir+"/")
	}
	flags = append(flags, r.cfg.extraFlags...)
	return append(flags, args...)
}

// runsc runs a runsc subcommand that does not start a sandbox and returns
// its stdout.
func (r *Runtime) runsc(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.cfg.runsc, r.RunscArgs(container.NetworkNone, args...)...)
	// A runsc killed by ctx may leave children holding its output pipes;
	// Run returns anyway after this long.
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("runsc %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// List returns the ids of the sandboxes under the runtime's root: those
// runsc knows of and those with a bundle directory left behind.
func (r *Runtime) List(ctx context.Context) ([]string, error) {
	ids := map[string]bool{}
	out, err := r.runsc(ctx, "list", "-quiet")
	if err != nil {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	for _, id := range strings.Fields(string(out)) {
		ids[id] = true
	}
	ents, err := os.ReadDir(r.bundleDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() && idPattern.MatchString(e.Name()) {
			ids[e.Name()] = true
		}
	}
	return slices.Sorted(maps.Keys(ids)), nil
}

// Reap stops and removes every sandbox under the root (processes, runsc
// state, cgroups, bundle), and removes leaked cgroups of this root. A
// sandbox of this process that it reaps reports itself dead.
func (r *Runtime) Reap(ctx context.Context) error {
	ids, err := r.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if err := r.destroy(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	for _, cg := range leakedCgroups(r.cgParent) {
		if err := removeCgroup(cg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// releaseShared removes runsc's shared mount under the state directory
// (the gofers' null network namespace) once no sandbox is left, so that
// the root can be removed.
func (r *Runtime) releaseShared() {
	r.nsMu.Lock()
	defer r.nsMu.Unlock()
	if ents, err := os.ReadDir(r.bundleDir); err != nil || len(ents) > 0 {
		return
	}
	p := filepath.Join(r.stateDir, "null-netns")
	for unix.Unmount(p, unix.MNT_DETACH) == nil {
	}
	_ = os.Remove(p)
}

// destroy stops sandbox id and removes everything it left.
func (r *Runtime) destroy(ctx context.Context, id string) error {
	var errs []error
	if r.known(id) {
		// delete --force kills a running sandbox itself: one process.
		if _, err := r.runsc(ctx, "delete", "--force", id); err != nil && r.known(id) {
			errs = append(errs, fmt.Errorf("gvisor: %w", err))
		}
	}
	if err := removeCgroup(r.cgroupPath(id)); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(filepath.Join(r.bundleDir, id)); err != nil {
		errs = append(errs, fmt.Errorf("gvisor: %w", err))
	}
	r.releaseShared()
	return errors.Join(errs...)
}

// known reports whether runsc has state for sandbox id under the root. It
// looks for runsc's state file (<id>_sandbox:<sandbox id>.state) instead
// of running `runsc list`, which costs a process start (~60-140 ms here)
// on the sandbox start path. Ids never hold glob metacharacters
// (idPattern), so the pattern matches id exactly.
func (r *Runtime) known(id string) bool {
	m, _ := filepath.Glob(filepath.Join(r.stateDir, id+"_sandbox:*.state"))
	return len(m) > 0
}

// cgroupPath is the cgroup path (relative to a hierarchy's root) runsc
// puts sandbox id in.
func (r *Runtime) cgroupPath(id string) string { return r.cgParent + "/" + id }
