package embedded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/environment"
)

// The file API (environment.FileSystem) works like the file tools
// (fstools.go): on the host side of the volume, every path resolved by the
// kernel beneath a descriptor of the identity-checked workspace root, and
// every final component named relative to a held descriptor of its
// directory, never through a name the host resolves itself. Operations run
// under fsMu (shared), so TurnComplete and Rollback exclude them.

// uploadBufBytes is the copy buffer of one upload or download.
const uploadBufBytes = 1 << 20

var _ environment.FileSystem = (*Environment)(nil)

// resolveSandboxPath turns a sandbox path of the file API into a path
// relative to the directory fileOp opens (which openat2 then resolves
// beneath it). It is the single place where the API's paths are
// interpreted: relative paths are relative to /workspace. A session whose
// sandbox runs in its own root (ownRoot) reaches that whole root: fileOp
// opens the root tree and every absolute path names a file in it,
// resolved beneath it (a link out of it, or any absolute link, is
// ErrPathEscapes). Other sessions (none's commands run on the host, older
// sessions have no root tree) reach only the workspace: /workspace[/...]
// names it, and every other absolute path is refused.
func (s *session) resolveSandboxPath(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("%w: path contains a NUL byte", environment.ErrInvalidArgument)
	}
	if s.ownRoot() {
		if !path.IsAbs(p) {
			p = path.Join(container.WorkspaceDir, p)
		}
		// Clean from "/" keeps ".." at the root, as the sandbox sees it.
		if rel := strings.TrimPrefix(path.Clean(p), "/"); rel != "" {
			return rel, nil
		}
		return ".", nil
	}
	if path.IsAbs(p) && p != container.WorkspaceDir && !strings.HasPrefix(p, container.WorkspaceDir+"/") {
		return "", fmt.Errorf("%w: %q: only %s is reachable on this host", environment.ErrPathEscapes, p, container.WorkspaceDir)
	}
	return s.workspace().rel(p)
}

// resolveChangeablePath is resolveSandboxPath for a path that Move or
// Remove changes: the workspace itself (and the root) are refused with
// ErrInvalidArgument, since tools and commands start in it.
func (s *session) resolveChangeablePath(p string) (string, error) {
	rel, err := s.resolveSandboxPath(p)
	if err == nil && (rel == "." || (s.ownRoot() && rel == rootWorkspace)) {
		err = fmt.Errorf("%w: %q is the workspace or the root, which cannot be moved or removed", environment.ErrInvalidArgument, p)
	}
	return rel, err
}

// ownRoot reports whether the session's commands run in its own root
// tree: it has one and the runtime isolates (none runs commands on the
// host, whose / is not the tree's).
func (s *session) ownRoot() bool {
	return s.workspace().tree != "" && s.deps.runtime.Kind() != string(ContainerRuntimeNone)
}

// fileErr maps an error of the file API to the contract's sentinels. p is
// the caller's path, for the message.
func fileErr(p string, err error) error {
	if err == nil {
		return nil
	}
	for _, sentinel := range []error{environment.ErrPathEscapes, environment.ErrLimitExceeded, environment.ErrInvalidArgument,
		environment.ErrFileNotFound, environment.ErrFileExists, environment.ErrNotActive, environment.ErrBusy, environment.ErrClosed} {
		if errors.Is(err, sentinel) {
			return err
		}
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		switch errno {
		case unix.ENOENT:
			return fmt.Errorf("%w: %s", environment.ErrFileNotFound, p)
		case unix.EEXIST:
			return fmt.Errorf("%w: %s", environment.ErrFileExists, p)
		case unix.EXDEV:
			return fmt.Errorf("%w: %q", environment.ErrPathEscapes, p)
		case unix.ENOSPC, unix.EDQUOT:
			return fmt.Errorf("%w: %s: no space left in the workspace", environment.ErrLimitExceeded, p)
		case unix.ENOTEMPTY, unix.ENOTDIR, unix.EISDIR, unix.ELOOP, unix.EINVAL, unix.ENAMETOOLONG, unix.EBUSY:
			return fmt.Errorf("%w: %s: %v", environment.ErrInvalidArgument, p, errno)
		}
	}
	return fmt.Errorf("%s: %w", p, err)
}

