package embedded

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/turnbox/turnbox/embedded/ledger"
)

// Memory images (docs/storage.md, "Memory snapshots"): where the host
// keeps the sandbox memory images of memory snapshots and hibernated
// sessions. runsc parses an image when it restores one, so an image is
// never anywhere a sandbox can read or write: not in the session's
// volume (its root tree is the sandbox's root) but in a directory of
// the host's state dir, <StateDir>/memory/<session>/<name>, every level
// 0700 and made without following links. Paths are derived from the
// session id and turn, never read from the ledger.

// memStore is the host's directory of memory images.
type memStore struct {
	root string // <StateDir>/memory
	log  *slog.Logger
}

// hibernateName is the name, in a session's memory directory and among
// its volume's backend snapshots, of what Hibernate saved.
const hibernateName = "hibernate"

// memSnapshotName is the directory name of turn's image.
func memSnapshotName(turn int) string { return ledger.BackendSnapshotName(turn) }

// dir returns the image directory name of session (no checks).
func (m memStore) dir(session, name string) string {
	return filepath.Join(m.root, session, name)
}

// snapshotDir is the image directory of a session's snapshot r.
func (m memStore) snapshotDir(r ledger.SnapshotRecord) string {
	return m.dir(r.Session, memSnapshotName(r.Turn))
}

// prepare makes a new, empty image directory session/name (an
// existing one, left by a failed try, is removed first) and returns its
// path. Each level is made 0700 and checked to be a real directory, not
// a link.
func (m memStore) prepare(session, name string) (string, error) {
	if !safeName(session) || !safeName(name) {
		return "", fmt.Errorf("embedded: memory image %q/%q: bad name", session, name)
	}
	for _, d := range []string{m.root, filepath.Join(m.root, session)} {
		if err := realDir(d); err != nil {
			return "", err
		}
	}
	dir := m.dir(session, name)
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("embedded: clearing memory image dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("embedded: memory image dir: %w", err)
	}
	return dir, nil
}

// safeName reports whether n is one path element.
func safeName(n string) bool {
	return n != "" && n != "." && n != ".." && filepath.Base(n) == n
}

// realDir makes d (mode 0700) unless it exists, and checks that it is a
// directory and not a symbolic link.
func realDir(d string) error {
	if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("embedded: memory image dir: %w", err)
	}
	fi, err := os.Lstat(d)
	if err != nil {
		return fmt.Errorf("embedded: memory image dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("embedded: memory image dir %s is not a directory", d)
	}
	return nil
}

// remove deletes an image directory (gone already is fine).
func (m memStore) remove(dir string) {
	if err := os.RemoveAll(dir); err != nil {
		m.log.Error("deleting a memory image", "dir", dir, "err", err)
	}
}

// removeSession deletes every image of session.
func (m memStore) removeSession(session string) {
	if safeName(session) {
		m.remove(filepath.Join(m.root, session))
	}
}

// seal fsyncs every file of the image in dir and the directory, so that
// an image the ledger records survives a host crash, and returns its size.
func seal(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("embedded: memory image: %w", err)
	}
	var n int64
	for _, e := range append(ents, nil) {
		p := dir
		if e != nil {
			p = filepath.Join(dir, e.Name())
		}
		size, err := syncFile(p)
		if err != nil {
			return 0, fmt.Errorf("embedded: memory image: %w", err)
		}
		if e != nil && e.Type().IsRegular() {
			n += size
		}
	}
	return n, nil
}

// syncFile fsyncs the file or directory p and returns its size.
func syncFile(p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), f.Sync()
}

// gc deletes image directories that keep does not name (as
// "<session>/<name>"): left by a crash before the ledger recorded them,
// or by one after it forgot them.
func (m memStore) gc(keep map[string]bool) {
	sessions, err := os.ReadDir(m.root)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			m.log.Error("listing memory images", "err", err)
		}
		return
	}
	for _, sd := range sessions {
		imgs, err := os.ReadDir(filepath.Join(m.root, sd.Name()))
		if err != nil || len(imgs) == 0 {
			m.remove(filepath.Join(m.root, sd.Name()))
			continue
		}
		for _, img := range imgs {
			if key := keepKey(sd.Name(), img.Name()); !keep[key] {
				m.log.Warn("deleting a memory image no snapshot records (left by a crash)", "image", key)
				m.remove(filepath.Join(m.root, sd.Name(), img.Name()))
			}
		}
		_ = os.Remove(filepath.Join(m.root, sd.Name())) // if now empty
	}
}

// keepKey is gc's name of session's image name.
func keepKey(session, name string) string { return session + "/" + name }

// turnKey is gc's name of the image of snapshot r.
func turnKey(r ledger.SnapshotRecord) string {
	return keepKey(r.Session, memSnapshotName(r.Turn))
}
