package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

// Paths and headers of the upload and download streams (files.proto;
// remote/server serves them).
const (
	uploadPath      = "/" + turnboxv1connect.FilesServiceName + "/Upload"
	downloadPath    = "/" + turnboxv1connect.FilesServiceName + "/Download"
	fileInfoHeader  = "Turnbox-File-Info"
	errorInfoHeader = "Turnbox-Error-Info"
)

// filesProvider is implemented by the clients NewClient returns.
type filesProvider interface{ filesClient() *filesClient }

func (c *serviceClient) filesClient() *filesClient { return c.files }

// filesClient reaches a server's FilesService and its upload and
// download streams.
type filesClient struct {
	rpc  turnboxv1connect.FilesServiceClient
	http connect.HTTPClient // with the bearer token
	base string
}

var _ environment.FileSystem = (*NativeSandboxEnvironment)(nil)

// files returns the bound session's id and the file API's client:
// ErrCapabilityNotSupported when the environment's service client was not
// made by NewClient.
func (e *NativeSandboxEnvironment) files() (string, *filesClient, error) {
	id, err := e.bound()
	if err != nil {
		return "", nil, err
	}
	fp, ok := e.service.(filesProvider)
	if !ok || fp.filesClient() == nil {
		return "", nil, fmt.Errorf("%w: the file API needs a service client made by remote.NewClient", environment.ErrCapabilityNotSupported)
	}
	return id, fp.filesClient(), nil
}

// hasFiles reports whether the environment's client can reach the file
// API.
func (e *NativeSandboxEnvironment) hasFiles() bool {
	fp, ok := e.service.(filesProvider)
	return ok && fp.filesClient() != nil
}

// Stat implements environment.FileSystem.
func (e *NativeSandboxEnvironment) Stat(ctx context.Context, path string) (*environment.FileInfo, error) {
	id, fc, err := e.files()
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, "Stat", fc.rpc.Stat, &turnboxv1.StatRequest{SessionId: id, Path: path})
	if err != nil {
		return nil, err
	}
	fi := wire.FileInfoFromProto(resp.GetInfo())
	return &fi, nil
}

// ListDir implements environment.FileSystem.
func (e *NativeSandboxEnvironment) ListDir(ctx context.Context, path string, opts environment.ListOptions) ([]environment.FileInfo, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	id, fc, err := e.files()
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, "ListDir", fc.rpc.ListDir, &turnboxv1.ListDirRequest{SessionId: id, Path: path, Depth: int32(opts.Depth)})
	if err != nil {
		return nil, err
	}
	out := make([]environment.FileInfo, len(resp.GetEntries()))
	for i, p := range resp.GetEntries() {
		out[i] = wire.FileInfoFromProto(p)
	}
	return out, nil
}

// MakeDir implements environment.FileSystem.
func (e *NativeSandboxEnvironment) MakeDir(ctx context.Context, path string, parents bool) error {
	id, fc, err := e.files()
	if err != nil {
		return err
	}
	_, err = call(ctx, "MakeDir", fc.rpc.MakeDir, &turnboxv1.MakeDirRequest{SessionId: id, Path: path, Parents: parents})
	return err
}

// Move implements environment.FileSystem.
func (e *NativeSandboxEnvironment) Move(ctx context.Context, src, dst string, overwrite bool) error {
	id, fc, err := e.files()
	if err != nil {
		return err
	}
	_, err = call(ctx, "Move", fc.rpc.Move, &turnboxv1.MoveRequest{SessionId: id, Src: src, Dst: dst, Overwrite: overwrite})
	return err
}

// Remove implements environment.FileSystem.
func (e *NativeSandboxEnvironment) Remove(ctx context.Context, path string, recursive bool) error {
	id, fc, err := e.files()
	if err != nil {
		return err
	}
	_, err = call(ctx, "Remove", fc.rpc.Remove, &turnboxv1.RemoveRequest{SessionId: id, Path: path, Recursive: recursive})
	return err
}

// Upload implements environment.FileSystem: one HTTP PUT streaming r (one
// round trip; never retried, since r cannot be replayed).
func (e *NativeSandboxEnvironment) Upload(ctx context.Context, path string, r io.Reader, opts environment.UploadOptions) (*environment.FileInfo, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if r == nil {
		return nil, fmt.Errorf("%w: upload of %s: nil reader", environment.ErrInvalidArgument, path)
	}
	id, fc, err := e.files()
	if err != nil {
		return nil, err
	}
	q := url.Values{"session": {id}, "path": {path}}
	if opts.Mode != 0 {
		q.Set("mode", strconv.FormatUint(uint64(opts.Mode.Perm()), 8))
	}
	if opts.Owner != nil {
		q.Set("owner", fmt.Sprintf("%d:%d", opts.Owner.UID, opts.Owner.GID))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, fc.base+uploadPath+"?"+q.Encode(), io.NopCloser(r))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := fc.do(ctx, "Upload", req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("Upload: reading the answer: %w", err)
	}
	var p turnboxv1.FileInfo
	if err := protojson.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("Upload: the server's answer: %w", err)
	}
	fi := wire.FileInfoFromProto(&p)
	return &fi, nil
}