// fileOp admits a file API call like a tool call and runs fn with the
// descriptor of the directory resolveSandboxPath's paths are relative to
// (the session's root tree, or an older session's workspace), under fsMu
// (shared).
func (s *session) fileOp(fn func(root int) error) error {
	end, err := s.begin()
	if err != nil {
		return err
	}
	defer end()
	defer s.touch()
	s.fsMu.RLock()
	defer s.fsMu.RUnlock()
	open := s.workspace().openRoot
	if s.ownRoot() {
		open = s.workspace().openTree
	}
	root, err := open()
	if err != nil {
		return err
	}
	defer unix.Close(root)
	return fn(root)
}

// parentAt opens the directory holding rel (beneath root) and returns it
// with rel's last component. The workspace root itself has no parent
// here: it is ErrInvalidArgument.
func parentAt(root int, rel string) (int, string, error) {
	dir, base := path.Split(path.Clean(rel))
	if base == "." || base == ".." || base == "" {
		return -1, "", fmt.Errorf("%w: %q names the workspace itself", environment.ErrInvalidArgument, rel)
	}
	if dir == "" {
		dir = "."
	}
	dfd, err := openat2(root, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", err
	}
	return dfd, base, nil
}

// infoAt describes name in dirfd without following it ("" describes
// dirfd itself).
func infoAt(dirfd int, name, display string) (environment.FileInfo, error) {
	var st unix.Stat_t
	var err error
	if name == "" {
		err = unix.Fstat(dirfd, &st)
	} else {
		err = unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return environment.FileInfo{}, err
	}
	fi := environment.FileInfo{Path: display, Size: st.Size, UID: st.Uid, GID: st.Gid,
		Mode:    fs.FileMode(st.Mode & 0o777),
		ModTime: time.Unix(st.Mtim.Unix()).UTC()}
	for bit, m := range map[uint32]fs.FileMode{unix.S_ISUID: fs.ModeSetuid, unix.S_ISGID: fs.ModeSetgid, unix.S_ISVTX: fs.ModeSticky} {
		if st.Mode&bit != 0 {
			fi.Mode |= m
		}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		fi.Type = environment.TypeFile
	case unix.S_IFDIR:
		fi.Type = environment.TypeDir
	case unix.S_IFLNK:
		fi.Type = environment.TypeSymlink
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return environment.FileInfo{}, err
		}
		fi.LinkTarget = string(buf[:n])
	default:
		fi.Type = environment.TypeOther
	}
	return fi, nil
}

// stat implements Stat on the session.
func (s *session) stat(p string) (*environment.FileInfo, error) {
	rel, err := s.resolveSandboxPath(p)
	if err != nil {
		return nil, err
	}
	var fi environment.FileInfo
	err = s.fileOp(func(root int) error {
		if path.Clean(rel) == "." {
			fi, err = infoAt(root, "", p)
			return err
		}
		dfd, base, err := parentAt(root, rel)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		fi, err = infoAt(dfd, base, p)
		return err
	})
	if err != nil {
		return nil, fileErr(p, err)
	}
	return &fi, nil
}

// listDir implements ListDir on the session.
func (s *session) listDir(ctx context.Context, p string, opts environment.ListOptions) ([]environment.FileInfo, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	rel, err := s.resolveSandboxPath(p)
	if err != nil {
		return nil, err
	}
	var out []environment.FileInfo
	err = s.fileOp(func(root int) error {
		fd, err := openat2(root, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		return listFD(ctx, fd, p, max(opts.Depth, 1), &out)
	})
	if err != nil {
		return nil, fileErr(p, err)
	}
	return out, nil
}

// listFD appends the entries of the directory fd (which it closes) to
// out, descending depth-1 more levels, never following a symlink.
func listFD(ctx context.Context, fd int, display string, depth int, out *[]environment.FileInfo) error {
	f := os.NewFile(uintptr(fd), display)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := infoAt(fd, name, joinDisplay(display, name))
		if err != nil {
			continue // removed while listing
		}
		if len(*out) >= environment.MaxListEntries {
			return fmt.Errorf("%w: %s: more than %d entries; list with a smaller depth", environment.ErrLimitExceeded, display, environment.MaxListEntries)
		}
		*out = append(*out, fi)
		if fi.Type != environment.TypeDir || depth <= 1 {
			continue
		}
		sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // swapped or removed meanwhile: not followed
		}
		if err := listFD(ctx, sub, fi.Path, depth-1, out); err != nil {
			return err
		}
	}
	return nil
}

