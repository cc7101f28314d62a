package embedded

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot/guard"
)

// The file tools work on the host side of the workspace volume. Every path
// is resolved by the kernel with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_MAGICLINKS) relative to a descriptor of the workspace root:
// "..", absolute symlinks and symlinks that climb out are refused by the
// kernel at resolution time, so there is no window between a check and a
// use for a planted symlink to exploit.

const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS

// errToolFailed marks failures that are the tool's result (the file does
// not exist, old_string not found): they become IsError responses, not Go
// errors.
type toolError struct {
	msg   string
	errno unix.Errno // the syscall's error, when one caused it
}

func (e *toolError) Error() string { return e.msg }

// Unwrap returns the syscall error behind the failure (nil if none), for
// callers that map it to the contract's errors (files.go).
func (e *toolError) Unwrap() error {
	if e.errno == 0 {
		return nil
	}
	return e.errno
}

func failf(format string, args ...any) error { return &toolError{msg: fmt.Sprintf(format, args...)} }

// workspace is a session's workspace as the file tools see it.
type workspace struct {
	root string // host path of the workspace tree
	// tree is the host path of the session's root tree holding the
	// workspace as its directory "workspace" ("": root is the volume's
	// tree itself, an older session's).
	tree string
}

// rel turns a tool's path into a path relative to the workspace root.
// Absolute paths are accepted when they name the workspace as the sandbox
// sees it (/workspace/...) or as the host does; anything else absolute is
// outside. The result may still contain ".." or symlinks: openat2 decides.
func (w workspace) rel(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("%w: path contains a NUL byte", environment.ErrInvalidArgument)
	}
	if path.IsAbs(p) {
		var ok bool
		for _, prefix := range []string{container.WorkspaceDir, w.root} {
			if p == prefix {
				return ".", nil
			}
			var rest string
			if rest, ok = strings.CutPrefix(p, prefix+"/"); ok {
				p = rest
				break
			}
		}
		if !ok {
			return "", fmt.Errorf("%w: %q is outside %s", environment.ErrPathEscapes, p, container.WorkspaceDir)
		}
	}
	if p == "" {
		p = "."
	}
	// The kernel is the authority (openat2 below), but a path that climbs
	// out lexically is refused up front so the error says so even when an
	// intermediate directory does not exist.
	if c := path.Clean(p); c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%w: %q", environment.ErrPathEscapes, p)
	}
	return p, nil
}

// resolveLink follows rel when its last element is a symlink, returning the
// target's path relative to the root. The kernel resolves it beneath the
// root: a link leading outside gives ErrPathEscapes, so writes never go
// through a planted link, and replacing the link itself (which would hide
// the attempt) is not done either.
func (w workspace) resolveLink(rel string) (string, error) {
	root, err := w.openRoot()
	if err != nil {
		return "", err
	}
	defer unix.Close(root)
	var st unix.Stat_t
	if err := unix.Fstatat(root, rel, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return rel, nil // not a link (or missing: created as a file)
	}
	fd, err := openat2(root, rel, unix.O_PATH, 0)
	if err != nil {
		var te *toolError
		if errors.As(err, &te) {
			return "", failf("%s: a symbolic link whose target does not exist", rel)
		}
		return "", err
	}
	defer unix.Close(fd)
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	// The workspace root itself may have been renamed into place by a
	// rollback since openRoot: compare against the root's own fd path.
	rootPath, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(root))
	if err != nil {
		return "", err
	}
	out, ok := strings.CutPrefix(target, rootPath+"/")
	if !ok {
		return "", fmt.Errorf("%w: %q", environment.ErrPathEscapes, rel)
	}
	return out, nil
}

// openRoot opens the workspace's root. The volume's tree is opened
// relative to its parent directory, never through a symlink (see
// snapshot/guard): a sandbox that sees the parent can only make the open
// fail (snapshot.ErrTampered), not point it anywhere else. In a root
// tree the workspace is then resolved as the sandbox would, inside the
// tree (the sandbox may have made it a link): never out of it.
func (w workspace) openRoot() (int, error) {
	vol := w.root
	if w.tree != "" {
		vol = w.tree
	}
	fd, err := guard.OpenDirFD(filepath.Dir(vol), filepath.Base(vol))
	if err != nil {
		return -1, fmt.Errorf("opening workspace: %w", err)
	}
	if w.tree == "" {
		return fd, nil
	}
	defer unix.Close(fd)
	how := &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for range 16 {
		wfd, err := unix.Openat2(fd, rootWorkspace, how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("opening workspace in the session's root: %w", err)
		}
		return wfd, nil
	}
	return -1, errors.New("opening workspace in the session's root: kept racing with concurrent renames")
}

