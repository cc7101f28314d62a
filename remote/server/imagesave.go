package server

import (
	"context"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/embedded"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// SaveImage implements turnboxv1connect.ImageServiceHandler.
func (i imagesHandler) SaveImage(ctx context.Context, r *connect.Request[turnboxv1.SaveImageRequest]) (*connect.Response[turnboxv1.SaveImageResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.SaveImageRequest) (*turnboxv1.SaveImageResponse, error) {
		m, err := i.h.s.host.SaveImage(ctx, req.GetSessionId(), req.GetName(),
			embedded.SaveImageOptions{Snapshot: req.GetSnapshotId(), Replace: req.GetReplace()})
		if err != nil {
			return nil, err
		}
		return &turnboxv1.SaveImageResponse{Image: imageToProto(m)}, nil
	})
}