// joinDisplay joins an entry name to the caller's form of its directory.
func joinDisplay(dir, name string) string {
	if dir == "" || dir == "." {
		return name
	}
	return strings.TrimSuffix(dir, "/") + "/" + name
}

// makeDir implements MakeDir on the session.
func (s *session) makeDir(p string, parents bool) error {
	rel, err := s.resolveSandboxPath(p)
	if err != nil {
		return err
	}
	return fileErr(p, s.fileOp(func(root int) error {
		if parents {
			fd, err := mkdirAllBeneath(root, rel)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}
		dfd, base, err := parentAt(root, rel)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		return unix.Mkdirat(dfd, base, 0o755)
	}))
}

// move implements Move on the session.
func (s *session) move(src, dst string, overwrite bool) error {
	srel, err := s.resolveChangeablePath(src)
	if err != nil {
		return err
	}
	drel, err := s.resolveChangeablePath(dst)
	if err != nil {
		return err
	}
	return fileErr(src+" -> "+dst, s.fileOp(func(root int) error {
		sfd, sbase, err := parentAt(root, srel)
		if err != nil {
			return err
		}
		defer unix.Close(sfd)
		dfd, dbase, err := parentAt(root, drel)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		if overwrite {
			return unix.Renameat(sfd, sbase, dfd, dbase)
		}
		return renameNoReplace(sfd, sbase, dfd, dbase)
	}))
}

// renameNoReplace renames without replacing an existing target:
// renameat2(RENAME_NOREPLACE), or, on a filesystem without the flag
// (EINVAL: FUSE, zfs-fuse), a check then a plain rename. That fallback
// can replace a target the sandbox creates between the two calls; the
// rename stays within the directories already opened beneath the root.
func renameNoReplace(sfd int, sbase string, dfd int, dbase string) error {
	err := unix.Renameat2(sfd, sbase, dfd, dbase, unix.RENAME_NOREPLACE)
	if err != unix.EINVAL {
		return err
	}
	var st unix.Stat_t
	switch err := unix.Fstatat(dfd, dbase, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		return unix.EEXIST
	case err != unix.ENOENT:
		return err
	}
	return unix.Renameat(sfd, sbase, dfd, dbase)
}

// remove implements Remove on the session.
func (s *session) remove(ctx context.Context, p string, recursive bool) error {
	rel, err := s.resolveChangeablePath(p)
	if err != nil {
		return err
	}
	return fileErr(p, s.fileOp(func(root int) error {
		dfd, base, err := parentAt(root, rel)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		if recursive {
			return removeAllAt(ctx, dfd, base, 0)
		}
		err = unix.Unlinkat(dfd, base, 0)
		if err == unix.EISDIR || err == unix.EPERM {
			err = unix.Unlinkat(dfd, base, unix.AT_REMOVEDIR)
		}
		return err
	}))
}

// maxRemoveDepth bounds the recursion of removeAllAt (each level holds a
// descriptor).
const maxRemoveDepth = 512

