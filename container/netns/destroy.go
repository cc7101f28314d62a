package netns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Destroy removes sandbox id's Link: its veth pair (deleting the host
// side deletes both) and its namespace's bind mount. Destroying an id
// that has no Link does nothing; one still being created is ErrBusy.
// It also removes a Link an earlier process with the same Dir made.
func (m *Manager) Destroy(ctx context.Context, id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: id %q (want %s)", ErrInvalid, id, idPattern)
	}
	m.mu.Lock()
	l, ok := m.links[id]
	if ok && l == nil {
		m.mu.Unlock()
		return fmt.Errorf("netns: %s: %w", id, ErrBusy)
	}
	delete(m.links, id)
	m.mu.Unlock()
	hint := ""
	if l != nil {
		hint = l.HostIface
	}
	if err := m.teardown(ctx, id, hint); err != nil {
		return fmt.Errorf("netns: %s: %w", id, err)
	}
	return nil
}

// teardown deletes id's host side veth (hint is its name if known;
// otherwise it is found by its alias) and unmounts and removes Dir/id.
func (m *Manager) teardown(ctx context.Context, id, hint string) error {
	host, err := handleIn(ctx, m.host)
	if err != nil {
		return err
	}
	defer host.Close()
	var errs []error
	link, err := m.findHostSide(host, id, hint)
	if err != nil {
		errs = append(errs, err)
	} else if link != nil {
		if err := host.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", link.Attrs().Name, err))
		}
	}
	if err := m.unbind(id); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// findHostSide returns id's host side veth, nil if there is none.
func (m *Manager) findHostSide(host *netlink.Handle, id, hint string) (netlink.Link, error) {
	want := m.alias + id
	if hint != "" {
		if l, err := host.LinkByName(hint); err == nil && l.Attrs().Alias == want {
			return l, nil
		}
	}
	links, err := host.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	for _, l := range links {
		if l.Attrs().Alias == want && m.ours(l.Attrs().Name, want) {
			return l, nil
		}
	}
	return nil, nil
}

// unbind unmounts Dir/name (every mount stacked there; never following
// a symlink) and removes it; a missing one is no error.
func (m *Manager) unbind(name string) error {
	p := filepath.Join(m.dir, name)
	for unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW) == nil {
	}
	if err := unix.Unlinkat(m.dirFD, name, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", p, err)
	}
	return nil
}

// Reap removes every Link of this Dir: every bind mount under Dir and
// every veth named with this Manager's IfacePrefix whose alias names
// this Dir, whichever process made them (its own included); other
// hosts' veths (another prefix or Dir) are left alone. A host calls it
// once at start, before its first Create.
func (m *Manager) Reap(ctx context.Context) error {
	host, err := handleIn(ctx, m.host)
	if err != nil {
		return err
	}
	defer host.Close()
	m.mu.Lock()
	for id, l := range m.links {
		if l != nil {
			delete(m.links, id)
		}
	}
	m.mu.Unlock()
	var errs []error
	links, err := host.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("netns: listing interfaces: %w", err))
	}
	for _, l := range links {
		a := l.Attrs()
		if !m.ours(a.Name, a.Alias) {
			continue
		}
		m.log.Info("netns: reaping veth", "iface", a.Name, "id", strings.TrimPrefix(a.Alias, m.alias))
		if err := host.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("netns: deleting %s: %w", a.Name, err))
		}
	}
	ents, err := os.ReadDir(m.dir)
	if err != nil {
		errs = append(errs, fmt.Errorf("netns: %w", err))
	}
	for _, e := range ents {
		if !idPattern.MatchString(e.Name()) {
			continue
		}
		m.log.Info("netns: reaping namespace", "id", e.Name())
		if err := m.unbind(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("netns: %w", err))
		}
	}
	return errors.Join(errs...)
}
