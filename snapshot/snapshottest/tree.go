package snapshottest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Entry describes one path of a tree for WriteTree. Build entries with
// File, Dir, Symlink, HardLink and Fifo; WithOwner and WithModTime refine
// them.
type Entry struct {
	// Path is slash-separated and relative to the tree's root ("." is the
	// root itself, allowed only for Dir).
	Path string
	// Type is the file type: 0 for a regular file, or one of fs.ModeDir,
	// fs.ModeSymlink, fs.ModeNamedPipe. A hard link is a regular-file
	// entry with LinkTo set.
	Type fs.FileMode
	// Perm holds the permission bits plus fs.ModeSetuid, fs.ModeSetgid and
	// fs.ModeSticky. Ignored for symlinks and hard links.
	Perm fs.FileMode
	// Data is a regular file's content.
	Data string
	// Target is a symlink's target, written verbatim (never resolved).
	Target string
	// LinkTo, for a hard link, is the Path of an entry written earlier.
	LinkTo string
	// UID and GID, when not -1, are the owner, set only when the test runs
	// as root (elsewhere the entry keeps the caller's ids).
	UID, GID int
	// ModTime, when not zero, is set after the whole tree is written.
	ModTime time.Time
	// Xattrs are extended attributes to set (name to value), for regular
	// files and directories. Where the filesystem has no extended
	// attributes they are left out, and so do not appear in manifests.
	Xattrs map[string]string
}

// File is a regular file with content data and permissions perm.
func File(path, data string, perm fs.FileMode) Entry {
	return Entry{Path: path, Perm: perm, Data: data, UID: -1, GID: -1}
}

// Dir is a directory with permissions perm. Its permissions are applied
// after every entry is written, so a read-only directory may hold files.
func Dir(path string, perm fs.FileMode) Entry {
	return Entry{Path: path, Type: fs.ModeDir, Perm: perm, UID: -1, GID: -1}
}

// Symlink is a symbolic link to target (which may dangle or point outside
// the tree).
func Symlink(path, target string) Entry {
	return Entry{Path: path, Type: fs.ModeSymlink, Target: target, UID: -1, GID: -1}
}

// HardLink is a second name for the entry at existing.
func HardLink(path, existing string) Entry {
	return Entry{Path: path, LinkTo: existing, UID: -1, GID: -1}
}

// Fifo is a named pipe with permissions perm.
func Fifo(path string, perm fs.FileMode) Entry {
	return Entry{Path: path, Type: fs.ModeNamedPipe, Perm: perm, UID: -1, GID: -1}
}

// WithOwner returns e owned by uid:gid (applied only when running as root).
func (e Entry) WithOwner(uid, gid int) Entry {
	e.UID, e.GID = uid, gid
	return e
}

// WithXattr returns e with the extended attribute name (e.g. "user.x")
// set to value.
func (e Entry) WithXattr(name, value string) Entry {
	x := map[string]string{name: value}
	for k, v := range e.Xattrs {
		x[k] = v
	}
	e.Xattrs = x
	return e
}

// WithModTime returns e with modification time mt.
func (e Entry) WithModTime(mt time.Time) Entry {
	e.ModTime = mt
	return e
}

// WriteTree writes entries under dir, in order, creating missing parent
// directories with mode 0755. Directory permissions, owners and
// modification times are applied at the end, deepest first, so the tree
// is exactly as described when WriteTree returns. An existing path is
// replaced.
func WriteTree(t testing.TB, dir string, entries ...Entry) {
	t.Helper()
	if err := writeTree(dir, entries); err != nil {
		t.Fatalf("WriteTree(%s): %v", dir, err)
	}
}