// removeAllAt removes name in dirfd and, if it is a directory, all it
// holds, each entry named through its directory's held descriptor and
// never followed: a directory swapped for a symlink meanwhile fails to
// open (O_NOFOLLOW) instead of being entered.
func removeAllAt(ctx context.Context, dirfd int, name string, depth int) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	if depth >= maxRemoveDepth {
		return fmt.Errorf("%w: directories nested deeper than %d", environment.ErrLimitExceeded, maxRemoveDepth)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		names, rerr := f.Readdirnames(1024)
		for _, n := range names {
			if err := removeAllAt(ctx, fd, n, depth+1); err != nil && err != unix.ENOENT {
				return err
			}
		}
		if rerr == io.EOF || len(names) == 0 {
			break
		}
		if rerr != nil {
			return rerr
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// download implements Download on the session. The returned reader is not
// held under fsMu (a slow reader must not hold off turns): it reads the
// file it opened, and is closed when the session is destroyed.
func (s *session) download(p string) (io.ReadCloser, *environment.FileInfo, error) {
	rel, err := s.resolveSandboxPath(p)
	if err != nil {
		return nil, nil, err
	}
	var f *os.File
	var fi environment.FileInfo
	err = s.fileOp(func(root int) error {
		// O_NONBLOCK: opening a planted FIFO must not hang.
		fd, err := openat2(root, rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		if fi, err = infoAt(fd, "", p); err == nil && fi.Type != environment.TypeFile {
			err = fmt.Errorf("%w: %s is a %s, not a regular file", environment.ErrInvalidArgument, p, fi.Type)
		}
		if err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), p)
		return nil
	})
	if err != nil {
		return nil, nil, fileErr(p, err)
	}
	stop := context.AfterFunc(s.life, func() { f.Close() })
	return &lifeFile{File: f, stop: stop}, &fi, nil
}

// lifeFile is a downloaded file, closed early if its session ends.
type lifeFile struct {
	*os.File
	stop func() bool
}

// Close implements io.Closer.
func (l *lifeFile) Close() error {
	l.stop()
	err := l.File.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// Stat implements environment.FileSystem.
func (e *Environment) Stat(ctx context.Context, p string) (*environment.FileInfo, error) {
	s, err := e.session()
	if err != nil {
		return nil, err
	}
	return s.stat(p)
}

// ListDir implements environment.FileSystem.
func (e *Environment) ListDir(ctx context.Context, p string, opts environment.ListOptions) ([]environment.FileInfo, error) {
	s, err := e.session()
	if err != nil {
		return nil, err
	}
	return s.listDir(ctx, p, opts)
}

// MakeDir implements environment.FileSystem.
func (e *Environment) MakeDir(ctx context.Context, p string, parents bool) error {
	s, err := e.session()
	if err != nil {
		return err
	}
	return s.makeDir(p, parents)
}

// Move implements environment.FileSystem.
func (e *Environment) Move(ctx context.Context, src, dst string, overwrite bool) error {
	s, err := e.session()
	if err != nil {
		return err
	}
	return s.move(src, dst, overwrite)
}

// Remove implements environment.FileSystem.
func (e *Environment) Remove(ctx context.Context, p string, recursive bool) error {
	s, err := e.session()
	if err != nil {
		return err
	}
	return s.remove(ctx, p, recursive)
}

var _ environment.OwnerChanger = (*Environment)(nil)

// Chown implements environment.OwnerChanger: it sets the owner of path
// (never following a final symlink), resolved like every path of the
// file API.
func (e *Environment) Chown(ctx context.Context, p string, owner environment.FileOwner) error {
	s, err := e.session()
	if err != nil {
		return err
	}
	return s.chown(p, owner)
}

// chown implements Chown on the session.
func (s *session) chown(p string, owner environment.FileOwner) error {
	rel, err := s.resolveSandboxPath(p)
	if err != nil {
		return err
	}
	return fileErr(p, s.fileOp(func(root int) error {
		dfd, base, err := parentAt(root, rel)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		return unix.Fchownat(dfd, base, int(owner.UID), int(owner.GID), unix.AT_SYMLINK_NOFOLLOW)
	}))
}

// Upload implements environment.FileSystem. It holds off TurnComplete and
// Rollback while it writes (like a write_file call), so a snapshot never
// holds its temporary file.
func (e *Environment) Upload(ctx context.Context, p string, r io.Reader, opts environment.UploadOptions) (*environment.FileInfo, error) {
	s, err := e.session()
	if err != nil {
		return nil, err
	}
	return s.upload(ctx, p, r, opts)
}

// Download implements environment.FileSystem.
func (e *Environment) Download(ctx context.Context, p string) (io.ReadCloser, *environment.FileInfo, error) {
	s, err := e.session()
	if err != nil {
		return nil, nil, err
	}
	return s.download(p)
}

// WatchDir implements environment.FileSystem.
func (e *Environment) WatchDir(ctx context.Context, p string, opts environment.WatchOptions) (environment.Watcher, error) {
	s, err := e.session()
	if err != nil {
		return nil, err
	}
	return s.watchDir(ctx, p, opts)
}

// tempName is the name of an upload's temporary file beside base.
func tempName(base string) string {
	tmp := ".tb-upload-" + strconv.FormatUint(uint64(randUint32()), 36) + "-" + base
	return tmp[:min(len(tmp), 250)]
}
