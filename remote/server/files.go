package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

// File API paths served as plain HTTP streams beside FilesService (see
// files.proto).
const (
	// UploadPath takes PUT ?session=ID&path=P[&mode=0644][&owner=UID:GID] with the bytes.
	UploadPath = "/" + turnboxv1connect.FilesServiceName + "/Upload"
	// DownloadPath takes GET ?session=ID&path=P and answers the bytes.
	DownloadPath = "/" + turnboxv1connect.FilesServiceName + "/Download"
	// FileInfoHeader carries a download's FileInfo (protojson).
	FileInfoHeader = "Turnbox-File-Info"
	// ErrorInfoHeader carries a failed upload's or download's ErrorInfo
	// (protojson).
	ErrorInfoHeader = "Turnbox-Error-Info"
)

// filesHandler implements FilesService over the server's host.
type filesHandler struct{ h handler }

var _ turnboxv1connect.FilesServiceHandler = filesHandler{}

// fs returns the FileSystem of session id.
func (f filesHandler) fs(id string) (environment.FileSystem, error) {
	return f.h.session(id)
}

// FilesHandler returns the path and handler of turnbox.v1.FilesService
// and of the upload and download streams under it, with the service's
// auth, limits and metrics, to mount on a mux.
func (s *Server) FilesHandler() (string, http.Handler) {
	path, rpc := turnboxv1connect.NewFilesServiceHandler(filesHandler{h: handler{s: s}}, s.handlerOptions()...)
	mux := http.NewServeMux()
	mux.Handle(path, s.rpcHTTP(rpc))
	mux.Handle("PUT "+UploadPath, s.fileStream(UploadPath, s.serveUpload))
	mux.Handle("GET "+DownloadPath, s.fileStream(DownloadPath, s.serveDownload))
	return path, mux
}

// Stat implements turnboxv1connect.FilesServiceHandler.
func (f filesHandler) Stat(ctx context.Context, r *connect.Request[turnboxv1.StatRequest]) (*connect.Response[turnboxv1.StatResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.StatRequest) (*turnboxv1.StatResponse, error) {
		fsys, err := f.fs(req.GetSessionId())
		if err != nil {
			return nil, err
		}
		fi, err := fsys.Stat(ctx, req.GetPath())
		if err != nil {
			return nil, err
		}
		return &turnboxv1.StatResponse{Info: wire.FileInfoToProto(*fi)}, nil
	})
}

// ListDir implements turnboxv1connect.FilesServiceHandler.
func (f filesHandler) ListDir(ctx context.Context, r *connect.Request[turnboxv1.ListDirRequest]) (*connect.Response[turnboxv1.ListDirResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.ListDirRequest) (*turnboxv1.ListDirResponse, error) {
		fsys, err := f.fs(req.GetSessionId())
		if err != nil {
			return nil, err
		}
		list, err := fsys.ListDir(ctx, req.GetPath(), environment.ListOptions{Depth: int(req.GetDepth())})
		if err != nil {
			return nil, err
		}
		out := &turnboxv1.ListDirResponse{Entries: make([]*turnboxv1.FileInfo, len(list))}
		for i, fi := range list {
			out.Entries[i] = wire.FileInfoToProto(fi)
		}
		return out, nil
	})
}

// MakeDir implements turnboxv1connect.FilesServiceHandler.
func (f filesHandler) MakeDir(ctx context.Context, r *connect.Request[turnboxv1.MakeDirRequest]) (*connect.Response[turnboxv1.MakeDirResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.MakeDirRequest) (*turnboxv1.MakeDirResponse, error) {
		fsys, err := f.fs(req.GetSessionId())
		if err != nil {
			return nil, err
		}
		return &turnboxv1.MakeDirResponse{}, fsys.MakeDir(ctx, req.GetPath(), req.GetParents())
	})
}

// Move implements turnboxv1connect.FilesServiceHandler.
func (f filesHandler) Move(ctx context.Context, r *connect.Request[turnboxv1.MoveRequest]) (*connect.Response[turnboxv1.MoveResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.MoveRequest) (*turnboxv1.MoveResponse, error) {
		fsys, err := f.fs(req.GetSessionId())
		if err != nil {
			return nil, err
		}
		return &turnboxv1.MoveResponse{}, fsys.Move(ctx, req.GetSrc(), req.GetDst(), req.GetOverwrite())
	})
}

// Remove implements turnboxv1connect.FilesServiceHandler.
func (f filesHandler) Remove(ctx context.Context, r *connect.Request[turnboxv1.RemoveRequest]) (*connect.Response[turnboxv1.RemoveResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.RemoveRequest) (*turnboxv1.RemoveResponse, error) {
		fsys, err := f.fs(req.GetSessionId())
		if err != nil {
			return nil, err
		}
		return &turnboxv1.RemoveResponse{}, fsys.Remove(ctx, req.GetPath(), req.GetRecursive())
	})
}

