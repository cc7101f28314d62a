package egress

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container/netns"
)

// IPv4 forwarding is one switch for the whole machine, while several
// Firewalls (several turnbox hosts, in one process or several) may need
// it. They coordinate through files in RunDir:
//
//   - every live Firewall holds a shared flock on forwardLockName for
//     its whole life (the kernel drops it when the process dies);
//   - forwardWasOffName exists while turnbox turned forwarding on (it
//     was off before any turnbox Firewall); GuardTable exists then too;
//   - whoever turns forwarding on or off, or takes or drops its shared
//     lock, holds the exclusive flock on forwardMutexName meanwhile, so
//     that "no other Firewall holds the lock" cannot change under it.
//
// Forwarding is turned off again (and the guard removed) by the Close
// or Reap that finds, holding the mutex, that it can take the lock
// exclusively: no live Firewall is left.
const (
	// RunDir holds the files by which Firewalls share ip_forward. It is
	// created 0700 and refused unless it is a directory owned by root
	// and writable by root only (not a symlink).
	RunDir            = "/run/turnbox"
	forwardLockName   = "ip_forward.lock"
	forwardMutexName  = "ip_forward.mutex"
	forwardWasOffName = "ip_forward.was-off"
	// GuardTable is the nftables table (family inet) that, while
	// turnbox keeps forwarding on for itself, drops forwarded IPv4
	// traffic involving no turnbox interface, so the host's own
	// forwarding does not change. Every turnbox interface's name starts
	// with GuardPrefix, whichever host made it.
	GuardTable = "turnbox-forward-guard"
	// GuardPrefix starts every turnbox host's interface prefix (see
	// netns.CheckIfacePrefix).
	GuardPrefix = "tb"
)

// forwardMutexWait bounds the wait for the mutex (held by others only
// for a few system calls).
const forwardMutexWait = 10 * time.Second

// forwardShare is one Firewall's share of IPv4 forwarding: the shared
// flock on the lock file, released by release.
type forwardShare struct {
	fd int
}

// withForwardMutex runs fn holding the exclusive flock on the mutex file,
// with dirfd the descriptor of RunDir.
func withForwardMutex(fn func(dirfd int) error) error {
	dirfd, err := netns.OpenRootDir(RunDir)
	if err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	defer unix.Close(dirfd)
	mu, err := openRunFile(dirfd, forwardMutexName)
	if err != nil {
		return err
	}
	defer unix.Close(mu) // drops the flock
	for deadline := time.Now().Add(forwardMutexWait); ; time.Sleep(5 * time.Millisecond) {
		err := unix.Flock(mu, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("egress: lock %s/%s: %w", RunDir, forwardMutexName, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("egress: lock %s/%s: held for more than %v", RunDir, forwardMutexName, forwardMutexWait)
		}
	}
	return fn(dirfd)
}

// openRunFile opens (creating, 0600) the regular file name in dirfd,
// refusing a symlink or anything but a regular file.
func openRunFile(dirfd int, name string) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, fmt.Errorf("egress: open %s/%s: %w", RunDir, name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, fmt.Errorf("egress: %s/%s is not a regular file (%v)", RunDir, name, err)
	}
	return fd, nil
}

// acquireForwarding takes a share of IPv4 forwarding: it turns
// forwarding on (recording that it was off, and adding the guard) if it
// is off.
func acquireForwarding() (*forwardShare, error) {
	var share *forwardShare
	err := withForwardMutex(func(dirfd int) error {
		fd, err := openRunFile(dirfd, forwardLockName)
		if err != nil {
			return err
		}
		// No exclusive holder can exist without the mutex we hold.
		if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err != nil {
			unix.Close(fd)
			return fmt.Errorf("egress: lock %s/%s: %w", RunDir, forwardLockName, err)
		}
		if err := enableForwarding(dirfd); err != nil {
			unix.Close(fd)
			return err
		}
		share = &forwardShare{fd: fd}
		return nil
	})
	return share, err
}

// enableForwarding turns ip_forward on if it is off, first recording
// that turnbox did and adding the guard; if turnbox turned it on before,
// it makes sure the guard is there. Called with the mutex held.
func enableForwarding(dirfd int) error {
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	off := strings.TrimSpace(string(b)) == "0"
	if off {
		fd, err := unix.Openat(dirfd, forwardWasOffName, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("egress: record %s/%s: %w", RunDir, forwardWasOffName, err)
		}
		unix.Close(fd)
	} else if !wasOff(dirfd) {
		return nil // the host forwards by itself: nothing to guard
	}
	if err := addGuard(); err != nil {
		return err
	}
	if off {
		if err := os.WriteFile(ipForwardPath, []byte("1"), 0); err != nil {
			return fmt.Errorf("egress: enable forwarding: %w", err)
		}
	}
	return nil
}

// wasOff reports whether turnbox turned forwarding on.
func wasOff(dirfd int) bool {
	var st unix.Stat_t
	return unix.Fstatat(dirfd, forwardWasOffName, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// release drops s and, if no other Firewall holds a share, restores
// ip_forward.
func (s *forwardShare) release() error {
	return withForwardMutex(func(dirfd int) error {
		unix.Close(s.fd) // drops the shared flock
		return restoreIfUnused(dirfd)
	})
}

// restoreIfUnused turns forwarding off again, removes the guard and the
// record, if turnbox turned forwarding on and no live Firewall holds a
// share. Called with the mutex held.
func restoreIfUnused(dirfd int) error {
	if !wasOff(dirfd) {
		return nil
	}
	fd, err := openRunFile(dirfd, forwardLockName)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		return nil // another Firewall still forwards
	} else if err != nil {
		return fmt.Errorf("egress: lock %s/%s: %w", RunDir, forwardLockName, err)
	}
	if err := os.WriteFile(ipForwardPath, []byte("0"), 0); err != nil {
		return fmt.Errorf("egress: restore ip_forward: %w", err)
	}
	if err := delTable(GuardTable); err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, forwardWasOffName, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("egress: remove %s/%s: %w", RunDir, forwardWasOffName, err)
	}
	return nil
}

// addGuard (re)makes GuardTable: forwarded IPv4 traffic whose input and
// output interfaces are both not turnbox's (GuardPrefix) is dropped.
func addGuard() error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("egress: nftables: %w", err)
	}
	t := conn.AddTable(&nftables.Table{Name: GuardTable, Family: nftables.TableFamilyINet})
	accept := nftables.ChainPolicyAccept
	c := conn.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	conn.FlushChain(c)
	conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: join(nfproto(unix.NFPROTO_IPV4),
		ifnameHasPrefix(GuardPrefix, true, false), ifnameHasPrefix(GuardPrefix, false, false),
		one(verdict(expr.VerdictDrop, "")))})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("egress: install %s: %w", GuardTable, err)
	}
	return nil
}

// delTable deletes the inet table name; a missing one is no error.
func delTable(name string) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("egress: nftables: %w", err)
	}
	t, err := conn.ListTableOfFamily(name, nftables.TableFamilyINet)
	if err != nil {
		return nil // no such table
	}
	conn.DelTable(t)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("egress: delete table %s: %w", name, err)
	}
	return nil
}
