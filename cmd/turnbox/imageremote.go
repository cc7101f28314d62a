package main

import (
	"context"
	"errors"
	"io"
	"net/http"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
)

// The image commands in both modes: on the state directory's store (no
// host, but for prune), or through the server's ImageService.

// imageClient returns the ImageService client of --server, or nil in
// local mode; done releases its connections.
func (c *cli) imageClient() (turnboxv1connect.ImageServiceClient, func(), error) {
	u := c.t.url()
	if u == "" {
		return nil, func() {}, nil
	}
	tok, err := c.t.bearer()
	if err != nil {
		return nil, nil, err
	}
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	return remote.NewImageClient(u, remote.WithBearerToken(tok), remote.WithHTTPClient(hc)), hc.CloseIdleConnections, nil
}

// listImages lists the images of the target.
func (c *cli) listImages(ctx context.Context) ([]embedded.ImageInfo, error) {
	ic, done, err := c.imageClient()
	if err != nil {
		return nil, err
	}
	defer done()
	if ic == nil {
		return c.g.imageStore().List()
	}
	resp, err := ic.ListImages(ctx, connect.NewRequest(&turnboxv1.ListImagesRequest{}))
	if err != nil {
		return nil, err
	}
	out := []embedded.ImageInfo{}
	for _, m := range resp.Msg.GetImages() {
		out = append(out, imageFromProto(m))
	}
	return out, nil
}

// pullImage pulls an image into the target's store; opts.Progress
// follows the server's progress messages in remote mode.
func (c *cli) pullImage(ctx context.Context, ref string, opts embedded.PullImageOptions) (embedded.ImageInfo, error) {
	ic, done, err := c.imageClient()
	if err != nil {
		return embedded.ImageInfo{}, err
	}
	defer done()
	if ic == nil {
		return c.g.imageStore().Pull(ctx, ref, opts)
	}
	stream, err := ic.PullImage(ctx, connect.NewRequest(&turnboxv1.PullImageRequest{
		Reference: ref, Name: opts.Name, Platform: opts.Platform, Insecure: opts.Insecure, Replace: opts.Replace,
	}))
	if err != nil {
		return embedded.ImageInfo{}, err
	}
	defer stream.Close()
	for stream.Receive() {
		msg := stream.Msg()
		if opts.Progress != nil {
			opts.Progress(msg.GetDoneBytes(), msg.GetTotalBytes())
		}
		if msg.GetImage() != nil {
			return imageFromProto(msg.GetImage()), nil
		}
	}
	if err := stream.Err(); err != nil {
		return embedded.ImageInfo{}, err
	}
	return embedded.ImageInfo{}, errors.New("pull: the server ended the stream without the image: " + io.ErrUnexpectedEOF.Error())
}

// removeImage removes an image of the target and returns its record.
func (c *cli) removeImage(ctx context.Context, name string) (embedded.ImageInfo, error) {
	ic, done, err := c.imageClient()
	if err != nil {
		return embedded.ImageInfo{}, err
	}
	defer done()
	if ic == nil {
		return c.g.removeImageLocal(name)
	}
	got, err := ic.GetImage(ctx, connect.NewRequest(&turnboxv1.GetImageRequest{Name: name}))
	if err != nil {
		return embedded.ImageInfo{}, err
	}
	if _, err := ic.RemoveImage(ctx, connect.NewRequest(&turnboxv1.RemoveImageRequest{Name: name})); err != nil {
		return embedded.ImageInfo{}, err
	}
	return imageFromProto(got.Msg.GetImage()), nil
}

// pruneImages prunes the target's images.
func (c *cli) pruneImages(ctx context.Context) (pruneView, error) {
	ic, done, err := c.imageClient()
	if err != nil {
		return pruneView{}, err
	}
	defer done()
	if ic == nil {
		return c.g.pruneImagesLocal(ctx)
	}
	resp, err := ic.PruneImages(ctx, connect.NewRequest(&turnboxv1.PruneImagesRequest{}))
	if err != nil {
		return pruneView{}, err
	}
	return pruneView{Removed: append([]string{}, resp.Msg.GetRemoved()...), FreedBytes: resp.Msg.GetFreedBytes()}, nil
}

// imageFromProto is an image from the wire, as the local store
// describes one.
func imageFromProto(m *turnboxv1.Image) embedded.ImageInfo {
	c := m.GetConfig()
	return embedded.ImageInfo{
		Name: m.GetName(), Source: m.GetSource(), Digest: m.GetDigest(), Created: m.GetCreated().AsTime(),
		SizeBytes: m.GetSizeBytes(), Platform: m.GetPlatform(),
		Config: rootfs.ImageConfig{Env: c.GetEnv(), WorkingDir: c.GetWorkingDir(), User: c.GetUser(), Entrypoint: c.GetEntrypoint(), Cmd: c.GetCmd()},
	}
}
