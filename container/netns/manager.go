package netns

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultSubnet is the subnet Links get their /30s from by default (in
// the shared address space of RFC 6598, which no public host uses).
var DefaultSubnet = netip.MustParsePrefix("100.96.0.0/16")

// DefaultTimeout bounds the netlink calls of a Create, Destroy or Reap
// whose ctx has no deadline.
const DefaultTimeout = 10 * time.Second

// SandboxIface is the name of a Link's interface inside its namespace.
const SandboxIface = "eth0"

// Sentinel errors.
var (
	// ErrInvalid: a bad Config or id.
	ErrInvalid = errors.New("netns: invalid argument")
	// ErrExhausted: no free /30 is left in the subnet.
	ErrExhausted = errors.New("netns: subnet exhausted")
	// ErrBusy: a Create for the id is still in progress.
	ErrBusy = errors.New("netns: create in progress")
)

// Config configures New.
type Config struct {
	// Dir is where namespace bind mounts live (e.g. <runtime root>/netns).
	// It is created 0700 if absent and must be a real directory (not a
	// symlink) owned by root and writable by nobody else.
	Dir string
	// Subnet is an IPv4 prefix of /30 or shorter that Links get their
	// /30s from (default DefaultSubnet).
	Subnet netip.Prefix
	// Logger receives the Manager's logs (default slog.Default()).
	Logger *slog.Logger
	// IfacePrefix starts the name of every host-side veth (default
	// DefaultIfacePrefix): "tb", up to 4 of [a-z0-9], then "-" (see
	// CheckIfacePrefix). The rest of the 15 bytes the kernel allows are
	// hex digits of a hash of the sandbox's id. Hosts on one machine use
	// different prefixes (IfacePrefixFor), so that each host's firewall
	// tells its own interfaces from another host's.
	IfacePrefix string
}

// DefaultIfacePrefix is the default Config.IfacePrefix.
const DefaultIfacePrefix = "tb-"

// ifacePrefixPattern is what an interface prefix must match: it starts
// with "tb" (the machine-wide forward guard of container/egress counts
// every interface named tb* as turnbox's) and ends with its only "-", so
// that no host's prefix is a prefix of another's names.
var ifacePrefixPattern = regexp.MustCompile(`^tb[a-z0-9]{0,4}-$`)

// CheckIfacePrefix returns an error wrapping ErrInvalid unless p is a
// valid interface prefix: "tb", at most 4 of [a-z0-9], "-" (3 to 7
// bytes, leaving at least 8 hex digits of the 15-byte name for the id's
// hash).
func CheckIfacePrefix(p string) error {
	if !ifacePrefixPattern.MatchString(p) {
		return fmt.Errorf("%w: interface prefix %q (want %s)", ErrInvalid, p, ifacePrefixPattern)
	}
	return nil
}

// HostTag is a host's tag derived from its state directory: 4 hex
// digits of sha256(dir). Hosts on one machine have different state
// directories, hence (but for a 1 in 65536 clash, which their
// operator fixes by choosing another directory) different tags.
func HostTag(stateDir string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(stateDir)))
	return hex.EncodeToString(sum[:2])
}

// IfacePrefixFor is the interface prefix of the host with tag (HostTag):
// "tb" + tag + "-" (7 bytes for a 4-digit tag).
func IfacePrefixFor(tag string) string { return "tb" + tag + "-" }

// Link is one sandbox's network namespace and veth pair.
type Link struct {
	// ID is the sandbox's id.
	ID string
	// NetNS is the path of the namespace's bind mount (container.Spec.NetNS).
	NetNS string
	// HostIface is the name of the veth's host side, in the host's
	// namespace.
	HostIface string
	// HostAddr is the host side's address (.1 of Prefix); the sandbox's
	// default route goes through it.
	HostAddr netip.Addr
	// SandboxAddr is eth0's address inside the namespace (.2 of Prefix).
	SandboxAddr netip.Addr
	// Prefix is the Link's /30.
	Prefix netip.Prefix
}

