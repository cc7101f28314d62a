package server

import (
	"context"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/turnbox/turnbox/embedded"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

// imagesHandler serves turnbox.v1.ImageService for the server's host.
// Methods not implemented yet answer Unimplemented.
type imagesHandler struct {
	turnboxv1connect.UnimplementedImageServiceHandler
	h handler
}

var _ turnboxv1connect.ImageServiceHandler = imagesHandler{}

// ImageServiceHandler returns the path and handler of
// turnbox.v1.ImageService, with the service's auth, limits and metrics,
// to mount on a mux.
func (s *Server) ImageServiceHandler() (string, http.Handler) {
	path, h := turnboxv1connect.NewImageServiceHandler(imagesHandler{h: handler{s: s}}, s.handlerOptions()...)
	return path, s.rpcHTTP(h)
}

// pullProgressEvery is the least time between two progress messages of
// PullImage.
const pullProgressEvery = 100 * time.Millisecond

// ListImages implements turnboxv1connect.ImageServiceHandler.
func (i imagesHandler) ListImages(ctx context.Context, r *connect.Request[turnboxv1.ListImagesRequest]) (*connect.Response[turnboxv1.ListImagesResponse], error) {
	return unary(ctx, r, func(ctx context.Context, _ *turnboxv1.ListImagesRequest) (*turnboxv1.ListImagesResponse, error) {
		all, err := i.h.s.host.Images(ctx)
		if err != nil {
			return nil, err
		}
		out := &turnboxv1.ListImagesResponse{Images: make([]*turnboxv1.Image, 0, len(all))}
		for _, m := range all {
			out.Images = append(out.Images, imageToProto(m))
		}
		return out, nil
	})
}

// GetImage implements turnboxv1connect.ImageServiceHandler.
func (i imagesHandler) GetImage(ctx context.Context, r *connect.Request[turnboxv1.GetImageRequest]) (*connect.Response[turnboxv1.GetImageResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.GetImageRequest) (*turnboxv1.GetImageResponse, error) {
		m, err := i.h.s.host.Image(ctx, req.GetName())
		if err != nil {
			return nil, err
		}
		return &turnboxv1.GetImageResponse{Image: imageToProto(m)}, nil
	})
}

// PullImage streams the pull's progress, at most every
// pullProgressEvery, then a last message with the image. A client that
// goes away cancels the pull, which then leaves nothing. The server's
// request duration bounds it.
func (i imagesHandler) PullImage(ctx context.Context, r *connect.Request[turnboxv1.PullImageRequest], stream *connect.ServerStream[turnboxv1.PullImageResponse]) error {
	req := r.Msg
	if _, err := embedded.PullName(req.GetReference(), req.GetName()); err != nil {
		return wire.ToConnectError(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu          sync.Mutex
		done, total int64
		changed     bool
	)
	progress := func(d, t int64) {
		mu.Lock()
		done, total, changed = d, t, true
		mu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(pullProgressEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			mu.Lock()
			msg := &turnboxv1.PullImageResponse{DoneBytes: done, TotalBytes: total}
			send := changed
			changed = false
			mu.Unlock()
			if send && stream.Send(msg) != nil {
				cancel() // the client is gone: abort the pull
				return
			}
		}
	})
	m, err := i.h.s.host.PullImage(ctx, req.GetReference(), embedded.PullImageOptions{
		Name: req.GetName(), Platform: req.GetPlatform(), Insecure: req.GetInsecure(), Replace: req.GetReplace(), Progress: progress,
	})
	close(stop)
	wg.Wait()
	if err != nil {
		return wire.ToConnectError(err)
	}
	mu.Lock()
	last := &turnboxv1.PullImageResponse{DoneBytes: done, TotalBytes: total, Image: imageToProto(m)}
	mu.Unlock()
	return stream.Send(last)
}

// RemoveImage implements turnboxv1connect.ImageServiceHandler.
func (i imagesHandler) RemoveImage(ctx context.Context, r *connect.Request[turnboxv1.RemoveImageRequest]) (*connect.Response[turnboxv1.RemoveImageResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.RemoveImageRequest) (*turnboxv1.RemoveImageResponse, error) {
		if _, err := i.h.s.host.RemoveImage(ctx, req.GetName()); err != nil {
			return nil, err
		}
		return &turnboxv1.RemoveImageResponse{}, nil
	})
}

// PruneImages implements turnboxv1connect.ImageServiceHandler.
func (i imagesHandler) PruneImages(ctx context.Context, r *connect.Request[turnboxv1.PruneImagesRequest]) (*connect.Response[turnboxv1.PruneImagesResponse], error) {
	return unary(ctx, r, func(ctx context.Context, _ *turnboxv1.PruneImagesRequest) (*turnboxv1.PruneImagesResponse, error) {
		rep, err := i.h.s.host.PruneImages(ctx)
		if err != nil {
			return nil, err
		}
		return &turnboxv1.PruneImagesResponse{Removed: rep.Removed, FreedBytes: rep.FreedBytes}, nil
	})
}

// imageToProto is an image on the wire.
func imageToProto(m embedded.ImageInfo) *turnboxv1.Image {
	c := m.Config
	return &turnboxv1.Image{
		Name: m.Name, Source: m.Source, Digest: m.Digest, Created: timestamppb.New(m.Created), SizeBytes: m.SizeBytes,
		Platform: m.Platform,
		Config:   &turnboxv1.ImageConfig{Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, Entrypoint: c.Entrypoint, Cmd: c.Cmd},
	}
}