// openTree opens the session's root tree (identity checked like
// openRoot's); w must have one.
func (w workspace) openTree() (int, error) {
	fd, err := guard.OpenDirFD(filepath.Dir(w.tree), filepath.Base(w.tree))
	if err != nil {
		return -1, fmt.Errorf("opening the session's root: %w", err)
	}
	return fd, nil
}

// openBeneath opens rel under the workspace root with the kernel's
// containment checks.
func (w workspace) openBeneath(rel string, flags int, mode uint32) (int, error) {
	root, err := w.openRoot()
	if err != nil {
		return -1, err
	}
	defer unix.Close(root)
	return openat2(root, rel, flags, mode)
}

func openat2(dirfd int, rel string, flags int, mode uint32) (int, error) {
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolveFlags}
	for range 16 {
		fd, err := unix.Openat2(dirfd, rel, how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue // a concurrent rename in the tree; the kernel asks to retry
		}
		return fd, mapPathErr(rel, err)
	}
	return -1, fmt.Errorf("resolving %q: kept racing with concurrent renames", rel)
}

// mapPathErr turns resolution errors into the contract's errors.
func mapPathErr(rel string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%w: %q", environment.ErrPathEscapes, rel)
	case errors.Is(err, unix.ENOENT):
		return &toolError{rel + ": no such file or directory", unix.ENOENT}
	case errors.Is(err, unix.ENOTDIR):
		return &toolError{rel + ": a path component is not a directory", unix.ENOTDIR}
	case errors.Is(err, unix.EISDIR):
		return &toolError{rel + ": is a directory", unix.EISDIR}
	case errors.Is(err, unix.ELOOP):
		return &toolError{rel + ": too many levels of symbolic links", unix.ELOOP}
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return &toolError{rel + ": permission denied", unix.EACCES}
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return fmt.Errorf("%w: %s: no space left in the workspace", environment.ErrLimitExceeded, rel)
	}
	return fmt.Errorf("%s: %w", rel, err)
}

// output collects a tool's text up to a cap.
type output struct {
	buf       bytes.Buffer
	max       int
	truncated bool
	dropped   int64
	// note, if set, replaces the byte-cap notice (e.g. grep's result cap).
	note string
}

func (o *output) Write(p []byte) (int, error) {
	n := len(p)
	if room := o.max - o.buf.Len(); room < len(p) {
		o.truncated = true
		o.dropped += int64(len(p) - max(room, 0))
		p = p[:max(room, 0)]
	}
	o.buf.Write(p)
	return n, nil
}

func (o *output) full() bool { return o.buf.Len() >= o.max }