// Watch implements turnboxv1connect.FilesServiceHandler: an opening
// message once the watch is in place, then one message per event; the
// stream ends with the watch's reason (a canceled call ends quietly).
func (f filesHandler) Watch(ctx context.Context, r *connect.Request[turnboxv1.WatchRequest], stream *connect.ServerStream[turnboxv1.WatchResponse]) error {
	fsys, err := f.fs(r.Msg.GetSessionId())
	if err != nil {
		return wire.ToConnectError(err)
	}
	w, err := fsys.WatchDir(ctx, r.Msg.GetPath(), environment.WatchOptions{Recursive: r.Msg.GetRecursive(), QueueSize: int(r.Msg.GetQueueSize())})
	if err != nil {
		return wire.ToConnectError(err)
	}
	defer w.Close()
	if err := stream.Send(&turnboxv1.WatchResponse{}); err != nil {
		return err
	}
	for ev := range w.Events() {
		if err := stream.Send(wire.FileEventToProto(ev)); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return wire.ToConnectError(w.Err())
}

// fileStream wraps an upload or download handler with the service's auth,
// request deadline and metrics. fn returns the call's error, which it has
// not answered yet (nil once it answered).
func (s *Server) fileStream(procedure string, fn func(context.Context, http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.inflight.Inc()
		defer s.inflight.Dec()
		i := &interceptor{s: s}
		ctx, cancel, err := i.begin(r.Context(), r.Header)
		defer cancel()
		if err == nil {
			err = func() (err error) {
				defer func() {
					if p := recover(); p != nil {
						if p == http.ErrAbortHandler {
							panic(p)
						}
						err = s.recovered(ctx, connect.Spec{Procedure: procedure}, nil, p)
					}
				}()
				return fn(ctx, w, r)
			}()
		}
		if err != nil {
			err = wire.ToConnectError(err)
			writeStreamError(w, err)
		}
		i.done(procedure, start, err)
	})
}

// writeStreamError answers a failed upload or download: the HTTP status of
// its Connect code, the ErrorInfo in a header, the message as the body.
func writeStreamError(w http.ResponseWriter, err error) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		ce = connect.NewError(connect.CodeUnknown, err)
	}
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if info, ok := v.(*turnboxv1.ErrorInfo); ok {
				if b, merr := protojson.Marshal(info); merr == nil {
					w.Header().Set(ErrorInfoHeader, string(b))
				}
			}
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(wire.HTTPStatus(ce.Code()))
	_, _ = io.WriteString(w, ce.Message())
}

// fileArgs reads a stream's session and path.
func fileArgs(r *http.Request) (session, path string, err error) {
	q := r.URL.Query()
	session, path = q.Get("session"), q.Get("path")
	if session == "" || path == "" {
		return "", "", fmt.Errorf("%w: the session and path query parameters are required", environment.ErrInvalidArgument)
	}
	return session, path, nil
}

// parseOwner parses an upload's owner "uid:gid" (decimal numbers).
func parseOwner(s string) (environment.FileOwner, error) {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.ParseUint(u, 10, 32)
	gid, err2 := strconv.ParseUint(g, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return environment.FileOwner{}, fmt.Errorf("%w: owner %q: want uid:gid", environment.ErrInvalidArgument, s)
	}
	return environment.FileOwner{UID: uint32(uid), GID: uint32(gid)}, nil
}

// serveUpload streams the request body into a file of the session.
func (s *Server) serveUpload(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	id, p, err := fileArgs(r)
	if err != nil {
		return err
	}
	var opts environment.UploadOptions
	if m := r.URL.Query().Get("mode"); m != "" {
		n, err := strconv.ParseUint(m, 8, 32)
		if err != nil {
			return fmt.Errorf("%w: mode %q: want octal permission bits", environment.ErrInvalidArgument, m)
		}
		opts.Mode = iofs.FileMode(n)
	}
	if o := r.URL.Query().Get("owner"); o != "" {
		owner, err := parseOwner(o)
		if err != nil {
			return err
		}
		opts.Owner = &owner
	}
	fsys, err := filesHandler{h: handler{s: s}}.fs(id)
	if err != nil {
		return err
	}
	fi, err := fsys.Upload(ctx, p, r.Body, opts)
	if err != nil {
		return err
	}
	b, err := protojson.Marshal(wire.FileInfoToProto(*fi))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
	return nil
}

// serveDownload streams a file of the session: exactly the size it had
// when opened (a file cut short meanwhile aborts the response, which the
// client sees as an unexpected end).
func (s *Server) serveDownload(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	id, p, err := fileArgs(r)
	if err != nil {
		return err
	}
	fsys, err := filesHandler{h: handler{s: s}}.fs(id)
	if err != nil {
		return err
	}
	rc, fi, err := fsys.Download(ctx, p)
	if err != nil {
		return err
	}
	defer rc.Close()
	info, err := protojson.Marshal(wire.FileInfoToProto(*fi))
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set(FileInfoHeader, strings.ReplaceAll(string(info), "\n", ""))
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(fi.Size, 10))
	w.WriteHeader(http.StatusOK)
	stop := context.AfterFunc(ctx, func() { rc.Close() })
	defer stop()
	if _, err := io.CopyN(w, rc, fi.Size); err != nil {
		s.log.Debug("turnbox download cut short", "session", id, "err", err)
		panic(http.ErrAbortHandler) // the client must not take a short file for a whole one
	}
	return nil
}