func writeTree(dir string, entries []Entry) error {
	root := os.Geteuid() == 0
	for _, e := range entries {
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		if e.Path != "." {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
		}
		switch {
		case e.Type == fs.ModeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case e.LinkTo != "":
			_ = os.Remove(p)
			if err := os.Link(filepath.Join(dir, filepath.FromSlash(e.LinkTo)), p); err != nil {
				return err
			}
		case e.Type == fs.ModeSymlink:
			_ = os.Remove(p)
			if err := os.Symlink(e.Target, p); err != nil {
				return err
			}
		case e.Type == fs.ModeNamedPipe:
			_ = os.Remove(p)
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				return err
			}
		case e.Type == 0:
			_ = os.Remove(p)
			if err := os.WriteFile(p, []byte(e.Data), 0o600); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unsupported entry type %v", e.Path, e.Type)
		}
	}
	for _, e := range entries {
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		names := make([]string, 0, len(e.Xattrs))
		for k := range e.Xattrs {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			err := unix.Lsetxattr(p, k, []byte(e.Xattrs[k]), 0)
			if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
				continue // no extended attributes on this filesystem
			}
			if err != nil {
				return &os.PathError{Op: "setxattr " + k, Path: p, Err: err}
			}
		}
	}
	// Metadata, deepest first: owner (chown clears set-id bits), then
	// permissions, then times.
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		if root && (e.UID != -1 || e.GID != -1) {
			if err := os.Lchown(p, e.UID, e.GID); err != nil {
				return err
			}
		}
		if e.Type != fs.ModeSymlink && e.LinkTo == "" {
			if err := os.Chmod(p, e.Perm&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return err
			}
		}
	}
	// Times last, deepest entries first so that no later change touches a
	// parent's mtime.
	sorted := append([]Entry(nil), entries...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return strings.Count(sorted[i].Path, "/") > strings.Count(sorted[j].Path, "/")
	})
	for _, e := range sorted {
		if e.ModTime.IsZero() {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		if err := lutimes(p, e.ModTime); err != nil {
			return err
		}
	}
	return nil
}

// StandardTree is a small tree that exercises what a snapshot must keep
// (extended attributes included, where the filesystem has them):
// nested and empty directories, a read-only directory holding files,
// unusual permission bits (setuid, setgid, sticky), an executable, an
// empty file, a larger file, symlinks (relative, absolute, dangling, to a
// directory, pointing outside the tree), hard links, a named pipe, owners
// other than the caller's (when root) and fixed modification times.
func StandardTree() []Entry {
	mt := time.Date(2001, 2, 3, 4, 5, 6, 789, time.UTC)
	big := strings.Repeat("0123456789abcdef", 20000) // 320 KB
	return []Entry{
		Dir(".", 0o755),
		File("README.md", "# hello\n", 0o644).WithModTime(mt),
		File("empty", "", 0o600),
		File("bin/tool.sh", "#!/bin/sh\necho hi\n", 0o755),
		File("bin/setuid", "x", 0o4755),
		Dir("shared", 0o2775|fs.ModeSticky),
		File("shared/note", "sticky dir member\n", 0o664),
		File("data/big.bin", big, 0o644),
		File("data/secret", "only the owner reads this\n", 0o400),
		Dir("data/empty-dir", 0o700),
		Dir("data/deep/er/still/empty", 0o755),
		Dir("readonly", 0o555),
		File("readonly/inside", "in a read-only dir\n", 0o444),
		Symlink("link-rel", "README.md"),
		Symlink("link-abs", "/etc/hostname"),
		Symlink("link-dangling", "does/not/exist"),
		Symlink("link-dir", "data"),
		Symlink("link-escape", "../../../../outside"),
		File("hard/a", "shared inode\n", 0o640),
		HardLink("hard/b", "hard/a"),
		HardLink("hard/sub-c", "hard/a"),
		File("hard/not-linked", "shared inode\n", 0o640),
		Fifo("pipe", 0o620),
		File("owned", "owned by someone else\n", 0o644).WithOwner(1234, 5678),
		Dir("owned-dir", 0o750).WithOwner(4321, 8765),
		File("dated", "old file\n", 0o644).WithModTime(mt),
		File("xattr-file", "has extended attributes\n", 0o644).WithXattr("user.turnbox.a", "1").WithXattr("user.turnbox.b", "two"),
		Dir("xattr-dir", 0o755).WithXattr("user.turnbox.dir", "d"),
		Dir("dated-dir", 0o755).WithModTime(mt),
		Symlink("dated-link", "dated").WithModTime(mt),
	}
}

// FillTree writes a tree of files regular files of size bytes each under
// dir, spread over subdirectories of at most 100 files, with pseudo-random
// content derived from seed (the same arguments always write the same
// tree).
func FillTree(t testing.TB, dir string, files, size int, seed uint64) {
	t.Helper()
	if err := fillTree(dir, files, size, seed); err != nil {
		t.Fatalf("FillTree(%s): %v", dir, err)
	}
}