func (w workspace) readFile(p environment.ReadFileParams, out *output) error {
	rel, err := w.rel(p.Path)
	if err != nil {
		return err
	}
	// O_NONBLOCK: opening a FIFO planted in the workspace must not hang.
	fd, err := w.openBeneath(rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return failf("%s: not a regular file (%s)", rel, fi.Mode().Type())
	}
	// Buffers sized to the file: io.Copy's 32 KiB and bufio's 64 KiB per
	// call were most of what a small read_file allocated (and most of the
	// collector's work under a read_file load).
	bufSize := int(min(max(fi.Size()+1, 512), 64<<10))
	if p.Offset <= 1 && p.Limit == 0 {
		_, err := io.CopyBuffer(out, io.LimitReader(f, int64(out.max)+1), make([]byte, bufSize))
		if out.truncated {
			out.dropped = fi.Size() - int64(out.max)
		}
		return err
	}
	r := bufio.NewReaderSize(f, bufSize)
	first := max(p.Offset, 1)
	for line := 1; ; line++ {
		b, err := r.ReadSlice('\n')
		for err == bufio.ErrBufferFull {
			// A line longer than the buffer: keep it whole if it is wanted.
			if line >= first {
				out.Write(b)
			}
			b, err = r.ReadSlice('\n')
		}
		if line >= first {
			out.Write(b)
		}
		if err == io.EOF || (p.Limit > 0 && line >= first+p.Limit-1) || out.full() {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// writeAtomic replaces rel's content: a temporary file beside it, then a
// rename, so a snapshot or a concurrent reader never sees half a file. An
// existing file's permission bits are kept. Missing parent directories are
// created (beneath the root).
func (w workspace) writeAtomic(rel string, content []byte) error {
	rel, err := w.resolveLink(rel)
	if err != nil {
		return err
	}
	dir, base := path.Split(path.Clean(rel))
	if base == "." || base == ".." || base == "" || base == "/" {
		return failf("%s: not a file path", rel)
	}
	if dir == "" {
		dir = "."
	}
	root, err := w.openRoot()
	if err != nil {
		return err
	}
	defer unix.Close(root)
	dfd, err := mkdirAllBeneath(root, dir)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	mode := uint32(0o644)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			mode = st.Mode & 0o7777
		case unix.S_IFDIR:
			return failf("%s: is a directory", rel)
		}
	}
	tmp := ".tb-write-" + strconv.FormatUint(uint64(randUint32()), 36) + "-" + base
	if len(tmp) > 250 {
		tmp = tmp[:250]
	}
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, mode)
	if err != nil {
		return mapPathErr(rel, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, werr := f.Write(content)
	if werr == nil {
		werr = f.Chmod(os.FileMode(mode & 0o777))
	}
	if werr = commitTemp(f, dfd, tmp, base, werr); werr != nil {
		return mapPathErr(rel, werr)
	}
	return nil
}

// mkdirAllBeneath opens dir under root, creating missing components, each
// step resolved with openat2 so no component can lead outside.
func mkdirAllBeneath(root int, dir string) (int, error) {
	fd, err := openat2(root, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err == nil {
		return fd, nil
	}
	var te *toolError
	if !errors.As(err, &te) || !strings.Contains(te.msg, "no such file") {
		return -1, err
	}
	cur, err := unix.Dup(root)
	if err != nil {
		return -1, err
	}
	for _, elem := range strings.Split(path.Clean(dir), "/") {
		if elem == "" || elem == "." {
			continue
		}
		if elem == ".." {
			unix.Close(cur)
			return -1, fmt.Errorf("%w: %q", environment.ErrPathEscapes, dir)
		}
		if err := unix.Mkdirat(cur, elem, 0o755); err != nil && err != unix.EEXIST {
			unix.Close(cur)
			return -1, mapPathErr(dir, err)
		}
		next, err := openat2(cur, elem, unix.O_PATH|unix.O_DIRECTORY, 0)
		unix.Close(cur)
		if err != nil {
			return -1, err
		}
		cur = next
	}
	return cur, nil
}

func (w workspace) writeFile(p environment.WriteFileParams, out *output) error {
	rel, err := w.rel(p.Path)
	if err != nil {
		return err
	}
	if err := w.writeAtomic(rel, []byte(p.Content)); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %d bytes to %s", len(p.Content), p.Path)
	return nil
}

func (w workspace) editFile(p environment.EditFileParams, out *output) error {
	rel, err := w.rel(p.Path)
	if err != nil {
		return err
	}
	fd, err := w.openBeneath(rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), rel)
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = failf("%s: not a regular file", rel)
	}
	if err == nil && fi.Size() > MaxFileBytes {
		err = failf("%s: %d bytes is larger than edit_file's limit of %d", rel, fi.Size(), MaxFileBytes)
	}
	var data []byte
	if err == nil {
		data, err = io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	}
	f.Close()
	if err != nil {
		return err
	}
	old := []byte(p.OldString)
	n := bytes.Count(data, old)
	switch {
	case n == 0:
		return failf("%s: old_string not found", rel)
	case n > 1 && !p.ReplaceAll:
		return failf("%s: old_string occurs %d times; make it unique or set replace_all", rel, n)
	}
	limit := 1
	if p.ReplaceAll {
		limit = -1
	}
	if err := w.writeAtomic(rel, bytes.Replace(data, old, []byte(p.NewString), limit)); err != nil {
		return err
	}
	fmt.Fprintf(out, "replaced %d occurrence(s) in %s", min(n, max(limit, n)), p.Path)
	return nil
}

// walk calls fn for every entry under dir (relative to the root), depth
// first in name order, never following symlinks. fn gets the path relative
// to the workspace root.
func (w workspace) walk(ctx context.Context, dir string, fn func(rel string, typ uint32, dirfd int, name string) (stop bool, err error)) error {
	fd, err := w.openBeneath(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	prefix := path.Clean(dir)
	if prefix == "." {
		prefix = ""
	} else {
		prefix += "/"
	}
	_, err = walkFD(ctx, fd, prefix, fn)
	return err
}

func walkFD(ctx context.Context, fd int, prefix string, fn func(string, uint32, int, string) (bool, error)) (bool, error) {
	f := os.NewFile(uintptr(fd), prefix)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return false, err
	}
	sort.Strings(names)
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return true, err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // removed while walking
		}
		typ := st.Mode & unix.S_IFMT
		if stop, err := fn(prefix+name, typ, fd, name); stop || err != nil {
			return stop, err
		}
		if typ == unix.S_IFDIR {
			sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				continue
			}
			if stop, err := walkFD(ctx, sub, prefix+name+"/", fn); stop || err != nil {
				return stop, err
			}
		}
	}
	return false, nil
}