// Download implements environment.FileSystem: one HTTP GET whose body is
// the returned reader. ctx bounds the whole download, reading included.
// A file the server could not send whole ends the reader with an error
// (io.ErrUnexpectedEOF), never a short EOF.
func (e *NativeSandboxEnvironment) Download(ctx context.Context, path string) (io.ReadCloser, *environment.FileInfo, error) {
	id, fc, err := e.files()
	if err != nil {
		return nil, nil, err
	}
	q := url.Values{"session": {id}, "path": {path}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fc.base+downloadPath+"?"+q.Encode(), nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := fc.do(ctx, "Download", req)
	if err != nil {
		return nil, nil, err
	}
	var p turnboxv1.FileInfo
	if err := protojson.Unmarshal([]byte(resp.Header.Get(fileInfoHeader)), &p); err != nil {
		resp.Body.Close()
		return nil, nil, fmt.Errorf("Download: the server's file info: %w", err)
	}
	fi := wire.FileInfoFromProto(&p)
	if resp.ContentLength != fi.Size {
		resp.Body.Close()
		return nil, nil, fmt.Errorf("Download: the server announced %d bytes for a file of %d", resp.ContentLength, fi.Size)
	}
	return resp.Body, &fi, nil
}

// do sends an upload or download request and turns a failure into an
// error matching the sentinels the server named.
func (fc *filesClient) do(ctx context.Context, op string, req *http.Request) (*http.Response, error) {
	resp, err := fc.http.Do(req)
	if err != nil {
		return nil, fromConnectError(ctx, op, connect.NewError(connect.CodeUnavailable, err))
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	ce := connect.NewError(wire.CodeOfHTTPStatus(resp.StatusCode), errors.New(strings.TrimSpace(string(msg))))
	var info turnboxv1.ErrorInfo
	if h := resp.Header.Get(errorInfoHeader); h != "" && protojson.Unmarshal([]byte(h), &info) == nil {
		if d, err := connect.NewErrorDetail(&info); err == nil {
			ce.AddDetail(d)
		}
	}
	return nil, fromConnectError(ctx, op, ce)
}

// remoteWatch is a watch running on the server, read from its stream.
type remoteWatch struct {
	events chan environment.FileEvent
	cancel context.CancelFunc
	done   chan struct{} // closed once err is set
	err    error
}

// WatchDir implements environment.FileSystem. It returns once the server
// has the watch in place (the stream's opening message), so changes made
// after it returns are seen.
func (e *NativeSandboxEnvironment) WatchDir(ctx context.Context, path string, opts environment.WatchOptions) (environment.Watcher, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	id, fc, err := e.files()
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := fc.rpc.Watch(sctx, connect.NewRequest(&turnboxv1.WatchRequest{SessionId: id, Path: path, Recursive: opts.Recursive, QueueSize: int32(opts.QueueSize)}))
	if err == nil && !stream.Receive() {
		err = stream.Err()
		if err == nil {
			err = fmt.Errorf("%w: the server ended the watch before it started", environment.ErrWatchEnded)
		}
	}
	if err != nil {
		cancel()
		return nil, fromConnectError(ctx, "Watch", err)
	}
	w := &remoteWatch{events: make(chan environment.FileEvent, max(opts.QueueSize, environment.DefaultWatchQueue)), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.events)
		defer close(w.done)
		defer stream.Close()
		for stream.Receive() {
			if ev, ok := wire.FileEventFromProto(stream.Msg()); ok {
				select {
				case w.events <- ev:
				case <-sctx.Done():
				}
			}
		}
		switch err := stream.Err(); {
		case sctx.Err() != nil:
			w.err = fmt.Errorf("%w: %w", environment.ErrWatchEnded, context.Cause(sctx))
			if ctx.Err() != nil {
				w.err = context.Cause(ctx)
			}
		case err == nil:
			w.err = fmt.Errorf("%w: the server ended the watch", environment.ErrWatchEnded)
		default:
			w.err = fromConnectError(sctx, "Watch", err)
		}
	}()
	return w, nil
}

// Events implements environment.Watcher.
func (w *remoteWatch) Events() <-chan environment.FileEvent { return w.events }

// Err implements environment.Watcher (read it after Events is closed).
func (w *remoteWatch) Err() error {
	select {
	case <-w.done:
		return w.err
	default:
		return nil
	}
}

// Close implements environment.Watcher.
func (w *remoteWatch) Close() error {
	w.cancel()
	return nil
}