func fillTree(dir string, files, size int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	buf := make([]byte, size)
	for i := range files {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		for j := 0; j < len(buf); j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < len(buf); k++ {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// TreeHash returns a hex digest of the tree at dir: every path, its file
// type, permission and set-id/sticky bits, owner, regular file contents,
// symlink targets (never followed), device numbers and which paths are
// hard links of one another. Modification times are left out (see
// Manifest). Two trees with equal content hash equal wherever they live.
func TreeHash(t testing.TB, dir string) string {
	t.Helper()
	h, err := treeHash(dir)
	if err != nil {
		t.Fatalf("TreeHash(%s): %v", dir, err)
	}
	return h
}

// Manifest returns the tree at dir as sorted, human-readable lines, one per
// path, with what TreeHash covers plus, when withModTimes, each entry's
// modification time. Compare manifests to see how two trees differ.
func Manifest(t testing.TB, dir string, withModTimes bool) []string {
	t.Helper()
	m, err := manifest(dir, withModTimes)
	if err != nil {
		t.Fatalf("Manifest(%s): %v", dir, err)
	}
	return m
}

func treeHash(dir string) (string, error) {
	m, err := manifest(dir, false)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, l := range m {
		io.WriteString(h, l)
		io.WriteString(h, "\n")
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type devIno struct{ dev, ino uint64 }

func manifest(dir string, withModTimes bool) ([]string, error) {
	var lines []string
	links := map[devIno]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		mode := st.Mode
		typ := mode & syscall.S_IFMT
		l := fmt.Sprintf("%q %s perm=%04o uid=%d gid=%d", rel, typeName(typ), mode&0o7777, st.Uid, st.Gid)
		if typ == syscall.S_IFLNK {
			// Symlink permissions are always 0777 on Linux and some
			// filesystems report otherwise; leave them out.
			l = fmt.Sprintf("%q %s uid=%d gid=%d", rel, typeName(typ), st.Uid, st.Gid)
		}
		if typ != syscall.S_IFDIR && st.Nlink > 1 {
			k := devIno{uint64(st.Dev), st.Ino}
			if first, ok := links[k]; ok {
				lines = append(lines, fmt.Sprintf("%q hardlink-to %q", rel, first))
				return nil
			}
			links[k] = rel
		}
		switch typ {
		case syscall.S_IFREG:
			sum, err := fileSum(p)
			if err != nil {
				return err
			}
			l += fmt.Sprintf(" size=%d sha256=%s", st.Size, sum)
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			l += fmt.Sprintf(" target=%q", target)
		case syscall.S_IFCHR, syscall.S_IFBLK:
			l += fmt.Sprintf(" rdev=%d", st.Rdev)
		}
		x, err := xattrs(p)
		if err != nil {
			return err
		}
		l += x
		if withModTimes {
			l += fmt.Sprintf(" mtime=%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
		}
		lines = append(lines, l)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return lines, nil
}

// xattrs describes the extended attributes of p, sorted by name.
func xattrs(p string) (string, error) {
	size, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) || size == 0 {
		return "", nil
	}
	if err != nil {
		return "", &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return "", &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	var names []string
	for _, n := range strings.Split(string(buf[:size]), "\x00") {
		if n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out strings.Builder
	for _, n := range names {
		vs, err := unix.Lgetxattr(p, n, nil)
		if err != nil {
			return "", &os.PathError{Op: "getxattr " + n, Path: p, Err: err}
		}
		v := make([]byte, vs)
		vs, err = unix.Lgetxattr(p, n, v)
		if err != nil {
			return "", &os.PathError{Op: "getxattr " + n, Path: p, Err: err}
		}
		fmt.Fprintf(&out, " xattr:%s=%q", n, v[:vs])
	}
	return out.String(), nil
}

func typeName(typ uint32) string {
	switch typ {
	case syscall.S_IFREG:
		return "file"
	case syscall.S_IFDIR:
		return "dir"
	case syscall.S_IFLNK:
		return "symlink"
	case syscall.S_IFIFO:
		return "fifo"
	case syscall.S_IFSOCK:
		return "socket"
	case syscall.S_IFCHR:
		return "chardev"
	case syscall.S_IFBLK:
		return "blockdev"
	}
	return fmt.Sprintf("type%o", typ)
}

func fileSum(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)[:12]), nil
}

func lutimes(p string, mt time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: p, Err: err}
	}
	return nil
}

// diffLines describes how got differs from want, in at most max lines.
func diffLines(want, got []string, max int) string {
	w := map[string]bool{}
	for _, l := range want {
		w[l] = true
	}
	g := map[string]bool{}
	for _, l := range got {
		g[l] = true
	}
	var out []string
	for _, l := range want {
		if !g[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range got {
		if !w[l] {
			out = append(out, "+ "+l)
		}
	}
	if len(out) > max {
		out = append(out[:max], fmt.Sprintf("... and %d more", len(out)-max))
	}
	return strings.Join(out, "\n")
}
