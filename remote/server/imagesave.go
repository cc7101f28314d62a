package server

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

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

// imageToProto converts an image's record. (The client package cannot
// share it: it must not link the host's image code.)
func imageToProto(m embedded.ImageInfo) *turnboxv1.Image {
	out := &turnboxv1.Image{
		Name: m.Name, Source: m.Source, Digest: m.Digest, SizeBytes: m.SizeBytes, Platform: m.Platform,
		Config: &turnboxv1.ImageConfig{
			Env: m.Config.Env, WorkingDir: m.Config.WorkingDir, User: m.Config.User,
			Entrypoint: m.Config.Entrypoint, Cmd: m.Config.Cmd,
		},
	}
	if !m.Created.IsZero() {
		out.Created = timestamppb.New(m.Created)
	}
	return out
}