// Manager makes and removes Links. Safe for concurrent use.
//
// Lock order: mu, then the flock on the host's network namespace file
// (which serialises address allocation with other Managers, in this
// process or others; see flock).
type Manager struct {
	dir    string
	dirFD  int
	subnet netip.Prefix
	log    *slog.Logger
	host   netns.NsHandle // the network namespace of this process's main thread
	alias  string         // prefix of the host side's alias: this Dir's tag
	prefix string         // Config.IfacePrefix

	mu    sync.Mutex
	links map[string]*Link // nil: a Create in progress
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// New returns a Manager for cfg. It needs root (CAP_SYS_ADMIN and
// CAP_NET_ADMIN). Call Reap once before the first Create to clear what
// an earlier process left.
func New(cfg Config) (*Manager, error) {
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	if !cfg.Subnet.Addr().Is4() || cfg.Subnet.Bits() > 30 || cfg.Subnet.Masked() != cfg.Subnet {
		return nil, fmt.Errorf("%w: subnet %s is not an IPv4 network prefix of /30 or shorter", ErrInvalid, cfg.Subnet)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IfacePrefix == "" {
		cfg.IfacePrefix = DefaultIfacePrefix
	}
	if err := CheckIfacePrefix(cfg.IfacePrefix); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(cfg.Dir) {
		return nil, fmt.Errorf("%w: Dir %q is not an absolute path", ErrInvalid, cfg.Dir)
	}
	dir := filepath.Clean(cfg.Dir)
	fd, err := OpenRootDir(dir)
	if err != nil {
		return nil, err
	}
	host, err := netns.GetFromPid(os.Getpid())
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netns: this process's network namespace: %w", err)
	}
	sum := sha256.Sum256([]byte(dir))
	return &Manager{
		dir: dir, dirFD: fd, subnet: cfg.Subnet, log: cfg.Logger, host: host, prefix: cfg.IfacePrefix,
		alias: "turnbox-netns:" + hex.EncodeToString(sum[:4]) + ":",
		links: map[string]*Link{},
	}, nil
}

// OpenRootDir creates dir (0700) if absent and opens it (O_RDONLY), refusing
// a symlink, a non-directory, and a directory not owned by root or
// writable by group or others (errors wrapping ErrInvalid). The caller
// closes the descriptor.
func OpenRootDir(dir string) (int, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return -1, fmt.Errorf("netns: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%w: %s is not a directory (symlinks refused): %v", ErrInvalid, dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("netns: %w", err)
	}
	if st.Uid != 0 || st.Mode&0o022 != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %s must be owned by root and writable by root only (uid %d, mode %o)", ErrInvalid, dir, st.Uid, st.Mode&0o7777)
	}
	return fd, nil
}

// Close releases the Manager's descriptors. Links stay.
func (m *Manager) Close() error {
	m.host.Close()
	return unix.Close(m.dirFD)
}

// Dir returns the directory of the namespace bind mounts.
func (m *Manager) Dir() string { return m.dir }

// List returns the Links this Manager made and has not destroyed, by id.
func (m *Manager) List() []Link {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Link
	for _, id := range slices.Sorted(maps.Keys(m.links)) {
		if l := m.links[id]; l != nil {
			out = append(out, *l)
		}
	}
	return out
}

// reserve marks id as being created; it fails if it already is, or
// exists.
func (m *Manager) reserve(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: id %q (want %s)", ErrInvalid, id, idPattern)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.links[id]; ok {
		return fmt.Errorf("netns: %s: %w", id, os.ErrExist)
	}
	m.links[id] = nil
	return nil
}

// timeout is what is left of ctx's deadline, DefaultTimeout without one.
func timeout(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	d, ok := ctx.Deadline()
	if !ok {
		return DefaultTimeout, nil
	}
	left := time.Until(d)
	if left < time.Millisecond {
		return 0, context.DeadlineExceeded
	}
	return left, nil
}

// handleIn returns a netlink handle whose socket lives in namespace ns,
// its calls bounded by ctx's deadline.
func handleIn(ctx context.Context, ns netns.NsHandle) (*netlink.Handle, error) {
	to, err := timeout(ctx)
	if err != nil {
		return nil, err
	}
	var h *netlink.Handle
	err = inNS(ns, func() (err error) {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns: netlink: %w", err)
	}
	if err := h.SetSocketTimeout(to); err != nil {
		h.Close()
		return nil, fmt.Errorf("netns: netlink: %w", err)
	}
	return h, nil
}

// ifaceName is the host side's name for id: prefix and hex digits of a
// hash of id up to 15 characters (the kernel's limit; 12 digits after
// "tb-"); salt > 0 picks another name after a collision.
func ifaceName(prefix, id string, salt int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d", id, salt))
	return prefix + hex.EncodeToString(sum[:])[:unix.IFNAMSIZ-1-len(prefix)]
}

// ours reports whether a host-side link with this name and alias is this
// Manager's: its prefix and an alias naming this Dir.
func (m *Manager) ours(name, alias string) bool {
	return strings.HasPrefix(name, m.prefix) && strings.HasPrefix(alias, m.alias)
}
