package e2b

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	fspb "github.com/turnbox/turnbox/remote/gen/envd/filesystem"
	"github.com/turnbox/turnbox/remote/gen/envd/filesystem/filesystempbconnect"
)

// mountFilesystem registers envd's filesystem.Filesystem service on mux.
func (s *Server) mountFilesystem(mux *http.ServeMux) {
	svc := &fsService{s: s, watchers: newWatcherTable(s)}
	p, h := filesystempbconnect.NewFilesystemHandler(svc, s.connectOptions()...)
	mux.Handle(p, h)
}

// fsService implements filesystem.Filesystem over the environment.FileSystem
// of the request's sandbox, acting as the request's user: relative paths
// are relative to the user's home, and directories it makes are the
// user's.
type fsService struct {
	s        *Server
	watchers *watcherTable
}

var _ filesystempbconnect.FilesystemHandler = (*fsService)(nil)

// userFS is one request's sandbox, user and owner-name cache.
type userFS struct {
	env   *embedded.Environment
	acct  account
	names *idNames
}

// abs resolves a request path for the user (relative to the home).
func (u *userFS) abs(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("%w: path contains a NUL byte", environment.ErrInvalidArgument)
	}
	return path.Clean(resolvePath(u.acct.Home, p)), nil
}

// owner is the owner of what the user creates.
func (u *userFS) owner() environment.FileOwner {
	return environment.FileOwner{UID: u.acct.UID, GID: u.acct.GID}
}

// userFor opens the sandbox of an envd request as user name.
func (s *Server) userFor(ctx context.Context, name string) (*userFS, error) {
	env, err := s.sandbox(ctx)
	if err != nil {
		return nil, err
	}
	acct, err := lookupAccount(ctx, env, name)
	if err != nil {
		return nil, err
	}
	return &userFS{env: env, acct: acct, names: newIDNames(env)}, nil
}

// user opens the sandbox of a Connect request as the user its
// Authorization header names.
func (f *fsService) user(ctx context.Context, h http.Header) (*userFS, error) {
	name, err := requestUser(h)
	if err != nil {
		return nil, err
	}
	return f.s.userFor(ctx, name)
}

// Stat implements filesystem.Filesystem: it describes an entry without
// following a final symlink.
func (f *fsService) Stat(ctx context.Context, req *connect.Request[fspb.StatRequest]) (*connect.Response[fspb.StatResponse], error) {
	u, p, err := f.userPath(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, connectError(err)
	}
	e, err := statEntry(ctx, u.env, p, u.names)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&fspb.StatResponse{Entry: e}), nil
}

// userPath opens the request's sandbox as its user and resolves p.
func (f *fsService) userPath(ctx context.Context, h http.Header, p string) (*userFS, string, error) {
	u, err := f.user(ctx, h)
	if err != nil {
		return nil, "", err
	}
	abs, err := u.abs(p)
	return u, abs, err
}

// MakeDir implements filesystem.Filesystem: it makes the directory and
// its missing parents, each owned by the user. An existing directory is
// AlreadyExists (the SDKs' makeDir then answers false); an existing
// entry of another type is InvalidArgument.
func (f *fsService) MakeDir(ctx context.Context, req *connect.Request[fspb.MakeDirRequest]) (*connect.Response[fspb.MakeDirResponse], error) {
	u, p, err := f.userPath(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, connectError(err)
	}
	switch fi, err := u.env.Stat(ctx, p); {
	case err == nil && fi.Type == environment.TypeDir:
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("directory %s already exists", p))
	case err == nil:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s exists and is a %s: %w", p, fi.Type, errNotDir))
	case !errors.Is(err, environment.ErrFileNotFound):
		return nil, connectError(err)
	}
	if err := u.mkdirAll(ctx, p); err != nil {
		return nil, connectError(err)
	}
	e, err := statEntry(ctx, u.env, p, u.names)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&fspb.MakeDirResponse{Entry: e}), nil
}

// maxMkdirDepth bounds the components mkdirAll walks.
const maxMkdirDepth = 256

