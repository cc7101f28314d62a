package runc

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/cgroups"
	// The v1 cgroup manager needs the devices controller's implementation
	// registered to apply a container's device rules.
	_ "github.com/opencontainers/cgroups/devices"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
)

// initCalled records that Init ran, so New can refuse a binary that would
// run its own main as a container's init.
var initCalled atomic.Bool

// Option configures New.
type Option func(*options)

type options struct {
	agent        string
	cgroupParent string
	seccomp      *bool
}

// WithAgent sets the path of the agent binary (cmd/turnbox-agent, linked
// statically) that every sandbox runs as its init. Without it New looks
// where agent.FindBinary does: $TURNBOX_AGENT, next to the executable, PATH.
func WithAgent(path string) Option { return func(o *options) { o.agent = path } }

// WithCgroupParent sets the cgroup (relative to each hierarchy's root)
// under which sandboxes' cgroups are made, one per sandbox id. The default
// is "/turnbox/<hash of root>", so runtimes with different roots never
// share cgroups. Reap removes leftover cgroups under it.
func WithCgroupParent(parent string) Option {
	return func(o *options) { o.cgroupParent = parent }
}

// WithSeccomp turns the default seccomp filter on or off. The default is
// on when the binary was built with seccomp support (SeccompAvailable);
// asking for it without that support makes New fail.
func WithSeccomp(on bool) Option { return func(o *options) { o.seccomp = &on } }

// Runtime is the runc runtime: one libcontainer container per sandbox,
// whose init is the turnbox agent. Its root directory holds
//
//	state/<id>/   libcontainer's state of each container
//	roots/<id>/   each sandbox's root skeleton (see Start)
//
// Safe for concurrent use.
type Runtime struct {
	root         string
	stateRoot    string
	skelRoot     string
	agent        string
	cgroupParent string
	seccomp      bool

	mu   sync.Mutex
	live map[string]*Sandbox
}

var _ container.Runtime = (*Runtime)(nil)

// New returns a runtime keeping its state under root (created if absent).
// It needs root privileges, namespaces, cgroups, the agent binary (see
// WithAgent) and a binary set up for libcontainer (see Init); without them
// the error wraps container.ErrRuntimeMissing.
func New(root string, opts ...Option) (*Runtime, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if !initCalled.Load() {
		return nil, fmt.Errorf("%w: runc.Init was not called at the start of main (or TestMain); libcontainer cannot start containers from this binary", container.ErrRuntimeMissing)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: the runc runtime needs root", container.ErrRuntimeMissing)
	}
	if hostNS["mnt"] == "" || hostNS["pid"] == "" {
		return nil, fmt.Errorf("%w: no namespace support (/proc/self/ns/mnt and pid unreadable at start)", container.ErrRuntimeMissing)
	}
	if err := checkMainThread(); err != nil {
		return nil, err
	}
	if !cgroups.IsCgroup2UnifiedMode() {
		if _, err := os.Stat("/sys/fs/cgroup/freezer"); err != nil {
			return nil, fmt.Errorf("%w: no cgroup v1 freezer: %v", container.ErrRuntimeMissing, err)
		}
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	agent, err := findAgent(o.agent)
	if err != nil {
		return nil, err
	}
	sc := SeccompAvailable()
	if o.seccomp != nil {
		if *o.seccomp && !SeccompAvailable() {
			return nil, fmt.Errorf("%w: seccomp requested but this binary was built without it (build with -tags seccomp and libseccomp-dev)", container.ErrRuntimeMissing)
		}
		sc = *o.seccomp
	}
	r := &Runtime{
		root:         root,
		stateRoot:    filepath.Join(root, "state"),
		skelRoot:     filepath.Join(root, "roots"),
		agent:        agent,
		cgroupParent: o.cgroupParent,
		seccomp:      sc,
		live:         make(map[string]*Sandbox),
	}
	if r.cgroupParent == "" {
		h := sha256.Sum256([]byte(root))
		r.cgroupParent = "/turnbox/" + hex.EncodeToString(h[:4])
	}
	for _, d := range []string{r.stateRoot, r.skelRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// findAgent resolves the agent binary (agent.FindBinary) and checks that
// it is a static executable: a sandbox's image need not have a C library.
func findAgent(explicit string) (string, error) {
	p, err := agent.FindBinary(explicit)
	if err != nil {
		return "", err
	}
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("%w: agent binary %s: %v", container.ErrRuntimeMissing, p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%w: agent binary %s is dynamically linked; build it static (see cmd/turnbox-agent)", container.ErrRuntimeMissing, p)
		}
	}
	return p, nil
}

// Kind returns "runc".
func (r *Runtime) Kind() string { return "runc" }

// Root returns the runtime's root directory.
func (r *Runtime) Root() string { return r.root }

// idPattern is libcontainer's rule for container ids.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_+.-]+$`)

func validID(id string) bool {
	return idPattern.MatchString(id) && id != "." && id != ".." && len(id) <= 200
}

// List returns the ids of the sandboxes under the runtime's root: those
// with libcontainer state, a root skeleton or a cgroup, whether started by
// this process or left by an earlier one.
func (r *Runtime) List(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	for _, d := range []string{r.stateRoot, r.skelRoot} {
		entries, err := os.ReadDir(d)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		for _, e := range entries {
			if e.IsDir() && validID(e.Name()) {
				seen[e.Name()] = true
			}
		}
	}
	for _, id := range r.cgroupIDs() {
		seen[id] = true
	}
	r.mu.Lock()
	for id := range r.live {
		seen[id] = true
	}
	r.mu.Unlock()
	return slices.Sorted(maps.Keys(seen)), nil
}

// Reap stops and removes every sandbox under the root: its processes are
// killed, its cgroups, libcontainer state and root
// skeleton removed. Sandboxes of this process are stopped through their
// handle; leftovers of a crashed process are loaded from their state (or,
// if that is gone or corrupt, found through their cgroups) and destroyed.
func (r *Runtime) Reap(ctx context.Context) error {
	ids, err := r.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.mu.Lock()
		s := r.live[id]
		r.mu.Unlock()
		if s != nil {
			if err := s.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("runc: reap %s: %w", id, err))
			}
			continue
		}
		if err := r.reapStale(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("runc: reap %s: %w", id, err))
		}
	}
	// Drop the runtime's cgroup parent if it is empty now.
	r.forget("", nil)
	return errors.Join(errs...)
}