func (w workspace) listFiles(ctx context.Context, p environment.ListFilesParams, out *output) error {
	base, err := w.rel(p.Path)
	if err != nil {
		return err
	}
	pattern := p.Pattern
	if base != "." && base != "" {
		// The pattern is relative to the search directory.
		pattern = path.Clean(base) + "/" + strings.TrimPrefix(pattern, "./")
		if !strings.Contains(p.Pattern, "/") && p.Pattern != "**" {
			pattern = path.Clean(base) + "/**/" + p.Pattern
		}
	}
	err = w.walk(ctx, base, func(rel string, typ uint32, _ int, _ string) (bool, error) {
		if typ == unix.S_IFDIR {
			return false, nil
		}
		if ok, _ := environment.MatchGlob(pattern, rel); ok {
			out.Write([]byte(rel + "\n"))
		}
		return out.full(), nil
	})
	if err != nil {
		return err
	}
	// No match: empty content, unambiguous for a caller parsing lines.
	return nil
}

func (w workspace) grep(ctx context.Context, p environment.GrepParams, out *output) error {
	base, err := w.rel(p.Path)
	if err != nil {
		return err
	}
	expr := p.Pattern
	if p.IgnoreCase {
		expr = "(?i)" + expr
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return fmt.Errorf("%w: grep: %v", environment.ErrInvalidArgument, err)
	}
	g := &grepper{re: re, out: out, maxResults: p.MaxResults}
	if g.maxResults == 0 {
		g.maxResults = 1000
	}
	// A single file?
	fd, err := w.openBeneath(base, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	_ = unix.Fstat(fd, &st)
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		f := os.NewFile(uintptr(fd), base)
		err := g.search(path.Clean(base), f)
		f.Close()
		if err != nil && err != io.EOF {
			return err
		}
		return nil
	}
	unix.Close(fd)
	return w.walk(ctx, base, func(rel string, typ uint32, dirfd int, name string) (bool, error) {
		if typ != unix.S_IFREG {
			return false, nil
		}
		if p.Glob != "" {
			if ok, _ := environment.MatchGlob(p.Glob, rel); !ok {
				return false, nil
			}
		}
		if err := g.searchAt(rel, dirfd, name); err == io.EOF {
			return true, nil
		} else if err != nil {
			return true, err
		}
		return false, nil
	})
}

// grepper is one grep call's search: the expression, where matches go and
// how many were found.
type grepper struct {
	re         *regexp.Regexp
	out        *output
	maxResults int
	matches    int
}

// searchAt searches the regular file name in the directory dirfd (one
// that cannot be opened is skipped). io.EOF: stop, enough found.
func (g *grepper) searchAt(rel string, dirfd int, name string) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	return g.search(rel, f)
}

// search writes f's matching lines as rel:line:text (binary files are
// skipped, long lines cut). io.EOF: stop, enough found.
func (g *grepper) search(rel string, f *os.File) error {
	r := bufio.NewReaderSize(f, 64<<10)
	head, _ := r.Peek(8 << 10)
	if bytes.IndexByte(head, 0) >= 0 {
		return nil // binary
	}
	for line := 1; ; line++ {
		b, err := r.ReadSlice('\n')
		long := false
		for err == bufio.ErrBufferFull {
			long = true
			_, err = r.ReadSlice('\n')
		}
		b = bytes.TrimRight(b, "\r\n")
		if g.re.Match(b) {
			if long {
				b = append(b[:min(len(b), 2000):min(len(b), 2000)], " [line truncated]"...)
			}
			fmt.Fprintf(g.out, "%s:%d:%s\n", rel, line, b)
			g.matches++
			if g.matches >= g.maxResults {
				g.out.truncated = true
				g.out.note = fmt.Sprintf("\n[turnbox: stopped at max_results=%d matching lines]", g.maxResults)
				return io.EOF
			}
			if g.out.full() {
				return io.EOF
			}
		}
		if err != nil {
			return nil
		}
	}
}

// commitTemp finishes a file written as tmp in dfd: it closes f and, if
// writing went well (werr nil), renames tmp over base. On any failure tmp
// is removed and the error returned, unwrapped from *os.PathError.
func commitTemp(f *os.File, dfd int, tmp, base string, werr error) error {
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = unix.Renameat(dfd, tmp, dfd, base)
	}
	if werr != nil {
		_ = unix.Unlinkat(dfd, tmp, 0)
		var pe *os.PathError
		if errors.As(werr, &pe) {
			werr = pe.Err
		}
	}
	return werr
}
