package embedded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/environment"
)

// upload implements Upload on the session: a temporary file beside the
// target, written from r through a bounded buffer, then renamed over it.
// On localdisk, whose quota the host keeps, the bytes written are counted
// against the room left; on btrfs and zfs the kernel's EDQUOT or ENOSPC
// ends it. Any failure removes the temporary file.
func (s *session) upload(ctx context.Context, p string, r io.Reader, opts environment.UploadOptions) (*environment.FileInfo, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	rel, err := s.resolveSandboxPath(p)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, fmt.Errorf("%w: upload of %s: nil reader", environment.ErrInvalidArgument, p)
	}
	// Destroy and shutdown end the upload.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.life, cancel)()
	room, err := s.uploadRoom(ctx)
	if err != nil {
		return nil, err
	}
	var fi environment.FileInfo
	err = s.fileOp(func(root int) (err error) {
		fi, err = writeBeneath(ctx, root, rel, p, r, opts, room)
		return err
	})
	if _, recorded := s.quotaRecorded(); recorded {
		if _, merr := s.measure(context.WithoutCancel(ctx)); merr != nil {
			s.deps.log.Error("measuring the workspace for its quota", "session", s.id, "err", merr)
		}
	}
	if err != nil {
		if errors.Is(err, environment.ErrLimitExceeded) {
			s.deps.metrics.quotaExceeded.Inc()
		}
		return nil, fileErr(p, err)
	}
	return &fi, nil
}

// writeBeneath writes the file rel names beneath root (making its
// parent directories) through writeTempAndRename; display is its name in
// errors.
func writeBeneath(ctx context.Context, root int, rel, display string, r io.Reader, opts environment.UploadOptions, room int64) (environment.FileInfo, error) {
	dir, base := path.Split(path.Clean(rel))
	if base == "." || base == ".." || base == "" {
		return environment.FileInfo{}, fmt.Errorf("%w: %q names the workspace itself", environment.ErrInvalidArgument, display)
	}
	dfd, err := mkdirAllBeneath(root, path.Clean("./"+dir))
	if err != nil {
		return environment.FileInfo{}, err
	}
	defer unix.Close(dfd)
	return writeTempAndRename(ctx, dfd, base, display, r, opts, room)
}

// uploadRoom is how many bytes an upload may add under a quota the host
// keeps itself (-1: no bound of the host's; the kernel's applies).
func (s *session) uploadRoom(ctx context.Context) (int64, error) {
	limit, ok := s.quotaRecorded()
	if !ok {
		return -1, nil
	}
	s.mu.Lock()
	used, over, checked := s.quota.used, s.quota.over, s.quota.checked
	s.mu.Unlock()
	if !checked {
		q, err := s.measure(ctx)
		if err != nil {
			return 0, fmt.Errorf("embedded: measuring the workspace of %s: %w", s.id, err)
		}
		used, over = q.UsedBytes, q.UsedBytes > limit
	}
	if over {
		s.deps.metrics.quotaExceeded.Inc()
		return 0, s.overQuotaError(used, limit)
	}
	return limit - used, nil
}

// writeTempAndRename streams r into a new temporary file in dfd and
// renames it to base, with opts' mode and owner. room >= 0 bounds the
// bytes written.
func writeTempAndRename(ctx context.Context, dfd int, base, display string, r io.Reader, opts environment.UploadOptions, room int64) (environment.FileInfo, error) {
	mode := opts.Mode
	perm := uint32(mode.Perm())
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		switch {
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			return environment.FileInfo{}, fmt.Errorf("%w: %s is a directory", environment.ErrInvalidArgument, display)
		case perm == 0 && st.Mode&unix.S_IFMT == unix.S_IFREG:
			perm = st.Mode & 0o777
		}
	}
	if perm == 0 && mode == 0 {
		perm = 0o644
	}
	tmp := tempName(base)
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return environment.FileInfo{}, err
	}
	f := os.NewFile(uintptr(fd), tmp)
	werr := copyBounded(ctx, f, r, room, display)
	if werr == nil && opts.Owner != nil {
		// Before the chmod: a chown clears setuid and setgid bits.
		werr = f.Chown(int(opts.Owner.UID), int(opts.Owner.GID))
	}
	if werr == nil {
		werr = f.Chmod(fs.FileMode(perm))
	}
	var fi environment.FileInfo
	if werr == nil {
		fi, werr = infoAt(fd, "", display)
	}
	if werr = commitTemp(f, dfd, tmp, base, werr); werr != nil {
		return environment.FileInfo{}, werr
	}
	return fi, nil
}

// copyBounded copies r to f through one bounded buffer (or r's own
// WriteTo, which spares a copy), checking ctx between writes and failing
// with ErrLimitExceeded past room (if >= 0).
func copyBounded(ctx context.Context, f *os.File, r io.Reader, room int64, display string) error {
	w := &boundedWriter{ctx: ctx, f: f, room: room, display: display}
	_, err := io.CopyBuffer(w, r, make([]byte, uploadBufBytes))
	if err != nil && !errors.Is(err, environment.ErrLimitExceeded) && w.werr == nil && ctx.Err() == nil {
		return fmt.Errorf("upload of %s: reading the content: %w", display, err)
	}
	return err
}

// boundedWriter writes an upload's bytes to its temporary file.
type boundedWriter struct {
	ctx     context.Context
	f       *os.File
	room    int64 // bytes allowed (< 0: no bound of the host's)
	written int64
	display string
	werr    error // the file's own write error
}

// Write implements io.Writer.
func (w *boundedWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, fmt.Errorf("upload of %s: %w", w.display, context.Cause(w.ctx))
	}
	w.written += int64(len(p))
	if w.room >= 0 && w.written > w.room {
		return 0, fmt.Errorf("%w: upload of %s: more than the %d bytes left under the session's disk quota", environment.ErrLimitExceeded, w.display, w.room)
	}
	n, err := w.f.Write(p)
	w.werr = err
	return n, err
}