// mkdirAll makes the absolute directory p and its missing parents, each
// one it makes owned by the user (an existing directory is left as it
// is; an existing entry of another type is ErrInvalidArgument).
func (u *userFS) mkdirAll(ctx context.Context, p string) error {
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	if len(parts) > maxMkdirDepth {
		return fmt.Errorf("%w: %s: deeper than %d directories", environment.ErrInvalidArgument, p, maxMkdirDepth)
	}
	dir := "/"
	for _, part := range parts {
		if part == "" {
			continue
		}
		dir = path.Join(dir, part)
		fi, err := u.env.Stat(ctx, dir)
		if err == nil {
			// A symlink is resolved by the kernel beneath the root when
			// the next component is made.
			if fi.Type != environment.TypeDir && fi.Type != environment.TypeSymlink {
				return fmt.Errorf("%w: %s is a %s: %w", environment.ErrInvalidArgument, dir, fi.Type, errNotDir)
			}
			continue
		}
		if !errors.Is(err, environment.ErrFileNotFound) {
			return err
		}
		if err := u.env.MakeDir(ctx, dir, false); err != nil && !errors.Is(err, environment.ErrFileExists) {
			return err
		} else if err != nil {
			continue // made meanwhile by someone else: not ours to chown
		}
		if err := u.env.Chown(ctx, dir, u.owner()); err != nil {
			return err
		}
	}
	return nil
}

// Move implements filesystem.Filesystem: it renames source to
// destination, replacing an existing destination as rename(2) does.
func (f *fsService) Move(ctx context.Context, req *connect.Request[fspb.MoveRequest]) (*connect.Response[fspb.MoveResponse], error) {
	if err := needPath(req.Msg.GetSource(), req.Msg.GetDestination()); err != nil {
		return nil, err
	}
	u, src, err := f.userPath(ctx, req.Header(), req.Msg.GetSource())
	if err != nil {
		return nil, connectError(err)
	}
	dst, err := u.abs(req.Msg.GetDestination())
	if err != nil {
		return nil, connectError(err)
	}
	if err := u.env.Move(ctx, src, dst, true); err != nil {
		return nil, connectError(err)
	}
	e, err := statEntry(ctx, u.env, dst, u.names)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&fspb.MoveResponse{Entry: e}), nil
}

// ListDir implements filesystem.Filesystem: the entries of a directory,
// to depth levels (0 is 1), symlinks not followed.
func (f *fsService) ListDir(ctx context.Context, req *connect.Request[fspb.ListDirRequest]) (*connect.Response[fspb.ListDirResponse], error) {
	u, p, err := f.userPath(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, connectError(err)
	}
	depth := req.Msg.GetDepth()
	if depth > environment.MaxListDepth {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("depth %d: at most %d", depth, environment.MaxListDepth))
	}
	fis, err := u.env.ListDir(ctx, p, environment.ListOptions{Depth: max(int(depth), 1)})
	if err != nil {
		return nil, connectError(err)
	}
	out := &fspb.ListDirResponse{Entries: make([]*fspb.EntryInfo, 0, len(fis))}
	for i := range fis {
		out.Entries = append(out.Entries, entryInfo(ctx, &fis[i], u.names))
	}
	return connect.NewResponse(out), nil
}

// needPath refuses an empty path where one would name the user's home
// (Move, Remove): a missing field must not remove or move the home.
func needPath(paths ...string) error {
	for _, p := range paths {
		if p == "" {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%w: empty path", environment.ErrInvalidArgument))
		}
	}
	return nil
}

// Remove implements filesystem.Filesystem: it deletes an entry, a
// directory with all it holds (never following symlinks). As envd, a
// path that does not exist is no error.
func (f *fsService) Remove(ctx context.Context, req *connect.Request[fspb.RemoveRequest]) (*connect.Response[fspb.RemoveResponse], error) {
	if err := needPath(req.Msg.GetPath()); err != nil {
		return nil, err
	}
	u, p, err := f.userPath(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, connectError(err)
	}
	if err := u.env.Remove(ctx, p, true); err != nil && !errors.Is(err, environment.ErrFileNotFound) {
		return nil, connectError(err)
	}
	return connect.NewResponse(&fspb.RemoveResponse{}), nil
}
