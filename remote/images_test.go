package remote_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/regtest"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/server"
)

// reasons returns the Connect code of err and the reasons of its
// ErrorInfo detail.
func reasons(err error) (connect.Code, []turnboxv1.ErrorReason) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return connect.CodeOf(err), nil
	}
	var out []turnboxv1.ErrorReason
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if info, ok := v.(*turnboxv1.ErrorInfo); ok {
				out = append(out, info.GetReasons()...)
			}
		}
	}
	return ce.Code(), out
}

// pullAll runs PullImage to its end and returns the messages.
func pullAll(ctx context.Context, c turnboxv1connect.ImageServiceClient, req *turnboxv1.PullImageRequest) ([]*turnboxv1.PullImageResponse, error) {
	stream, err := c.PullImage(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var msgs []*turnboxv1.PullImageResponse
	for stream.Receive() {
		msgs = append(msgs, stream.Msg())
	}
	return msgs, stream.Err()
}

// Every ImageService call through NewImageClient: pull (progress, then
// the image), list, get, remove, prune; unknown images are NotFound
// (IMAGE_NOT_FOUND), an image others name as parent FailedPrecondition
// (IMAGE_IN_USE), a bad reference InvalidArgument; errors.Is finds the
// sentinels on the client side.
func TestImageService(t *testing.T) {
	reg := regtest.Start(t)
	ref := reg + "/org/tool:1"
	digest := regtest.Push(t, ref, regtest.Random(t, 1<<20, 3))
	host := newHost(t)
	srv := startServer(t, host, "", server.WithAuthTokens(testToken))
	c := remote.NewImageClient(srv.URL, remote.WithBearerToken(testToken))
	ctx := context.Background()

	msgs, err := pullAll(ctx, c, &turnboxv1.PullImageRequest{Reference: ref, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	last := msgs[len(msgs)-1]
	if img := last.GetImage(); img.GetName() != "tool" || img.GetDigest() != digest || img.GetSizeBytes() <= 0 || img.GetSource() != "pull:"+ref {
		t.Fatalf("last pull message: %v", last)
	}
	if last.GetTotalBytes() <= 0 || last.GetDoneBytes() != last.GetTotalBytes() {
		t.Errorf("last message's progress: %d of %d", last.GetDoneBytes(), last.GetTotalBytes())
	}
	for _, m := range msgs[:len(msgs)-1] {
		if m.GetImage() != nil {
			t.Errorf("an image before the last message: %v", m)
		}
	}

	list, err := c.ListImages(ctx, connect.NewRequest(&turnboxv1.ListImagesRequest{}))
	if err != nil || len(list.Msg.GetImages()) != 1 || list.Msg.GetImages()[0].GetDigest() != digest {
		t.Fatalf("ListImages: %v, %v", list, err)
	}
	got, err := c.GetImage(ctx, connect.NewRequest(&turnboxv1.GetImageRequest{Name: "tool"}))
	if err != nil || got.Msg.GetImage().GetName() != "tool" {
		t.Fatalf("GetImage: %v, %v", got, err)
	}

	_, err = c.GetImage(ctx, connect.NewRequest(&turnboxv1.GetImageRequest{Name: "nope"}))
	if code, rs := reasons(err); code != connect.CodeNotFound || !slices.Contains(rs, turnboxv1.ErrorReason_ERROR_REASON_IMAGE_NOT_FOUND) || !errors.Is(err, environment.ErrImageNotFound) {
		t.Errorf("GetImage of an unknown image: %v (%v %v)", err, code, rs)
	}
	_, err = c.RemoveImage(ctx, connect.NewRequest(&turnboxv1.RemoveImageRequest{Name: "nope"}))
	if code, rs := reasons(err); code != connect.CodeNotFound || !slices.Contains(rs, turnboxv1.ErrorReason_ERROR_REASON_IMAGE_NOT_FOUND) {
		t.Errorf("RemoveImage of an unknown image: %v (%v %v)", err, code, rs)
	}
	_, err = pullAll(ctx, c, &turnboxv1.PullImageRequest{Reference: "example.com/x:1", Insecure: true})
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !errors.Is(err, environment.ErrInvalidArgument) {
		t.Errorf("pull of http off loopback: %v, want InvalidArgument", err)
	}
	_, err = pullAll(ctx, c, &turnboxv1.PullImageRequest{Reference: ref, Insecure: true})
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Errorf("second pull: %v, want AlreadyExists", err)
	}

	// An image saved from a snapshot of a session of tool names tool as
	// its parent: tool cannot go while it is there.
	imagesDir := host.ImageStore().Dir
	if err := rootfs.WriteMeta(imagesDir, rootfs.Meta{Name: "child", Source: "snapshot:s@1", Volume: "image.child.x", Parent: "tool", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	_, err = c.RemoveImage(ctx, connect.NewRequest(&turnboxv1.RemoveImageRequest{Name: "tool"}))
	if code, rs := reasons(err); code != connect.CodeFailedPrecondition || !slices.Contains(rs, turnboxv1.ErrorReason_ERROR_REASON_IMAGE_IN_USE) ||
		!strings.Contains(err.Error(), "child") || !errors.Is(err, environment.ErrImageInUse) {
		t.Fatalf("RemoveImage of a parent image: %v (%v %v)", err, code, rs)
	}
	if _, err := c.RemoveImage(ctx, connect.NewRequest(&turnboxv1.RemoveImageRequest{Name: "child"})); err != nil {
		t.Fatalf("RemoveImage of the child: %v", err)
	}
	if _, err := c.RemoveImage(ctx, connect.NewRequest(&turnboxv1.RemoveImageRequest{Name: "tool"})); err != nil {
		t.Fatalf("RemoveImage: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(imagesDir, "tool")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tool's directory after RemoveImage: %v", err)
	}
	pr, err := c.PruneImages(ctx, connect.NewRequest(&turnboxv1.PruneImagesRequest{}))
	if err != nil || len(pr.Msg.GetRemoved()) != 0 {
		t.Errorf("PruneImages with nothing to prune: %v, %v", pr, err)
	}
}

// A client that cancels a pull aborts it on the server, which leaves
// nothing in the store; a slow registry makes the pull long enough to
// cancel in the middle, and progress comes at most every ~100 ms.
func TestImagePullCancelled(t *testing.T) {
	reg := regtest.Start(t)
	ref := reg + "/org/big:1"
	regtest.Push(t, ref, regtest.Random(t, 4<<20, 4))
	// A proxy that trickles the registry's answers.
	slow := &http.Server{Handler: slowProxy(t, "http://"+reg)}
	ln := listen(t)
	go slow.Serve(ln)
	t.Cleanup(func() { slow.Close() })
	sref := ln.Addr().String() + "/org/big:1"

	host := newHost(t)
	srv := startServer(t, host, "")
	c := remote.NewImageClient(srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.PullImage(ctx, connect.NewRequest(&turnboxv1.PullImageRequest{Reference: sref, Insecure: true}))
	if err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	for stream.Receive() {
		times = append(times, time.Now())
		if stream.Msg().GetDoneBytes() > 0 && len(times) >= 3 {
			break
		}
	}
	if len(times) < 3 {
		t.Fatalf("pull ended after %d messages: %v", len(times), stream.Err())
	}
	// The server sends progress at most every 100 ms. A loaded machine
	// can deliver two messages close together (one late, the next on
	// time), so check the span: n messages need at least n-2 intervals.
	if span, min := times[len(times)-1].Sub(times[0]), time.Duration(len(times)-2)*80*time.Millisecond; span < min {
		t.Errorf("%d progress messages within %v (at most one per 100 ms expected)", len(times), span)
	}
	cancel()
	stream.Close()
	cancelled := time.Now()
	defer func() { t.Logf("cleaned up %v after the cancel", time.Since(cancelled)) }()
	imagesDir := host.ImageStore().Dir
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir(imagesDir)
		var left []string
		for _, e := range ents {
			if e.Name() != rootfs.MetaDir {
				left = append(left, e.Name())
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a cancelled pull left %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if all, err := host.Images(context.Background()); err != nil || len(all) != 0 {
		t.Fatalf("images after a cancelled pull: %v, %v", all, err)
	}
}

// listen listens on a loopback port until the test ends.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// slowProxy forwards to target, sending response bodies at about
// 3 MB/s.
func slowProxy(t *testing.T, target string) http.Handler {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.ModifyResponse = func(r *http.Response) error {
		r.Body = &trickle{r.Body}
		return nil
	}
	return p
}

// trickle reads 32 KiB at most every 10 ms.
type trickle struct{ io.ReadCloser }

func (r *trickle) Read(p []byte) (int, error) {
	time.Sleep(10 * time.Millisecond)
	return r.ReadCloser.Read(p[:min(len(p), 32<<10)])
}
